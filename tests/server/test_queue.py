"""The per-agent queue on RQ: one at a time in order, priority, reorder, cancel, interrupt, time limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from rq import Queue

from server import keys
from tests.harness import AgentProcess, HubProcess, start_agent, wait_command, wait_until


@pytest.fixture
def agent(hub: HubProcess, request: pytest.FixtureRequest) -> AgentProcess:
    process = start_agent(hub, f"q-{request.node.name[:40]}")
    yield process  # type: ignore[misc]
    process.stop()


def step(log: Path, label: str, seconds: float = 0.3) -> str:
    return f"echo start-{label} >> {log}; sleep {seconds}; echo end-{label} >> {log}"


def send(client, agent: AgentProcess, content: str, **extra) -> dict:  # type: ignore[no-untyped-def]
    response = client.post("/commands", json={"content": content, "targetAgents": [agent.agent_id], **extra})
    assert response.status_code == 201, response.text
    return response.json()


def finished(client, command_id: str, seconds: float = 30) -> dict:  # type: ignore[no-untyped-def]
    return wait_command(client, command_id, seconds)


def lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_three_commands_run_one_at_a_time_in_order(
    hub: HubProcess, agent: AgentProcess, tmp_path: Path
) -> None:
    log = tmp_path / "order.log"
    with hub.client() as client:
        ids = [send(client, agent, step(log, str(n)))["id"] for n in (1, 2, 3)]
        queue = client.get(f"/agents/{agent.agent_id}/queue").json()
        assert [item["commandId"] for item in queue["items"]] == ids
        assert [item["position"] for item in queue["items"]][1:] == [1, 2]
        # Each is an RQ job whose id is the command id.
        rq_queue = Queue(keys.COMMAND_QUEUE, connection=_redis(hub))
        assert all(rq_queue.fetch_job(i) is not None for i in ids)
        for command_id in ids:
            assert finished(client, command_id)["status"] == "COMPLETED"
    assert lines(log) == ["start-1", "end-1", "start-2", "end-2", "start-3", "end-3"]


def test_high_priority_jumps_ahead(hub: HubProcess, agent: AgentProcess, tmp_path: Path) -> None:
    log = tmp_path / "priority.log"
    with hub.client() as client:
        blocker = send(client, agent, step(log, "blocker", 1.0))
        wait_until(lambda: lines(log), 10, "the blocker to start")
        low_a = send(client, agent, step(log, "lowA", 0.1), priority=10)
        low_b = send(client, agent, step(log, "lowB", 0.1), priority=10)
        high = send(client, agent, step(log, "high", 0.1), priority=90)
        order = [i["commandId"] for i in client.get(f"/agents/{agent.agent_id}/queue").json()["items"]]
        assert order == [blocker["id"], high["id"], low_a["id"], low_b["id"]]
        for command in (blocker, low_a, low_b, high):
            finished(client, command["id"])
    assert [x for x in lines(log) if x.startswith("start")] == [
        "start-blocker",
        "start-high",
        "start-lowA",
        "start-lowB",
    ]


def test_reorder_is_honoured(hub: HubProcess, agent: AgentProcess, tmp_path: Path) -> None:
    log = tmp_path / "reorder.log"
    with hub.client() as client:
        blocker = send(client, agent, step(log, "blocker", 1.0))
        wait_until(lambda: lines(log), 10, "the blocker to start")
        a, b, c = (send(client, agent, step(log, name, 0.1)) for name in "abc")
        response = client.patch(
            f"/agents/{agent.agent_id}/queue", json={"order": [c["id"], a["id"], b["id"]]}
        )
        assert response.status_code == 200, response.text
        assert [i["commandId"] for i in response.json()["items"]] == [
            blocker["id"],
            c["id"],
            a["id"],
            b["id"],
        ]
        # The running command cannot be reordered.
        bad = client.patch(f"/agents/{agent.agent_id}/queue", json={"order": [blocker["id"], a["id"]]})
        assert bad.status_code == 409 and bad.json()["error"] == "CONFLICT"
        for command in (blocker, a, b, c):
            finished(client, command["id"])
    assert [x for x in lines(log) if x.startswith("start")] == [
        "start-blocker",
        "start-c",
        "start-a",
        "start-b",
    ]


def test_cancel_a_queued_command(hub: HubProcess, agent: AgentProcess, tmp_path: Path) -> None:
    log = tmp_path / "cancel.log"
    with hub.client() as client:
        blocker = send(client, agent, step(log, "blocker", 0.8))
        queued = send(client, agent, step(log, "queued", 0.1))
        after = send(client, agent, step(log, "after", 0.1))
        response = client.post(f"/commands/{queued['id']}/cancel", json={"reason": "not needed"})
        assert response.status_code == 200, response.text
        cancelled = finished(client, queued["id"])
        assert cancelled["status"] == "CANCELLED"
        assert cancelled["executions"][0]["endReason"] == "USER_CANCEL"
        assert finished(client, after["id"])["status"] == "COMPLETED"
        assert finished(client, blocker["id"])["status"] == "COMPLETED"
        again = client.post(f"/commands/{queued['id']}/cancel")
        assert again.status_code == 409
    assert "start-queued" not in lines(log)
    assert lines(log)[-1] == "end-after"


def test_interrupt_running_command_frees_the_agent(
    hub: HubProcess, agent: AgentProcess, tmp_path: Path
) -> None:
    log = tmp_path / "interrupt.log"
    pid_file = tmp_path / "child.pid"
    with hub.client() as client:
        # A command with a child process in its group: the interrupt must end both.
        long = send(client, agent, f"sleep 60 & echo $! > {pid_file}; echo started >> {log}; wait")
        nxt = send(client, agent, step(log, "next", 0.1))
        wait_until(
            lambda: lines(log) and pid_file.exists() and pid_file.read_text().strip(),
            10,
            "the command to start",
        )
        child = int(pid_file.read_text())
        response = client.post(f"/commands/{long['id']}/cancel", json={"reason": "changed my mind"})
        assert response.status_code == 200
        ended = finished(client, long["id"], 20)
        assert ended["status"] == "CANCELLED"
        assert ended["executions"][0]["endReason"] == "INTERRUPTED"
        assert finished(client, nxt["id"], 20)["status"] == "COMPLETED"
    wait_until(lambda: not _alive(child), 10, "the child process to be gone")


def test_time_limit_ends_a_sleeping_command(hub: HubProcess, agent: AgentProcess) -> None:
    with hub.client() as client:
        command = send(client, agent, "sleep 60", executionConstraints={"timeLimitMs": 1000})
        ended = finished(client, command["id"], 20)
        assert ended["status"] == "CANCELLED"
        assert ended["executions"][0]["endReason"] == "TIME_LIMIT"
        assert ended["executions"][0]["completedAt"] - ended["executions"][0]["startedAt"] < 10_000
        assert client.get(f"/agents/{agent.agent_id}").json()["activity"] in ("IDLE", "QUEUED")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def _redis(hub: HubProcess):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis(unix_socket_path=str(hub.settings.embedded_redis_socket))
