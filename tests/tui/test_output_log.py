"""Follow mode of the output pane: it keeps to the end until the user scrolls up, whatever comes
between a resize and the scroll it causes."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.pilot import Pilot

from tui.state import OutputEntry
from tui.widgets.output_log import OutputLog


def entries(start: int, count: int) -> list[OutputEntry]:
    return [OutputEntry("a-1", "c-1", n, False, f"line {n}", False, 0) for n in range(start, start + count)]


class LogApp(App[None]):
    CSS = "OutputLog { height: 20; }"

    def compose(self) -> ComposeResult:
        yield OutputLog(timestamps=False)


async def feed(pilot: Pilot[None], log: OutputLog, start: int, count: int) -> None:
    """Lines in, taken in at once (as the pane's timer does), and drawn."""
    log.add(entries(start, count))
    log._flush()
    await pilot.pause()


async def test_a_flush_between_a_resize_and_its_scroll_keeps_following() -> None:
    app = LogApp()
    async with app.run_test(size=(60, 30)) as pilot:
        log = app.query_one(OutputLog)
        await feed(pilot, log, 0, 100)
        assert log.scroll_y == log.max_scroll_y > 0
        # The end moves down without the view moving, as when the pane shrinks (the grid gains a
        # pane) and the scroll to the new end waits for the next refresh. That is no user scroll:
        # lines flushed meanwhile must not end follow mode.
        log._append_rows(entries(100, 5))
        log._update_size()
        await pilot.pause()
        assert log.scroll_y < log.max_scroll_y
        await feed(pilot, log, 105, 5)
        assert log.pinned
        assert log.scroll_y == log.max_scroll_y
        assert log.rows[-1].text == "line 109"


async def test_lines_that_first_overflow_the_pane_are_followed() -> None:
    # A pane without a scrollbar yet refused the scroll to the end: Textual shows the scrollbar only
    # at the next refresh, after the flush had asked (the snapshot CI run caught the last lines cut).
    app = LogApp()
    async with app.run_test(size=(60, 30)) as pilot:
        log = app.query_one(OutputLog)
        await feed(pilot, log, 0, 10)
        assert log.max_scroll_y == 0
        await feed(pilot, log, 10, 15)
        assert log.pinned
        assert log.scroll_y == log.max_scroll_y == 5


async def test_scrolling_up_holds_the_view_until_the_end_is_reached_again() -> None:
    app = LogApp()
    async with app.run_test(size=(60, 30)) as pilot:
        log = app.query_one(OutputLog)
        await feed(pilot, log, 0, 100)
        log.focus()
        await pilot.press("pageup")
        await pilot.pause()
        held = log.scroll_y
        assert held < log.max_scroll_y and not log.pinned
        await feed(pilot, log, 100, 10)
        assert log.scroll_y == held  # new lines do not move a view the user scrolled
        await pilot.press("end")
        await pilot.pause()
        assert log.pinned
        await feed(pilot, log, 110, 10)
        assert log.scroll_y == log.max_scroll_y


async def test_a_pane_under_heavy_flow_redraws_at_a_third_of_the_rate() -> None:
    from tui.widgets.output_log import HEAVY_FLUSH_EVERY, HEAVY_LINES

    app = LogApp()
    async with app.run_test(size=(60, 30)) as pilot:
        log = app.query_one(OutputLog)
        await pilot.pause()
        log._ticks = 0  # the pane's own timer may have ticked already
        # A trickle is taken in at every tick.
        log.add(entries(0, 3))
        log._tick()
        assert not log.has_pending and len(log.rows) == 3
        # A flood waits for every HEAVY_FLUSH_EVERY-th tick.
        log._ticks = 0
        log.add(entries(3, HEAVY_LINES))
        taken = []
        for _ in range(HEAVY_FLUSH_EVERY):
            log._tick()
            taken.append(not log.has_pending)
        assert taken == [False] * (HEAVY_FLUSH_EVERY - 1) + [True]
        assert len(log.rows) == 3 + HEAVY_LINES
