"""The RQ job that supervises one execution on its agent.

It runs while the agent works on the command, holding the agent's RateLimit slot so the next command
waits: it sends COMMAND_REQUEST (through the hub holding the agent's socket), sends it again until the
agent acknowledges, enforces the time limit (COMMAND_CANCEL, then a grace period), relays a user's
cancel, and returns when the hub reports COMMAND_COMPLETE. It touches only Redis; the hub's store
writes the events it publishes to the database.

Signals from the hub arrive on the execution's list, as ``lifecycle.Signal``s; the job returns a
``lifecycle.SupervisionOutcome``.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from types import TracebackType

import redis
from rq.job import Job, get_current_job

from server import keys
from server.events import publish_sync
from server.queue import dispatch, executions, lifecycle
from server.queue.executions import ExecutionSpec
from server.queue.lifecycle import SignalKind, SupervisionOutcome
from server.redis_text import as_text
from shared.config import Settings
from shared.enums import EndReason, ExecutionStatus
from shared.logs import log_context
from shared.protocol import (
    CommandCancel,
    CommandCancelPayload,
    QueueUpdate,
    now_ms,
)

log = logging.getLogger(__name__)

#: How often the job checks that the agent is still connected somewhere.
_AGENT_CHECK_S = 2.0
#: How long a starting job waits for a cancel to give the first request's claim back.
_CANCEL_CLAIM_WAIT_S = 2.0


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


def _agent_available(conn: redis.Redis, agent_id: str) -> bool:
    pipe = conn.pipeline(transaction=False)
    pipe.zscore(keys.ONLINE_AGENTS, agent_id)
    pipe.sismember(keys.PAUSED_AGENTS, agent_id)
    pipe.sismember(keys.STOPPED_AGENTS, agent_id)
    online, paused, stopped = pipe.execute()
    return online is not None and not paused and not stopped


def publish_queue(conn: redis.Redis, agent_id: str, maxlen: int) -> None:
    publish_sync(conn, [QueueUpdate(payload=executions.snapshot(conn, agent_id))], maxlen)


def end_execution(
    conn: redis.Redis,
    spec: ExecutionSpec,
    status: ExecutionStatus,
    reason: EndReason,
    error: str | None,
    maxlen: int,
) -> bool:
    """Settle an execution from the hub's side (the agent never confirmed). True if this call did."""
    applied = lifecycle.apply_sync(
        conn, lifecycle.ended_by_hub(spec, status, reason, error, now_ms()), maxlen
    )
    if applied:
        executions.forget(conn, spec)
        publish_queue(conn, spec.agent_id, maxlen)
    return applied


def _park(conn: redis.Redis, spec: ExecutionSpec, maxlen: int) -> None:
    """Park the execution until its agent can take it. The agent may have become available (resumed,
    reconnected) between the check and the park, after the hub released the parked ones: then release
    it at once, or it would stay QUEUED until the next release. (A release takes the parked set in one
    transaction, so an execution is released once; the job that runs it then passes the check.)"""
    executions.park(conn, spec)
    if _agent_available(conn, spec.agent_id):
        executions.release_pending(conn, spec.agent_id)
    publish_queue(conn, spec.agent_id, maxlen)


def run_execution(execution_id: str) -> SupervisionOutcome:
    job = get_current_job()
    assert job is not None, "run_execution runs as an RQ job"
    conn: redis.Redis = job.connection
    settings = _settings()
    found = executions.load(conn, execution_id)
    if found is None:
        return SupervisionOutcome.MISSING
    spec, state = found
    with log_context(command_id=spec.command_id, agent_id=spec.agent_id, execution_id=spec.id):
        return _run(conn, spec, state, settings)


