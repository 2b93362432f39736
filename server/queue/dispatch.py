"""Who sends an execution's first COMMAND_REQUEST: the hub at admission, or the job when it starts.

RQ admits an execution (``RateLimit(key=agent, concurrency=1)``) the moment it is enqueued when the
agent is idle. The job that supervises it starts a few milliseconds later, in a worker process, and
its request then takes another hop through Redis pub/sub to the hub holding the agent's socket. When
that hub is the one that just enqueued the command, it sends the request itself at admission, and the
job only supervises (acknowledgement, resends, time limit, cancel). That saves the job's start and the
pub/sub hop on the way to the agent, about a third of the dispatch time.

Exactly one side sends the first request: each claims the execution's ``dispatcher`` field
(``HSETNX``) before it sends. The hub claims only while the execution is still queued, its agent
online and neither paused nor stopped, and an RQ worker pool is alive to supervise it. A cancel of a
waiting execution claims the field too, so that nothing dispatches what is being taken out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import redis
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from server import keys
from server.queue import executions, lifecycle
from server.queue.executions import ExecutionSpec
from shared.api import ExecutionConstraints
from shared.enums import CommandType, ExecutionStatus
from shared.protocol import CommandRequest, CommandRequestPayload, CommandStatus, now_ms

#: The ``dispatcher`` values. A hub writes ``HUB_PREFIX + hub id``; ``PENDING_PREFIX + hub id`` while
#: it has yet to decide (see DISPATCH_BY_HUB).
HUB_PREFIX = "hub:"
PENDING_PREFIX = "pending:"
BY_JOB = "job"
BY_CANCEL = "cancel"

#: Claim the first request for a hub and mark the execution DISPATCHED, in one step. (The events
#: that announce it follow the send: see ``create_and_dispatch``.)
#: KEYS[1] = execution hash, KEYS[2] = online agents, KEYS[3] = paused, KEYS[4] = stopped,
#: KEYS[5] = the RQ workers of the command queue: one must be idle, the sign of a live pool with
#: room. (The pool keeps some idle and grows as jobs take them, ``server/worker.py``: the job that
#: supervises this request starts within moments; with no pool, a request sent would run with no
#: resend and no time limit on the hub's side.) KEYS[6] = the supervised executions: the execution
#: joins them at once, so that a worker lost before its job beats is noticed
#: (``executions.resume_supervision``).
#: KEYS[7] = the agent's live state: it names the hub that holds its socket now, which may not be
#: this one, whose record of a socket closed under it can lag.
#: ARGV[1] = agent id, ARGV[2] = the hub's claim, ARGV[3] = started at (ms), ARGV[4] = DISPATCHED,
#: ARGV[5] = its rank, ARGV[6] = the execution id, ARGV[7] = the hub's id, ARGV[8] = the hub's
#: pending claim (``pending_claim``), taken with the execution's record, or '' for none: it holds
#: back the job, whose worker may take the job the instant it is enqueued, until this decides; a
#: decline gives it back. Returns 1 when the hub is to send the request.
DISPATCH_BY_HUB = """
local holder = redis.call('HGET', KEYS[1], 'dispatcher')
if holder and holder ~= ARGV[8] then
  return 0
end
local function decline()
  if holder then
    redis.call('HDEL', KEYS[1], 'dispatcher')
  end
  return 0
end
if tonumber(redis.call('HGET', KEYS[1], 'rank') or '-1') ~= 0 then
  return decline()
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) or redis.call('HGET', KEYS[7], 'hub') ~= ARGV[7] then
  return decline()
end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 or redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then
  return decline()
end
local idle = false
for _, worker in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if redis.call('HGET', worker, 'state') == 'idle' then
    idle = true
    break
  end
end
if not idle then
  return decline()
