"""``?``: every key of the screen it was opened from (with its binding id, for remapping), and the
``:`` commands."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Label

COMMAND_MODE_HELP = [
    (":agents", "the control center"),
    (":queue [name]", "the queue of the selected (or named) agent"),
    (":history [text]", "past commands, searchable"),
    (":audit", "the audit trail"),
    (":reports", "investigation reports"),
    (":presets", "saved commands"),
    (":trace <command id>", "the trace tree of a command"),
    (":changes <command id>", "what a command changed"),
    (":open <command id>", "a command's output, trace, report and changes"),
    (":estop", "emergency stop (asks first)"),
    (":quit", "leave the TUI"),
]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 90; max-width: 95%; height: 90%; border: thick $primary; background: $surface; padding: 0 1;
    }
    HelpScreen DataTable { height: 1fr; }
    HelpScreen .title { text-style: bold; color: $accent; margin-top: 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="close_help")]

    def __init__(self, screen: Screen[object]) -> None:
        super().__init__()
        self.source = screen

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Keys of this screen ({type(self.source).__name__})", classes="title")
            yield DataTable(id="keys", cursor_type="row")
            yield Label("Command mode (press :)", classes="title")
            yield DataTable(id="commands", cursor_type="row")

    def on_mount(self) -> None:
        keys = self.query_one("#keys", DataTable)
        keys.add_columns("Key", "Action", "Binding id")
        seen: set[tuple[str, str]] = set()
        for active in self.source.active_bindings.values():
            binding = active.binding
            description = binding.description or binding.action
            if (description, binding.id or "") in seen:
                continue
            seen.add((description, binding.id or ""))
            keys.add_row(self.app.get_key_display(binding), description, binding.id or "")
        commands = self.query_one("#commands", DataTable)
        commands.add_columns("Command", "Shows")
        for command, what in COMMAND_MODE_HELP:
            commands.add_row(command, what)
        keys.focus()
