"""Executions in Redis and their order: the layer in front of RQ.

Each execution (one command on one agent) is an RQ job whose id is the execution id (the command id
when the command has one target). RQ's ``RateLimit(key=agent, concurrency=1)`` admits one job per
agent at a time across every worker; the jobs it holds back wait in RQ's per-key sorted set, popped
lowest score first. Onsembl sets those scores itself, so the waiting set *is* the agent's queue:
priority and submission order make the score, and a reorder swaps scores among the listed commands.

Executions that cannot run yet (agent offline, paused or stopped) are parked in the agent's pending
set with the same score, and go back to RQ when the agent can take them.

All functions here are synchronous and take the connection: the RQ jobs call them directly, the hub
through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass

import redis
from redis.typing import EncodableT, FieldT
from rq import Callback, Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimit, RateLimitRegistry
from rq.registry import StartedJobRegistry

from server import keys
from server.queue.scripts import REORDER
from server.redis_text import as_text, as_texts, text_hash
from shared.api import AgentQueue, QueueItem
from shared.enums import CommandType, ExecutionStatus
from shared.protocol import now_ms

#: Seconds an RQ job may run when the command has no time limit.
MAX_COMMAND_SECONDS = 24 * 3600
#: Scores sort by priority first, then by submission. RQ scores a job it has just added by the
#: current Unix time (~1.7e9), above every score here, so a new job never jumps the queue in the
#: instant before its real score is set.
_PRIORITY_STEP = 10_000_000


def order_score(priority: int, seq: int) -> float:
    return float((100 - priority) * _PRIORITY_STEP + seq % _PRIORITY_STEP)


def execution_id_for(command_id: str, agent_id: str, single_target: bool) -> str:
    return command_id if single_target else f"{command_id}_{agent_id}"


@dataclass
class ExecutionSpec:
    id: str
    command_id: str
    agent_id: str
    agent_name: str
    content: str
    type: str
    priority: int
    created_at: int
    time_limit_ms: int | None = None
    token_budget: int | None = None
    score: float = 0.0

    def to_hash(self) -> dict[FieldT, EncodableT]:
        data: dict[FieldT, EncodableT] = {k: ("" if v is None else str(v)) for k, v in asdict(self).items()}
        data["status"] = ExecutionStatus.QUEUED.value
        data["rank"] = str(ExecutionStatus.QUEUED.rank)
        return data

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> ExecutionSpec:
        data = text_hash(raw)

        def opt_int(name: str) -> int | None:
            value = data.get(name, "")
            return int(value) if value else None

        return cls(
            id=data["id"],
            command_id=data["command_id"],
            agent_id=data["agent_id"],
            agent_name=data.get("agent_name", ""),
            content=data["content"],
            type=data.get("type", CommandType.NATURAL.value),
            priority=int(data.get("priority", "50")),
            created_at=int(data.get("created_at", "0")),
            time_limit_ms=opt_int("time_limit_ms"),
            token_budget=opt_int("token_budget"),
            score=float(data.get("score", "0")),
        )

    @property
    def job_timeout(self) -> int:
        if self.time_limit_ms is None:
            return MAX_COMMAND_SECONDS
        return self.time_limit_ms // 1000 + 120


def load(conn: redis.Redis, execution_id: str) -> tuple[ExecutionSpec, dict[str, str]] | None:
    raw = conn.hgetall(keys.execution(execution_id))
    if not raw:
        return None
    spec = ExecutionSpec.from_hash(raw)
    state = text_hash(raw)
    return spec, state


def queue(conn: redis.Redis) -> Queue:
    return Queue(keys.COMMAND_QUEUE, connection=conn)


def create(
    conn: redis.Redis, specs: Iterable[ExecutionSpec], claimed: Collection[str] = (), claim: str = ""
) -> list[ExecutionSpec]:
    """Record the executions and put each in its agent's queue. Returns those admitted at once (their
    agent was idle): each holds its agent's slot, and its job is on its way to a worker. The
    executions whose ids are in ``claimed`` are recorded with ``claim`` as their first request's
    claim (``dispatch``)."""
    specs = list(specs)
    first = int(conn.incrby(keys.ORDER_SEQ, len(specs))) - len(specs) + 1
    pipe = conn.pipeline(transaction=True)
    for offset, spec in enumerate(specs):
        spec.score = order_score(spec.priority, first + offset)
        record = spec.to_hash()
        if spec.id in claimed:
            record["dispatcher"] = claim
        pipe.hset(keys.execution(spec.id), mapping=record)
        pipe.sadd(keys.agent_executions(spec.agent_id), spec.id)
        pipe.set(keys.execution_index(spec.command_id, spec.agent_id), spec.id)
    pipe.execute()
    return [spec for spec in specs if enqueue(conn, spec)]


def enqueue(conn: redis.Redis, spec: ExecutionSpec) -> bool:
    """Put the execution in its agent's RQ queue. True when admitted at once (the agent was idle)."""
    from server.queue.jobs import on_execution_failure, run_execution

    job = queue(conn).enqueue(
        run_execution,
        spec.id,
        job_id=spec.id,
        job_timeout=spec.job_timeout,
        result_ttl=7 * 24 * 3600,
        failure_ttl=30 * 24 * 3600,
        description=f"{spec.type} on {spec.agent_name or spec.agent_id}: {spec.content[:60]}",
        rate_limit=RateLimit(key=keys.rate_limit_key(spec.agent_id), concurrency=1),
        on_failure=Callback(on_execution_failure),
    )
    if job.get_status(refresh=False) == JobStatus.RATE_LIMITED:
        # Waiting behind the agent's running job: RQ admits waiting jobs by score, oldest first; the
        # score becomes the queue order (priority first). A job admitted at once (an idle agent) has
        # left the set: no round trip for it on the way to dispatch.
        registry = RateLimitRegistry(keys.rate_limit_key(spec.agent_id), connection=conn)
        conn.zadd(registry.rate_limited_key, {spec.id: spec.score}, xx=True)
        return False
    return True


