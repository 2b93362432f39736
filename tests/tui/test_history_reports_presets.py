"""History, audit, reports and presets screens against a live hub with real wrapper agents (and the
fake claude CLI for an INVESTIGATE report), driven from the keyboard with Pilot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from textual.widgets import DataTable, Input, MarkdownViewer, Static, TextArea

from tests.harness import AgentProcess, HubProcess, start_agent, wait_command
from tests.tui.conftest import make_app, wait_for
from tui.app import OnsemblApp
from tui.screens.audit import AuditScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.export import ExportScreen
from tui.screens.paged import PagedListScreen, parse_when
from tui.screens.preset_form import PresetFormScreen
from tui.screens.presets import PresetsScreen
from tui.screens.report_view import ReportScreen
from tui.screens.reports import ReportsScreen
from tui.screens.variables_form import VariablesFormScreen


async def command_mode(pilot: Any, line: str) -> None:
    await pilot.press("colon", *line, "enter")


def send(client: httpx.Client, content: str, agent_id: str, **extra: object) -> dict[str, Any]:
    response = client.post("/commands", json={"content": content, "targetAgents": [agent_id], **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def rows(screen: Any) -> list[list[str]]:
    table = screen.query_one(DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def column(screen: Any, name: str) -> list[str]:
    table = screen.query_one(DataTable)
    return [str(cell) for cell in table.get_column(name)]


def listed(screen: PagedListScreen) -> list[str]:
    return [getattr(item, "id", None) or "" for item in screen.items]


async def filter_by(pilot: Any, input_id: str, text: str) -> None:
    """Type into a filter field the way a user does: focus it, replace its text, Enter."""
    field = pilot.app.screen.query_one(input_id, Input)
    field.focus()
    await pilot.pause()
    field.value = ""
    await pilot.press(*text, "enter")


async def open_app(app: OnsemblApp) -> None:
    await wait_for(lambda: len(app.hub.agents) >= 2, 15, "agents listed")


def test_time_range_words() -> None:
    now = 1_700_000_000.0
    assert parse_when("2h", now=now) == int((now - 7200) * 1000)
    assert parse_when("1d", now=now) == int((now - 86400) * 1000)
    assert parse_when("") is None
    day = parse_when("2025-05-01")
    assert day is not None and parse_when("2025-05-01", end_of_day=True) == day + 86_400_000
    try:
        parse_when("yesterday")
    except ValueError as exc:
        assert "2h" in str(exc)
    else:
        raise AssertionError("'yesterday' was accepted")


async def test_history_search_paging_and_live_status(
    hub: HubProcess, agents: dict[str, AgentProcess]
) -> None:
    alpha, beta = agents["alpha"], agents["beta"]
    offline_id, _ = hub.agent_token("gamma")  # exists, never connected: commands wait as PENDING
    with hub.client() as client:
        needle = send(client, "echo needle-7f3", alpha.agent_id)
        hay = send(client, "echo haystack-7f3", beta.agent_id)
        # 61 commands that never run: enough for two pages of 50.
        for n in range(61):
            send(client, f"echo pageitem-{n:02d}", offline_id, queueIfOffline=True)
        wait_command(client, needle["id"])
        wait_command(client, hay["id"])

    app = make_app(hub)
    opened: list[str] = []
    app.open_command = opened.append  # type: ignore[method-assign,assignment]
    async with app.run_test(size=(120, 40)) as pilot:
        await open_app(app)
        await command_mode(pilot, "history")
        screen = app.screen
        assert isinstance(screen, PagedListScreen) and screen.TITLE_TEXT == "History"
        await wait_for(lambda: screen.loaded and screen.total >= 63, 10, "history loaded")

        # Search by text finds the past command, and not the other one.
        await pilot.press("slash")
        assert screen.focused is screen.query_one("#history-text", Input)
        await pilot.press(*"needle", "enter")
        await wait_for(lambda: listed(screen) == [needle["id"]], 10, "only the needle command")
        assert "COMPLETED" in rows(screen)[0][2] and "alpha" in rows(screen)[0][3]
        assert "1 command (filtered)" in str(screen.query_one("#list-title").render())
        # Enter on the row opens the command.
        await pilot.press("enter")
        assert opened == [needle["id"]]

        # Agent filter by name: beta ran haystack, not needle.
        await filter_by(pilot, "#history-text", "7f3")
        await wait_for(lambda: len(screen.items) == 2, 10, "both 7f3 commands")
        await filter_by(pilot, "#history-agent", "beta")
        await wait_for(lambda: listed(screen) == [hay["id"]], 10, "beta's command only")

        # An unknown agent or an unreadable time is refused, and the list is not touched.
        await filter_by(pilot, "#history-agent", "nobody")
        await filter_by(pilot, "#history-since", "yesterday")
        assert listed(screen) == [hay["id"]]
        await filter_by(pilot, "#history-agent", "")
        # A time range in the future holds nothing; one hour back holds everything here.
        await filter_by(pilot, "#history-since", "2999-01-01")
        await wait_for(lambda: screen.loaded and screen.total == 0, 10, "nothing in the future")
        await filter_by(pilot, "#history-since", "1h")

        # Paging: 61 matches are two pages.
        await filter_by(pilot, "#history-text", "pageitem")
        await wait_for(lambda: screen.total == 61 and len(screen.items) == 50, 10, "page 1 of pageitems")
        title = screen.query_one("#list-title")
        assert "page 1/2 · 61 commands" in str(title.render())
        first_page = listed(screen)
        await pilot.press("n")
        await wait_for(lambda: screen.page == 1 and len(screen.items) == 11, 10, "page 2")
        assert "page 2/2 · 61 commands" in str(title.render())
        assert not set(listed(screen)) & set(first_page)
        assert column(screen, "text")[-1] == "echo pageitem-00"  # newest first: the oldest is last
        await pilot.press("n")  # no page 3
        assert screen.page == 1
        await pilot.press("p")
        await wait_for(lambda: screen.page == 0 and listed(screen) == first_page, 10, "back to page 1")
        # pagedown at the last row turns the page; pageup on the first row turns it back.
        screen.query_one(DataTable).move_cursor(row=49)
        await pilot.press("pagedown")
        await wait_for(lambda: screen.page == 1 and len(screen.items) == 11, 10, "pagedown to page 2")
        await pilot.press("pageup")
        await wait_for(lambda: screen.page == 0 and len(screen.items) == 50, 10, "pageup to page 1")
        assert screen.query_one(DataTable).cursor_row == 49

        # Live: a listed command's status cell follows its COMMAND_STATUS events (no reload: the
        # list is filtered, so it is only the live path that can change the cell).
        with hub.client() as client:
            slow = send(client, "sleep 2; echo slow-7f3", alpha.agent_id)
        await filter_by(pilot, "#history-text", "slow-7f3")
        await wait_for(lambda: listed(screen) == [slow["id"]], 10, "the slow command listed")
        loads = screen._last_load
        await wait_for(lambda: "COMPLETED" in rows(screen)[0][2], 20, "status cell updated live")
        assert screen._last_load == loads

        # esc in a filter returns to the table; esc on the table leaves the screen.
        await pilot.press("slash")
        await pilot.press("escape")
        assert app.screen is screen and screen.focused is screen.query_one(DataTable)
        await pilot.press("escape")
        assert app.screen is not screen


async def test_audit_lists_and_filters_command_created(
    hub: HubProcess, agents: dict[str, AgentProcess]
) -> None:
    alpha = agents["alpha"]
    app = make_app(hub)
    opened: list[str] = []
    app.open_command = opened.append  # type: ignore[method-assign,assignment]
    async with app.run_test(size=(120, 40)) as pilot:
        await open_app(app)
        await command_mode(pilot, "audit")
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        await wait_for(lambda: screen.loaded, 10, "audit loaded")

        # Live on page 1: a command created now shows up as command.created without a key press.
        with hub.client() as client:
            command = send(client, "echo audited-9c1", alpha.agent_id)

        def entry() -> Any:
            return next(
                (i for i in screen.items if i.action == "command.created" and i.command_id == command["id"]),
                None,
            )

        await wait_for(entry, 10, "the command.created entry, live")
        item = entry()
        assert item.actor == "tester@example.com"
        index = screen.items.index(item)
        assert rows(screen)[index][2] == "command.created" and rows(screen)[index][4] == command["id"][:8]

        # The highlighted entry's details are shown whole; Enter opens its command.
        screen.query_one(DataTable).move_cursor(row=index)
        await pilot.pause()
        assert command["id"] in str(screen.query_one("#audit-detail", Static).render())
        await pilot.press("enter")
        assert opened == [command["id"]]

        # Action prefix and agent filters.
        await filter_by(pilot, "#audit-action", "command.")
        await wait_for(lambda: screen.filtered() and screen.loaded and screen.items, 10, "filtered")
        await wait_for(lambda: all(i.action.startswith("command.") for i in screen.items), 10, "prefix")
        await filter_by(pilot, "#audit-action", "agent.connected")
        await filter_by(pilot, "#audit-agent", "alpha")
        await wait_for(
            lambda: screen.items and all(i.agent_id == alpha.agent_id for i in screen.items), 10, "alpha's"
        )
        assert all(row[3] == "alpha" for row in rows(screen))


async def test_report_listed_live_opened_and_exported(hub: HubProcess, tmp_path: Path) -> None:
    claude = start_agent(hub, "claude-reporter", kind="claude", workdir=tmp_path)
    try:
        app = make_app(hub)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(lambda: app.hub.agent_by_name("claude-reporter"), 15, "agent listed")
            await command_mode(pilot, "reports")
            screen = app.screen
            assert isinstance(screen, ReportsScreen)
            await wait_for(lambda: screen.loaded, 10, "reports loaded")
            with hub.client() as client:
                command = send(
                    client, "why are orders slow scenario:report", claude.agent_id, type="INVESTIGATE"
                )
                wait_command(client, command["id"])
            # It appears without a key press.
            await wait_for(
                lambda: [r for r in screen.items if r.command_id == command["id"]], 15, "report live"
            )
            report = next(r for r in screen.items if r.command_id == command["id"])
            row = rows(screen)[screen.items.index(report)]
            assert row[0] == report.title and row[2] == "claude-reporter"
            assert row[4] == str(len(report.content.findings)) and report.content.findings

            # Search by text.
            await filter_by(pilot, "#reports-text", "no-such-report-title")
            await wait_for(lambda: screen.loaded and screen.total == 0, 10, "no match")
            await filter_by(pilot, "#reports-text", report.title[:12])
            await wait_for(lambda: report.id in listed(screen), 10, "the report found")

            with hub.client() as client:
                expected_md = client.get(f"/reports/{report.id}/export", params={"format": "markdown"}).text
            screen.query_one(DataTable).move_cursor(row=listed(screen).index(report.id))
            await pilot.press("enter")
            view = app.screen
            assert isinstance(view, ReportScreen)
            await wait_for(lambda: view.markdown == expected_md, 10, "the report's markdown")
            assert f"# {report.title}" in view.markdown
            shown = view.query_one(MarkdownViewer).document.source
            assert shown == expected_md

            # Export: a missing directory is reported in the dialog, which stays open.
            await pilot.press("e")
            dialog = app.screen
            assert isinstance(dialog, ExportScreen)
            path_input = dialog.query_one("#export-path", Input)
            assert path_input.value == f"./report-{report.id[:8]}.md"
            path_input.value = str(tmp_path / "missing" / "r.md")
            await pilot.press("enter")
            error = dialog.query_one("#export-error", Static)
            await wait_for(lambda: "does not exist" in str(error.render()), 10, "the error shown")
            assert app.screen is dialog

            # Markdown.
            md_path = tmp_path / "r.md"
            path_input.value = str(md_path)
            await pilot.press("enter")
            await wait_for(lambda: app.screen is view, 10, "dialog closed")
            assert md_path.read_text() == expected_md

            # JSON: choosing the format changes the extension.
            await pilot.press("e")
            json_dialog = app.screen
            assert isinstance(json_dialog, ExportScreen)
            json_dialog.query_one("#export-path", Input).value = str(tmp_path / "r.md")
            await pilot.click("#format-json")
            assert json_dialog.query_one("#export-path", Input).value == str(tmp_path / "r.json")
            await pilot.press("ctrl+s")
            await wait_for(lambda: app.screen is view, 10, "dialog closed")
            body = json.loads((tmp_path / "r.json").read_text())
            assert body["id"] == report.id and body["title"] == report.title
            assert len(body["content"]["findings"]) == len(report.content.findings)

            # An existing file is only replaced on a second Export.
            md_path.write_text("keep me")
            await pilot.press("e")
            again = app.screen
            assert isinstance(again, ExportScreen)
            again.query_one("#export-path", Input).value = str(md_path)
            await pilot.press("enter")
            await wait_for(lambda: "exists" in str(again.query_one("#export-error").render()), 5, "warning")
            assert md_path.read_text() == "keep me"
            await pilot.press("enter")
            await wait_for(lambda: app.screen is view, 10, "dialog closed")
            assert md_path.read_text() == expected_md
    finally:
        claude.stop()


async def test_preset_create_use_edit_delete(hub: HubProcess, agents: dict[str, AgentProcess]) -> None:
    alpha = agents["alpha"]
    app = make_app(hub)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_app(app)
        await command_mode(pilot, "presets")
        screen = app.screen
        assert isinstance(screen, PresetsScreen)

        # New: an empty form is refused with plain words.
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, PresetFormScreen)
        await pilot.press("ctrl+s")
        errors = str(form.query_one("#form-errors", Static).render())
        assert "name: is required" in errors and "text: is required" in errors
        assert app.screen is form

        await pilot.press(*"deploy-svc")
        form.query_one("#form-description", Input).value = "roll a service out"
        form.query_one("#form-content", TextArea).focus()
        await pilot.press(*"deploy {{service}} to {{env}}")
        await pilot.pause()
        assert "service, env" in str(form.query_one("#form-variables", Static).render())
        form.query_one("#form-targets", Input).value = "alpha"
        form.query_one("#form-priority", Input).value = "101"
        form.query_one("#form-time", Input).value = "15m"
        await pilot.press("ctrl+s")
        assert "priority: must be at most 100" in str(form.query_one("#form-errors", Static).render())
        form.query_one("#form-priority", Input).value = "70"
        await pilot.press("ctrl+s")

        await wait_for(lambda: any(p.name == "deploy-svc" for p in app.presets), 10, "preset created")
        preset = next(p for p in app.presets if p.name == "deploy-svc")
        assert preset.variables == ["service", "env"] and preset.target_agents == [alpha.agent_id]
        assert preset.priority == 70 and preset.execution_constraints is not None
        assert preset.execution_constraints.time_limit_ms == 15 * 60_000
        await wait_for(lambda: app.screen is screen and "deploy-svc" in column(screen, "name"), 5, "listed")
        assert column(screen, "variables")[column(screen, "name").index("deploy-svc")] == "service, env"

        # Use: its variables are asked, then the control center's bar holds the filled text.
        screen.query_one(DataTable).move_cursor(row=column(screen, "name").index("deploy-svc"))
        await pilot.press("u")
        assert isinstance(app.screen, VariablesFormScreen)
        await pilot.press(*"api", "enter", *"prod", "enter")
        await wait_for(lambda: app.screen.query("#text"), 5, "the control center")
        assert app.screen.query_one("#text", Input).value == "deploy api to prod"

        # Edit: the form opens with its values; the change reaches the hub.
        await pilot.press("escape")  # out of the command bar, which has the focus now
        await command_mode(pilot, "presets")
        screen = app.screen
        assert isinstance(screen, PresetsScreen)
        await wait_for(lambda: "deploy-svc" in column(screen, "name"), 5, "listed again")
        screen.query_one(DataTable).move_cursor(row=column(screen, "name").index("deploy-svc"))
        await pilot.press("e")
        form = app.screen
        assert isinstance(form, PresetFormScreen)
        assert form.query_one("#form-name", Input).value == "deploy-svc"
        assert form.query_one("#form-targets", Input).value == "alpha"
        assert form.query_one("#form-time", Input).value == "15m"
        assert form.query_one("#form-content", TextArea).text == "deploy {{service}} to {{env}}"
        form.query_one("#form-content", TextArea).text = "deploy {{service}} to {{env}} at {{when}}"
        await pilot.press("ctrl+s")
        with hub.client() as client:

            def edited() -> bool:
                body = client.get(f"/presets/{preset.id}").json()
                return bool(body["variables"] == ["service", "env", "when"])

            await wait_for(edited, 10, "the edit stored")
        await wait_for(
            lambda: next(p for p in app.presets if p.id == preset.id).variables == ["service", "env", "when"],
            5,
            "the app's presets refreshed",
        )

        # Delete, after a confirmation (n keeps it, y deletes it).
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert any(p.id == preset.id for p in app.presets)
        await pilot.press("d", "y")
        await wait_for(lambda: all(p.id != preset.id for p in app.presets), 10, "preset deleted")
        await wait_for(lambda: "deploy-svc" not in column(screen, "name"), 5, "gone from the table")
        with hub.client() as client:
            assert client.get(f"/presets/{preset.id}").status_code == 404
