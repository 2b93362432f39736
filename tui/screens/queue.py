"""One agent's queue: position 0 runs, 1.. wait in order. Reorder, cancel, interrupt; live."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from shared.api import AgentQueue, QueueItem
from shared.enums import ExecutionStatus
from tui import format as fmt
from tui.client.rest import HubError
from tui.screens.base import BaseScreen
from tui.state import Changes
from tui.widgets.hub_header import HubHeader


class QueueScreen(BaseScreen):
    DEFAULT_CSS = """
    QueueScreen #queue-title { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    QueueScreen DataTable { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "app.back", "Back", id="back"),
        Binding("K,shift+up", "move(-1)", "Move up", id="queue_move_up"),
        Binding("J,shift+down", "move(1)", "Move down", id="queue_move_down"),
        Binding("d,delete", "cancel", "Cancel", id="queue_cancel"),
        Binding("i", "interrupt", "Interrupt", id="queue_interrupt"),
        Binding("T", "trace", "Trace", id="queue_trace"),
        Binding("c", "changes", "Changes", id="queue_changes"),
        Binding("enter", "open", "Open", id="queue_open", show=False),
    ]

    def __init__(self, agent_id: str) -> None:
        super().__init__()
        self.agent_id = agent_id
        self.queue: AgentQueue | None = None

    def compose_body(self) -> ComposeResult:
        yield HubHeader()
        yield Label("", id="queue-title")
        yield DataTable(id="queue", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("Pos", key="pos", width=4)
        table.add_column("Status", key="status", width=11)
        table.add_column("Prio", key="prio", width=4)
        table.add_column("Type", key="type", width=11)
        table.add_column("Command", key="command")
        table.add_column("Queued", key="created", width=8)
        table.focus()
        self.onsembl.update_header(self.query_one(HubHeader))
        cached = self.onsembl.hub.queues.get(self.agent_id)
        if cached is not None:
            self.show(cached)
        self.load()

    @property
    def agent_name(self) -> str:
        return self.onsembl.hub.agent_name(self.agent_id)

    @work(exclusive=True, group="queue-load")
    async def load(self) -> None:
        try:
            self.show(await self.onsembl.api.queue(self.agent_id))
        except HubError as exc:
            self.notify(exc.message, title="Queue", severity="error")

    def hub_changed(self, changes: Changes) -> None:
        self.onsembl.update_header(self.query_one(HubHeader))
        if self.agent_id in changes.queues:
            self.show(self.onsembl.hub.queues[self.agent_id])

    def show(self, queue: AgentQueue) -> None:
        self.queue = queue
        waiting = sum(1 for item in queue.items if item.position > 0)
        paused = "  [PAUSED]" if queue.paused else ""
        self.query_one("#queue-title", Label).update(
            f"Queue of {self.agent_name}: {waiting} waiting{paused}   "
            "K/J move · d cancel · i interrupt · T trace · c changes"
        )
        table = self.query_one(DataTable)
        selected = self.selected
        table.clear()
        for item in queue.items:
            table.add_row(
                "run" if item.position == 0 else str(item.position),
                Text(item.status.value, style=fmt.EXECUTION_STYLE.get(item.status, "")),
                str(item.priority),
                item.type.value,
                item.content.replace("\n", " ")[:200],
                fmt.clock(item.created_at),
                key=item.command_id,
            )
        if selected is not None:
            self.select(selected.command_id)

    @property
    def selected(self) -> QueueItem | None:
        if self.queue is None:
            return None
        table = self.query_one(DataTable)
        if not table.row_count or table.cursor_row < 0 or table.cursor_row >= len(self.queue.items):
            return None
        return self.queue.items[table.cursor_row]

    def select(self, command_id: str) -> None:
        if self.queue is None:
            return
        for index, item in enumerate(self.queue.items):
            if item.command_id == command_id:
                self.query_one(DataTable).move_cursor(row=index)

    def action_move(self, delta: int) -> None:
        item = self.selected
        if item is None or self.queue is None:
            return
        waiting = [i.command_id for i in self.queue.items if i.position > 0]
        if item.command_id not in waiting:
            self.notify("only a waiting command can be moved", severity="warning")
            return
        index = waiting.index(item.command_id)
        target = index + delta
        if not 0 <= target < len(waiting):
            return
        waiting[index], waiting[target] = waiting[target], waiting[index]
        self.reorder(waiting, item.command_id)

    @work(exclusive=True, group="queue-change")
    async def reorder(self, order: list[str], keep: str) -> None:
        try:
            self.show(await self.onsembl.api.reorder(self.agent_id, order))
            self.select(keep)
        except HubError as exc:
            self.notify(exc.message, title="Reorder refused", severity="error")

    def action_cancel(self) -> None:
        item = self.selected
        if item is None:
            return
        if item.position == 0:
            self.notify("that one is running: press i to interrupt it", severity="warning")
            return
        self.cancel_command(item.command_id, "cancelled from the queue view")

    def action_interrupt(self) -> None:
        item = self.selected
        if item is None or item.position != 0:
            self.notify("select the running command (position 'run') to interrupt it", severity="warning")
            return
        self.cancel_command(item.command_id, "interrupted from the queue view")

    @work(group="queue-change")
    async def cancel_command(self, command_id: str, reason: str) -> None:
        try:
            command = await self.onsembl.api.cancel(command_id, self.agent_id, reason)
        except HubError as exc:
            self.notify(exc.message, title="Cancel refused", severity="error")
            return
        status = next((e.status for e in command.executions if e.agent_id == self.agent_id), None)
        if status is ExecutionStatus.CANCELLED:
            self.notify(f"cancelled: {command.content[:40]}")
        else:
            self.notify(f"interrupt sent: {command.content[:40]}")
        self.load()

    def action_open(self) -> None:
        if (item := self.selected) is not None:
            self.onsembl.open_command(item.command_id)

    def action_trace(self) -> None:
        if (item := self.selected) is not None:
            self.onsembl.open_trace(item.command_id)

    def action_changes(self) -> None:
        if (item := self.selected) is not None:
            self.onsembl.open_changes(item.command_id, self.agent_id)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()
