"""Investigation reports: a searchable, paged list; Enter shows one, e exports it. New ones appear live."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input

from shared.api import Page, Report
from shared.enums import ReportStatus
from tui import format as fmt
from tui.screens.paged import PagedListScreen, one_line
from tui.state import Changes

REPORT_STATUS_STYLE = {
    ReportStatus.COMPLETE: "green",
    ReportStatus.IN_PROGRESS: "cyan",
    ReportStatus.DRAFT: "yellow",
}


class ReportsScreen(PagedListScreen):
    DEFAULT_CSS = """
    ReportsScreen .filters Input { width: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "export", "Export", id="reports_export"),
        Binding("o", "open_command", "Command", id="reports_open_command"),
    ]
    NOUN = "reports"
    TITLE_TEXT = "Reports"
    FLEX_COLUMN = "title"

    def __init__(self) -> None:
        super().__init__()
        self.q: str | None = None

    def compose_filters(self) -> ComposeResult:
        yield Input(placeholder="/ search title and summary", id="reports-text", compact=True)

    def add_columns(self, table: DataTable[Any]) -> None:
        table.add_column("Title", key="title")
        table.add_column("Status", key="status", width=11)
        table.add_column("Agent", key="agent", width=12)
        table.add_column("Created", key="created", width=11)
        table.add_column("Findings", key="findings", width=8)

    async def fetch(self, offset: int, limit: int) -> Page[Report]:
        return await self.onsembl.api.reports(limit=limit, offset=offset, q=self.q)

    def row(self, item: Report) -> tuple[Sequence[Any], str]:
        findings = len(item.content.findings)
        return (
            one_line(item.title, 200),
            Text(item.status.value, style=REPORT_STATUS_STYLE.get(item.status, "")),
            self.onsembl.hub.agent_name(item.agent_id),
            fmt.short_stamp(item.created_at),
            Text(str(findings), justify="right"),
        ), item.id

    def filtered(self) -> bool:
        return self.q is not None

    def read_filters(self) -> bool:
        self.q = self.query_one("#reports-text", Input).value.strip() or None
        return True

    def open_item(self, item: Report) -> None:
        from tui.screens.report_view import ReportScreen

        self.app.push_screen(ReportScreen(item.id, item))

    def action_export(self) -> None:
        item: Report | None = self.selected
        if item is None:
            return
        from tui.screens.export import ExportScreen

        def written(path: Path | None) -> None:
            if path is not None:
                self.notify(str(path), title="Report exported")

        self.app.push_screen(ExportScreen(item.id), written)

    def action_open_command(self) -> None:
        item: Report | None = self.selected
        if item is not None:
            self.onsembl.open_command(item.command_id)

    def hub_changed(self, changes: Changes) -> None:
        if changes.reports and self.live:
            self.reload_soon()
