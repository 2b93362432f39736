"""The frame the history, audit and reports screens share: a filter row, a table that holds one
page of the hub's records, a status line ("page 2/7 · 312 commands"), the paging keys and live
reloads. Subclasses say which columns, how to fetch a page and how to draw a row."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.suggester import SuggestFromList
from textual.timer import Timer
from textual.widgets import DataTable, Input, Label, Select

from shared.api import Page
from tui.client.rest import HubError
from tui.screens.base import BaseScreen

PAGE_SIZE = 50
#: Live reloads (new audit entries, new commands) at most this often: a busy hub sends many.
RELOAD_INTERVAL_S = 1.0

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_AGO_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def parse_when(text: str, *, end_of_day: bool = False, now: float | None = None) -> int | None:
    """``2h``/``30m``/``1d``/``1w`` ago, or a local ``YYYY-MM-DD[ HH:MM[:SS]]`` -> epoch ms.

    Empty -> None. With ``end_of_day`` a bare date means the midnight after it, so that "until
    2025-05-01" includes that day. ValueError (with a message for the user) when unreadable.
    """
    text = text.strip().lower()
    if not text:
        return None
    match = _AGO.match(text)
    if match:
        seconds = float(match.group(1)) * _AGO_UNITS[match.group(2)]
        return int(((now if now is not None else time.time()) - seconds) * 1000)
    for pattern in _DATE_FORMATS:
        try:
            when = datetime.strptime(text, pattern)
        except ValueError:
            continue
        if end_of_day and pattern == "%Y-%m-%d":
            when += timedelta(days=1)
        return int(when.timestamp() * 1000)
    raise ValueError(f"{text!r}: use an age like 30m, 2h, 1d or a date like 2025-05-01")


def one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


class PagedTable(DataTable[Any]):
    """pagedown on the last row (pageup on the first) turns the hub's page, as in a pager."""

    def action_page_down(self) -> None:
        if self.row_count == 0 or self.cursor_row >= self.row_count - 1:
            screen = self.screen
            if isinstance(screen, PagedListScreen):
                screen.action_next_page()
                return
        super().action_page_down()

    def action_page_up(self) -> None:
        if self.row_count == 0 or self.cursor_row <= 0:
            screen = self.screen
            if isinstance(screen, PagedListScreen):
                screen.action_previous_page(to_last_row=True)
                return
        super().action_page_up()


