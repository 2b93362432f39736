"""``:`` command mode (k9s style): a one-line prompt; dismisses with what was typed."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input

from tui.screens.help import COMMAND_MODE_HELP

WORDS = [c.split()[0] for c, _ in COMMAND_MODE_HELP]


class CommandLineScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    CommandLineScreen { align: left bottom; background: $background 30%; }
    CommandLineScreen Input { dock: bottom; margin-bottom: 1; border: tall $accent; width: 100%; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="command_line_cancel")]

    def compose(self) -> ComposeResult:
        yield Input(value=":", suggester=SuggestFromList(WORDS, case_sensitive=False), id="command-line")

    def on_mount(self) -> None:
        command_line = self.query_one(Input)
        command_line.border_title = "command mode: " + " ".join(WORDS)
        command_line.cursor_position = 1
        command_line.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip().lstrip(":").strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
