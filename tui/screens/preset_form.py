"""Create or edit a preset: a modal form that validates with PresetCreate and dismisses with one.

Default targets are typed as agent names (comma-separated) and stored as ids; limits take the
same short forms as the command bar (``15m``, ``20k``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from pydantic import ValidationError
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from shared.api import ExecutionConstraints, Preset, PresetCreate
from shared.enums import CommandType
from shared.presets import variables_of
from tui import format as fmt

if TYPE_CHECKING:
    from tui.app import OnsemblApp

FIELD_NAMES = {
    "name": "name",
    "description": "description",
    "type": "type",
    "content": "text",
    "target_agents": "targets",
    "priority": "priority",
    "execution_constraints": "limits",
    "time_limit_ms": "time limit",
    "token_budget": "token budget",
    # pydantic reports the wire (camelCase) names
    "targetAgents": "targets",
    "executionConstraints": "limits",
    "timeLimitMs": "time limit",
    "tokenBudget": "token budget",
}


def plain_errors(error: ValidationError) -> list[str]:
    """Pydantic's errors as "field: what is wrong" in everyday words."""
    lines = []
    for item in error.errors():
        where = " ".join(
            FIELD_NAMES.get(str(part), str(part)) for part in item["loc"] if not isinstance(part, int)
        )
        ctx = item.get("ctx") or {}
        kind = item["type"]
        if kind == "string_too_short":
            what = (
                "is required"
                if ctx.get("min_length") == 1
                else f"needs at least {ctx.get('min_length')} characters"
            )
        elif kind == "string_too_long":
            what = f"is too long (at most {ctx.get('max_length')} characters)"
        elif kind in ("less_than_equal", "less_than"):
            what = f"must be at most {ctx.get('le', ctx.get('lt'))}"
        elif kind in ("greater_than_equal", "greater_than"):
            what = f"must be at least {ctx.get('ge', ctx.get('gt'))}"
        elif kind == "missing":
            what = "is required"
        else:
            what = str(item["msg"]).lower()
        lines.append(f"{where or 'preset'}: {what}")
    return lines


def short_duration(ms: int | None) -> str:
    """Milliseconds back in the form :func:`fmt.parse_duration` reads (``15m``, ``90s``)."""
    if not ms:
        return ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


