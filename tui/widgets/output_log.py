"""One scrolling output stream: the combined one (every agent, color-coded) or one agent's pane.

Lines arrive by thousands a second, so the pane never renders what it does not show: it keeps its
rows (one per line of output, at most ``max_lines``) as plain data and draws only the visible ones,
through Textual's line API, with a cache of the rows already drawn. New lines are queued and taken
in at most ``FLUSH_HZ`` times a second. Follow mode (``s``) keeps the end in view; scrolling up
while following holds the view still until the end is reached again. Wrap (``w``), timestamps
(``t``) and the search filter (``/``) re-lay the rows the pane holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from itertools import count
from typing import NamedTuple

from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.events import Resize
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui import format as fmt
from tui.state import OutputEntry

FLUSH_HZ = 10
#: A pane taking in this many lines or more per flush scrolls faster than anyone reads: it is
#: redrawn only every HEAVY_FLUSH_EVERY-th flush. Drawing is the TUI's main cost under load, and
#: a key pressed meanwhile waits for the draw in progress.
HEAVY_LINES = 50
HEAVY_FLUSH_EVERY = 3
NAME_WIDTH = 12


class Row(NamedTuple):
    """One screen line: a line of an entry's content (or, wrapped, a piece of one). A tuple of
    plain values, untracked by the garbage collector like the entries."""

    id: int
    entry: OutputEntry
    text: str
    #: False for the second and later pieces of a wrapped line (they get no prefix).
    first: bool = True


class OutputLog(ScrollView, can_focus=True):
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
        super().__init__(id=id, classes=classes)
        #: agent id -> (name, colour); None for a single agent's pane (no name column).
        self.agent_label = agent_label
        self.max_lines = max_lines
        self.timestamps = timestamps
        self.wrap = wrap
        self.auto_scroll = True
        #: Whether the view keeps to the end: cleared only when the user scrolls up, set again when
        #: the end is reached. (Deciding it from the scroll offset at each flush lost follow mode when
        #: a flush came between a resize, which moves the end, and the scroll to the new end.)
        self.pinned = True
        self.search = ""
        self.agent_filter: frozenset[str] | None = None
        #: Lines taken in since the pane was made (what a user could have seen go by).
        self.lines_shown = 0
        self.rows: deque[Row] = deque(maxlen=max_lines)
        self._pending: list[OutputEntry] = []
        self._ticks = 0
        self._ids = count()
        self._widest = 0
        self._strips: LRUCache[int, Strip] = LRUCache(1024)
        self._line_style = Style()

    def on_mount(self) -> None:
        self.set_interval(1 / FLUSH_HZ, self._tick)

    def on_resize(self, event: Resize) -> None:
        if self.wrap:
            self._relayout()
        if self.auto_scroll and self.pinned:
            # A pane that shrinks (the grid gains a pane) keeps its old offset: follow the end again.
            self.scroll_end(animate=False, immediate=False, x_axis=False, force=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value >= self.max_scroll_y:
            self.pinned = True
        elif new_value < old_value:
            # Only the user moves the view up: the pane itself scrolls down, and a clamp after the
            # rows shrank lands on the end.
            self.pinned = False

    def follow_end(self) -> None:
        """Keep to the end from now on (follow mode switched on)."""
        self.pinned = True
        self.scroll_end(animate=False, x_axis=False, force=True)

    @property
    def has_pending(self) -> bool:
        """Lines received but not taken in yet (they are, at the next flush)."""
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
        self.rows.clear()
        self._strips.clear()
        self._widest = 0
        self._pending = [e for e in entries if self.accepts(e)]
        self._flush()

    def clear(self) -> None:
        self.reload(())

    def _tick(self) -> None:
        self._ticks += 1
        if len(self._pending) >= HEAVY_LINES and self._ticks % HEAVY_FLUSH_EVERY:
            return
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        following = self.auto_scroll and self.pinned
        self._append_rows(pending)
        self.lines_shown += len(pending)
        self._update_size()
        if following:
            # force: Textual shows the scrollbar (and allows scrolling) only at the next refresh, so
            # lines that first overflow the pane would otherwise stay below its bottom.
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self.refresh()

    def _append_rows(self, entries: Iterable[OutputEntry]) -> None:
        rows, ids = self.rows, self._ids
        width = self._wrap_width() if self.wrap else 0
        prefix = self._prefix_width()
        widest = self._widest
        for entry in entries:
            content = entry.content.rstrip("\n")
            for line in content.split("\n") if content else ("",):
                line = line.rstrip("\r")
                if width:
                    pieces = self._wrap(line, width)
                    for index, piece in enumerate(pieces):
                        rows.append(Row(next(ids), entry, piece, index == 0))
                else:
                    rows.append(Row(next(ids), entry, line))
                    if len(line) + prefix > widest:
                        widest = len(line) + prefix
        self._widest = widest

    def _relayout(self) -> None:
        entries: list[OutputEntry] = []
        seen: set[int] = set()
        for row in self.rows:
            if id(row.entry) not in seen:
                seen.add(id(row.entry))
                entries.append(row.entry)
        self.rows.clear()
        self._strips.clear()
        self._append_rows(entries)
        self._update_size()

    def _update_size(self) -> None:
        width = self.scrollable_content_region.width if self.wrap else self._widest
        self.virtual_size = Size(width, len(self.rows))

    def _prefix_width(self) -> int:
        width = 9 if self.timestamps else 0
        if self.agent_label is not None:
            width += NAME_WIDTH + 1
        return width

    def _wrap_width(self) -> int:
        return max(10, self.scrollable_content_region.width - self._prefix_width() - 2)

    @staticmethod
    def _wrap(line: str, width: int) -> list[str]:
        if "\x1b" in line:
            return _wrap_ansi(line, width)  # cut by visible characters, escapes kept
        return [line[i : i + width] for i in range(0, len(line), width)] or [""]

    # -- drawing -----------------------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        # The widget's style is worked out from its ancestors on every read: once per pass, not
        # twice per line (it was a tenth of the TUI's time while output streamed).
        self._line_style = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        style = self._line_style
        if index >= len(self.rows):
            return Strip.blank(width, style)
        row = self.rows[index]
        strip = self._strips.get(row.id)
        if strip is None:
            text = self.render_row(row)
            strip = self._strips[row.id] = Strip(list(text.render(self.app.console)), text.cell_len)
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_style(style)

    def render_row(self, row: Row) -> Text:
        entry = row.entry
        line = Text(no_wrap=True, end="")
        if self.timestamps:
            line.append(f"{fmt.clock(entry.emitted_at) if row.first else '':<8} ", "dim")
        if self.agent_label is not None:
            if row.first:
                name, colour = self.agent_label(entry.agent_id)
                line.append(f"{name[:NAME_WIDTH]:<{NAME_WIDTH}} ", f"bold {colour}")
            else:
                line.append(" " * (NAME_WIDTH + 1))
        stderr = entry.stderr
        if stderr:
            line.append("! " if row.first else "  ", "bold red")
        ansi = entry.ansi or "\x1b" in row.text
        body = Text.from_ansi(row.text) if ansi else Text(row.text)
        if stderr and not ansi:
            body.stylize("red")
        if self.search:
            body.highlight_words([self.search], "reverse", case_sensitive=False)
        line.append_text(body)
        return line

    def plain_lines(self) -> list[str]:
        """What the pane holds, as plain text (prefix included), one string per row."""
        return [self.render_row(row).plain for row in self.rows]


def _wrap_ansi(line: str, width: int) -> list[str]:
    """Split a line with ANSI escapes into pieces of ``width`` visible characters; each piece
    carries the escapes that apply inside it (a style cut at a piece's end starts again in the
    next one, as the terminal would show it)."""
    pieces: list[str] = []
    current: list[str] = []
    visible = 0
    active = ""
    i = 0
    while i < len(line):
        if line[i] == "\x1b":
            end = i + 1
            while end < len(line) and not line[end].isalpha():
                end += 1
            code = line[i : end + 1]
            current.append(code)
            active = "" if code in ("\x1b[0m", "\x1b[m") else active + code
            i = end + 1
            continue
        if visible == width:
            pieces.append("".join(current) + "\x1b[0m")
            current, visible = [active], 0
        current.append(line[i])
        visible += 1
        i += 1
    pieces.append("".join(current))
    return pieces