def _run(
    conn: redis.Redis, spec: ExecutionSpec, state: dict[str, str], settings: Settings
) -> SupervisionOutcome:
    maxlen = settings.event_stream_maxlen
    status = ExecutionStatus(state["status"])
    if status.terminal:
        conn.zrem(keys.SUPERVISED, spec.id)
        return SupervisionOutcome.ALREADY_ENDED
    # A run after a lost worker resumes an execution already on the agent.
    resuming = status in (ExecutionStatus.DISPATCHED, ExecutionStatus.EXECUTING)
    # The job sends the first request only with the claim (server/queue/dispatch.py), and parks the
    # execution only with it: a hub may have sent it since the state above was read. The claim stays
    # while the execution is parked, so that no hub sends what waits; release_pending gives it back.
    claimed = not resuming and _claim_first_request(conn, spec)
    if claimed and not _agent_available(conn, spec.agent_id):
        _park(conn, spec, maxlen)
        return SupervisionOutcome.PARKED
    try:
        return _supervise(conn, spec, state, resuming, claimed, settings)
    finally:
        conn.zrem(keys.SUPERVISED, spec.id)


def _passing(holder: str) -> bool:
    """A claim held only for a moment: a cancel's, while it takes a waiting job out of the queue (this
    one is running: the cancel gives it back and interrupts the command instead), or a hub's pending
    one, while it decides whether to send the request itself."""
    return holder == dispatch.BY_CANCEL or holder.startswith(dispatch.PENDING_PREFIX)


