"""A command runs end to end on a real wrapper process, through REST and through the dashboard socket."""

from __future__ import annotations

import uuid

from shared.api import CommandCreate
from shared.protocol import CommandSubmit
from tests.harness import Dashboard, HubProcess, async_wait_until, start_agent, wait_until


def _done(client, command_id: str) -> dict:  # type: ignore[no-untyped-def]
    return wait_until(
        lambda: (
            (c := client.get(f"/commands/{command_id}").json())["status"]
            in ("COMPLETED", "FAILED", "CANCELLED")
            and c
        ),
        30,
        f"command {command_id} to finish",
    )


async def test_rest_command_streams_in_order_to_dashboard_and_is_stored(hub: HubProcess) -> None:
    agent = start_agent(hub, "flow-rest")
    dashboard = await Dashboard(hub).connect()
    try:
        with hub.client() as client:
            script = "for i in $(seq 1 200); do echo line-$i; done; echo oops >&2"
            response = client.post("/commands", json={"content": script, "targetAgents": [agent.agent_id]})
            assert response.status_code == 201, response.text
            command = response.json()
            assert command["executions"][0]["agentId"] == agent.agent_id
            final = _done(client, command["id"])
            assert final["status"] == "COMPLETED", final
            assert final["executions"][0]["endReason"] == "FINISHED"

            # At the dashboard: every line, in order, stdout and stderr told apart.
            def streamed() -> str:
                return "".join(
                    p.content for p in dashboard.output_of(command["id"]) if p.stream_type == "STDOUT"
                )

            await async_wait_until(lambda: "line-200\n" in streamed(), 15, "all output at the dashboard")
            chunks = dashboard.output_of(command["id"])
            assert [c.sequence for c in chunks] == list(range(len(chunks)))
            assert streamed().splitlines() == [f"line-{i}" for i in range(1, 201)]
            assert [c.content for c in chunks if c.stream_type == "STDERR"] == ["oops\n"]
            assert all(c.agent_name == "flow-rest" for c in chunks)
            # From an agent on the TUI's own hub, handed over before they reach the stream: no position.
            assert {
                m.position
                for m in dashboard.messages
                if m.type == "TERMINAL_STREAM" and m.payload.command_id == command["id"]
            } == {None}

            # In the store: the same lines, same sequences.
            def stored() -> list[dict]:  # type: ignore[type-arg]
                body = client.get(f"/commands/{command['id']}/output").json()
                return body["items"] if body["total"] == len(chunks) else []

            items = wait_until(stored, 15, "output stored")
            assert [i["sequence"] for i in items] == [c.sequence for c in chunks]
            assert "".join(i["content"] for i in items if i["streamType"] == "STDOUT") == streamed()
            statuses = [
                m.payload.status
                for m in dashboard.messages
                if m.type == "COMMAND_STATUS" and m.payload.command_id == command["id"]
            ]
            assert statuses[0] == "QUEUED" and statuses[-1] == "COMPLETED"
            assert "EXECUTING" in statuses
    finally:
        await dashboard.close()
        agent.stop()


async def test_dashboard_socket_submits_a_command(hub: HubProcess) -> None:
    agent = start_agent(hub, "flow-ws")
    dashboard = await Dashboard(hub).connect()
    try:
        marker = uuid.uuid4().hex
        submit = CommandSubmit(
            payload=CommandCreate(content=f"echo {marker}", target_agents=[agent.agent_id])
        )
        await dashboard.send(submit)
        accepted = await dashboard.wait_for(
            lambda m: m.type == "COMMAND_ACCEPTED" and m.payload.request_id == submit.id, 10
        )
        command_id = accepted.payload.command.id
        await dashboard.wait_for(
            lambda m: (
                m.type == "COMMAND_STATUS"
                and m.payload.command_id == command_id
                and m.payload.status == "COMPLETED"
            ),
            30,
        )
        await async_wait_until(
            lambda: "".join(p.content for p in dashboard.output_of(command_id)) == f"{marker}\n",
            10,
            "the output",
        )
        with hub.client() as client:
            stored = wait_until(
                lambda: client.get(f"/commands/{command_id}/output").json()["items"], 15, "stored output"
            )
            assert stored[0]["content"] == f"{marker}\n"
            audit = client.get("/audit-logs", params={"commandId": command_id}).json()["items"]
            assert any(a["action"] == "command.created" and a["actor"] == "tester@example.com" for a in audit)
    finally:
        await dashboard.close()
        agent.stop()


def test_agent_persists_offline_with_last_seen_and_returns_under_same_id(hub: HubProcess) -> None:
    agent = start_agent(hub, "flow-persist")
    with hub.client() as client:
        online = client.get(f"/agents/{agent.agent_id}").json()
        assert online["status"] == "ONLINE"
        assert online["health"]["memoryBytes"] > 0  # real psutil numbers from the wrapper
        agent.stop()
        offline = wait_until(
            lambda: (a := client.get(f"/agents/{agent.agent_id}").json())["status"] == "OFFLINE" and a,
            15,
            "offline",
        )
        assert offline["lastSeen"] >= online["lastSeen"]
        again = start_agent(hub, "flow-persist")
        assert again.agent_id == agent.agent_id
        assert client.get(f"/agents/{agent.agent_id}").json()["status"] == "ONLINE"
        assert [a["name"] for a in client.get("/agents").json()].count("flow-persist") == 1
        again.stop()
