"""Needs-input alerts and their answer from the TUI; help, command mode, palette, remapped keys."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input

from shared.enums import AgentActivity
from tests.harness import HubProcess, start_agent, wait_command
from tests.tui.conftest import make_app, wait_for
from tui.screens.approval import ApprovalScreen
from tui.screens.control_center import ControlCenterScreen
from tui.screens.help import HelpScreen
from tui.screens.queue import QueueScreen
from tui.widgets.agents_table import AgentsTable
from tui.widgets.hub_header import HubHeader


async def test_waiting_agent_is_highlighted_rings_once_and_is_answered(
    hub: HubProcess, tmp_path: Path
) -> None:
    agent = start_agent(hub, "claude-asks", kind="claude", workdir=tmp_path)
    app = make_app(hub, bell=True)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(lambda: agent.agent_id in app.hub.agents, 15, "agent listed")
            with hub.client() as client:
                command = client.post(
                    "/commands",
                    json={
                        "content": "delete the temp files scenario:permission",
                        "targetAgents": [agent.agent_id],
                    },
                ).json()
            await wait_for(lambda: agent.agent_id in app.hub.waiting_input, 20, "the approval request")
            await wait_for(
                lambda: app.hub.agents[agent.agent_id].activity is AgentActivity.WAITING_INPUT,
                10,
                "WAITING_INPUT",
            )
            await pilot.pause()
            header = app.screen.query_one(HubHeader)
            assert header.needs_input == 1 and "NEED INPUT" in str(header.render())
            table = app.screen.query_one(AgentsTable)
            assert "NEEDS INPUT" in str(table.get_cell(agent.agent_id, "activity"))
            assert bells == [1]
            table.select_agent(agent.agent_id)
            await pilot.press("y")
            await wait_for(lambda: isinstance(app.screen, ApprovalScreen), 5, "the approval dialog")
            await pilot.press("a")
            with hub.client() as client:
                assert wait_command(client, command["id"], 30)["status"] == "COMPLETED"
                audit = client.get("/audit-logs", params={"commandId": command["id"]}).json()["items"]
                assert "command.input_answered" in {e["action"] for e in audit}
            await wait_for(lambda: agent.agent_id not in app.hub.waiting_input, 10, "the alert cleared")
            assert bells == [1]  # once
    finally:
        agent.stop()


async def test_a_command_stopped_by_its_token_budget_is_announced(hub: HubProcess, tmp_path: Path) -> None:
    agent = start_agent(hub, "claude-budget", kind="claude", workdir=tmp_path)
    app = make_app(hub)
    try:
        async with app.run_test(size=(120, 40)):
            await wait_for(lambda: agent.agent_id in app.hub.agents, 15, "agent listed")
            with hub.client() as client:
                command = client.post(
                    "/commands",
                    json={
                        "content": "use the tools scenario:tools",
                        "targetAgents": [agent.agent_id],
                        "executionConstraints": {"tokenBudget": 100},
                    },
                ).json()
                assert wait_command(client, command["id"], 30)["status"] == "CANCELLED"

            def announced() -> list[str]:
                return [
                    f"{n.title} | {n.message}" for n in app._notifications if "stopped" in (n.title or "")
                ]

            notes = await wait_for(announced, 10, "the notification")
            assert len(notes) == 1
            # (The count in the hub's reason is the one at the cancel; later usage may add to it.)
            assert notes[0].startswith("Command stopped: token budget | claude-budget: token budget of 100 ")
            assert notes[0].endswith(f"(command {command['id'][:8]})")
    finally:
        agent.stop()


async def test_help_command_mode_and_remapped_keys(hub: HubProcess) -> None:
    agent = start_agent(hub, "keys-agent")
    app = make_app(hub, keys={"emergency_stop": "f12", "toggle_grid": "G"})
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(lambda: agent.agent_id in app.hub.agents, 15, "agent listed")
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            keys = app.screen.query_one("#keys", DataTable)
            rows = [[str(c) for c in keys.get_row_at(i)] for i in range(keys.row_count)]
            ids = {row[2] for row in rows}
            assert {"emergency_stop", "focus_command", "toggle_grid", "agent_pause"} <= ids
            assert ["f12", "Emergency stop"] in [r[:2] for r in rows] or any(
                r[2] == "emergency_stop" and "f12" in r[0] for r in rows
            )
            await pilot.press("escape")
            assert isinstance(app.screen, ControlCenterScreen)

            await pilot.press("G")  # remapped from g
            assert app.screen.grid_mode  # type: ignore[attr-defined]

            await pilot.press("colon")
            command_line = app.screen.query_one(Input)
            command_line.value = ":queue keys-agent"
            await pilot.press("enter")
            await wait_for(lambda: isinstance(app.screen, QueueScreen), 5, "the queue screen")
            assert app.screen.agent_id == agent.agent_id  # type: ignore[attr-defined]
            await pilot.press("escape")
            assert isinstance(app.screen, ControlCenterScreen)

            await pilot.press("f12")  # the emergency stop, remapped
            from tui.screens.confirm import ConfirmScreen

            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            assert isinstance(app.screen, ControlCenterScreen)
    finally:
        agent.stop()
