"""The control center against a live hub with real wrapper agents: sending to one, to marked agents
and to all, offline and unknown targets, the queue view, agent control and the emergency stop."""

from __future__ import annotations

from typing import Any

import httpx
from textual.message import Message
from textual.widgets import Input

from shared.enums import AgentActivity, AgentStatus
from tests.harness import AgentProcess, HubProcess, wait_command
from tests.tui.conftest import make_app, wait_for
from tui import messages
from tui.app import OnsemblApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.queue import QueueScreen


def lines_of(app: OnsemblApp, agent_id: str, text: str) -> list[str]:
    return [e.content for e in app.hub.output if e.agent_id == agent_id and text in e.content]


async def type_command(pilot: Any, text: str) -> None:
    app = pilot.app
    await pilot.press("i")
    bar_input = app.screen.query_one("#text", Input)
    bar_input.value = text
    await pilot.press("enter")


def commands_like(client: httpx.Client, text: str) -> list[dict[str, Any]]:
    return list(client.get("/commands", params={"q": text}).json()["items"])


async def test_send_to_selected_marked_and_all(hub: HubProcess, agents: dict[str, AgentProcess]) -> None:
    alpha, beta = agents["alpha"].agent_id, agents["beta"].agent_id
    seen: list[type[Message]] = []
    app = make_app(hub)
    async with app.run_test(size=(120, 40), message_hook=lambda m: seen.append(type(m))) as pilot:
        await wait_for(lambda: len(app.hub.agents) >= 2, 15, "agents listed")
        await pilot.press("1")  # alpha sorts first
        await type_command(pilot, "echo to-one")
        await wait_for(lambda: lines_of(app, alpha, "to-one"), 20, "alpha's output")
        assert not lines_of(app, beta, "to-one")
        order = [m for m in seen if m in (messages.CommandSending, messages.CommandSent, messages.HubChanged)]
        assert order.index(messages.CommandSending) < order.index(messages.CommandSent)
        # The bar was cleared for the next command.
        assert app.screen.query_one("#text", Input).value == ""

        await pilot.press("escape", "1", "space", "2", "space")
        await type_command(pilot, "echo to-marked")
        await wait_for(
            lambda: lines_of(app, alpha, "to-marked") and lines_of(app, beta, "to-marked"),
            20,
            "both marked agents' output",
        )

        await pilot.press("escape", "ctrl+t")  # marked -> all
        await type_command(pilot, "echo to-all")
        await wait_for(
            lambda: lines_of(app, alpha, "to-all") and lines_of(app, beta, "to-all"), 20, "broadcast output"
        )
        with hub.client() as client:
            broadcast = commands_like(client, "echo to-all")
            assert len(broadcast) == 1 and broadcast[0]["broadcast"] is True
        # What the combined pane shows is what arrived, agent by agent.
        await wait_for(lambda: app.screen.query_one("#combined").lines_shown >= 4, 5, "lines shown")


async def test_offline_and_unknown_targets_are_refused(
    hub: HubProcess, agents: dict[str, AgentProcess]
) -> None:
    hub.agent_token("gamma")  # exists, never connected: OFFLINE
    notes: list[str] = []
    app = make_app(hub)
    async with app.run_test(size=(100, 30)) as pilot:
        app.notify = lambda message, **kw: notes.append(str(message))  # type: ignore[method-assign]
        await wait_for(lambda: app.hub.agent_by_name("gamma") is not None, 15, "gamma listed")
        assert app.hub.agent_by_name("gamma").status is AgentStatus.OFFLINE  # type: ignore[union-attr]
        await type_command(pilot, "@gamma echo never-sent")
        await type_command(pilot, "@nobody echo never-sent")
        await pilot.pause()
        assert any("gamma is offline" in n for n in notes), notes
        assert any("no agent named 'nobody'" in n for n in notes), notes
        with hub.client() as client:
            assert commands_like(client, "never-sent") == []
        # With "queue if offline" ticked, it is accepted and waits for gamma.
        app.screen.query_one("#queue-offline").focus()
        await pilot.press("space")
        await type_command(pilot, "@gamma echo waits-for-gamma")
        await wait_for(lambda: any("Sent" in n or "gamma" in n for n in notes[2:]), 10, "a notification")
        with hub.client() as client:
            pending = await wait_for(lambda: commands_like(client, "waits-for-gamma"), 10, "queued command")
            # Parked until gamma connects: not dispatched, not failed.
            assert pending[0]["executions"][0]["status"] in ("PENDING", "QUEUED")  # type: ignore[index]


