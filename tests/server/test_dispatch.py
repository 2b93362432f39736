"""Who sends an execution's first COMMAND_REQUEST, against a real Redis and real RQ queues: the hub at
admission only when it may (its agent idle, online, not paused or stopped, a worker registered), the
job otherwise, never both; and a cancel of a waiting execution keeps both from sending it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.worker import WorkerStatus
from websockets.asyncio.client import ClientConnection

from server import keys
from server.events import publish_sync
from server.queue import dispatch, executions, jobs, lifecycle
from server.queue.executions import ExecutionSpec
from server.worker import SupervisorWorker
from shared.config import Settings
from shared.enums import AckStatus, CompletionStatus, ExecutionStatus
from shared.protocol import CommandAck, CommandAckPayload, CommandComplete, CommandCompletePayload
from tests.harness import HubProcess, async_wait_until, timeout, wait_command
from tests.reliability.helpers import keep_beating
from tests.server.test_bad_input import open_agent

HUB = "hub-a"


def register_worker(conn: redis.Redis, state: WorkerStatus) -> SupervisorWorker:
    """A registered RQ worker of the command queue in ``state`` (not working: nothing here runs the
    jobs unless a test calls them)."""
    registered = SupervisorWorker([Queue(keys.COMMAND_QUEUE, connection=conn)], connection=conn)
    registered.register_birth()  # type: ignore[no-untyped-call]
    registered.set_state(state)
    return registered


@pytest.fixture
def worker(conn: redis.Redis) -> SupervisorWorker:
    return register_worker(conn, WorkerStatus.IDLE)


def online(conn: redis.Redis, *agent_ids: str, hub_id: str = HUB) -> None:
    """As ``Agents.mark_online`` leaves an agent whose socket ``hub_id`` holds."""
    for agent_id in agent_ids:
        conn.hset(keys.agent(agent_id), "hub", hub_id)
        conn.zadd(keys.ONLINE_AGENTS, {agent_id: 1})


def spec(command_id: str, agent_id: str = "agent-1") -> ExecutionSpec:
    return ExecutionSpec(
        id=command_id,
        command_id=command_id,
        agent_id=agent_id,
        agent_name=agent_id,
        content=f"echo {command_id}",
        type="NATURAL",
        priority=50,
        created_at=1,
        time_limit_ms=5000,
    )


class Sent(list[tuple[str, str]]):
    def __call__(self, agent_id: str, request: str) -> None:
        self.append((agent_id, request))


def create(conn: redis.Redis, specs: list[ExecutionSpec], local: set[str]) -> Sent:
    """Create and dispatch as the hub does, and publish the announcements as its publisher would."""
    sent = Sent()
    announcements = dispatch.create_and_dispatch(conn, specs, local, HUB, sent)
    dispatched = [
        e.payload.command_id for e in announcements if e.payload.status == ExecutionStatus.DISPATCHED
    ]
    assert dispatched == [json.loads(request)["payload"]["commandId"] for _, request in sent]
    publish_sync(conn, announcements, 1000)
    return sent


def statuses(conn: redis.Redis) -> list[tuple[str, str]]:
    events = [json.loads(fields[b"m"]) for _, fields in conn.xrange(keys.EVENTS_STREAM)]
    return [
        (e["payload"]["commandId"], e["payload"]["status"]) for e in events if e["type"] == "COMMAND_STATUS"
    ]


def test_the_hub_sends_the_request_of_an_idle_local_agent_at_admission(
    conn: redis.Redis, worker: SupervisorWorker
) -> None:
    online(conn, "agent-1")
    sent = create(conn, [spec("c1"), spec("c2")], {"agent-1"})
    # c1 was admitted (the agent was idle); c2 waits behind it, for the job of c1 to end.
    assert [(agent, json.loads(request)["payload"]["commandId"]) for agent, request in sent] == [
        ("agent-1", "c1")
    ]
    request = json.loads(sent[0][1])
    assert request["type"] == "COMMAND_REQUEST"
    assert request["payload"]["content"] == "echo c1"
    assert request["payload"]["executionConstraints"]["timeLimitMs"] == 5000
    state = conn.hgetall(keys.execution("c1"))
    assert state[b"status"] == b"DISPATCHED" and state[b"dispatcher"] == f"hub:{HUB}".encode()
    assert int(state[b"started_at"]) > 0
    # Each execution's QUEUED goes on the event stream before its DISPATCHED.
    assert statuses(conn) == [("c1", "QUEUED"), ("c1", "DISPATCHED"), ("c2", "QUEUED")]
    assert conn.hget(keys.execution("c2"), "dispatcher") is None
    assert Job.fetch("c2", connection=conn).get_status() == JobStatus.RATE_LIMITED
    # The job still runs to supervise c1, and does not send it again: its claim fails.
    assert Job.fetch("c1", connection=conn).get_status() == JobStatus.QUEUED
    assert not dispatch.claim(conn, "c1", dispatch.BY_JOB)


def test_jobs_waiting_for_a_worker_do_not_hold_back_the_hubs_send(
    conn: redis.Redis, worker: SupervisorWorker
) -> None:
    """The pool grows as jobs take its workers (server/worker.py): a live pool with one idle worker is
    enough, however many jobs wait for one. (A fixed pool made the hub wait for an idle worker per
    waiting job, and the pool's size capped the commands running at once.)"""
    for n in range(5):
        Queue(keys.COMMAND_QUEUE, connection=conn).push_job_id(f"someone-elses-{n}")
    online(conn, "agent-1")
    sent = create(conn, [spec("c1")], {"agent-1"})
    assert [json.loads(request)["payload"]["commandId"] for _, request in sent] == ["c1"]


@pytest.mark.parametrize(
    "why",
    ["elsewhere", "taken-over", "offline", "paused", "stopped", "no-worker", "workers-busy"],
)
def test_the_hub_leaves_the_request_to_the_job(conn: redis.Redis, why: str) -> None:
    if why != "no-worker":
        register_worker(conn, WorkerStatus.BUSY if why == "workers-busy" else WorkerStatus.IDLE)
    if why != "offline":
        # taken-over: this hub still holds a socket of the agent's, which has connected to another.
        online(conn, "agent-1", hub_id="hub-b" if why == "taken-over" else HUB)
    if why == "paused":
        conn.sadd(keys.PAUSED_AGENTS, "agent-1")
    if why == "stopped":
        conn.sadd(keys.STOPPED_AGENTS, "agent-1")
    sent = create(conn, [spec("c1")], set() if why == "elsewhere" else {"agent-1"})
    assert sent == []
    assert conn.hget(keys.execution("c1"), "status") == b"QUEUED"
    assert statuses(conn) == [("c1", "QUEUED")]
    # The job takes it (and parks it where the agent cannot run it).
    assert dispatch.claim(conn, "c1", dispatch.BY_JOB)


def test_a_cancel_and_a_dispatch_never_both_take_an_execution(
    conn: redis.Redis, worker: SupervisorWorker
) -> None:
    online(conn, "agent-1", "agent-2")
    # Dispatched by the hub: it runs, so a cancel is an interrupt, not a dequeue.
    create(conn, [spec("c1")], {"agent-1"})
    assert not executions.cancel_waiting(conn, spec("c1"))
    assert Job.fetch("c1", connection=conn).get_status() == JobStatus.QUEUED
    # Admitted but not yet dispatched (the agent is on another hub): the cancel takes it out, and
    # neither the hub nor the job may send it after.
    create(conn, [spec("c2", "agent-2")], set())
    assert executions.cancel_waiting(conn, spec("c2", "agent-2"))
    assert Job.fetch("c2", connection=conn).get_status() == JobStatus.CANCELED
    assert dispatch.dispatch_by_hub(conn, spec("c2", "agent-2"), HUB) is None
    assert not dispatch.claim(conn, "c2", dispatch.BY_JOB)


def test_a_cancel_that_comes_too_late_gives_its_claim_back(
    conn: redis.Redis, worker: SupervisorWorker
) -> None:
    online(conn, "agent-1")
    create(conn, [spec("c1")], set())
    job = Job.fetch("c1", connection=conn)
    job.set_status(JobStatus.STARTED)  # a worker has taken the job, before its own claim
    assert not executions.cancel_waiting(conn, spec("c1"))
    assert conn.hget(keys.execution("c1"), "dispatcher") is None
    assert dispatch.claim(conn, "c1", dispatch.BY_JOB)


def test_a_claim_is_released_only_by_its_holder(conn: redis.Redis, worker: SupervisorWorker) -> None:
    online(conn, "agent-1")
    create(conn, [spec("c1")], {"agent-1"})
    dispatch.release(conn, "c1", dispatch.BY_JOB)
    assert conn.hget(keys.execution("c1"), "dispatcher") == f"hub:{HUB}".encode()


# ---- through a real hub: its agent socket, its RQ workers ----------------------------------------


def ack(command_id: str, agent_id: str) -> str:
    return CommandAck(
        payload=CommandAckPayload(command_id=command_id, agent_id=agent_id, status=AckStatus.EXECUTING)
    ).to_json()


def complete(command_id: str, agent_id: str) -> str:
    return CommandComplete(
        payload=CommandCompletePayload(
            command_id=command_id, agent_id=agent_id, status=CompletionStatus.COMPLETED, output_lines=0
        )
    ).to_json()


async def next_request(ws: ClientConnection, seconds: float) -> tuple[float, dict[str, Any]]:
    """The next COMMAND_REQUEST payload and when it came (monotonic)."""
    deadline = time.monotonic() + timeout(seconds)
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if message["type"] == "COMMAND_REQUEST":
            return time.monotonic(), message["payload"]


async def no_request(ws: ClientConnection, seconds: float) -> None:
    try:
        _, payload = await next_request(ws, seconds)
    except TimeoutError:
        return
    raise AssertionError(f"a COMMAND_REQUEST came again: {payload}")


async def test_an_idle_agent_gets_its_request_once_and_the_job_supervises_it(hub: HubProcess) -> None:
    ws, agent_id = await open_agent(hub, "dispatch-once")
    beats = keep_beating(ws, agent_id)
    retry_s = hub.settings.dispatch_retry_s
    try:
        with (
            hub.client() as client,
            redis.Redis(unix_socket_path=str(hub.settings.embedded_redis_socket)) as conn,
        ):
            for n in range(3):
                response = client.post("/commands", json={"content": f"c{n}", "targetAgents": [agent_id]})
                assert response.status_code == 201, response.text
                command_id = response.json()["id"]
                first_at, first = await next_request(ws, 10)
                assert first["commandId"] == command_id
                dispatcher = conn.hget(keys.execution(command_id), "dispatcher")
                assert dispatcher is not None and dispatcher.startswith(b"hub:")
                if n == 0:
                    # Not acknowledged: the supervising job sends it again after the retry interval,
                    # which shows it supervises what the hub sent (and did not send it at its start).
                    again_at, again = await next_request(ws, 10)
                    assert again["commandId"] == command_id
                    assert again_at - first_at > 0.8 * retry_s
                await ws.send(ack(command_id, agent_id))
                await no_request(ws, 2.5 * retry_s)
                await ws.send(complete(command_id, agent_id))
                assert wait_command(client, command_id, 20)["status"] == "COMPLETED"
    finally:
        beats.cancel()
        await ws.close()


async def test_an_ack_that_beats_the_mark_of_the_dispatch_gives_the_start(hub: HubProcess) -> None:
    """A job marks the execution DISPATCHED, with its start, just after it sends the request; the
    agent's ACK can come first. Here the execution is put back as it is in that window (sent, still
    QUEUED, no start): the ACK gives the start, which the completion reports."""
    ws, agent_id = await open_agent(hub, "ack-first")
    beats = keep_beating(ws, agent_id)
    try:
        with (
            hub.client() as client,
            redis.Redis(unix_socket_path=str(hub.settings.embedded_redis_socket)) as conn,
        ):
            response = client.post("/commands", json={"content": "c", "targetAgents": [agent_id]})
            assert response.status_code == 201, response.text
            command_id = response.json()["id"]
            await next_request(ws, 10)
            key = keys.execution(command_id)
            # The hub sent it at admission (an idle worker, an idle agent): no job will mark it.
            dispatcher = conn.hget(key, "dispatcher")
            assert dispatcher is not None and dispatcher.startswith(b"hub:"), dispatcher
            conn.hdel(key, "started_at")
            conn.hset(key, mapping={"status": ExecutionStatus.QUEUED.value, "rank": 0})
            before = time.time() * 1000
            await ws.send(ack(command_id, agent_id))
            deadline = time.monotonic() + timeout(10)
            while (state := conn.hgetall(key)).get(b"started_at") is None:
                assert time.monotonic() < deadline, state
                await asyncio.sleep(0.02)
            assert state[b"status"] == ExecutionStatus.EXECUTING.value.encode()
            assert int(state[b"started_at"]) >= before - 1
            await ws.send(complete(command_id, agent_id))
            assert wait_command(client, command_id, 20)["status"] == "COMPLETED"
    finally:
        beats.cancel()
        await ws.close()


# ---- the job's side ------------------------------------------------------------------------------


def run_job(conn: redis.Redis, spec: ExecutionSpec, state: dict[str, str]) -> str:
    """The job's body for an execution, with the state it read when it started."""
    return jobs._run(conn, spec, state, Settings(dispatch_retry_s=60))


def test_a_job_parks_with_the_claim_and_a_release_gives_it_back(
    conn: redis.Redis, worker: SupervisorWorker
) -> None:
    create(conn, [spec("c1")], set())  # agent-1 is offline
    assert run_job(conn, spec("c1"), {"status": "QUEUED"}) == "parked"
    assert conn.zscore(keys.agent_pending("agent-1"), "c1") is not None
    assert conn.hget(keys.execution("c1"), "dispatcher") == b"job"
    # The agent is back: no hub may send what is parked; the release gives the claim back.
    online(conn, "agent-1")
    assert dispatch.dispatch_by_hub(conn, spec("c1"), HUB) is None
    assert executions.release_pending(conn, "agent-1") == 1
    assert conn.hget(keys.execution("c1"), "dispatcher") is None


def test_a_job_that_read_queued_does_not_park_what_the_hub_sent(
    conn: redis.Redis, worker: SupervisorWorker
) -> None:
    online(conn, "agent-1")
    create(conn, [spec("c1")], {"agent-1"})  # the hub sends it
    conn.zrem(keys.ONLINE_AGENTS, "agent-1")  # and the agent drops before the job looks
    lifecycle.signal_sync(conn, "c1", lifecycle.DONE)
    assert run_job(conn, spec("c1"), {"status": "QUEUED"}) == "done"  # supervised, not parked
    assert conn.zcard(keys.agent_pending("agent-1")) == 0


def test_a_job_waits_for_a_cancel_to_give_the_claim_back(conn: redis.Redis) -> None:
    create(conn, [spec("c1")], set())
    assert dispatch.claim(conn, "c1", dispatch.BY_CANCEL)
    releaser = threading.Timer(0.2, dispatch.release, (conn, "c1", dispatch.BY_CANCEL))
    releaser.start()
    assert jobs._claim_first_request(conn, spec("c1"))
    assert conn.hget(keys.execution("c1"), "dispatcher") == b"job"


def test_a_job_waits_while_the_hub_decides(conn: redis.Redis, worker: SupervisorWorker) -> None:
    """A worker may take the job the instant it is enqueued, before the hub that created the execution
    has decided to send its request: the hub's pending claim, taken with the record, holds the job
    back (no second request, no extra hop), and a decline gives it to the job."""
    pending = dispatch.pending_claim(HUB)
    executions.create(conn, [spec("c1")], claimed={"c1"}, claim=pending)
    assert not dispatch.claim(conn, "c1", dispatch.BY_JOB)
    # The agent is not online: the hub declines, and the waiting job takes the claim.
    declined = threading.Timer(0.2, dispatch.dispatch_by_hub, (conn, spec("c1"), HUB, pending))
    declined.start()
    assert jobs._claim_first_request(conn, spec("c1"))
    assert conn.hget(keys.execution("c1"), "dispatcher") == b"job"


def test_a_lost_worker_is_noticed_from_the_hubs_send_on(conn: redis.Redis, worker: SupervisorWorker) -> None:
    online(conn, "agent-1")
    create(conn, [spec("c1")], {"agent-1"})
    # Supervised from the send on, before any job beats...
    assert conn.zscore(keys.SUPERVISED, "c1") is not None
    # ...but while the job waits in the queue for a worker, none was lost: it is left there.
    assert not executions.resume_supervision(conn, "c1")
    assert conn.hget(keys.execution("c1"), "supervisor_restarts") is None
    # A worker took it and died before its job's first beat: it goes back to the queue's front.
    commands = Queue(keys.COMMAND_QUEUE, connection=conn)
    conn.lrem(commands.key, 0, "c1")
    Job.fetch("c1", connection=conn).set_status(JobStatus.STARTED)
    assert executions.resume_supervision(conn, "c1")
    assert commands.job_ids == ["c1"]
    assert conn.hget(keys.execution("c1"), "supervisor_restarts") == b"1"


async def test_every_idle_agent_runs_its_command_on_a_pool_smaller_than_the_fleet(tmp_path: Path) -> None:
    """Twelve idle agents, one long command each, on a hub whose pool keeps two workers idle: all
    twelve run at once, each under its job (the pool grows), and none waits QUEUED. (With a fixed
    pool of N, the N+1st agent's command waited behind the N running ones.)"""
    hub = HubProcess(tmp_path / "hub", workers=2).start()
    sockets: list[tuple[ClientConnection, str]] = []
    beats: list[asyncio.Task[None]] = []
    try:
        for n in range(12):
            ws, agent_id = await open_agent(hub, f"fleet-{n}")
            sockets.append((ws, agent_id))
            beats.append(keep_beating(ws, agent_id))
        with (
            hub.client() as client,
            redis.Redis(unix_socket_path=str(hub.settings.embedded_redis_socket)) as conn,
        ):
            commands = {}
            for _, agent_id in sockets:
                response = client.post("/commands", json={"content": "long", "targetAgents": [agent_id]})
                assert response.status_code == 201, response.text
                commands[agent_id] = response.json()["id"]
            for ws, agent_id in sockets:
                _, request = await next_request(ws, 20)
                assert request["commandId"] == commands[agent_id]
                await ws.send(ack(commands[agent_id], agent_id))
            await async_wait_until(
                lambda: all(
                    client.get(f"/commands/{c}").json()["status"] == "EXECUTING" for c in commands.values()
                ),
                20,
                "all twelve EXECUTING",
            )
            # Each under its own supervising job, on a pool that grew past the twelve.
            started = StartedJobRegistry(queue=Queue(keys.COMMAND_QUEUE, connection=conn))
            await async_wait_until(lambda: started.count == 12, 20, "twelve supervising jobs")
            assert sorted(started.get_job_ids()) == sorted(commands.values())
            for ws, agent_id in sockets:
                await ws.send(complete(commands[agent_id], agent_id))
            for command_id in commands.values():
                assert wait_command(client, command_id, 20)["status"] == "COMPLETED"
    finally:
        for task in beats:
            task.cancel()
        for ws, _ in sockets:
            await ws.close()
        hub.stop()
