"""What users do to commands and agents, shared by the REST API and the dashboard socket."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

import redis
from redis.asyncio.client import Pipeline
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from server import keys
from server.db.models import AgentRow, CommandRow, ConstraintProfileRow, ExecutionRow, PresetRow
from server.errors import ServiceError, conflict, invalid, not_found
from server.hub import Hub
from server.queue import dispatch, executions, lifecycle
from server.queue.executions import ExecutionSpec, ReorderError
from server.redis_text import as_text, as_texts
from shared.api import (
    AgentQueue,
    ChangeSet,
    Command,
    CommandCreate,
    ControlResult,
    EmergencyStopResult,
    Execution,
    ExecutionConstraints,
    InputAnswer,
)
from shared.enums import (
    CommandType,
    ControlAction,
    EndReason,
    ErrorCode,
    ExecutionStatus,
)
from shared.protocol import (
    AgentControl,
    AgentControlPayload,
    CommandCancel,
    CommandCancelPayload,
    CommandStatus,
    EmergencyStopResultMessage,
    EmergencyStopResultPayload,
    InputResponse,
    InputResponsePayload,
    QueueUpdate,
    now_ms,
)

# ---- reading ----------------------------------------------------------------------------------------


async def command_record(hub: Hub, session: AsyncSession, row: CommandRow) -> Command:
    rows = list(
        (
            await session.execute(
                select(ExecutionRow).where(ExecutionRow.command_id == row.id).order_by(ExecutionRow.id)
            )
        ).scalars()
    )
    names = {
        a.id: a.name
        for a in (
            await session.execute(select(AgentRow).where(AgentRow.id.in_([r.agent_id for r in rows])))
        ).scalars()
    }
    return await _assemble(hub, row, rows, names)


async def _assemble(
    hub: Hub,
    row: CommandRow,
    rows: list[ExecutionRow],
    names: dict[str, str],
    queues: dict[str, AgentQueue] | None = None,
) -> Command:
    """The command as the API shows it, from its rows, its agents' names, their queues (read here
    unless given) and what Redis knows that the store has not written yet."""
    positions: dict[str, int | None] = {}
    open_rows = [r for r in rows if not ExecutionStatus(r.status).terminal]
    for agent_id in {r.agent_id for r in open_rows}:
        snapshot = (queues or {}).get(agent_id)
        if snapshot is None:
            snapshot = await asyncio.to_thread(executions.snapshot, hub.redis_sync, agent_id)
        for item in snapshot.items:
            positions[item.execution_id] = item.position
    if open_rows:
        # The store writes statuses a moment after they happen; Redis has them first.
        pipe = hub.redis.pipeline(transaction=False)
        for r in open_rows:
            pipe.hmget(keys.execution(r.id), *_LIVE_FIELDS)
        for r, values in zip(open_rows, await pipe.execute(), strict=True):
            live = dict(zip(_LIVE_FIELDS, (_text(v) for v in values), strict=True))
            if live["status"] and ExecutionStatus(live["status"]).rank > ExecutionStatus(r.status).rank:
                r.status = live["status"]
                r.end_reason = live["end_reason"] or r.end_reason
                r.error = live["error"] or r.error
                r.completed_at = int(live["completed_at"]) if live["completed_at"] else r.completed_at
                r.started_at = int(live["started_at"]) if live["started_at"] else r.started_at
                r.tokens_used = int(live["tokens_used"]) if live["tokens_used"] else r.tokens_used
                r.cost_usd = float(live["cost_usd"]) if live["cost_usd"] else r.cost_usd
                r.output_lines = int(live["output_lines"]) if live["output_lines"] else r.output_lines
                if live["changes"]:
                    r.changes = json.loads(live["changes"])
    execs = [
        Execution(
            id=r.id,
            command_id=r.command_id,
            agent_id=r.agent_id,
            agent_name=names.get(r.agent_id, ""),
            status=ExecutionStatus(r.status),
            end_reason=EndReason(r.end_reason) if r.end_reason else None,
            queue_position=positions.get(r.id),
            created_at=r.created_at,
            started_at=r.started_at,
            completed_at=r.completed_at,
            error=r.error,
            tokens_used=r.tokens_used,
            cost_usd=r.cost_usd,
            output_lines=r.output_lines,
            changes=ChangeSet.model_validate(r.changes) if r.changes else None,
        )
        for r in rows
    ]
    return Command(
        id=row.id,
        content=row.content,
        type=CommandType(row.type),
        target_agents=list(row.target_agents),
        broadcast=row.broadcast,
        status=combined_status([e.status for e in execs]),
        priority=row.priority,
        execution_constraints=ExecutionConstraints(
            time_limit_ms=row.time_limit_ms, token_budget=row.token_budget
        ),
        created_at=row.created_at,
        created_by=row.created_by,
        preset_id=row.preset_id,
        executions=execs,
    )


#: What Redis knows of an execution before the store has written it.
_LIVE_FIELDS = (
    "status",
    "end_reason",
    "error",
    "completed_at",
    "started_at",
    "tokens_used",
    "cost_usd",
    "output_lines",
    "changes",
)


def _text(value: bytes | None) -> str | None:
    """A reply value as text; None for a missing or empty one."""
    return as_text(value) or None if value else None


def combined_status(statuses: list[ExecutionStatus]) -> ExecutionStatus:
    """A command's status from its executions': running while any runs; then failed over
    cancelled over completed."""
    if not statuses:
        return ExecutionStatus.QUEUED
    open_ = [s for s in statuses if not s.terminal]
    if open_:
        return max(open_, key=lambda s: s.rank)
    for status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
        if status in statuses:
            return status
    return ExecutionStatus.COMPLETED


async def get_command(hub: Hub, command_id: str) -> Command:
    async with hub.sessions() as session:
        row = await session.get(CommandRow, command_id)
        if row is None:
            raise not_found("command", command_id)
        return await command_record(hub, session, row)


# ---- creating ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    id: str
    name: str
    online: bool
    last_seen: int | None


async def _resolve_targets(
    hub: Hub, session: AsyncSession, body: CommandCreate
) -> tuple[list[_Target], bytes | None]:
    """The command's agents, and the constraint profiles' version (read in the same round trip: see
    ``_default_constraints``)."""
    pipe = hub.redis.pipeline(transaction=False)
    pipe.get(keys.PROFILES_VERSION)
    if body.broadcast:
        pipe.zrange(keys.ONLINE_AGENTS, 0, -1)
        pipe.smembers(keys.STOPPED_AGENTS)
        version, online, stopped = await pipe.execute()
        stopped_ids = set(as_texts(stopped))
        ids = [a for a in as_texts(online) if a not in stopped_ids]
        if not ids:
            raise ServiceError(ErrorCode.AGENT_OFFLINE, "broadcast: no agent is online", 409)
        rows = (
            await session.execute(select(AgentRow).where(AgentRow.id.in_(ids)).order_by(AgentRow.name))
        ).scalars()
        return [_Target(r.id, r.name, True, r.last_seen) for r in rows], version
    assert body.target_agents
    # An agent that has connected since Redis started has its name there: one round trip for all
    # the targets instead of a database read and a Redis read each (this is on the way to dispatch).
    for ident in body.target_agents:
        pipe.hmget(keys.agent(ident), ["name", "last_seen"])
        pipe.zscore(keys.ONLINE_AGENTS, ident)
    version, *live = await pipe.execute()
    targets = []
    for index, ident in enumerate(body.target_agents):
        (name, last_seen), score = live[2 * index], live[2 * index + 1]
        if name is not None:
            seen = int(last_seen) if last_seen is not None else None
            targets.append(_Target(ident, as_text(name), score is not None, seen))
            continue
        row = await session.get(AgentRow, ident)
        if row is None:
            row = (await session.execute(select(AgentRow).where(AgentRow.name == ident))).scalar_one_or_none()
        if row is None:
            raise not_found("agent", ident)
        targets.append(_Target(row.id, row.name, await hub.agents.is_online(row.id), row.last_seen))
    if len({t.id for t in targets}) != len(targets):
        raise invalid("targetAgents names one agent twice")
    if not body.queue_if_offline:
        offline = [t for t in targets if not t.online]
        if offline:
            names = ", ".join(t.name for t in offline)
            raise ServiceError(
                ErrorCode.AGENT_OFFLINE,
                f"agent {names} is offline; nothing was sent. "
                "Send with queueIfOffline: true to queue it until "
                "the agent returns.",
                409,
                {"offline": [{"id": t.id, "name": t.name, "lastSeen": t.last_seen} for t in offline]},
            )
    return targets, version


async def _constraints(
    hub: Hub, session: AsyncSession, body: CommandCreate, profiles_version: bytes | None
) -> ExecutionConstraints:
    given = body.execution_constraints or ExecutionConstraints()
    if body.constraint_profile_id:
        profile = await session.get(ConstraintProfileRow, body.constraint_profile_id)
        if profile is None:
            raise not_found("constraint profile", body.constraint_profile_id)
        defaults: ExecutionConstraints | None = _limits(profile)
    else:
        defaults = await _default_constraints(hub, session, profiles_version)
    if defaults is None:
        return given
    return ExecutionConstraints(
        time_limit_ms=given.time_limit_ms or defaults.time_limit_ms,
        token_budget=given.token_budget or defaults.token_budget,
    )


async def _default_constraints(
    hub: Hub, session: AsyncSession, version: bytes | None
) -> ExecutionConstraints | None:
    """The default profile's limits, read from the database only when a profile was created since
    (any hub bumps ``version`` in Redis): every command needs them, and they seldom change."""
    cached = hub.default_constraints
    if cached is not None and cached[0] == version:
        return cached[1]
    profile = (
        await session.execute(select(ConstraintProfileRow).where(ConstraintProfileRow.is_default.is_(True)))
    ).scalar_one_or_none()
    defaults = _limits(profile) if profile is not None else None
    hub.default_constraints = (version, defaults)
    return defaults


def _limits(profile: ConstraintProfileRow) -> ExecutionConstraints:
    return ExecutionConstraints(time_limit_ms=profile.time_limit_ms, token_budget=profile.token_budget)


async def create_command(hub: Hub, actor: str, body: CommandCreate) -> Command:
    command_id = str(uuid.uuid4())
    created = now_ms()
    async with hub.sessions() as session:
        # Reads only, and in the common case none: the targets and the default limits come from Redis.
        targets, profiles_version = await _resolve_targets(hub, session, body)
        constraints = await _constraints(hub, session, body, profiles_version)
    row = CommandRow(
        id=command_id,
        content=body.content,
        type=body.type.value,
        priority=body.priority,
        broadcast=body.broadcast,
        target_agents=[t.id for t in targets],
        time_limit_ms=constraints.time_limit_ms,
        token_budget=constraints.token_budget,
        preset_id=body.preset_id,
        created_by=actor,
        created_at=created,
    )
    single = len(targets) == 1
    specs = []
    execution_rows = []
    for target in targets:
        execution_id = executions.execution_id_for(command_id, target.id, single)
        execution_rows.append(
            ExecutionRow(
                id=execution_id,
                command_id=command_id,
                agent_id=target.id,
                status=ExecutionStatus.QUEUED.value,
                status_rank=0,
                created_at=created,
            )
        )
        specs.append(
            ExecutionSpec(
                id=execution_id,
                command_id=command_id,
                agent_id=target.id,
                agent_name=target.name,
                content=body.content,
                type=body.type.value,
                priority=body.priority,
                created_at=created,
                time_limit_ms=constraints.time_limit_ms,
                token_budget=constraints.token_budget,
            )
        )

    def write(session: Session) -> None:
        if body.preset_id:
            result = session.execute(
                update(PresetRow)
                .where(PresetRow.id == body.preset_id)
                .values(usage_count=PresetRow.usage_count + 1)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise not_found("preset", body.preset_id)
        session.add(row)
        session.add_all(execution_rows)

    # An idle agent whose socket is here gets its request at admission (server/queue/dispatch.py),
    # scheduled from the thread: the thread's return reaches this task a loop turn or two later.
    loop = asyncio.get_running_loop()
    announcements: list[CommandStatus] = []

    def enqueue() -> None:
        announcements[:] = dispatch.create_and_dispatch(
            hub.redis_sync,
            specs,
            frozenset(s.agent_id for s in specs if s.agent_id in hub.agent_sockets),
            hub.hub_id,
            lambda agent_id, request: loop.call_soon_threadsafe(hub.forward_to_agent, agent_id, request),
        )

    # Committed first: the store writes what the job and the agent say about the command into them.
    if hub.thread_sessions is not None:
        thread_sessions = hub.thread_sessions

        def write_and_enqueue() -> None:
            with thread_sessions() as session, session.begin():
                write(session)
            enqueue()

        await asyncio.to_thread(write_and_enqueue)
    else:
        async with hub.sessions() as session, session.begin():
            await session.run_sync(write)
        await asyncio.to_thread(enqueue)
    for event in announcements:
        await hub.publish(event)
    queues = await publish_queues(hub, {s.agent_id for s in specs})
    await hub.audit(
        actor,
        "command.created",
        command_id=command_id,
        type=body.type.value,
        targets=[s.agent_id for s in specs],
        broadcast=body.broadcast,
        priority=body.priority,
        content=body.content[:500],
    )
    # From the rows in hand (they outlive the session) and the queues just read, not read back from
    # the database: the job is dispatching meanwhile, on this hub's event loop too.
    names = {t.id: t.name for t in targets}
    return await _assemble(hub, row, sorted(execution_rows, key=lambda r: r.id), names, queues)


async def publish_queues(hub: Hub, agent_ids: set[str]) -> dict[str, AgentQueue]:
    """Announce the agents' queues and records; returns the queues."""
    queues: dict[str, AgentQueue] = {}
    for agent_id in sorted(agent_ids):
        snapshot = queues[agent_id] = await asyncio.to_thread(executions.snapshot, hub.redis_sync, agent_id)
        await hub.publish(QueueUpdate(payload=snapshot))
        await hub.publish_agent(agent_id)
    return queues


