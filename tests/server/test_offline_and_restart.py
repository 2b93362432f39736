"""Commands to offline agents, and commands that outlive a hub restart."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.harness import HubProcess, start_agent, wait_until

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def test_offline_agent_is_refused_clearly_or_queued_when_asked(hub: HubProcess, tmp_path: Path) -> None:
    agent = start_agent(hub, "offline-1")
    agent.stop()
    marker = tmp_path / "ran"
    with hub.client() as client:
        wait_until(
            lambda: client.get(f"/agents/{agent.agent_id}").json()["status"] == "OFFLINE", 15, "offline"
        )
        refused = client.post(
            "/commands", json={"content": f"touch {marker}", "targetAgents": [agent.agent_id]}
        )
        assert refused.status_code == 409
        body = refused.json()
        assert body["error"] == "AGENT_OFFLINE" and "offline" in body["message"]
        assert body["details"]["offline"][0]["id"] == agent.agent_id
        assert client.get("/commands", params={"agentId": agent.agent_id}).json()["total"] == 0

        unknown = client.post("/commands", json={"content": "true", "targetAgents": ["no-such-agent"]})
        assert unknown.status_code == 404 and unknown.json()["error"] == "NOT_FOUND"

        waiting = client.post(
            "/commands",
            json={"content": f"touch {marker}", "targetAgents": [agent.agent_id], "queueIfOffline": True},
        )
        assert waiting.status_code == 201
        command_id = waiting.json()["id"]
        wait_until(
            lambda: client.get(f"/agents/{agent.agent_id}/queue").json()["items"], 10, "it to be queued"
        )
        assert client.get(f"/commands/{command_id}").json()["status"] == "QUEUED"
        assert not marker.exists()
        back = start_agent(hub, "offline-1")
        try:
            done = wait_until(
                lambda: (c := client.get(f"/commands/{command_id}").json())["status"] in TERMINAL and c,
                30,
                "it to run",
            )
            assert done["status"] == "COMPLETED"
            assert marker.exists()
        finally:
            back.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["clean", "killed"])
def test_queued_commands_survive_a_hub_restart(
    fresh_hub: HubProcess, tmp_path: Path, how: signal.Signals
) -> None:
    hub = fresh_hub.start()
    agent = start_agent(hub, "restart-1")
    log = tmp_path / "restart.log"
    with hub.client() as client:
        blocker = client.post(
            "/commands", json={"content": f"echo blocker >> {log}; sleep 2", "targetAgents": [agent.agent_id]}
        ).json()
        queued = [
            client.post(
                "/commands",
                json={
                    "content": f"echo q{n} >> {log}",
                    "targetAgents": [agent.agent_id],
                    "queueIfOffline": True,
                },
            ).json()
            for n in range(3)
        ]
        wait_until(lambda: log.exists(), 10, "the blocker to start")
    hub.stop(how)
    if how is signal.SIGTERM:
        # A clean stop also stops the embedded Redis: the queue comes back from its append-only file.
        assert not hub.settings.embedded_redis_socket.exists() or not _redis_answers(hub)
    hub.start()
    with hub.client() as client:
        for command in queued:
            done = wait_until(
                lambda c=command: (
                    (x := client.get(f"/commands/{c['id']}").json())["status"] in TERMINAL and x
                ),
                60,
                "a queued command to run after the restart",
            )
            assert done["status"] == "COMPLETED", done
        # The blocker was running during the restart: it finished on the agent and was reported.
        ended = wait_until(
            lambda: (x := client.get(f"/commands/{blocker['id']}").json())["status"] in TERMINAL and x,
            60,
            "blocker",
        )
        assert ended["status"] == "COMPLETED", ended
    assert log.read_text().split() == ["blocker", "q0", "q1", "q2"]
    agent.stop()


def _redis_answers(hub: HubProcess) -> bool:
    import redis

    try:
        return bool(
            redis.Redis(unix_socket_path=str(hub.settings.embedded_redis_socket), socket_timeout=1).ping()
        )
    except (redis.RedisError, OSError):
        return False
