"""Command history: every command the hub stored, searchable by text, agent, status and time, paged
(the frame is :class:`tui.screens.paged.PagedListScreen`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Input, Select

from shared.api import Command, Page
from shared.enums import ExecutionStatus
from tui import format as fmt
from tui.screens.paged import PagedListScreen, PagedTable, one_line
from tui.state import Changes


class HistoryScreen(PagedListScreen):
    DEFAULT_CSS = """
    HistoryScreen #history-status { width: 18; }
    """
    NOUN = "commands"
    TITLE_TEXT = "History"

    def __init__(self, query: str = "") -> None:
        super().__init__()
        self.initial_query = query
        self.q: str | None = query or None
        self.agent_id: str | None = None
        self.status: ExecutionStatus | None = None
        self.since: int | None = None
        self.until: int | None = None

    def compose_filters(self) -> ComposeResult:
        yield Input(self.initial_query, placeholder="/ text", id="history-text", compact=True)
        yield Input(
            placeholder="agent",
            id="history-agent",
            classes="narrow",
            compact=True,
            suggester=self.agent_suggester(),
        )
        yield Select(
            [(s.value.lower(), s) for s in ExecutionStatus],
            prompt="any status",
            id="history-status",
            compact=True,
        )
        yield Input(placeholder="since 2h", id="history-since", classes="narrow", compact=True)
        yield Input(placeholder="until", id="history-until", classes="narrow", compact=True)

    def add_columns(self, table: DataTable[Any]) -> None:
        table.add_column("Created", key="created", width=11)
        table.add_column("Type", key="type", width=11)
        table.add_column("Status", key="status", width=10)
        table.add_column("Agents", key="agents", width=14)
        table.add_column("Command", key="text")

    async def fetch(self, offset: int, limit: int) -> Page[Command]:
        return await self.onsembl.api.commands(
            limit=limit,
            offset=offset,
            q=self.q,
            agent_id=self.agent_id,
            status=self.status,
            since=self.since,
            until=self.until,
        )

    def row(self, item: Command) -> tuple[Sequence[Any], str]:
        hub = self.onsembl.hub
        names = [e.agent_name or hub.agent_name(e.agent_id) for e in item.executions]
        if not names:
            names = [hub.agent_name(a) for a in item.target_agents]
        agents = "all" if item.broadcast and len(names) > 2 else ", ".join(names)
        status = hub.running_status(item.id) or item.status
        # The live status only ever moves forward; the stored one wins once it is further along.
        if item.status.rank > status.rank:
            status = item.status
        return (
            fmt.short_stamp(item.created_at),
            item.type.value,
            Text(status.value, style=fmt.EXECUTION_STYLE.get(status, "")),
            agents,
            one_line(item.content),
        ), item.id

    def filtered(self) -> bool:
        return any(v is not None for v in (self.q, self.agent_id, self.status, self.since, self.until))

    def read_filters(self) -> bool:
        ok, agent_id = self.read_agent("#history-agent")
        times = self.read_time_range("#history-since", "#history-until")
        if not ok or times is None:
            return False
        self.q = self.query_one("#history-text", Input).value.strip() or None
        self.agent_id = agent_id
        value = self.query_one("#history-status", Select).value
        self.status = value if isinstance(value, ExecutionStatus) else None
        self.since, self.until = times
        return True

    def open_item(self, item: Command) -> None:
        self.onsembl.open_command(item.id)

    def hub_changed(self, changes: Changes) -> None:
        if not changes.commands:
            return
        table = self.query_one(PagedTable)
        listed = {item.id for item in self.items}
        for command_id in changes.commands & listed:
            status = self.onsembl.hub.running_status(command_id)
            if status is not None:
                table.update_cell(
                    command_id, "status", Text(status.value, style=fmt.EXECUTION_STYLE.get(status, ""))
                )
        if self.live and changes.commands - listed:
            self.reload_soon()  # a new command: it belongs at the top of page 1
