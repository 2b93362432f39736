"""The command bar: target, verb, text; priority, limits and profile on the line below.

``@name`` in the text targets that agent (several allowed); ``#preset`` alone uses a preset (its
variables are asked for in a form). Tab completes both. Up/down walk the history of sent commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Checkbox, Input, Label, Select

from shared.api import ConstraintProfile
from shared.enums import CommandType
from tui import format as fmt

HISTORY_KEPT = 500


class TargetMode(StrEnum):
    SELECTED = "selected"
    MARKED = "marked"
    ALL = "all"


@dataclass
class CommandDraft:
    text: str
    verb: CommandType = CommandType.NATURAL
    priority: int = 50
    time_limit_ms: int | None = None
    token_budget: int | None = None
    profile_id: str | None = None
    queue_if_offline: bool = False
    mode: TargetMode = TargetMode.SELECTED
    #: Agent names given with @name in the text (the text keeps the rest).
    names: list[str] = field(default_factory=list)
    preset: str | None = None


def split_mentions(text: str) -> tuple[str, list[str]]:
    words, names = [], []
    for word in text.split(" "):
        if word.startswith("@") and len(word) > 1:
            names.append(word[1:])
        else:
            words.append(word)
    return " ".join(words).strip(), names


class MentionSuggester(Suggester):
    """Completes the word being typed: ``@`` agent names, ``#`` preset names (at the start)."""

    def __init__(self, agents: Callable[[], list[str]], presets: Callable[[], list[str]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.agents = agents
        self.presets = presets

    async def get_suggestion(self, value: str) -> str | None:
        head, _, word = value.rpartition(" ")
        if word.startswith("@"):
            names = self.agents()
        elif word.startswith("#") and not head:
            names = self.presets()
        else:
            return None
        typed = word[1:].lower()
        for name in sorted(names, key=str.lower):
            if name.lower().startswith(typed) and name.lower() != typed:
                prefix = f"{head} " if head else ""
                return f"{prefix}{word[0]}{name} "
        return None


class CommandHistory:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.items: list[str] = []
        self.index = 0
        if path is not None:
            with contextlib.suppress(OSError):
                self.items = [line for line in path.read_text().splitlines() if line][-HISTORY_KEPT:]
        self.index = len(self.items)

    def add(self, text: str) -> None:
        if not self.items or self.items[-1] != text:
            self.items.append(text)
            del self.items[:-HISTORY_KEPT]
            if self.path is not None:
                with contextlib.suppress(OSError):
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self.path.write_text("\n".join(self.items) + "\n")
        self.index = len(self.items)

    def back(self) -> str | None:
        if self.index == 0:
            return None
        self.index -= 1
        return self.items[self.index]

    def forward(self) -> str:
        if self.index < len(self.items):
            self.index += 1
        return self.items[self.index] if self.index < len(self.items) else ""


#: Cells for "→ <target>" (a longer name ends in an ellipsis).
TARGET_LABEL_WIDTH = 20


class CommandBar(Vertical):
    DEFAULT_CSS = """
    CommandBar {
        height: auto;
        border-top: hkey $primary 50%;
        padding: 0 1;
        & Horizontal { height: 1; }
        & #target {
            padding-right: 1; color: $accent; text-style: bold; text-wrap: nowrap; text-overflow: ellipsis;
        }
        & #verb { width: 16; }
        & #text { width: 1fr; }
        & .option-label { width: auto; padding: 0 1 0 1; color: $text-muted; }
        & #priority { width: 5; }
        & #time-limit { width: 8; }
        & #token-budget { width: 9; }
        & #profile { width: 22; }
        & #queue-offline { width: auto; }
        &:focus-within { border-top: hkey $accent; }
    }
    """
    BINDINGS = [
        Binding("up", "history_back", "Previous", show=False, id="history_back"),
        Binding("down", "history_forward", "Next", show=False, id="history_forward"),
        Binding("ctrl+o", "cycle_verb", "Verb", id="cycle_verb"),
    ]

    @dataclass
    class Submitted(Message):
        bar: CommandBar
        draft: CommandDraft

        @property
        def control(self) -> CommandBar:
            return self.bar

    @dataclass
    class TargetModeChanged(Message):
        bar: CommandBar
        mode: TargetMode

        @property
        def control(self) -> CommandBar:
            return self.bar

    def __init__(
        self,
        *,
        agents: Callable[[], list[str]],
        presets: Callable[[], list[str]],
        history_file: Path | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._suggester = MentionSuggester(agents, presets)
        self.history = CommandHistory(history_file)
        self.mode = TargetMode.SELECTED
        self.profiles: list[ConstraintProfile] = []

    def compose(self) -> ComposeResult:
        with Horizontal():
            target = Label("→ -", id="target")
            # A fixed width, set here beside the code that relies on it (set_target_label).
            target.styles.width = TARGET_LABEL_WIDTH
            yield target
            yield Select(
                [(t.value.capitalize(), t) for t in CommandType],
                value=CommandType.NATURAL,
                allow_blank=False,
                compact=True,
                id="verb",
            )
            yield Input(
                placeholder="command for the agent(s)   @name to target, #preset, ↑ history",
                suggester=self._suggester,
                compact=True,
                id="text",
            )
        with Horizontal(id="options"):
            yield Label("prio", classes="option-label")
            yield Input("50", restrict=r"[0-9]*", max_length=3, compact=True, id="priority")
            yield Label("time", classes="option-label")
            yield Input(placeholder="15m", compact=True, id="time-limit")
            yield Label("tokens", classes="option-label")
            yield Input(placeholder="50k", compact=True, id="token-budget")
            yield Label("profile", classes="option-label")
            yield Select[str]([], prompt="none", compact=True, id="profile")
            yield Checkbox("queue if offline", compact=True, id="queue-offline")

    @property
    def text_input(self) -> Input:
        return self.query_one("#text", Input)

    def focus_text(self, text: str | None = None) -> None:
        if text is not None:
            self.text_input.value = text
            self.text_input.cursor_position = len(text)
        self.text_input.focus()

    def set_target_label(self, label: str) -> None:
        target = self.query_one("#target", Label)
        text = f"→ {label}"
        if str(target.content) != text:
            # No layout: the label's width is fixed, and a re-layout of the whole screen on every
            # cursor move in the agents table cost 30-100 ms while output streamed.
            target.update(text, layout=False)

    def set_profiles(self, profiles: list[ConstraintProfile]) -> None:
        self.profiles = profiles
        try:
            select = self.query_one("#profile", Select)
            select.set_options([(p.name, p.id) for p in profiles])
        except NoMatches:
            # Called as the bar mounts, its children (and the select's option list, a moment after
            # the select) may not be there yet.
            self.call_after_refresh(self.set_profiles, profiles)
            return
        default = next((p for p in profiles if p.is_default), None)
        if default is not None:
            select.value = default.id
            self._apply_profile(default)

    def fill(
        self,
        text: str,
        verb: CommandType,
        priority: int,
        time_limit_ms: int | None = None,
        token_budget: int | None = None,
    ) -> None:
        """Put a command in the bar (a preset, a history entry) for the user to check and send."""
        self.query_one("#verb", Select).value = verb
        self.query_one("#priority", Input).value = str(priority)
        self.query_one("#time-limit", Input).value = f"{time_limit_ms // 1000}s" if time_limit_ms else ""
        self.query_one("#token-budget", Input).value = str(token_budget) if token_budget else ""
        self.focus_text(text)

    @on(Select.Changed, "#profile")
    def _profile_changed(self, event: Select.Changed) -> None:
        profile = next((p for p in self.profiles if p.id == event.value), None)
        if profile is not None:
            self._apply_profile(profile)

    def _apply_profile(self, profile: ConstraintProfile) -> None:
        limit = profile.time_limit_ms
        self.query_one("#time-limit", Input).value = f"{limit // 1000}s" if limit else ""
        budget = profile.token_budget
        self.query_one("#token-budget", Input).value = str(budget) if budget else ""

    @on(Input.Submitted, "#text")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        raw = event.value.strip()
        if not raw:
            return
        try:
            draft = self._draft(raw)
        except ValueError as exc:
            self.app.notify(str(exc), title="Command not sent", severity="error")
            return
        self.history.add(raw)
        self.post_message(self.Submitted(self, draft))

    def clear_text(self) -> None:
        self.text_input.value = ""

    def _draft(self, raw: str) -> CommandDraft:
        if raw.startswith("#") and " " not in raw:
            return CommandDraft(text="", preset=raw[1:], mode=self.mode)
        text, names = split_mentions(raw)
        if not text:
            raise ValueError("the command has no text (only @names)")
        priority_text = self.query_one("#priority", Input).value or "50"
        priority = int(priority_text)
        if not 0 <= priority <= 100:
            raise ValueError("priority must be 0-100")
        try:
            time_limit = fmt.parse_duration(self.query_one("#time-limit", Input).value)
        except ValueError as exc:
            raise ValueError(f"time limit: {exc} (e.g. 90s, 15m, 2h)") from exc
        try:
            budget = fmt.parse_count(self.query_one("#token-budget", Input).value)
        except ValueError as exc:
            raise ValueError(f"token budget: {exc} (e.g. 5000, 20k)") from exc
        profile = self.query_one("#profile", Select).value
        return CommandDraft(
            text=text,
            verb=self.query_one("#verb", Select).value,  # type: ignore[arg-type]
            priority=priority,
            time_limit_ms=time_limit,
            token_budget=budget,
            profile_id=profile if isinstance(profile, str) else None,
            queue_if_offline=self.query_one("#queue-offline", Checkbox).value,
            mode=self.mode,
            names=names,
        )

    def action_history_back(self) -> None:
        if self.text_input.has_focus:
            previous = self.history.back()
            if previous is not None:
                self.focus_text(previous)

    def action_history_forward(self) -> None:
        if self.text_input.has_focus:
            self.focus_text(self.history.forward())

    def action_cycle_target(self) -> None:
        modes = list(TargetMode)
        self.mode = modes[(modes.index(self.mode) + 1) % len(modes)]
        self.post_message(self.TargetModeChanged(self, self.mode))

    def action_cycle_verb(self) -> None:
        select = self.query_one("#verb", Select)
        verbs = list(CommandType)
        select.value = verbs[(verbs.index(select.value) + 1) % len(verbs)]  # type: ignore[arg-type]
