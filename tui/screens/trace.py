"""The trace of one command: a tree of prompts, tool calls and responses with a detail pane, live
while the command runs (from the stream's TRACE_UPDATEs, merged with what the hub has stored)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from shared.api import Command
from shared.enums import ExecutionStatus
from tui import format as fmt
from tui.client.rest import HubError
from tui.screens.base import BaseScreen
from tui.state import Changes, HubState
from tui.widgets.hub_header import HubHeader
from tui.widgets.trace_view import TraceView

T = TypeVar("T")


async def retry_once(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, again once if the hub could not be reached: a kept-alive connection the hub closed
    at the moment it was reused fails once and works on a new one."""
    try:
        return await call()
    except HubError as exc:
        if not exc.unreachable:
            raise
    await asyncio.sleep(0.2)
    return await call()


def command_status(hub: HubState, command_id: str, command: Command | None) -> ExecutionStatus | None:
    """Where a command stands: per agent the further of the stored and the live status; the command
    is running while one of its executions is, else it took the stored overall status."""
    per_agent = {e.agent_id: e.status for e in command.executions} if command is not None else {}
    for (cid, agent_id), live in hub.executions.items():
        if cid == command_id and (agent_id not in per_agent or live.status.rank > per_agent[agent_id].rank):
            per_agent[agent_id] = live.status
    if not per_agent:
        return command.status if command is not None else None
    open_ones = [s for s in per_agent.values() if not s.terminal]
    if open_ones:
        return max(open_ones, key=lambda s: s.rank)
    if command is not None and command.status.terminal:
        return command.status
    ended = set(per_agent.values())
    for worst in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
        if worst in ended:
            return worst
    return ExecutionStatus.COMPLETED


class TraceScreen(BaseScreen):
    DEFAULT_CSS = """
    TraceScreen #trace-title { height: 1; padding: 0 1; background: $boost; }
    """
    BINDINGS = [
        Binding("escape", "app.back", "Back", id="back"),
        Binding("c", "changes", "Changes", id="trace_changes"),
        Binding("o", "open", "Command", id="trace_open"),
        Binding("r", "reload", "Reload", id="trace_reload"),
    ]

    def __init__(self, command_id: str) -> None:
        super().__init__()
        self.command_id = command_id
        self.command: Command | None = None
        #: True once the stored trace has been merged (the live part may have come before it).
        self.loaded = False

    def compose_body(self) -> ComposeResult:
        yield HubHeader()
        yield Label("", id="trace-title")
        yield TraceView(agent_name=self.onsembl.hub.agent_name, id="trace-view")

    @property
    def view(self) -> TraceView:
        return self.query_one("#trace-view", TraceView)

    def on_mount(self) -> None:
        self.onsembl.update_header(self.query_one(HubHeader))
        self.merge_live()
        self.show_title()
        self.view.focus_tree()
        self.load()

    def on_screen_resume(self) -> None:
        # Updates that came while another screen was on top are in the live state.
        self.merge_live()
        self.show_title()

    @work(exclusive=True, group="trace-load")
    async def load(self) -> None:
        api = self.onsembl.api
        try:
            self.command = await retry_once(lambda: api.command(self.command_id))
            records = await retry_once(lambda: api.traces(self.command_id))
        except HubError as exc:
            self.notify(exc.message, title="Trace", severity="error")
            self.show_title()
            return
        self.view.merge(records)
        self.loaded = True
        self.show_title()

    def merge_live(self) -> None:
        live = self.onsembl.hub.traces.get(self.command_id)
        if live:
            self.view.merge(list(live.values()))

    def hub_changed(self, changes: Changes) -> None:
        self.onsembl.update_header(self.query_one(HubHeader))
        if self.command_id in changes.traces:
            self.merge_live()
            self.show_title()
        if self.command_id in changes.commands:
            status = self.status
            if status is not None and status.terminal:
                # The end: read the stored trace and the command again (totals, end reason).
                self.load()
            self.show_title()

    @property
    def status(self) -> ExecutionStatus | None:
        return command_status(self.onsembl.hub, self.command_id, self.command)

    def show_title(self) -> None:
        status = self.status
        view = self.view
        view.set_ended(status is not None and status.terminal)
        totals = view.totals
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("Trace ", "bold")
        if self.command is not None:
            line.append(f"{self.command.content.replace(chr(10), ' ')[:60]}", "italic")
        else:
            line.append(fmt.short_id(self.command_id), "dim")
        if status is not None:
            line.append(f"  {status.value}", fmt.EXECUTION_STYLE.get(status, ""))
        line.append(f"  {totals.nodes} nodes", "bold")
        if totals.tokens:
            line.append(f"  {fmt.tokens(totals.tokens)} tokens", "magenta")
        if totals.errors:
            line.append(f"  {totals.errors} error{'s' if totals.errors != 1 else ''}", "bold red")
        if totals.running:
            line.append(f"  {totals.running} running", "cyan")
        if not self.loaded:
            line.append("  loading…", "dim italic")
        self.query_one("#trace-title", Label).update(line)

    def action_changes(self) -> None:
        self.onsembl.open_changes(self.command_id)

    def action_open(self) -> None:
        self.onsembl.open_command(self.command_id)

    def action_reload(self) -> None:
        self.load()