def _claim_first_request(conn: redis.Redis, spec: ExecutionSpec) -> bool:
    """True when this job is to send the first request; False when a hub has sent it. A passing
    claim (``_passing``) is waited for. (Should it never be given back, a hub died deciding: the job
    supervises as if the hub had sent the request, and sends it again after the retry interval.)"""
    deadline = time.monotonic() + _CANCEL_CLAIM_WAIT_S
    while True:
        if dispatch.claim(conn, spec.id, dispatch.BY_JOB):
            return True
        holder = conn.hget(keys.execution(spec.id), "dispatcher")
        if holder is not None and not _passing(as_text(holder)):
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _supervise(
    conn: redis.Redis,
    spec: ExecutionSpec,
    state: dict[str, str],
    resuming: bool,
    claimed: bool,
    settings: Settings,
) -> SupervisionOutcome:
    maxlen = settings.event_stream_maxlen

    signals = keys.execution_signals(spec.id)
    request = dispatch.command_request(spec)
    conn.zadd(keys.SUPERVISED, {spec.id: now_ms()})
    if not resuming:
        if claimed:
            if conn.publish(keys.agent_channel(spec.agent_id), request) == 0:
                # No hub holds the agent's socket right now: wait for it like for an offline agent.
                executions.park(conn, spec)
                publish_queue(conn, spec.agent_id, maxlen)
                return SupervisionOutcome.PARKED
            dispatch.mark_dispatched(conn, spec, maxlen)
            publish_queue(conn, spec.agent_id, maxlen)
        # Otherwise the hub sent it at admission: supervise only.
        dispatched_at = now_ms()
    else:
        # A new supervisor after a lost worker sends again (the agent drops a request it has); the
        # first supervisor of a request the hub sent at admission does not.
        restarted = int(state.get("supervisor_restarts") or 0) > 0
        if restarted or not dispatch.dispatcher(state).startswith(dispatch.HUB_PREFIX):
            conn.publish(keys.agent_channel(spec.agent_id), request)
        dispatched_at = int(state.get("started_at") or now_ms())

    start = time.monotonic()
    # The time limit counts from the dispatch, also across a resumed supervision.
    elapsed_s = max(0.0, (now_ms() - dispatched_at) / 1000)
    deadline = start - elapsed_s + spec.time_limit_ms / 1000 if spec.time_limit_ms else None
    last_send = start
    acked = False
    cancel: tuple[EndReason, str] | None = None
    grace_deadline: float | None = None
    offline_since: float | None = None
    next_agent_check = start + _AGENT_CHECK_S

    def send_cancel(reason: EndReason, message: str) -> None:
        # The agent may not have taken the request yet (a cancel before its ACK): it drops a cancel
        # for a command it does not know, and the grace period ends the execution.
        conn.hset(keys.execution(spec.id), "cancel_reason", reason.value)
        conn.publish(
            keys.agent_channel(spec.agent_id),
            CommandCancel(
                payload=CommandCancelPayload(command_id=spec.command_id, reason=message, end_reason=reason)
            ).to_json(),
        )

    last_beat = time.monotonic()
    while True:
        now = time.monotonic()
        if now - last_beat >= _AGENT_CHECK_S:  # signals coming thick and fast: beat all the same
            conn.zadd(keys.SUPERVISED, {spec.id: now_ms()})
            last_beat = now
        wakeups = [next_agent_check]
        if not acked and cancel is None:
            wakeups.append(last_send + settings.dispatch_retry_s)
        if deadline is not None and cancel is None:
            wakeups.append(deadline)
        if grace_deadline is not None:
            wakeups.append(grace_deadline)
        wait = max(0.01, min(wakeups) - now)
        item = conn.blpop([signals], timeout=wait)
        now = time.monotonic()
        if item is not None:
            try:
                signal = lifecycle.Signal.decode(item[1])
            except ValueError as exc:
                log.error("%s", exc)
                continue
            if signal.kind is SignalKind.DONE:
                return SupervisionOutcome.DONE
            if signal.kind is SignalKind.ACK:
                acked = True
            elif signal.reason is not None and cancel is None:
                # The hub that signalled has sent the agent its COMMAND_CANCEL with it: this job
                # only keeps the grace period.
                cancel = (signal.reason, signal.message)
                grace_deadline = now + settings.cancel_grace_s
            continue
        # One round trip a wake (a few hundred jobs wake every 2 s): the beat that tells the hubs this
        # job lives, whether the execution ended without a signal reaching it, whether the agent is on.
        pipe = conn.pipeline(transaction=False)
        pipe.zadd(keys.SUPERVISED, {spec.id: now_ms()})
        pipe.hget(keys.execution(spec.id), "status")
        pipe.zscore(keys.ONLINE_AGENTS, spec.agent_id)
        _, status, seen = pipe.execute()
        last_beat = now
        if status is None or ExecutionStatus(as_text(status)).terminal:
            return SupervisionOutcome.DONE
        if deadline is not None and cancel is None and now >= deadline:
            cancel = (EndReason.TIME_LIMIT, f"time limit of {spec.time_limit_ms} ms reached")
            grace_deadline = now + settings.cancel_grace_s
            send_cancel(*cancel)
        if grace_deadline is not None and now >= grace_deadline:
            assert cancel is not None
            reason, message = cancel
            end_execution(
                conn,
                spec,
                ExecutionStatus.CANCELLED,
                reason,
                f"{message}; the agent did not confirm within {settings.cancel_grace_s:g} s",
                maxlen,
            )
            return SupervisionOutcome.CANCELLED
        if now >= next_agent_check:
            next_agent_check = now + _AGENT_CHECK_S
            if seen is not None:
                offline_since = None
            else:
                offline_since = offline_since or now
                if now - offline_since >= settings.agent_lost_timeout_s:
                    end_execution(
                        conn,
                        spec,
                        ExecutionStatus.FAILED,
                        EndReason.AGENT_LOST,
                        f"the agent was offline for {settings.agent_lost_timeout_s:g} s while running it",
                        maxlen,
                    )
                    return SupervisionOutcome.AGENT_LOST
        if not acked and cancel is None and now - last_send >= settings.dispatch_retry_s:
            # The agent drops a request it already has, so sending again is safe. With no hub holding
            # its socket, the next try comes after the same interval (the agent-lost check ends it).
            conn.publish(keys.agent_channel(spec.agent_id), request)
            last_send = now


def on_execution_failure(
    job: Job,
    connection: redis.Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """The job died (worker killed, RQ timeout, a bug): settle the execution and stop the agent."""
    found = executions.load(connection, job.id)
    if found is None:
        return
    spec, state = found
    if ExecutionStatus(state["status"]).terminal:
        return
    connection.zrem(keys.SUPERVISED, spec.id)
    connection.publish(
        keys.agent_channel(spec.agent_id),
        CommandCancel(
            payload=CommandCancelPayload(
                command_id=spec.command_id,
                reason="the hub lost the command's supervisor",
                end_reason=EndReason.WORKER_LOST,
            )
        ).to_json(),
    )
    message = (
        f"{exc_type.__name__ if exc_type else 'worker'}: {exc_value}"
        if exc_value
        else "the worker running it died"
    )
    end_execution(
        connection,
        spec,
        ExecutionStatus.FAILED,
        EndReason.WORKER_LOST,
        message,
        _settings().event_stream_maxlen,
    )