# ---- cancelling -------------------------------------------------------------------------------------


async def _cancel_execution(hub: Hub, spec: ExecutionSpec, reason: EndReason, message: str) -> str:
    """Cancel one open execution. Returns 'dequeued', 'interrupting' or 'ended'."""
    if await asyncio.to_thread(executions.cancel_waiting, hub.redis_sync, spec):
        ending = lifecycle.ended_by_hub(spec, ExecutionStatus.CANCELLED, reason, message, now_ms())
        await lifecycle.apply(hub.redis, ending, hub.settings.event_stream_maxlen)
        await asyncio.to_thread(executions.forget, hub.redis_sync, spec)
        return "dequeued"
    status = await hub.redis.hget(keys.execution(spec.id), "status")
    if status is None or ExecutionStatus(as_text(status)).terminal:
        return "ended"
    pipe = hub.redis.pipeline(transaction=False)
    _interrupt(pipe, spec, reason, message)
    await pipe.execute()
    return "interrupting"


def _interrupt(pipe: Pipeline, spec: ExecutionSpec, reason: EndReason, message: str) -> None:
    """Queue the writes that interrupt a running execution: its reason first (for the agent's report
    of the end to find), then the signal to its job (which ends it after the grace period should the
    agent not confirm) and the COMMAND_CANCEL to its agent."""
    signals = keys.execution_signals(spec.id)
    pipe.hset(keys.execution(spec.id), "cancel_reason", reason.value)
    pipe.rpush(signals, lifecycle.cancel(reason, message).encode())
    # Should it have ended meanwhile, its list had an expiry that the push does not keep.
    pipe.expire(signals, 2 * executions.MAX_COMMAND_SECONDS)
    cancel = CommandCancel(
        payload=CommandCancelPayload(command_id=spec.command_id, reason=message, end_reason=reason)
    )
    pipe.publish(keys.agent_channel(spec.agent_id), cancel.model_dump_json(by_alias=True))


