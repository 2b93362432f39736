"""Snapshots of every screen at 80x24 and 160x48, with the scene's realistic data from a live hub.

Times the hub stamps (when a command was created) differ from run to run, so clock and date
formatting is pinned here; everything the agents report is fixed by the scene. Update with
``pytest tests/tui/test_snapshots.py --snapshot-update`` after a deliberate change, and look at the
report (``snapshot_report.html``) before committing."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from shared.api import AuditLog, Command, Page
from tests.harness import HubProcess, async_wait_until
from tests.tui.conftest import make_app
from tests.tui.scene import INVESTIGATION, T0, Scene
from tui import format as fmt
from tui.app import OnsemblApp
from tui.client.rest import HubApi
from tui.screens.export import ExportScreen
from tui.screens.preset_form import PresetFormScreen
from tui.screens.report_view import ReportScreen
from tui.widgets.output_log import OutputLog

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: About 90 s: CI runs them as their own step (``python3 dev.py test -m slow``).
pytestmark = pytest.mark.slow

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


@pytest.fixture(scope="module")
def scene(hub: HubProcess) -> Iterator[Scene]:
    started = Scene(hub).start()
    yield started
    started.close()


def pin_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clock, dates, durations that tick and ids, as every snapshot (and docs/screenshots.py) shows
    them."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(fmt, "clock", lambda ms: "09:41:00" if ms else "-")
    monkeypatch.setattr(fmt, "stamp", lambda ms: "2026-11-25 09:41:00" if ms else "-")
    monkeypatch.setattr(fmt, "since", lambda ms, now=None: "5m ago" if ms else "-")
    duration = fmt.duration
    monkeypatch.setattr(fmt, "uptime", lambda seconds, reported_ms, now=None: duration(seconds))
    monkeypatch.setattr(fmt, "short_stamp", lambda ms: "11-25 09:41" if ms else "-")
    monkeypatch.setattr(fmt, "short_id", lambda value: "c0ffee00" if value else "")


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_formats(monkeypatch)


@pytest.fixture(autouse=True)
def stable_ids(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's report export names the command by its (random) id: name it by its text."""
    export = HubApi.export_report

    async def stable_export(self: HubApi, report_id: str, fmt_name: str) -> str:
        text = await export(self, report_id, fmt_name)
        for content, command_id in scene.commands.items():
            text = text.replace(command_id, f"<{content[:20]}>")
        return text

    monkeypatch.setattr(HubApi, "export_report", stable_export)

    audit = HubApi.audit

    async def stable_audit(self: HubApi, **filters: Any) -> Page[AuditLog]:
        page = await audit(self, **filters)
        for item in page.items:
            item.details = json.loads(UUID.sub("<id>", json.dumps(item.details)))
        return page

    monkeypatch.setattr(HubApi, "audit", stable_audit)

    command = HubApi.command

    async def stable_command(self: HubApi, command_id: str) -> Command:
        record = await command(self, command_id)
        for execution in record.executions:  # the hub's own clock: pinned like the others
            if execution.started_at:
                execution.started_at = T0
            if execution.completed_at:
                execution.completed_at = T0 + 42_000
        return record

    monkeypatch.setattr(HubApi, "command", stable_command)
    monkeypatch.setattr(fmt, "full_id", lambda value: "c0ffee00-0000-0000-0000-000000000000")


def scene_app(hub: HubProcess) -> OnsemblApp:
    return make_app(hub, hub_label="hub.example.com:8700")


async def loaded(pilot: Any, scene: Scene) -> OnsemblApp:
    app: OnsemblApp = pilot.app
    claude = scene.agent_id("claude-main")
    await async_wait_until(
        lambda: (
            len(app.hub.agents) >= len(scene.agents)
            and app.hub.queues.get(claude) is not None
            and sum(1 for e in app.hub.output) >= 14
            and app.hub.waiting_input
            and app.presets
        ),
        20,
        "the scene in the TUI",
    )
    return app


