"""Two hub processes on one Redis and one PostgreSQL database serve as one."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.harness import Dashboard, HubProcess, async_wait_until, start_agent, wait_until

pytestmark = pytest.mark.postgres


async def test_agent_on_hub_a_runs_command_from_hub_b_and_output_reaches_b(
    tmp_path: Path, postgres_database: str
) -> None:
    secret = secrets.token_urlsafe(48)
    common = {"ONSEMBL_DATABASE_URL": postgres_database, "ONSEMBL_JWT_SECRET": secret}
    hub_a = HubProcess(tmp_path / "a", env_overrides=dict(common)).start()
    hub_b: HubProcess | None = None
    agent = None
    dashboard = None
    try:
        hub_b = HubProcess(
            tmp_path / "b",
            env_overrides={**common, "ONSEMBL_REDIS_URL": f"unix://{hub_a.settings.embedded_redis_socket}"},
        ).start()
        agent = start_agent(hub_a, "cross-hub")
        dashboard = await Dashboard(hub_b).connect()
        with hub_b.client() as client:
            # B sees the agent A holds, ONLINE, from the shared state.
            assert client.get(f"/agents/{agent.agent_id}").json()["status"] == "ONLINE"
            response = client.post(
                "/commands",
                json={"content": "for i in 1 2 3; do echo cross-$i; done", "targetAgents": [agent.agent_id]},
            )
            assert response.status_code == 201, response.text
            command_id = response.json()["id"]
            await async_wait_until(
                lambda: (
                    "".join(p.content for p in dashboard.output_of(command_id))
                    == "cross-1\ncross-2\ncross-3\n"
                ),
                30,
                "the output at hub B's dashboard",
            )
            # From an agent on another hub, it came through the stream: with positions.
            assert all(
                m.position
                for m in dashboard.messages
                if m.type == "TERMINAL_STREAM" and m.payload.command_id == command_id
            )
            done = wait_until(
                lambda: (c := client.get(f"/commands/{command_id}").json())["status"] == "COMPLETED" and c,
                30,
                "done",
            )
            assert done["executions"][0]["agentName"] == "cross-hub"
            stored = wait_until(
                lambda: client.get(f"/commands/{command_id}/output").json()["items"], 15, "stored"
            )
            assert "".join(i["content"] for i in stored) == "cross-1\ncross-2\ncross-3\n"
        with hub_a.client() as client:
            # The same record through the other hub.
            assert client.get(f"/commands/{command_id}").json()["status"] == "COMPLETED"
    finally:
        if dashboard is not None:
            await dashboard.close()
        if agent is not None:
            agent.stop()
        if hub_b is not None:
            hub_b.stop()
        hub_a.stop()
        hub_a.shutdown_redis()
