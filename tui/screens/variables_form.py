"""Using a preset with ``{{variables}}``: one field per variable; dismisses with their values."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from shared.api import Preset
from shared.presets import fill_variables

__all__ = ["VariablesFormScreen", "fill_variables"]


class VariablesFormScreen(ModalScreen[dict[str, str] | None]):
    DEFAULT_CSS = """
    VariablesFormScreen { align: center middle; }
    VariablesFormScreen > VerticalScroll {
        width: 80; max-width: 95%; height: auto; max-height: 90%; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    VariablesFormScreen #preview { color: $text-muted; margin-bottom: 1; }
    VariablesFormScreen Label { margin-top: 1; }
    VariablesFormScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    VariablesFormScreen Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="variables_cancel")]

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.preset = preset

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label(f"[b]{self.preset.name}[/b]  {self.preset.description}")
            yield Static(self.preset.content, id="preview", markup=False)
            for name in self.preset.variables:
                yield Label(name)
                yield Input(placeholder=name, id=f"var-{name}", classes="variable")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Use", variant="primary", id="use")

    def on_mount(self) -> None:
        self.query(Input).first().focus()

    def values(self) -> dict[str, str]:
        return {name: self.query_one(f"#var-{name}", Input).value for name in self.preset.variables}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        inputs = list(self.query(Input))
        index = inputs.index(event.input)
        if index + 1 < len(inputs):
            inputs[index + 1].focus()
        else:
            self._use()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "use":
            self._use()
        else:
            self.dismiss(None)

    def _use(self) -> None:
        values = self.values()
        empty = [name for name, value in values.items() if not value.strip()]
        if empty:
            self.notify(f"fill in: {', '.join(empty)}", severity="warning")
            self.query_one(f"#var-{empty[0]}", Input).focus()
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)