def park(conn: redis.Redis, spec: ExecutionSpec) -> None:
    conn.zadd(keys.agent_pending(spec.agent_id), {spec.id: spec.score})


def release_pending(conn: redis.Redis, agent_id: str) -> int:
    """Put the agent's parked executions back in its RQ queue, in order, with the job's claim on the
    first request given back (``dispatch``). Returns how many."""
    from server.queue import dispatch

    pending_key = keys.agent_pending(agent_id)
    pipe = conn.pipeline(transaction=True)
    pipe.zrange(pending_key, 0, -1)
    pipe.delete(pending_key)
    ids, _ = pipe.execute()
    released = 0
    for raw in ids:
        found = load(conn, raw.decode())
        if found is None:
            continue
        spec, state = found
        if ExecutionStatus(state["status"]).terminal:
            continue
        dispatch.release(conn, spec.id, dispatch.BY_JOB)
        enqueue(conn, spec)
        released += 1
    return released


def cancel_waiting(conn: redis.Redis, spec: ExecutionSpec) -> bool:
    """Take a not-yet-running execution out of its queue. False when it is running (or gone)."""
    from server.queue import dispatch

    if conn.zrem(keys.agent_pending(spec.agent_id), spec.id):
        return True
    # Admitted and queued is not yet waiting: the hub may have sent the request at admission. The
    # claim tells, and keeps it from being sent while the job is taken out.
    if not dispatch.claim(conn, spec.id, dispatch.BY_CANCEL):
        return False
    taken = False
    try:
        job = Job.fetch(spec.id, connection=conn)
        if job.get_status() in (
            JobStatus.RATE_LIMITED,
            JobStatus.QUEUED,
            JobStatus.DEFERRED,
            JobStatus.SCHEDULED,
        ):
            job.cancel()
            taken = True
    except (NoSuchJobError, InvalidJobOperation):
        pass
    finally:
        if not taken:  # a starting job waits for the claim to come back
            dispatch.release(conn, spec.id, dispatch.BY_CANCEL)
    return taken


def forget(conn: redis.Redis, spec: ExecutionSpec) -> None:
    """An execution ended: drop it from the agent's open set (its hash expires later)."""
    pipe = conn.pipeline(transaction=False)
    pipe.srem(keys.agent_executions(spec.agent_id), spec.id)
    pipe.expire(keys.execution(spec.id), 7 * 24 * 3600)
    pipe.expire(keys.execution_index(spec.command_id, spec.agent_id), 7 * 24 * 3600)
    # Not deleted: the supervising job may not have read the hub's "done" yet.
    pipe.expire(keys.execution_signals(spec.id), 120)
    pipe.execute()


class ReorderError(ValueError):
    pass