end
redis.call('HSET', KEYS[1], 'dispatcher', ARGV[2], 'status', ARGV[4], 'rank', ARGV[5], 'started_at', ARGV[3])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[6])
return 1
"""
#: KEYS[1] = execution hash, ARGV[1] = the claim to drop (only if it is still that one).
RELEASE = """
if redis.call('HGET', KEYS[1], 'dispatcher') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'dispatcher')
end
return 0
"""


def command_request(spec: ExecutionSpec) -> str:
    """The COMMAND_REQUEST for an execution, as sent to its agent."""
    return CommandRequest(
        payload=CommandRequestPayload(
            command_id=spec.command_id,
            content=spec.content,
            type=CommandType(spec.type),
            priority=spec.priority,
            execution_constraints=ExecutionConstraints(
                time_limit_ms=spec.time_limit_ms, token_budget=spec.token_budget
            ),
        )
    ).to_json()


def pending_claim(hub_id: str) -> str:
    return PENDING_PREFIX + hub_id


def dispatch_by_hub(conn: redis.Redis, spec: ExecutionSpec, hub_id: str, pending: str = "") -> int | None:
    """Claim the first request for this hub and mark the execution DISPATCHED, if the hub may send
    it (the hub's pending claim, if it holds one, becomes the claim or is given back). Returns when
    it was dispatched (ms), or None."""
    at = now_ms()
    script = conn.register_script(DISPATCH_BY_HUB)
    claimed = script(
        keys=[
            keys.execution(spec.id),
            keys.ONLINE_AGENTS,
            keys.PAUSED_AGENTS,
            keys.STOPPED_AGENTS,
            WORKERS_BY_QUEUE_KEY % keys.COMMAND_QUEUE,
            keys.SUPERVISED,
            keys.agent(spec.agent_id),
        ],
        args=[
            spec.agent_id,
            HUB_PREFIX + hub_id,
            at,
            ExecutionStatus.DISPATCHED.value,
            ExecutionStatus.DISPATCHED.rank,
            spec.id,
            hub_id,
            pending,
        ],
    )
    return at if int(claimed) == 1 else None


def claim(conn: redis.Redis, execution_id: str, by: str) -> bool:
    """Claim the first request for the job (``BY_JOB``) or a cancel (``BY_CANCEL``)."""
    return bool(conn.hsetnx(keys.execution(execution_id), "dispatcher", by))


def release(conn: redis.Redis, execution_id: str, by: str) -> None:
    """Give up a claim that did not dispatch (the agent went away; the cancel came too late)."""
    conn.register_script(RELEASE)(keys=[keys.execution(execution_id)], args=[by])


def dispatcher(state: dict[str, str]) -> str:
    return state.get("dispatcher", "")


def mark_dispatched(conn: redis.Redis, spec: ExecutionSpec, maxlen: int) -> None:
    lifecycle.apply_sync(conn, lifecycle.dispatched(spec, now_ms()), maxlen)


def create_and_dispatch(
    conn: redis.Redis,
    specs: list[ExecutionSpec],
    local_agents: Collection[str],
    hub_id: str,
    send: Callable[[str, str], object],
) -> list[CommandStatus]:
    """Create the executions (``executions.create``); of those admitted at once whose agent's socket
    is on this hub, claim the first request and hand it to ``send(agent_id, request)`` (called in
    this thread: it is to schedule the send on the hub's loop). Returns the events that announce
    them, for the caller to publish: each execution's QUEUED, and DISPATCHED after it for each sent.

    They are not written here: every hub's loop wakes for an event on the stream, and this thread
    would then wait for the GIL before it could schedule a send; and the hub's publisher keeps them
    through a Redis outage, where a write here would fail the request of a command that runs.
    (Should the agent's ACK beat them, its EXECUTING is first on the stream; the hub's records, the
    store and the TUI keep the later status, and EXECUTING carries the start time too.)"""
    dispatched: dict[str, int] = {}
    pending = pending_claim(hub_id)
    local = {spec.id for spec in specs if spec.agent_id in local_agents}
    admitted = executions.create(conn, specs, claimed=local, claim=pending)
    for spec in admitted:
        if spec.id in local and (at := dispatch_by_hub(conn, spec, hub_id, pending)) is not None:
            send(spec.agent_id, command_request(spec))
            dispatched[spec.id] = at
    # Those that wait behind their agent's running command go to their job when admitted.
    admitted_ids = {spec.id for spec in admitted}
    for execution_id in sorted(local - admitted_ids):
        release(conn, execution_id, pending)
    events: list[CommandStatus] = []
    for spec in specs:
        events.append(lifecycle.queued_event(spec))
        if (at := dispatched.get(spec.id)) is not None:
            events.append(lifecycle.dispatched(spec, at).event)
    return events