async def cancel_command(hub: Hub, actor: str, command_id: str, agent_id: str | None, reason: str) -> Command:
    command = await get_command(hub, command_id)
    targets = [e for e in command.executions if agent_id is None or e.agent_id == agent_id]
    if agent_id is not None and not targets:
        raise not_found("execution of command on agent", f"{command_id}/{agent_id}")
    open_ = [e for e in targets if not e.status.terminal]
    if not open_:
        raise conflict(f"command {command_id} has already finished", {"status": command.status.value})
    touched: set[str] = set()
    for execution in open_:
        found = await asyncio.to_thread(executions.load, hub.redis_sync, execution.id)
        if found is None:
            continue
        spec, _ = found
        running = execution.status in (ExecutionStatus.DISPATCHED, ExecutionStatus.EXECUTING)
        end = EndReason.INTERRUPTED if running else EndReason.USER_CANCEL
        outcome = await _cancel_execution(hub, spec, end, reason or f"cancelled by {actor}")
        touched.add(spec.agent_id)
        await hub.audit(
            actor,
            "command.cancelled",
            command_id=command_id,
            agent_id=spec.agent_id,
            outcome=outcome,
            reason=reason,
        )
    await publish_queues(hub, touched)
    return await get_command(hub, command_id)


# ---- queue ------------------------------------------------------------------------------------------