def reorder(conn: redis.Redis, agent_id: str, execution_ids: list[str]) -> None:
    """Apply a new order to waiting executions. Each must be waiting in the agent's queue."""
    if len(set(execution_ids)) != len(execution_ids):
        raise ReorderError("the order lists a command twice")
    registry = RateLimitRegistry(keys.rate_limit_key(agent_id), connection=conn)
    waiting = set(as_texts(conn.zrange(registry.rate_limited_key, 0, -1)))
    parked = set(as_texts(conn.zrange(keys.agent_pending(agent_id), 0, -1)))
    unknown = [e for e in execution_ids if e not in waiting and e not in parked]
    if unknown:
        raise ReorderError(
            f"not waiting in this agent's queue (running, finished or unknown): {', '.join(unknown)}"
        )
    script = conn.register_script(REORDER)
    for key, members in ((registry.rate_limited_key, waiting), (keys.agent_pending(agent_id), parked)):
        subset = [e for e in execution_ids if e in members]
        if subset:
            found = int(script(keys=[key], args=subset))
            if found != len(subset):
                raise ReorderError("the queue changed while reordering; try again")


def snapshot(conn: redis.Redis, agent_id: str) -> AgentQueue:
    """The agent's queue as the TUI shows it: position 0 runs, 1.. wait in order."""
    registry = RateLimitRegistry(keys.rate_limit_key(agent_id), connection=conn)
    pipe = conn.pipeline(transaction=True)
    pipe.zrange(registry.allowed_key, 0, -1)
    pipe.zrange(registry.rate_limited_key, 0, -1, withscores=True)
    pipe.zrange(keys.agent_pending(agent_id), 0, -1, withscores=True)
    pipe.sismember(keys.PAUSED_AGENTS, agent_id)
    allowed, waiting, parked, paused = pipe.execute()
    ordered: list[str] = [m.decode() for m in allowed]
    ordered += [m.decode() for m, _ in sorted([*waiting, *parked], key=lambda pair: pair[1])]
    pipe = conn.pipeline(transaction=False)
    for execution_id in ordered:
        pipe.hgetall(keys.execution(execution_id))
    items: list[QueueItem] = []
    position = 0 if allowed else 1
    for execution_id, raw in zip(ordered, pipe.execute(), strict=True):
        if not raw:
            continue
        spec = ExecutionSpec.from_hash(raw)
        status = ExecutionStatus(raw[b"status"].decode())
        if status.terminal:
            continue
        items.append(
            QueueItem(
                command_id=spec.command_id,
                execution_id=execution_id,
                position=position,
                status=status,
                priority=spec.priority,
                content=spec.content[:200],
                type=CommandType(spec.type),
                created_at=spec.created_at,
            )
        )
        position += 1
    return AgentQueue(agent_id=agent_id, paused=bool(paused), items=items)


def resume_supervision(conn: redis.Redis, execution_id: str) -> bool:
    """Put an execution's supervising job back at the front of the queue after its worker died.

    The job keeps the agent's RateLimit slot (the command is still running on the agent), so it goes
    straight onto the queue rather than through the limiter. The new run sends COMMAND_REQUEST again;
    the wrapper answers with its ACK (still running) or its COMMAND_COMPLETE (finished meanwhile),
    never by running the command twice.
    """
    try:
        job = Job.fetch(execution_id, connection=conn)
    except NoSuchJobError:
        conn.zrem(keys.SUPERVISED, execution_id)
        return False
    if conn.lpos(queue(conn).key, execution_id) is not None:
        # Sent by a hub at admission, its job still waits for a worker (the pool is down or busy):
        # no worker lost it, and the next one takes it.
        conn.zadd(keys.SUPERVISED, {execution_id: now_ms()})
        return False
    started = StartedJobRegistry(queue=queue(conn))
    pipe = conn.pipeline(transaction=True)
    started.remove_executions(job, pipeline=pipe)
    job.set_status(JobStatus.QUEUED, pipeline=pipe)
    pipe.hincrby(keys.execution(execution_id), "supervisor_restarts", 1)
    pipe.zadd(keys.SUPERVISED, {execution_id: now_ms()})
    pipe.execute()
    queue(conn).push_job_id(execution_id, at_front=True)
    return True


def resolve(conn: redis.Redis, command_id: str, agent_id: str) -> str | None:
    value = conn.get(keys.execution_index(command_id, agent_id))
    return as_text(value) if value else None


def open_executions(conn: redis.Redis, agent_id: str) -> list[str]:
    return sorted(as_texts(conn.smembers(keys.agent_executions(agent_id))))
