"""The audit log: who did what, when, to which agent and command; filtered, paged, live on page 1."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable, Input, Static

from shared.api import AuditLog, Page
from tui import format as fmt
from tui.screens.paged import PagedListScreen, one_line
from tui.state import Changes


def details_text(details: dict[str, object]) -> str:
    if not details:
        return ""
    return json.dumps(details, separators=(",", ":"), ensure_ascii=False, default=str)


def _identity(entry: AuditLog) -> tuple[object, ...]:
    return (entry.at, entry.actor, entry.action, entry.agent_id, entry.command_id)


def with_live_entries(page: Page[AuditLog], recent: Iterable[AuditLog]) -> Page[AuditLog]:
    """The newest page with the entries the hub announced that the store has not written yet (it
    writes them from the event stream a moment later): a live reload on an entry must show it."""
    oldest = page.items[-1].at if len(page.items) >= page.limit else 0
    stored = {_identity(item) for item in page.items}
    missing = [entry for entry in recent if entry.at >= oldest and _identity(entry) not in stored]
    if not missing:
        return page
    items = sorted([*missing, *page.items], key=lambda i: i.at, reverse=True)[: page.limit]
    return page.model_copy(update={"items": items, "total": page.total + len(missing)})


class AuditScreen(PagedListScreen):
    DEFAULT_CSS = """
    AuditScreen #audit-detail {
        height: auto; max-height: 4; padding: 0 1; background: $panel; color: $text-muted;
    }
    """
    NOUN = "entries"
    TITLE_TEXT = "Audit"

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.actor: str | None = None
        self.agent_id: str | None = None
        self.since: int | None = None
        self.until: int | None = None

    def compose_filters(self) -> ComposeResult:
        yield Input(placeholder="/ action prefix", id="audit-action", compact=True)
        yield Input(placeholder="actor", id="audit-actor", compact=True)
        yield Input(
            placeholder="agent",
            id="audit-agent",
            classes="narrow",
            compact=True,
            suggester=self.agent_suggester(),
        )
        yield Input(placeholder="since 2h", id="audit-since", classes="narrow", compact=True)
        yield Input(placeholder="until", id="audit-until", classes="narrow", compact=True)

    def compose_body(self) -> ComposeResult:
        yield from super().compose_body()
        # The table abbreviates the details; the highlighted entry's are shown whole here.
        yield Static("", id="audit-detail", markup=False)

    def add_columns(self, table: DataTable[Any]) -> None:
        table.add_column("Time", key="time", width=11)
        table.add_column("Actor", key="actor", width=14)
        table.add_column("Action", key="action", width=20)
        table.add_column("Agent", key="agent", width=10)
        table.add_column("Command", key="command", width=8)
        table.add_column("Details", key="details")

    async def fetch(self, offset: int, limit: int) -> Page[AuditLog]:
        return await self.onsembl.api.audit(
            limit=limit,
            offset=offset,
            action=self.action,
            actor=self.actor,
            agent_id=self.agent_id,
            since=self.since,
            until=self.until,
        )

    def row(self, item: AuditLog) -> tuple[Sequence[Any], str]:
        agent = self.onsembl.hub.agent_name(item.agent_id) if item.agent_id else ""
        key = str(item.id) if item.id is not None else f"{item.at}-{item.action}-{id(item)}"
        return (
            fmt.short_stamp(item.at),
            item.actor,
            item.action,
            agent,
            fmt.short_id(item.command_id),
            one_line(details_text(item.details), 200),
        ), key

    def filtered(self) -> bool:
        return any(v is not None for v in (self.action, self.actor, self.agent_id, self.since, self.until))

    def read_filters(self) -> bool:
        ok, agent_id = self.read_agent("#audit-agent")
        times = self.read_time_range("#audit-since", "#audit-until")
        if not ok or times is None:
            return False
        self.action = self.query_one("#audit-action", Input).value.strip() or None
        self.actor = self.query_one("#audit-actor", Input).value.strip() or None
        self.agent_id = agent_id
        self.since, self.until = times
        return True

    def show_page(self, page: Page[Any]) -> None:
        if self.live:
            page = with_live_entries(page, self.onsembl.hub.recent_audit)
        super().show_page(page)
        self._show_detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        item: AuditLog | None = self.selected
        detail = self.query_one("#audit-detail", Static)
        if item is None:
            detail.update("")
            return
        where = f"  command {fmt.full_id(item.command_id)}" if item.command_id else ""
        detail.update(f"{fmt.stamp(item.at)}  {item.action}{where}  {details_text(item.details)}")

    def open_item(self, item: AuditLog) -> None:
        if item.command_id:
            self.onsembl.open_command(item.command_id)
        else:
            self.notify("this entry is not about a command", timeout=3)

    def hub_changed(self, changes: Changes) -> None:
        if changes.audit and self.live:
            self.reload_soon()
