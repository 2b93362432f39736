"""One report, rendered from the hub's own Markdown export (so the screen and the file agree)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Label, MarkdownViewer

from shared.api import Report
from tui.client.rest import HubError
from tui.screens.base import BaseScreen


class ReportScreen(BaseScreen):
    DEFAULT_CSS = """
    ReportScreen #report-title { height: 1; padding: 0 1; background: $boost; }
    ReportScreen MarkdownViewer { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.back", "Back", id="back"),
        Binding("e", "export", "Export", id="report_export"),
        Binding("o", "open_command", "Command", id="report_open_command"),
        Binding("t", "toggle_toc", "Contents", id="report_toc"),
        Binding("ctrl+r", "reload", "Reload", id="report_reload"),
    ]

    def __init__(self, report_id: str, report: Report | None = None) -> None:
        super().__init__()
        self.report_id = report_id
        self.report = report
        self.markdown = ""

    def compose_body(self) -> ComposeResult:
        yield Label(self._title(), id="report-title", markup=False)
        # The contents pane is off by default: at 80 columns it would squeeze the text.
        yield MarkdownViewer("*loading ...*", show_table_of_contents=False, open_links=False)

    def on_mount(self) -> None:
        self.query_one(MarkdownViewer).focus()
        self.load()

    def _title(self) -> str:
        if self.report is None:
            return f"Report {self.report_id[:8]}"
        agent = self.onsembl.hub.agent_name(self.report.agent_id)
        findings = len(self.report.content.findings)
        return f"{self.report.title}  ·  {self.report.status.value}  ·  {agent}  ·  {findings} findings"

    @work(exclusive=True, group="report-load")
    async def load(self) -> None:
        api = self.onsembl.api
        try:
            report, markdown = await asyncio.gather(
                api.report(self.report_id), api.export_report(self.report_id, "markdown")
            )
        except HubError as exc:
            self.notify(exc.message, title="Report", severity="error")
            await self.query_one(MarkdownViewer).document.update(
                f"**Could not load the report:** {exc.message}"
            )
            return
        self.report, self.markdown = report, markdown
        self.query_one("#report-title", Label).update(self._title())
        await self.query_one(MarkdownViewer).document.update(markdown)

    def action_reload(self) -> None:
        self.load()

    def action_toggle_toc(self) -> None:
        viewer = self.query_one(MarkdownViewer)
        viewer.show_table_of_contents = not viewer.show_table_of_contents

    def action_export(self) -> None:
        from tui.screens.export import ExportScreen

        def written(path: Path | None) -> None:
            if path is not None:
                self.notify(str(path), title="Report exported")

        self.app.push_screen(ExportScreen(self.report_id), written)

    def action_open_command(self) -> None:
        if self.report is not None:
            self.onsembl.open_command(self.report.command_id)