async def test_queue_view_reorders_cancels_and_interrupts(
    hub: HubProcess, agents: dict[str, AgentProcess]
) -> None:
    beta = agents["beta"]
    with hub.client() as client:

        def send(text: str) -> str:
            response = client.post("/commands", json={"content": text, "targetAgents": [beta.agent_id]})
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        running = send("sleep 60")
        q1, q2, q3 = send("echo q-one"), send("echo q-two"), send("echo q-three")
        app = make_app(hub)
        async with app.run_test(size=(120, 40)) as pilot:
            app.open_queue(beta.agent_id)
            await wait_for(lambda: isinstance(app.screen, QueueScreen), 5, "queue screen")
            screen = app.screen
            assert isinstance(screen, QueueScreen)
            await wait_for(
                lambda: (
                    screen.queue is not None
                    and [i.command_id for i in screen.queue.items] == [running, q1, q2, q3]
                ),
                20,
                "the queue: running, then q1, q2, q3",
            )
            screen.select(q3)
            await pilot.press("K")  # q3 up one: q1, q3, q2
            await wait_for(
                lambda: (
                    [i["commandId"] for i in client.get(f"/agents/{beta.agent_id}/queue").json()["items"]]
                    == [running, q1, q3, q2]
                ),
                10,
                "the hub's queue reordered",
            )
            screen.select(q1)
            await pilot.press("d")
            assert wait_command(client, q1, 10)["status"] == "CANCELLED"
            await wait_for(
                lambda: screen.queue is not None and q1 not in [i.command_id for i in screen.queue.items],
                10,
                "the cancelled command gone from the view",
            )
            screen.select(running)
            await pilot.press("i")
            interrupted = wait_command(client, running, 20)
            assert interrupted["status"] == "CANCELLED"
            # The agent is free again and runs the rest in the new order.
            done3, done2 = wait_command(client, q3, 20), wait_command(client, q2, 20)
            assert done3["status"] == done2["status"] == "COMPLETED"
            assert done3["executions"][0]["startedAt"] < done2["executions"][0]["startedAt"]


async def test_pause_resume_and_emergency_stop(hub: HubProcess, agents: dict[str, AgentProcess]) -> None:
    alpha, beta = agents["alpha"], agents["beta"]
    app = make_app(hub)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(lambda: len(app.hub.agents) >= 2, 15, "agents listed")
        await pilot.press("1", "p")
        await wait_for(
            lambda: app.hub.agents[alpha.agent_id].activity is AgentActivity.PAUSED, 10, "alpha paused"
        )
        await pilot.press("r")
        await wait_for(
            lambda: app.hub.agents[alpha.agent_id].activity is not AgentActivity.PAUSED, 10, "resumed"
        )

        with hub.client() as client:
            ids = [
                client.post("/commands", json={"content": text, "targetAgents": [agent.agent_id]}).json()[
                    "id"
                ]
                for agent in (alpha, beta)
                for text in ("sleep 60", "echo after-stop")
            ]
            await wait_for(
                lambda: all(
                    client.get(f"/commands/{c}").json()["status"] == "EXECUTING" for c in (ids[0], ids[2])
                ),
                20,
                "both agents busy",
            )
            await pilot.press("ctrl+x")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            for command_id in ids:
                assert wait_command(client, command_id, 20)["status"] == "CANCELLED"
            result = await wait_for(lambda: app.hub.last_emergency_stop, 10, "the stop's result")
            assert result.cancelled_running >= 2 and result.cleared_queued >= 2  # type: ignore[attr-defined]


async def test_the_default_constraint_profile_fills_the_limits(
    hub: HubProcess, agents: dict[str, AgentProcess]
) -> None:
    with hub.client() as client:
        response = client.post(
            "/constraints",
            json={"name": "careful", "timeLimitMs": 90_000, "tokenBudget": 20_000, "isDefault": True},
        )
        assert response.status_code == 201, response.text
    app = make_app(hub)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        # The profiles arrive after the control center is up: they must still reach its bar.
        await wait_for(
            lambda: screen.query_one("#time-limit", Input).value == "90s", 15, "the profile's limit"
        )
        assert screen.query_one("#token-budget", Input).value == "20000"
        await wait_for(lambda: len(app.hub.agents) >= 2, 15, "agents listed")
        await pilot.press("1")
        await type_command(pilot, "echo with-limits")
        with hub.client() as client:
            sent = await wait_for(lambda: commands_like(client, "echo with-limits"), 10, "the command")
            limits = sent[0]["executionConstraints"]  # type: ignore[index]
            assert limits == {"timeLimitMs": 90_000, "tokenBudget": 20_000}
