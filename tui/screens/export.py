"""Export a report to a file: a path and a format; writes the hub's own export of it.

Dismisses with the :class:`Path` written, or None. A failure (missing directory, no permission,
disk full) is shown in the dialog, which stays open so the path can be fixed.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from tui.client.rest import HubError

if TYPE_CHECKING:
    from tui.app import OnsemblApp

FORMATS = {"markdown": ".md", "json": ".json"}


def write_file(path: Path, text: str) -> None:
    """Write through a temporary file beside the target, so a failure never leaves half a report."""
    part = path.with_name(f".{path.name}.part")
    try:
        with open(part, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def explain(error: OSError, path: Path) -> str:
    """An OSError in words a user can act on."""
    if isinstance(error, FileNotFoundError):
        return f"the directory {path.parent} does not exist"
    if isinstance(error, PermissionError):
        return f"permission denied: cannot write in {path.parent}"
    if isinstance(error, IsADirectoryError):
        return f"{path} is a directory; add a file name"
    if isinstance(error, NotADirectoryError):
        return f"{path.parent} is not a directory"
    if error.errno == errno.ENOSPC:
        return f"the disk holding {path.parent} is full"
    if error.errno == errno.EROFS:
        return f"{path.parent} is on a read-only file system"
    return f"cannot write {path}: {error.strerror or error}"


class ExportScreen(ModalScreen[Path | None]):
    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 100%; padding: 0 1;
        border: thick $primary; background: $surface;
    }
    ExportScreen #export-title { margin-bottom: 1; }
    ExportScreen .row { height: auto; margin-bottom: 1; }
    ExportScreen .row > Label { width: 8; }
    ExportScreen RadioSet { layout: horizontal; height: 1; width: 1fr; border: none; padding: 0; }
    ExportScreen RadioSet:focus { border: none; }
    ExportScreen RadioButton { width: auto; margin-right: 2; }
    ExportScreen #export-path { width: 1fr; background: $panel; }
    ExportScreen #export-path:focus { background: $primary 25%; }
    ExportScreen #export-error { color: $error; height: auto; }
    ExportScreen #export-error.-warning { color: $warning; }
    ExportScreen #export-buttons { height: 1; align-horizontal: right; margin-top: 1; }
    ExportScreen Button { margin-left: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="export_cancel"),
        Binding("ctrl+s", "export", "Export", id="export_write"),
    ]

    def __init__(self, report_id: str, path: str | None = None, fmt: str = "markdown") -> None:
        super().__init__()
        self.report_id = report_id
        self.fmt = fmt if fmt in FORMATS else "markdown"
        self.initial_path = path or f"./report-{report_id[:8]}{FORMATS[self.fmt]}"
        #: The path the user was warned exists; a second Export of the same path overwrites it.
        self._overwrite: Path | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"[b]Export report {self.report_id[:8]}[/b]", id="export-title")
            with Horizontal(classes="row"):
                yield Label("Format")
                with RadioSet(id="export-format"):
                    yield RadioButton("Markdown", value=self.fmt == "markdown", id="format-markdown")
                    yield RadioButton("JSON", value=self.fmt == "json", id="format-json")
            with Horizontal(classes="row"):
                yield Label("File")
                yield Input(self.initial_path, id="export-path", compact=True)
            yield Static("", id="export-error", markup=False)
            with Horizontal(id="export-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Export (ctrl+s)", variant="primary", id="export", compact=True)

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()

    @on(RadioSet.Changed)
    def _format_changed(self, event: RadioSet.Changed) -> None:
        fmt = "json" if event.pressed.id == "format-json" else "markdown"
        if fmt == self.fmt:
            return
        path_input = self.query_one("#export-path", Input)
        old_ext, new_ext = FORMATS[self.fmt], FORMATS[fmt]
        # Follow the format with the extension, unless the user chose another one of their own.
        if path_input.value.endswith(old_ext):
            path_input.value = path_input.value[: -len(old_ext)] + new_ext
        self.fmt = fmt
        self._overwrite = None

    @on(Input.Changed, "#export-path")
    def _path_changed(self) -> None:
        self._overwrite = None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_export()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export":
            self.action_export()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def show_error(self, message: str, *, warning: bool = False) -> None:
        error = self.query_one("#export-error", Static)
        error.set_class(warning, "-warning")
        error.update(message)

    def action_export(self) -> None:
        raw = self.query_one("#export-path", Input).value.strip()
        if not raw:
            self.show_error("enter a file name")
            return
        path = Path(raw).expanduser().absolute()
        if path.is_dir():
            self.show_error(f"{path} is a directory; add a file name")
            return
        if path.exists() and self._overwrite != path:
            self._overwrite = path
            self.show_error(f"{path} exists: press Export again to replace it", warning=True)
            return
        self.write(path, self.fmt)

    @work(exclusive=True, group="export")
    async def write(self, path: Path, fmt: str) -> None:
        self.show_error("exporting ...", warning=True)
        self.query_one("#export", Button).disabled = True
        try:
            text = await cast("OnsemblApp", self.app).api.export_report(self.report_id, fmt)
            await asyncio.to_thread(write_file, path, text)
        except HubError as exc:
            self.show_error(f"the hub could not export the report: {exc.message}")
        except OSError as exc:
            self.show_error(explain(exc, path))
        else:
            self.dismiss(path)
            return
        self.query_one("#export", Button).disabled = False