async def agent_queue(hub: Hub, agent_id: str) -> AgentQueue:
    if await hub.agents.row(agent_id) is None:
        raise not_found("agent", agent_id)
    return await asyncio.to_thread(executions.snapshot, hub.redis_sync, agent_id)


async def reorder_queue(hub: Hub, actor: str, agent_id: str, command_ids: list[str]) -> AgentQueue:
    if await hub.agents.row(agent_id) is None:
        raise not_found("agent", agent_id)
    execution_ids = []
    for command_id in command_ids:
        execution_id = await asyncio.to_thread(executions.resolve, hub.redis_sync, command_id, agent_id)
        if execution_id is None:
            # As for an execution that is no longer waiting (ReorderError): the order does not match
            # the queue as it is now.
            raise conflict(f"command {command_id} is not in agent {agent_id}'s queue")
        execution_ids.append(execution_id)
    try:
        await asyncio.to_thread(executions.reorder, hub.redis_sync, agent_id, execution_ids)
    except ReorderError as exc:
        raise conflict(str(exc)) from exc
    await publish_queues(hub, {agent_id})
    await hub.audit(actor, "queue.reordered", agent_id=agent_id, order=command_ids)
    return await asyncio.to_thread(executions.snapshot, hub.redis_sync, agent_id)