def run(
    snap_compare: Any, hub: HubProcess, size: tuple[int, int], steps: Callable[[Any], Awaitable[None]]
) -> None:
    async def run_before(pilot: Any) -> None:
        await steps(pilot)
        app: OnsemblApp = pilot.app
        await pilot.pause()  # notifications still in the message queue land before they are cleared

        def followed() -> bool:
            logs = [log for log in app.screen.query(OutputLog) if log.size.height > 0]
            return all(not log.has_pending and log.scroll_y >= log.max_scroll_y for log in logs)

        def idle() -> bool:
            return all(w.is_finished for w in app.workers if w.name != "hub-stream")

        await async_wait_until(idle, 15, "the screen's loading done")
        await pilot.pause()

        # Every pane shows its last lines (follow mode) once the layout settled.
        try:
            await async_wait_until(followed, 20, "the output panes at their ends")
        except AssertionError as error:
            states = [
                f"{log.id}: pending={log.has_pending} pinned={log.pinned} y={log.scroll_y}/{log.max_scroll_y}"
                f" rows={len(log.rows)} size={log.size}"
                for log in app.screen.query(OutputLog)
            ]
            raise AssertionError(f"{error}: {states}") from None
        app.clear_notifications()
        for field in app.screen.query("Input, TextArea"):
            field.cursor_blink = False  # type: ignore[attr-defined]  # a blinking cursor is timing
        await pilot.pause()

    assert snap_compare(scene_app(hub), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_control_center(snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]) -> None:
    async def steps(pilot: Any) -> None:
        await loaded(pilot, scene)
        await pilot.press("1")

    run(snap_compare, hub, size, steps)


@pytest.mark.parametrize("size", SIZES)
def test_control_center_grid(snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]) -> None:
    async def steps(pilot: Any) -> None:
        await loaded(pilot, scene)
        await pilot.press("g")

    run(snap_compare, hub, size, steps)


@pytest.mark.parametrize("size", SIZES)
def test_queue(snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]) -> None:
    async def steps(pilot: Any) -> None:
        app = await loaded(pilot, scene)
        app.open_queue(scene.agent_id("claude-main"))
        await async_wait_until(lambda: app.screen.queue is not None, 10, "the queue")  # type: ignore[attr-defined]

    run(snap_compare, hub, size, steps)


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]) -> None:
    async def steps(pilot: Any) -> None:
        await loaded(pilot, scene)
        await pilot.press("question_mark")

    run(snap_compare, hub, size, steps)


@pytest.mark.parametrize("size", SIZES)
def test_emergency_stop_confirmation(
    snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]
) -> None:
    async def steps(pilot: Any) -> None:
        await loaded(pilot, scene)
        await pilot.press("ctrl+x")

    run(snap_compare, hub, size, steps)


@pytest.mark.parametrize("size", SIZES)
def test_approval(snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]) -> None:
    async def steps(pilot: Any) -> None:
        app = await loaded(pilot, scene)
        app.ask_approval(next(iter(app.hub.waiting_input.values())))

    run(snap_compare, hub, size, steps)


@pytest.mark.parametrize("size", SIZES)
def test_command_mode(snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]) -> None:
    async def steps(pilot: Any) -> None:
        await loaded(pilot, scene)
        await pilot.press("colon", "h", "i")

    run(snap_compare, hub, size, steps)


def screen_test(name: str, open_screen: Callable[[OnsemblApp, Scene], object]) -> Any:
    @pytest.mark.parametrize("size", SIZES)
    def test(snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]) -> None:
        async def steps(pilot: Any) -> None:
            app = await loaded(pilot, scene)
            open_screen(app, scene)
            await pilot.pause()

        run(snap_compare, hub, size, steps)

    test.__name__ = f"test_{name}"
    return test


def _investigation(scene: Scene) -> str:
    return scene.commands[INVESTIGATION.key]


test_history = screen_test("history", lambda app, scene: app.open_history())
test_reports = screen_test("reports", lambda app, scene: app.open_reports())
test_report_view = screen_test(
    "report_view", lambda app, scene: app.push_screen(ReportScreen("report-login-flaky"))
)
test_export = screen_test("export", lambda app, scene: app.push_screen(ExportScreen("report-login-flaky")))
test_presets = screen_test("presets", lambda app, scene: app.open_presets())
test_preset_form = screen_test(
    "preset_form", lambda app, scene: app.push_screen(PresetFormScreen(app.presets[0]))
)
test_variables_form = screen_test("variables_form", lambda app, scene: app.use_preset(app.presets[0]))
test_trace = screen_test("trace", lambda app, scene: app.open_trace(_investigation(scene)))
test_changes = screen_test("changes", lambda app, scene: app.open_changes(_investigation(scene)))
test_command_detail = screen_test(
    "command_detail", lambda app, scene: app.open_command(_investigation(scene))
)


@pytest.mark.parametrize("size", SIZES)
def test_audit(snap_compare: Any, hub: HubProcess, scene: Scene, size: tuple[int, int]) -> None:
    async def steps(pilot: Any) -> None:
        app = await loaded(pilot, scene)
        app.open_audit()
        await pilot.pause()
        # Only the scene's commands: how many TUIs connected before depends on the tests run.
        app.screen.query_one("#audit-action").value = "command."
        app.screen.query_one("#audit-action").focus()
        await pilot.press("enter")

    run(snap_compare, hub, size, steps)
