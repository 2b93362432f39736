"""One scrolling output stream: the combined one (every agent, color-coded) or one agent's pane.

Lines arrive in bursts of thousands per second; they are queued and written at most ``FLUSH_HZ``
times a second, and only the last ``max_lines`` of a burst are rendered (older ones would scroll
out at once). Follow mode (``s``), wrap (``w``), timestamps (``t``) and the search filter (``/``)
re-render what the scrollback holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.text import Text
from textual import on
from textual.events import Resize
from textual.widgets import RichLog

from shared.enums import StreamType
from tui import format as fmt
from tui.state import OutputEntry

FLUSH_HZ = 20


class OutputLog(RichLog):
    DEFAULT_CSS = """
    OutputLog {
        background: $surface;
        scrollbar-size-vertical: 1;
        /* Long lines scroll sideways with left/right (or wrap with w); a horizontal bar would come
           and go with the lines and steal the last line from follow mode. */
        scrollbar-size-horizontal: 0;
        &:focus { background-tint: $foreground 3%; }
    }
    """

    def __init__(
        self,
        *,
        agent_label: Callable[[str], tuple[str, str]] | None = None,
        max_lines: int = 10_000,
        timestamps: bool = True,
        wrap: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            max_lines=max_lines, wrap=wrap, markup=False, highlight=False, id=id, classes=classes
        )
        #: agent id -> (name, colour); None for a single agent's pane (no name column).
        self.agent_label = agent_label
        self.timestamps = timestamps
        self.search = ""
        self.agent_filter: frozenset[str] | None = None
        self.lines_shown = 0
        self._pending: list[OutputEntry] = []
        self._dirty = False

    def on_mount(self) -> None:
        self.set_interval(1 / FLUSH_HZ, self._flush)

    @on(Resize)
    def _follow_after_resize(self, event: Resize) -> None:
        # A pane that shrinks (the grid gains a pane) keeps its old offset: follow the end again.
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    @property
    def has_pending(self) -> bool:
        """Lines received but not drawn yet (they are, at the next flush)."""
        return bool(self._pending)

    # -- feeding -----------------------------------------------------------------------------------
    def accepts(self, entry: OutputEntry) -> bool:
        if self.agent_filter is not None and entry.agent_id not in self.agent_filter:
            return False
        return not self.search or self.search in entry.content.lower()

    def add(self, entries: Iterable[OutputEntry]) -> None:
        accepts = self.accepts
        self._pending.extend(e for e in entries if accepts(e))

    def reload(self, entries: Iterable[OutputEntry]) -> None:
        """Show these lines (the scrollback) again, after a change of filter, wrap or timestamps."""
        self.clear()
        self._pending = [e for e in entries if self.accepts(e)]
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if len(pending) > self.max_lines:  # type: ignore[operator]
            pending = pending[-self.max_lines :]  # type: ignore[operator]
        for entry in pending:
            for line in self.render_entry(entry):
                self.write(line, scroll_end=self.auto_scroll)
        self.lines_shown += len(pending)

    # -- rendering ---------------------------------------------------------------------------------
    def render_entry(self, entry: OutputEntry) -> list[Text]:
        """One Text per line of the entry (an agent may send several lines in one message), each
        with the time, the agent (in the combined stream) and a mark for stderr."""
        prefix = Text(no_wrap=not self.wrap, end="")
        if self.timestamps:
            prefix.append(f"{fmt.clock(entry.emitted_at)} ", "dim")
        if self.agent_label is not None:
            name, colour = self.agent_label(entry.agent_id)
            prefix.append(f"{name[:12]:<12} ", f"bold {colour}")
        stderr = entry.stream is StreamType.STDERR
        if stderr:
            prefix.append("! ", "bold red")
        content = entry.content.rstrip("\n")
        ansi = entry.ansi or "\x1b" in content
        lines: list[Text] = []
        for raw in content.split("\n") if content else [""]:
            body = Text.from_ansi(raw.rstrip("\r")) if ansi else Text(raw.rstrip("\r"))
            if stderr and not ansi:
                body.stylize("red")
            if self.search:
                body.highlight_words([self.search], "reverse", case_sensitive=False)
            line = prefix.copy()
            line.append_text(body)
            lines.append(line)
        return lines