# ---- agents -----------------------------------------------------------------------------------------


async def control_agent(
    hub: Hub, actor: str, agent_id: str, action: ControlAction, reason: str
) -> ControlResult:
    if await hub.agents.row(agent_id) is None:
        raise not_found("agent", agent_id)
    r = hub.redis
    if action is ControlAction.PAUSE:
        await r.sadd(keys.PAUSED_AGENTS, agent_id)
    elif action is ControlAction.STOP:
        await r.sadd(keys.STOPPED_AGENTS, agent_id)
        await _cancel_running(hub, agent_id, EndReason.AGENT_STOPPED, reason or f"agent stopped by {actor}")
    elif action in (ControlAction.RESUME, ControlAction.RESTART):
        await r.srem(keys.STOPPED_AGENTS, agent_id)
        if action is ControlAction.RESUME:
            await r.srem(keys.PAUSED_AGENTS, agent_id)
    receivers = await hub.send_to_agent(
        agent_id, AgentControl(payload=AgentControlPayload(action=action, reason=reason))
    )
    if action in (ControlAction.RESUME, ControlAction.RESTART):
        await asyncio.to_thread(executions.release_pending, hub.redis_sync, agent_id)
    await publish_queues(hub, {agent_id})
    await hub.audit(
        actor, f"agent.{action.value.lower()}", agent_id=agent_id, reason=reason, delivered=receivers > 0
    )
    return ControlResult(agent_id=agent_id, action=action, delivered=receivers > 0)


async def _cancel_running(hub: Hub, agent_id: str, reason: EndReason, message: str) -> int:
    count = 0
    for execution_id in await asyncio.to_thread(executions.open_executions, hub.redis_sync, agent_id):
        found = await asyncio.to_thread(executions.load, hub.redis_sync, execution_id)
        if found is None:
            continue
        spec, state = found
        if ExecutionStatus(state["status"]) in (ExecutionStatus.DISPATCHED, ExecutionStatus.EXECUTING):
            if await _cancel_execution(hub, spec, reason, message) == "interrupting":
                count += 1
    return count


#: Cancels of an emergency stop in flight at once (each is a few Redis calls and a thread hop).
EMERGENCY_STOP_FAN_OUT = 64
#: The statuses of an execution on its agent.
_RUNNING = frozenset({ExecutionStatus.DISPATCHED, ExecutionStatus.EXECUTING})
#: How often an emergency stop looks whether the executions it interrupted have ended.
SETTLE_POLL_S = 0.02


def _open_executions(conn: redis.Redis, agent_ids: list[str]) -> list[tuple[ExecutionSpec, ExecutionStatus]]:
    found: list[tuple[ExecutionSpec, ExecutionStatus]] = []
    for agent_id in agent_ids:
        for execution_id in executions.open_executions(conn, agent_id):
            loaded = executions.load(conn, execution_id)
            if loaded is not None:
                found.append((loaded[0], ExecutionStatus(loaded[1]["status"])))
    return found


async def _wait_settled(hub: Hub, specs: list[ExecutionSpec], seconds: float) -> int:
    """Wait until every execution has ended (its agent confirmed once its processes were gone, or its
    job ended it after the grace period). Returns how many had not ended in ``seconds``."""
    waiting = {spec.id for spec in specs}
    deadline = time.monotonic() + seconds
    while waiting and time.monotonic() < deadline:
        ordered = sorted(waiting)
        pipe = hub.redis.pipeline(transaction=False)
        for execution_id in ordered:
            pipe.hget(keys.execution(execution_id), "status")
        for execution_id, status in zip(ordered, await pipe.execute(), strict=True):
            if status is None or ExecutionStatus(as_text(status)).terminal:
                waiting.discard(execution_id)
        if waiting:
            await asyncio.sleep(SETTLE_POLL_S)
    return len(waiting)