class PresetFormScreen(ModalScreen[PresetCreate | None]):
    DEFAULT_CSS = """
    PresetFormScreen { align: center middle; }
    PresetFormScreen > VerticalScroll {
        width: 90; max-width: 100%; height: auto; max-height: 100%; padding: 0 1;
        border: thick $primary; background: $surface;
    }
    PresetFormScreen #form-title { text-style: bold; margin-bottom: 1; }
    /* One line per field, no gaps: the whole form fits an 80x24 terminal. */
    PresetFormScreen .row { height: 1; }
    PresetFormScreen Input, PresetFormScreen TextArea, PresetFormScreen SelectCurrent { background: $panel; }
    PresetFormScreen Input:focus, PresetFormScreen TextArea:focus { background: $primary 25%; }
    PresetFormScreen .row Label { width: 12; }
    PresetFormScreen .row Input { width: 1fr; }
    PresetFormScreen .row Select { width: 1fr; }
    PresetFormScreen .row .short { width: 10; margin-right: 2; }
    PresetFormScreen .row .short-label { width: auto; margin-right: 1; }
    PresetFormScreen TextArea { height: 5; }
    PresetFormScreen #form-content-label { margin-top: 1; }
    PresetFormScreen #form-variables { color: $text-muted; height: 1; margin-bottom: 1; }
    PresetFormScreen #form-errors { color: $error; height: auto; }
    PresetFormScreen #form-buttons { height: 1; align-horizontal: right; margin-top: 1; }
    PresetFormScreen Button { margin-left: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="preset_form_cancel"),
        Binding("ctrl+s", "save", "Save", id="preset_form_save"),
    ]

    def __init__(self, preset: Preset | None = None) -> None:
        super().__init__()
        self.preset = preset

    @property
    def onsembl(self) -> OnsemblApp:
        return cast("OnsemblApp", self.app)

    def compose(self) -> ComposeResult:
        preset = self.preset
        hub = self.onsembl.hub
        constraints = preset.execution_constraints if preset else None
        with VerticalScroll():
            yield Label(
                f"Edit preset {preset.name}" if preset else "New preset", id="form-title", markup=False
            )
            with Horizontal(classes="row"):
                yield Label("Name")
                yield Input(preset.name if preset else "", id="form-name", compact=True)
            with Horizontal(classes="row"):
                yield Label("Description")
                yield Input(preset.description if preset else "", id="form-description", compact=True)
            with Horizontal(classes="row"):
                yield Label("Type")
                yield Select(
                    [(t.value, t) for t in CommandType],
                    value=preset.type if preset else CommandType.NATURAL,
                    allow_blank=False,
                    id="form-type",
                    compact=True,
                )
            yield Label(
                "Text (use {{name}} for a value asked when the preset is used)",
                id="form-content-label",
                markup=False,
            )
            yield TextArea(preset.content if preset else "", id="form-content", soft_wrap=True, compact=True)
            yield Static("", id="form-variables", markup=False)
            with Horizontal(classes="row"):
                yield Label("Targets")
                names = ", ".join(hub.agent_name(a) for a in preset.target_agents) if preset else ""
                yield Input(
                    names, placeholder="agent names, comma-separated", id="form-targets", compact=True
                )
            with Horizontal(classes="row"):
                yield Label("Priority")
                yield Input(
                    str(preset.priority if preset else 50), id="form-priority", classes="short", compact=True
                )
                yield Label("Time", classes="short-label")
                time_limit = constraints.time_limit_ms if constraints else None
                yield Input(
                    short_duration(time_limit),
                    placeholder="15m",
                    id="form-time",
                    classes="short",
                    compact=True,
                )
                yield Label("Tokens", classes="short-label")
                budget = constraints.token_budget if constraints else None
                yield Input(
                    str(budget) if budget else "",
                    placeholder="20k",
                    id="form-tokens",
                    classes="short",
                    compact=True,
                )
            yield Static("", id="form-errors", markup=False)
            with Horizontal(id="form-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Save (ctrl+s)", variant="primary", id="save", compact=True)

    def on_mount(self) -> None:
        self.query_one("#form-name", Input).focus()
        self._show_variables()

    @on(TextArea.Changed, "#form-content")
    def _show_variables(self) -> None:
        found = variables_of(self.query_one("#form-content", TextArea).text)
        self.query_one("#form-variables", Static).update(
            f"variables: {', '.join(found)}" if found else "no variables"
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter walks the form like a paper one; the last field saves.
        event.stop()
        self.focus_next()
        if event.input.id == "form-tokens":
            self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def value(self) -> PresetCreate | list[str]:
        """The preset the form describes, or what is wrong with it."""
        problems: list[str] = []

        def text(widget_id: str) -> str:
            return self.query_one(widget_id, Input).value.strip()

        targets: list[str] = []
        for name in filter(None, (part.strip().lstrip("@") for part in text("#form-targets").split(","))):
            agent = self.onsembl.hub.agent_by_name(name)
            if agent is None:
                problems.append(f"targets: there is no agent named {name!r}")
            elif agent.id not in targets:
                targets.append(agent.id)
        priority = 50
        if text("#form-priority"):
            try:
                priority = int(text("#form-priority"))
            except ValueError:
                problems.append("priority: must be a whole number from 0 to 100")
        time_limit = budget = None
        try:
            time_limit = fmt.parse_duration(text("#form-time"))
        except ValueError:
            problems.append("time limit: use a duration like 90s, 15m or 2h")
        try:
            budget = fmt.parse_count(text("#form-tokens"))
        except ValueError:
            problems.append("token budget: use a positive count like 5000 or 20k")
        type_value = self.query_one("#form-type", Select).value
        try:
            constraints = (
                ExecutionConstraints(time_limit_ms=time_limit, token_budget=budget)
                if time_limit or budget
                else None
            )
            preset = PresetCreate(
                name=text("#form-name"),
                description=text("#form-description"),
                type=type_value if isinstance(type_value, CommandType) else CommandType.NATURAL,
                content=self.query_one("#form-content", TextArea).text.strip(),
                target_agents=targets,
                priority=priority,
                execution_constraints=constraints,
            )
        except ValidationError as exc:
            return problems + plain_errors(exc)
        return problems or preset

    def action_save(self) -> None:
        result = self.value()
        if isinstance(result, list):
            self.query_one("#form-errors", Static).update("\n".join(result))
            self.notify(result[0], title="Preset not saved", severity="error")
            return
        self.dismiss(result)
