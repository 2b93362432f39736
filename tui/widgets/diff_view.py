"""What a command changed, file by file: the totals, a file list (status, +added, -removed, path)
and the selected file's part of the unified diff, syntax-colored.

The wrapper records one patch for the whole change set; it is split at its ``diff --git`` headers
and each part matched to its file by the paths the part names (``a/``, ``b/``, renames).
"""

from __future__ import annotations

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, ScrollableContainer
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import DataTable, Label, Static

from shared.api import ChangeSet, Command, Execution, FileChange

#: At this width and more the file list sits left of the diff, above it otherwise.
SIDE_BY_SIDE_WIDTH = 100
MINUS = "\u2212"  # a real minus sign: as wide as "+", unlike a hyphen
STATUS_STYLE = {"added": ("A", "bold green"), "deleted": ("D", "bold red"), "renamed": ("R", "bold cyan")}


def pick_execution(command: Command, agent_id: str | None = None) -> Execution | None:
    """The execution to show: the agent's if given, else the first that changed files, else the first
    with a change set at all, else the first."""
    executions = command.executions
    if agent_id is not None:
        return next((e for e in executions if e.agent_id == agent_id), None)
    return (
        next((e for e in executions if e.changes is not None and e.changes.files), None)
        or next((e for e in executions if e.changes is not None), None)
        or (executions[0] if executions else None)
    )


def split_patch(patch: str) -> dict[str, str]:
    """Path -> that file's part of a unified git diff (every path a part names points to it)."""
    parts: list[list[str]] = []
    for line in patch.splitlines(keepends=True):
        if line.startswith("diff --git ") or not parts:
            parts.append([])
        parts[-1].append(line)
    by_path: dict[str, str] = {}
    for lines in parts:
        text = "".join(lines)
        for path in _paths(lines):
            by_path.setdefault(path, text)
    return by_path


def _paths(lines: list[str]) -> list[str]:
    paths: list[str] = []
    head = lines[0].rstrip("\n") if lines else ""
    if head.startswith("diff --git "):
        names = head[len("diff --git ") :]
        # "a/P b/P": the same path twice is split in the middle (a path may hold " b/" itself).
        if len(names) % 2 == 1:
            half = len(names) // 2
            left, right = names[:half], names[half + 1 :]
            if left[2:] == right[2:]:
                paths.append(_unquote(left)[2:])
        if not paths and " b/" in names:
            left, _, right = names.partition(" b/")
            paths += [_unquote(left)[2:], _unquote("b/" + right)[2:]]
    for line in lines[1:12]:  # the extended header and the ---/+++ lines come first
        for prefix, strip in (("--- ", 2), ("+++ ", 2), ("rename from ", 0), ("rename to ", 0)):
            if line.startswith(prefix):
                name = _unquote(line[len(prefix) :].rstrip("\n").split("\t")[0])
                if name != "/dev/null":
                    paths.append(name[strip:] if strip else name)
    return paths


def _unquote(name: str) -> str:
    # git quotes paths with unusual characters ("a/x y"); the escapes inside are left as they are
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] == '"' else name


class DiffView(Widget):
    DEFAULT_CSS = """
    DiffView {
        layout: vertical;
        height: 1fr;
        & > #diff-totals { height: 1; padding: 0 1; background: $boost; }
        & > #diff-body { layout: vertical; height: 1fr; }
        & #diff-files { height: auto; max-height: 8; scrollbar-size-vertical: 1; }
        & #diff-patch {
            height: 1fr;
            background: $surface;
            border-top: solid $primary-darken-2;
            scrollbar-size: 1 1;
        }
        & #diff-patch-body { width: auto; min-width: 100%; }
        &.-side > #diff-body { layout: horizontal; }
        &.-side #diff-files { height: 1fr; max-height: 100%; width: 40%; max-width: 60; }
        &.-side #diff-patch { border-top: none; border-left: solid $primary-darken-2; }
        &.-empty > #diff-body { display: none; }
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.changes: ChangeSet | None = None
        self.files: list[FileChange] = []
        self.parts: dict[str, str] = {}
        #: The diff text shown now (the selected file's part).
        self.shown_patch = ""
        self.shown_path: str | None = None

    def compose(self) -> ComposeResult:
        yield Label("loading…", id="diff-totals")
        with Horizontal(id="diff-body"):
            yield DataTable(id="diff-files", cursor_type="row", zebra_stripes=False)
            with ScrollableContainer(id="diff-patch"):
                yield Static("", id="diff-patch-body")

    def on_mount(self) -> None:
        table = self.query_one("#diff-files", DataTable)
        table.add_column("", key="status", width=1)
        table.add_column("+", key="added", width=5)
        table.add_column(MINUS, key="removed", width=5)
        table.add_column("File", key="path")
        self.add_class("-empty")

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= SIDE_BY_SIDE_WIDTH, "-side")

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#diff-files", DataTable)

    def focus_files(self) -> None:
        self.table.focus()

    # -- what it shows -----------------------------------------------------------------------------
    def show(self, changes: ChangeSet | None, *, missing: str = "no changes recorded") -> None:
        """Show this change set (None or empty: say ``missing``)."""
        self.changes = changes
        self.files = list(changes.files) if changes is not None else []
        self.parts = split_patch(changes.patch) if changes is not None and changes.patch else {}
        totals = self.query_one("#diff-totals", Label)
        table = self.table
        keep = self.shown_path
        table.clear()
        if changes is None or not self.files:
            self.set_class(True, "-empty")
            self.shown_patch, self.shown_path = "", None
            totals.update(Text(missing, style="dim italic"))
            return
        self.set_class(False, "-empty")
        line = Text()
        line.append(f"+{changes.added}", "bold green")
        line.append(" ")
        line.append(f"{MINUS}{changes.removed}", "bold red")
        line.append(f"  in {len(self.files)} file{'s' if len(self.files) != 1 else ''}", "bold")
        if changes.truncated:
            line.append("   the patch was cut (too large): some files show no diff", "bold yellow")
        totals.update(line)
        for index, change in enumerate(self.files):
            letter, style = STATUS_STYLE.get(change.status, ("M", "bold yellow"))
            table.add_row(
                Text(letter, style=style),
                Text(f"+{change.added}", style="green"),
                Text(f"{MINUS}{change.removed}", style="red"),
                Text(change.path + ("  (binary)" if change.binary else "")),
                key=str(index),
            )
        index = next((i for i, f in enumerate(self.files) if f.path == keep), 0)
        table.move_cursor(row=index)
        self._show_file(index)

    def select_file(self, delta: int) -> None:
        if not self.files:
            return
        table = self.table
        index = max(0, min(len(self.files) - 1, table.cursor_row + delta))
        table.move_cursor(row=index)
        self._show_file(index)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_file(event.cursor_row)

    def _show_file(self, index: int) -> None:
        if not 0 <= index < len(self.files):
            return
        change = self.files[index]
        body = self.query_one("#diff-patch-body", Static)
        patch = self.parts.get(change.path, "")
        if change.path != self.shown_path:
            self.query_one("#diff-patch", ScrollableContainer).scroll_home(animate=False)
        self.shown_path, self.shown_patch = change.path, patch
        if patch:
            body.update(Syntax(patch, "diff", theme="ansi_dark", background_color="default"))
        elif change.binary:
            body.update(Text(f"{change.path}: binary file, no text diff", style="dim italic"))
        elif self.changes is not None and self.changes.truncated:
            body.update(Text(f"{change.path}: not in the recorded patch (it was cut)", style="yellow"))
        else:
            body.update(Text(f"{change.path}: no diff recorded for this file", style="dim italic"))
