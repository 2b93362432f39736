"""An agent waits for a tool approval: show what it wants to run; allow or deny."""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from shared.protocol import InputRequiredPayload


class ApprovalScreen(ModalScreen[bool | None]):
    DEFAULT_CSS = """
    ApprovalScreen { align: center middle; }
    ApprovalScreen > Vertical {
        width: 90; max-width: 95%; height: auto; max-height: 90%; padding: 1 2;
        border: thick $warning; background: $surface;
    }
    ApprovalScreen VerticalScroll { height: auto; max-height: 20; background: $panel; padding: 0 1; }
    ApprovalScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ApprovalScreen Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("a", "answer(True)", "Allow", id="approval_allow"),
        Binding("d", "answer(False)", "Deny", id="approval_deny"),
        Binding("escape", "close", "Later", id="approval_later"),
    ]

    def __init__(self, request: InputRequiredPayload) -> None:
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        request = self.request
        with Vertical():
            yield Label(
                f"[b]{request.agent_name or request.agent_id}[/b] asks to use [b]{request.tool_name}[/b]"
            )
            with VerticalScroll():
                yield Static(json.dumps(request.tool_input, indent=2, default=str), markup=False)
            if not request.can_answer:
                yield Label("[i]This agent cannot be answered from here; it was denied already.[/i]")
            with Horizontal():
                yield Button("Later (esc)", id="later")
                yield Button("Deny (d)", variant="error", id="deny", disabled=not request.can_answer)
                yield Button("Allow (a)", variant="success", id="allow", disabled=not request.can_answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "later":
            self.dismiss(None)
        else:
            self.dismiss(event.button.id == "allow")

    def action_answer(self, allow: bool) -> None:
        if self.request.can_answer:
            self.dismiss(allow)

    def action_close(self) -> None:
        self.dismiss(None)