class PagedListScreen(BaseScreen):
    """A filter row, one page of records in a table, paging keys. Subclasses fill in the blanks."""

    DEFAULT_CSS = """
    PagedListScreen .list-title { height: 1; padding: 0 1; background: $boost; }
    PagedListScreen .filters { height: 1; margin: 0 0 1 0; }
    PagedListScreen .filters Input { width: 1fr; margin-right: 1; background: $panel; }
    PagedListScreen .filters Input:focus { background: $primary 25%; }
    PagedListScreen .filters Select { width: 20; margin-right: 1; }
    PagedListScreen .filters .narrow { width: 12; }
    PagedListScreen PagedTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave", "Back", id="back"),
        Binding("slash", "focus_filter", "Filter", id="list_filter"),
        Binding("n", "next_page", "Next page", id="list_next_page"),
        Binding("p", "previous_page", "Prev page", id="list_previous_page"),
        Binding("ctrl+r", "reload", "Reload", id="list_reload"),
    ]
    #: "commands", "entries", ... for the status line.
    NOUN = "records"
    TITLE_TEXT = ""
    #: A column that is not the last one but should take the width left over by the others.
    FLEX_COLUMN: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.page = 0
        self.total = 0
        self.items: list[Any] = []
        self.loaded = False
        self._last_load = 0.0
        self._reload_timer: Timer | None = None
        #: After a backwards page turn with pageup, the cursor lands on the page's last row.
        self._cursor_to_end = False

    # -- what subclasses provide -------------------------------------------------------------------
    def compose_filters(self) -> ComposeResult:
        yield from ()

    def add_columns(self, table: DataTable[Any]) -> None:
        raise NotImplementedError

    async def fetch(self, offset: int, limit: int) -> Page[Any]:
        raise NotImplementedError

    def row(self, item: Any) -> tuple[Sequence[Any], str]:
        """The cells of one record and its row key."""
        raise NotImplementedError

    def filtered(self) -> bool:
        """True when any filter narrows the list (live reloads only happen on an unfiltered page 1)."""
        return False

    def read_filters(self) -> bool:
        """Read the filter widgets into the query; False (after telling the user why) if one is bad."""
        return True

    def open_item(self, item: Any) -> None:
        """Enter on a row."""

    # -- layout ------------------------------------------------------------------------------------
    def compose_body(self) -> ComposeResult:
        yield Label(self.TITLE_TEXT, classes="list-title", id="list-title")
        with Horizontal(classes="filters"):
            yield from self.compose_filters()
        yield PagedTable(id="list", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(PagedTable)
        self.add_columns(table)
        table.focus()
        self.load()
        self.call_after_refresh(self.fit_flex_column)

    def on_resize(self) -> None:
        self.call_after_refresh(self.fit_flex_column)

    def fit_flex_column(self) -> None:
        """Give FLEX_COLUMN what the other columns leave, so the columns after it stay on screen."""
        if self.FLEX_COLUMN is None:
            return
        table = self.query_one(PagedTable)
        flex = next((c for c in table.columns.values() if c.key.value == self.FLEX_COLUMN), None)
        if flex is None or not table.size.width:
            return
        others = sum(c.get_render_width(table) for c in table.columns.values() if c is not flex)
        spare = table.size.width - others - 2 * table.cell_padding - 2  # 2: the vertical scrollbar
        if flex.width == max(16, spare) and not flex.auto_width:
            return
        flex.auto_width = False
        flex.width = max(16, spare)
        # DataTable has no public way to resize a column: drop its cached lines and recompute its size.
        table._clear_caches()
        table._require_update_dimensions = True
        table.refresh()

    # -- loading -----------------------------------------------------------------------------------
    @work(exclusive=True, group="list-load")
    async def load(self) -> None:
        self._last_load = time.monotonic()
        self.show_status("loading ...")
        try:
            page = await self.fetch(self.page * PAGE_SIZE, PAGE_SIZE)
        except HubError as exc:
            self.show_status(f"[b red]{exc.message}[/]")
            self.notify(exc.message, title=self.TITLE_TEXT or "List", severity="error")
            return
        if not page.items and page.total and self.page > 0:
            # The list shrank under us (a filter, a prune): show its new last page instead.
            self.page = max(0, math.ceil(page.total / PAGE_SIZE) - 1)
            self.load()
            return
        self.show_page(page)

    def show_page(self, page: Page[Any]) -> None:
        table = self.query_one(PagedTable)
        keep = self.selected_key
        self.items = list(page.items)
        self.total = page.total
        self.loaded = True
        table.clear()
        for item in self.items:
            cells, key = self.row(item)
            table.add_row(*cells, key=key)
        if self._cursor_to_end and self.items:
            table.move_cursor(row=len(self.items) - 1)
        elif keep is not None and keep in table.rows:
            table.move_cursor(row=table.get_row_index(keep))
        self._cursor_to_end = False
        self.show_status()

    def show_status(self, extra: str = "") -> None:
        pages = max(1, math.ceil(self.total / PAGE_SIZE))
        noun = self.NOUN if self.total != 1 else self.NOUN.rstrip("s")
        text = f"[b]{self.TITLE_TEXT}[/b]  page {self.page + 1}/{pages} · {self.total} {noun}"
        if self.filtered():
            text += " (filtered)"
        if extra:
            text += f"  {extra}"
        self.query_one("#list-title", Label).update(text)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / PAGE_SIZE))

    def reload_soon(self) -> None:
        """A live reload, at most once per RELOAD_INTERVAL_S; the last change is never dropped."""
        if self._reload_timer is not None:
            return
        wait = self._last_load + RELOAD_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self.load()
        else:
            self._reload_timer = self.set_timer(wait, self._timed_reload)

    def _timed_reload(self) -> None:
        self._reload_timer = None
        self.load()

    @property
    def live(self) -> bool:
        """Whether new records would show on this page: the newest page, with nothing filtered."""
        return self.page == 0 and not self.filtered()

    # -- selection ---------------------------------------------------------------------------------
    @property
    def selected_key(self) -> str | None:
        table = self.query_one(PagedTable)
        if not table.row_count or not 0 <= table.cursor_row < table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @property
    def selected(self) -> Any | None:
        table = self.query_one(PagedTable)
        if not table.row_count or not 0 <= table.cursor_row < len(self.items):
            return None
        return self.items[table.cursor_row]

    # -- actions -----------------------------------------------------------------------------------
    def action_next_page(self) -> None:
        if self.page + 1 < self.pages:
            self.page += 1
            self.query_one(PagedTable).move_cursor(row=0)
            self.load()
        else:
            self.notify("this is the last page", timeout=2)

    def action_previous_page(self, to_last_row: bool = False) -> None:
        if self.page > 0:
            self.page -= 1
            self._cursor_to_end = to_last_row
            self.query_one(PagedTable).move_cursor(row=0)
            self.load()
        else:
            self.notify("this is the first page", timeout=2)

    def action_reload(self) -> None:
        self.load()

    def action_focus_filter(self) -> None:
        inputs = self.query(".filters Input")
        if inputs:
            inputs.first().focus()

    def action_leave(self) -> None:
        # esc in a filter goes back to the table first, like k9s; esc on the table leaves.
        if isinstance(self.focused, (Input, Select)):
            self.query_one(PagedTable).focus()
        else:
            self.onsembl.go_back()

    def apply_filters(self) -> bool:
        if not self.read_filters():
            return False
        self.page = 0
        self.load()
        return True

    @on(Input.Submitted, ".filters Input")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.apply_filters():
            self.query_one(PagedTable).focus()

    @on(Select.Changed, ".filters Select")
    def _filter_selected(self, event: Select.Changed) -> None:
        event.stop()
        if self.is_mounted and self.loaded:
            self.apply_filters()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        item = self.selected
        if item is not None:
            self.open_item(item)

    def read_time_range(self, since_id: str, until_id: str) -> tuple[int | None, int | None] | None:
        try:
            since = parse_when(self.query_one(since_id, Input).value)
            until = parse_when(self.query_one(until_id, Input).value, end_of_day=True)
        except ValueError as exc:
            self.notify(str(exc), title="Time range", severity="error")
            return None
        if since is not None and until is not None and until <= since:
            self.notify("'until' is before 'since'", title="Time range", severity="error")
            return None
        return since, until

    def read_agent(self, input_id: str) -> tuple[bool, str | None]:
        """The agent named in the input: (ok, agent id or None when empty)."""
        name = self.query_one(input_id, Input).value.strip().lstrip("@")
        if not name:
            return True, None
        agent = self.onsembl.hub.agent_by_name(name)
        if agent is None:
            self.notify(f"there is no agent named {name!r}", title="Filter", severity="error")
            return False, None
        return True, agent.id

    def agent_suggester(self) -> SuggestFromList:
        return SuggestFromList([a.name for a in self.onsembl.hub.sorted_agents()], case_sensitive=False)