async def emergency_stop(
    hub: Hub, actor: str, reason: str, request_id: str | None = None
) -> EmergencyStopResult:
    """Cancel every open execution of every agent, in parallel, and answer once the last interrupted
    one has ended: its agent reports it after the command's processes are gone (the wrapper kills an
    emergency stop's process group at once), or its job ends it after the grace period."""
    started = time.monotonic()
    message = reason or f"emergency stop by {actor}"
    agent_ids = [row.id for row in await hub.agents.all_rows()]
    found = await asyncio.to_thread(_open_executions, hub.redis_sync, agent_ids)
    running = [spec for spec, status in found if status in _RUNNING]
    waiting = [spec for spec, status in found if status not in _RUNNING and not status.terminal]
    # Every running one at once, in one round trip: the agents start killing while the rest is done.
    pipe = hub.redis.pipeline(transaction=False)
    for spec in running:
        _interrupt(pipe, spec, EndReason.EMERGENCY_STOP, message)
    await pipe.execute()
    # Then the waiting ones leave their queues (one that started meanwhile is interrupted).
    gate = asyncio.Semaphore(EMERGENCY_STOP_FAN_OUT)

    async def stop(spec: ExecutionSpec) -> str:
        async with gate:
            return await _cancel_execution(hub, spec, EndReason.EMERGENCY_STOP, message)

    outcomes = await asyncio.gather(*(stop(spec) for spec in waiting))
    interrupted = running + [s for s, o in zip(waiting, outcomes, strict=True) if o == "interrupting"]
    dequeued = [s for s, o in zip(waiting, outcomes, strict=True) if o == "dequeued"]
    unsettled = await _wait_settled(hub, interrupted, hub.settings.cancel_grace_s + 2.0)
    duration_ms = int((time.monotonic() - started) * 1000)
    # An end the agent reported announced its queue already; a dequeued one's is announced here.
    await asyncio.gather(*(publish_queues(hub, {agent_id}) for agent_id in {s.agent_id for s in dequeued}))
    result = EmergencyStopResult(
        cancelled_running=len(interrupted),
        cleared_queued=len(dequeued),
        agents=len({spec.agent_id for spec in [*interrupted, *dequeued]}),
        duration_ms=duration_ms,
        unsettled=unsettled,
    )
    await hub.publish(
        EmergencyStopResultMessage(
            payload=EmergencyStopResultPayload(**result.model_dump(), request_id=request_id)
        )
    )
    await hub.audit(actor, "emergency_stop", reason=reason, **result.wire())
    return result


# ---- approvals --------------------------------------------------------------------------------------


async def answer_input(hub: Hub, actor: str, command_id: str, answer: InputAnswer) -> None:
    """Forward a user's allow/deny to the agent whose command waits for it."""
    command = await get_command(hub, command_id)
    candidates = [
        e for e in command.executions if answer.agent_id in (None, e.agent_id) and not e.status.terminal
    ]
    for execution in candidates:
        raw = await hub.redis.hget(keys.agent(execution.agent_id), "waiting_input")
        if raw is None:
            continue
        waiting = json.loads(raw)
        if waiting.get("commandId") != command_id or waiting.get("requestId") != answer.request_id:
            continue
        if not waiting.get("canAnswer", True):
            raise conflict(
                "this agent cannot be answered from the hub; change its permissions and send again"
            )
        delivered = await hub.send_to_agent(
            execution.agent_id,
            InputResponse(
                payload=InputResponsePayload(
                    command_id=command_id,
                    request_id=answer.request_id,
                    allow=answer.allow,
                    message=answer.message,
                )
            ),
        )
        if not delivered:
            raise ServiceError(
                ErrorCode.AGENT_OFFLINE, "the agent is not connected; try again when it is", 409
            )
        await hub.redis.hdel(keys.agent(execution.agent_id), "waiting_input")
        await hub.publish_agent(execution.agent_id)
        await hub.audit(
            actor,
            "command.input_answered",
            command_id=command_id,
            agent_id=execution.agent_id,
            request_id=answer.request_id,
            allow=answer.allow,
        )
        return
    raise not_found("pending approval", f"{command_id}/{answer.request_id}")
