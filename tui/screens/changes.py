"""What a command changed in its agent's working tree (the wrapper's git record), file by file."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from shared.api import Command, Execution
from tui import format as fmt
from tui.client.rest import HubError
from tui.screens.base import BaseScreen
from tui.screens.trace import command_status, retry_once
from tui.state import Changes
from tui.widgets.diff_view import DiffView, pick_execution
from tui.widgets.hub_header import HubHeader


class ChangesScreen(BaseScreen):
    DEFAULT_CSS = """
    ChangesScreen #changes-title { height: 1; padding: 0 1; background: $boost; }
    """
    BINDINGS = [
        Binding("escape", "app.back", "Back", id="back"),
        Binding("right_square_bracket", "file(1)", "Next file", id="changes_next_file"),
        Binding("left_square_bracket", "file(-1)", "Prev file", id="changes_prev_file"),
        Binding("a", "next_agent", "Next agent", id="changes_next_agent"),
        Binding("t", "trace", "Trace", id="changes_trace"),
        Binding("o", "open", "Command", id="changes_open"),
    ]

    def __init__(self, command_id: str, agent_id: str | None = None) -> None:
        super().__init__()
        self.command_id = command_id
        self.agent_id = agent_id
        self.command: Command | None = None
        self.execution: Execution | None = None

    def compose_body(self) -> ComposeResult:
        yield HubHeader()
        yield Label(f"Changes of {fmt.short_id(self.command_id)}  loading…", id="changes-title")
        yield DiffView(id="changes-diff")

    @property
    def diff(self) -> DiffView:
        return self.query_one("#changes-diff", DiffView)

    def on_mount(self) -> None:
        self.onsembl.update_header(self.query_one(HubHeader))
        self.diff.focus_files()
        self.load()

    @work(exclusive=True, group="changes-load")
    async def load(self) -> None:
        try:
            command = await retry_once(lambda: self.onsembl.api.command(self.command_id))
        except HubError as exc:
            self.notify(exc.message, title="Changes", severity="error")
            self.query_one("#changes-title", Label).update(Text(f"Changes: {exc.message}", style="red"))
            return
        self.show(command)

    def show(self, command: Command) -> None:
        self.command = command
        self.execution = pick_execution(command, self.agent_id)
        execution = self.execution
        status = command_status(self.onsembl.hub, self.command_id, command)
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append("Changes ", "bold")
        if execution is not None:
            title.append(execution.agent_name or self.onsembl.hub.agent_name(execution.agent_id), "bold cyan")
            title.append("  ")
        title.append(command.content.replace("\n", " ")[:70], "italic")
        if status is not None:
            title.append(f"  {status.value}", fmt.EXECUTION_STYLE.get(status, ""))
        if len(command.executions) > 1:
            title.append(f"  ({len(command.executions)} agents: a for the next)", "dim")
        self.query_one("#changes-title", Label).update(title)
        if execution is None:
            missing = "this agent did not run the command" if self.agent_id else "no agent ran this command"
        elif execution.changes is None and not execution.status.terminal:
            missing = "no changes recorded yet: they are recorded when the command ends"
        else:
            missing = "no changes recorded"
        self.diff.show(execution.changes if execution is not None else None, missing=missing)

    def hub_changed(self, changes: Changes) -> None:
        self.onsembl.update_header(self.query_one(HubHeader))
        if self.command_id in changes.commands:
            status = command_status(self.onsembl.hub, self.command_id, self.command)
            if status is not None and status.terminal:
                self.load()  # the change set comes with the end of the command

    def action_file(self, delta: int) -> None:
        self.diff.select_file(delta)

    def action_next_agent(self) -> None:
        if self.command is None or len(self.command.executions) < 2:
            return
        agents = [e.agent_id for e in self.command.executions]
        current = self.execution.agent_id if self.execution is not None else agents[-1]
        self.agent_id = agents[(agents.index(current) + 1) % len(agents)]
        self.show(self.command)

    def action_trace(self) -> None:
        self.onsembl.open_trace(self.command_id)

    def action_open(self) -> None:
        self.onsembl.open_command(self.command_id)
