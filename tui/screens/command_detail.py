"""One command: its summary (per agent: status, times, tokens, end reason, error) and tabs with its
stored output (paged from the hub), trace, report and changes."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, Markdown, Static, TabbedContent, TabPane, Tabs

from shared.api import Command, Execution, OutputLine
from shared.enums import ExecutionStatus
from tui import format as fmt
from tui.client.rest import HubError
from tui.screens.base import BaseScreen
from tui.screens.trace import command_status, retry_once
from tui.state import Changes, OutputEntry
from tui.widgets.diff_view import DiffView, pick_execution
from tui.widgets.hub_header import HubHeader
from tui.widgets.output_log import OutputLog
from tui.widgets.trace_view import TraceView

TABS = ("tab-output", "tab-trace", "tab-report", "tab-changes")


def _entry(line: OutputLine) -> OutputEntry:
    return OutputEntry.of(line)


def _line_count(content: str) -> int:
    return content.rstrip("\n").count("\n") + 1


class CommandDetailScreen(BaseScreen):
    DEFAULT_CSS = """
    CommandDetailScreen #detail-summary {
        height: auto;
        max-height: 9;
        padding: 0 1;
        background: $boost;
    }
    CommandDetailScreen TabbedContent { height: 1fr; }
    CommandDetailScreen TabPane { padding: 0; height: 1fr; }
    CommandDetailScreen #output-status { height: 1; padding: 0 1; color: $text-muted; }
    CommandDetailScreen #detail-output-log { height: 1fr; }
    CommandDetailScreen #detail-report { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "app.back", "Back", id="back"),
        Binding("t", "trace", "Trace", id="detail_trace"),
        Binding("c", "changes", "Changes", id="detail_changes"),
        Binding("m", "more", "More output", id="detail_more"),
        Binding("1", "tab(0)", "Output", show=False, id="detail_tab_output"),
        Binding("2", "tab(1)", "Trace tab", show=False, id="detail_tab_trace"),
        Binding("3", "tab(2)", "Report tab", show=False, id="detail_tab_report"),
        Binding("4", "tab(3)", "Changes tab", show=False, id="detail_tab_changes"),
    ]
    #: Lines of stored output fetched per page (the hub's maximum).
    PAGE: ClassVar[int] = 5000

    def __init__(self, command_id: str) -> None:
        super().__init__()
        self.command_id = command_id
        self.command: Command | None = None
        #: Stored lines read so far (the offset of the next page) and how many the hub holds.
        self.output_offset = 0
        self.output_total: int | None = None
        self._seen: set[tuple[str, int]] = set()
        #: Lines on screen: a stored chunk holds one line or many.
        self.lines_loaded = 0
        self.report_ids: list[str] = []

    def compose_body(self) -> ComposeResult:
        yield HubHeader()
        yield Static(Text(f"command {self.command_id}  loading…", style="dim"), id="detail-summary")
        with TabbedContent(id="detail-tabs", initial="tab-output"):
            with TabPane("Output", id="tab-output"), Vertical():
                yield Label("loading…", id="output-status")
                yield OutputLog(max_lines=1_000_000, id="detail-output-log")
            with TabPane("Trace", id="tab-trace"):
                yield TraceView(agent_name=self.onsembl.hub.agent_name, id="detail-trace")
            with TabPane("Report", id="tab-report"):
                yield Markdown("*loading…*", id="detail-report")
            with TabPane("Changes", id="tab-changes"):
                yield DiffView(id="detail-changes")

    @property
    def output_log(self) -> OutputLog:
        return self.query_one("#detail-output-log", OutputLog)

    @property
    def trace_view(self) -> TraceView:
        return self.query_one("#detail-trace", TraceView)

    @property
    def diff(self) -> DiffView:
        return self.query_one("#detail-changes", DiffView)

    def on_mount(self) -> None:
        self.onsembl.update_header(self.query_one(HubHeader))
        self.output_log.focus()
        live = self.onsembl.hub.traces.get(self.command_id)
        if live:
            self.trace_view.merge(list(live.values()))
        self.load_command()
        self.load_output()
        self.load_traces()
        self.load_report()

    def on_screen_resume(self) -> None:
        live = self.onsembl.hub.traces.get(self.command_id)
        if live:
            self.trace_view.merge(list(live.values()))

    # -- loading -----------------------------------------------------------------------------------
    @work(exclusive=True, group="detail-command")
    async def load_command(self) -> None:
        try:
            command = await retry_once(lambda: self.onsembl.api.command(self.command_id))
        except HubError as exc:
            self.notify(exc.message, title="Command", severity="error")
            self.query_one("#detail-summary", Static).update(Text(exc.message, style="red"))
            return
        self.command = command
        # One agent: no name column in the output; several: each line says whose it is.
        self.output_log.agent_label = self.onsembl.agent_label if len(command.executions) > 1 else None
        self.show_summary()
        execution = pick_execution(command)
        if execution is not None and execution.changes is None and not execution.status.terminal:
            missing = "no changes recorded yet: they are recorded when the command ends"
        else:
            missing = "no changes recorded"
        self.diff.show(execution.changes if execution is not None else None, missing=missing)
        self.trace_view.set_ended(self.status is not None and self.status.terminal)

    @work(exclusive=True, group="detail-output")
    async def load_output(self) -> None:
        status = self.query_one("#output-status", Label)
        try:
            api, offset = self.onsembl.api, self.output_offset
            page = await retry_once(lambda: api.output(self.command_id, limit=self.PAGE, offset=offset))
        except HubError as exc:
            status.update(Text(f"output: {exc.message}", style="red"))
            return
        self.output_offset += len(page.items)
        self.output_total = page.total
        fresh = [line for line in page.items if (line.agent_id, line.sequence) not in self._seen]
        self._seen.update((line.agent_id, line.sequence) for line in fresh)
        self.output_log.add(_entry(line) for line in fresh)
        self.lines_loaded += sum(_line_count(line.content) for line in fresh)
        self.show_output_status()

    def show_output_status(self) -> None:
        total = self.output_total or 0
        shown = len(self._seen)
        if total == 0 and shown == 0:
            text = Text("no output stored for this command", style="dim italic")
        elif self.output_offset < total:
            text = Text(
                f"{self.lines_loaded:,} lines ({self.output_offset:,} of {total:,} stored chunks)"
                f"   m: load {self.PAGE:,} more chunks"
            )
        else:
            text = Text(f"{self.lines_loaded:,} lines", style="dim")
        self.query_one("#output-status", Label).update(text)

    @work(exclusive=True, group="detail-traces")
    async def load_traces(self) -> None:
        try:
            records = await retry_once(lambda: self.onsembl.api.traces(self.command_id))
        except HubError as exc:
            self.notify(exc.message, title="Trace", severity="error")
            return
        self.trace_view.merge(records)

    @work(exclusive=True, group="detail-report")
    async def load_report(self) -> None:
        markdown = self.query_one("#detail-report", Markdown)
        api = self.onsembl.api
        try:
            reports = (await retry_once(lambda: api.reports(command_id=self.command_id, limit=10))).items
            texts = [await api.export_report(report.id, "markdown") for report in reports]
        except HubError as exc:
            await markdown.update(f"*the report could not be read: {exc.message}*")
            return
        self.report_ids = [report.id for report in reports]
        await markdown.update("\n\n---\n\n".join(texts) if texts else "*no report for this command*")

    # -- live --------------------------------------------------------------------------------------
    def hub_changed(self, changes: Changes) -> None:
        self.onsembl.update_header(self.query_one(HubHeader))
        if self.command_id in changes.traces:
            live = self.onsembl.hub.traces.get(self.command_id)
            if live:
                self.trace_view.merge(list(live.values()))
        if self.command_id in changes.commands:
            self.load_command()
        if any(report.command_id == self.command_id for report in changes.reports):
            self.load_report()
        if self.output_total is not None and self.output_offset >= self.output_total:
            # Everything stored is shown: lines streaming in now follow it (the rest come with m).
            fresh = [
                entry
                for entry in changes.output
                if entry.command_id == self.command_id and (entry.agent_id, entry.sequence) not in self._seen
            ]
            if fresh:
                self._seen.update((entry.agent_id, entry.sequence) for entry in fresh)
                self.lines_loaded += sum(_line_count(entry.content) for entry in fresh)
                self.output_log.add(fresh)
                self.show_output_status()

    @property
    def status(self) -> ExecutionStatus | None:
        return command_status(self.onsembl.hub, self.command_id, self.command)

    # -- the summary -------------------------------------------------------------------------------
    def show_summary(self) -> None:
        command = self.command
        if command is None:
            return
        status = self.status
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(f"{command.type.value} ", "bold")
        if status is not None:
            head.append(status.value, fmt.EXECUTION_STYLE.get(status, ""))
        head.append(f"  prio {command.priority}", "dim")
        head.append(f"  created {fmt.stamp(command.created_at)}", "dim")
        if command.created_by:
            head.append(f" by {command.created_by}", "dim")
        head.append(f"  id {fmt.full_id(command.id)}", "dim")
        content = command.content.strip().splitlines() or [""]
        text = Text(content[0][:500], style="italic", no_wrap=True, overflow="ellipsis")
        if len(content) > 1:
            text.append(f"  (+{len(content) - 1} lines)", "dim")
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="dim", expand=False)
        for column in ("agent", "status", "started", "took", "tokens", "cost", "lines", "end", "error"):
            table.add_column(column, no_wrap=column != "error", overflow="ellipsis")
        for execution in command.executions:
            table.add_row(*self._execution_row(execution))
        self.query_one("#detail-summary", Static).update(Group(text, head, table))

    def _execution_row(self, execution: Execution) -> list[Text | str]:
        live = self.onsembl.hub.execution(self.command_id, execution.agent_id)
        status = execution.status
        if live is not None and live.status.rank > status.rank:
            status = live.status
        if execution.started_at and execution.completed_at:
            took = fmt.duration_ms(execution.completed_at - execution.started_at)
        elif execution.started_at:
            took = fmt.since(execution.started_at).replace(" ago", "…")
        else:
            took = "-"
        error = (execution.error or "").replace("\n", " ")
        return [
            Text(execution.agent_name or self.onsembl.hub.agent_name(execution.agent_id), style="bold"),
            Text(status.value, style=fmt.EXECUTION_STYLE.get(status, "")),
            fmt.clock(execution.started_at),
            took,
            fmt.tokens(execution.tokens_used),
            fmt.cost(execution.cost_usd),
            str(execution.output_lines),
            execution.end_reason.value if execution.end_reason else "-",
            Text(error[:200], style="red"),
        ]

    # -- keys --------------------------------------------------------------------------------------
    def action_trace(self) -> None:
        self.onsembl.open_trace(self.command_id)

    def action_changes(self) -> None:
        self.onsembl.open_changes(self.command_id)

    def action_more(self) -> None:
        if self.output_total is not None and self.output_offset >= self.output_total:
            self.notify("all stored output is shown")
            return
        self.query_one(TabbedContent).active = "tab-output"
        self.load_output()

    def action_tab(self, index: int) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = TABS[index]
        # Focus must move into the new tab: left on a widget of the old one, it would switch back.
        if index == 0:
            self.output_log.focus()
        elif index == 1:
            self.trace_view.focus_tree()
        elif index == 3 and self.diff.files:
            self.diff.focus_files()
        else:
            tabs.query_one(Tabs).focus()
