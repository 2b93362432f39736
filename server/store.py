"""The store: writes the event stream to the database, in batches.

Every hub runs one consumer of the ``store`` group, so each event is written once whichever hub
published it. A batch is one transaction; it is acknowledged in Redis only after it commits, so a
hub killed mid-batch, or a database that is full or away, loses nothing: the events wait in the
group's pending list and are written when the store can (another hub claims a dead hub's pending
events after a minute). Writes are idempotent (unique keys, forward-only statuses), so a batch
written twice changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import Table, bindparam, case, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from server import keys
from server.db.models import (
    AgentRow,
    AuditLogRow,
    ExecutionRow,
    OutputLineRow,
    ReportRow,
    TraceRow,
    without_nul,
)
from server.redis_text import read_entries
from shared.protocol import (
    AgentStatusMessage,
    AuditEvent,
    CommandStatus,
    ReportReady,
    StreamEvent,
    TerminalStream,
    TraceUpdate,
    parse_stream_event,
)

log = logging.getLogger(__name__)

BATCH = 500
#: Events validated between two yields to the event loop.
PARSE_SLICE = 100
CLAIM_IDLE_MS = 60_000


_OUTPUT = cast(Table, OutputLineRow.__table__)
_EXECUTIONS = cast(Table, ExecutionRow.__table__)
_BUMP_OUTPUT_LINES = (
    update(_EXECUTIONS)
    .where(_EXECUTIONS.c.command_id == bindparam("b_command"), _EXECUTIONS.c.agent_id == bindparam("b_agent"))
    .values(
        output_lines=case(
            (_EXECUTIONS.c.output_lines < bindparam("b_lines"), bindparam("b_lines")),
            else_=_EXECUTIONS.c.output_lines,
        )
    )
)
_AGENTS = cast(Table, AgentRow.__table__)
_UPDATE_AGENT = (
    update(_AGENTS)
    .where(_AGENTS.c.id == bindparam("b_id"))
    .values(
        {
            column: bindparam(f"b_{column}", type_=_AGENTS.c[column].type)
            for column in (
                "status",
                "agent_type",
                "host_machine",
                "version",
                "last_seen",
                "health",
                "capabilities",
            )
        }
    )
)
_OUTPUT_COLUMNS = ("command_id", "agent_id", "sequence", "stream_type", "content", "ansi_codes", "emitted_at")
_INSERT_OUTPUT = {
    "postgresql": postgresql.insert(_OUTPUT).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_OUTPUT).on_conflict_do_nothing(),
}
#: The n-th (from 1) placeholder of the drivers the hub ships with (aiosqlite, asyncpg), for the
#: batch writes run as driver SQL.
_PLACEHOLDERS: dict[str, Callable[[int], str]] = {"qmark": lambda n: "?", "numeric_dollar": lambda n: f"${n}"}


def _insert_sql(paramstyle: str, table: Table, columns: tuple[str, ...], on_conflict: str) -> str | None:
    """An insert as driver SQL (both databases speak ``ON CONFLICT``); None for another driver's
    parameter style, which goes through the SQLAlchemy statement instead."""
    placeholder = _PLACEHOLDERS.get(paramstyle)
    if placeholder is None:
        return None
    values = ", ".join(placeholder(n) for n in range(1, len(columns) + 1))
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({values}) ON CONFLICT {on_conflict}"


def _output_sql(paramstyle: str) -> str | None:
    return _insert_sql(paramstyle, _OUTPUT, _OUTPUT_COLUMNS, "DO NOTHING")


async def _insert_lines(conn: AsyncConnection, lines: list[tuple[Any, ...]]) -> None:
    """One driver call for a batch of output lines. As driver SQL, a line costs about 11 µs of the
    hub's CPU against 26 µs through the compiled statement, whose per-row parameter processing ran on
    the event loop, 500 rows at a time, stalling every socket. The values come validated from the
    event; only a NUL in the text needs the replacement ``CleanText`` makes."""
    sql = _output_sql(conn.dialect.paramstyle)
    if sql is None:
        dialect = "postgresql" if conn.dialect.name == "postgresql" else "sqlite"
        await conn.execute(
            _INSERT_OUTPUT[dialect], [dict(zip(_OUTPUT_COLUMNS, line, strict=True)) for line in lines]
        )
    else:
        await conn.exec_driver_sql(sql, lines)


_TRACES = cast(Table, TraceRow.__table__)
_TRACE_KEY = ("command_id", "agent_id", "trace_id")
_TRACE_COLUMNS = (
    *_TRACE_KEY,
    "parent_id",
    "type",
    "name",
    "content",
    "started_at",
    "completed_at",
    "duration_ms",
    "tokens_used",
    "error",
)
#: Columns a later update leaves as they were when it has no value for them (None; 0 tokens).
_TRACE_KEPT = ("parent_id", "content", "started_at", "completed_at", "duration_ms", "error")
_TRACE_UPSERT = "({}) DO UPDATE SET {}".format(
    ", ".join(_TRACE_KEY),
    ", ".join(
        [
            *(f"{c} = coalesce(excluded.{c}, {_TRACES.name}.{c})" for c in _TRACE_KEPT),
            "tokens_used = CASE WHEN excluded.tokens_used > 0 THEN excluded.tokens_used"
            f" ELSE {_TRACES.name}.tokens_used END",
            "name = excluded.name",
            "type = excluded.type",
        ]
    ),
)


def _trace_sql(paramstyle: str) -> str | None:
    return _insert_sql(paramstyle, _TRACES, _TRACE_COLUMNS, _TRACE_UPSERT)


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


class Store:
    def __init__(
        self, redis_client: aioredis.Redis, sessions: async_sessionmaker[AsyncSession], consumer: str
    ) -> None:
        self.redis = redis_client
        self.sessions = sessions
        self.consumer = consumer
        #: Counts the command statuses written (the hub's /metrics); None: not counted.
        self.status_counter: Counter | None = None
        self.written = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(keys.EVENTS_STREAM, keys.STORE_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def backlog(self) -> int:
        """Events published but not yet written."""
        try:
            info = await self.redis.xpending(keys.EVENTS_STREAM, keys.STORE_GROUP)
            pending = int(info["pending"])
            groups = await self.redis.xinfo_groups(keys.EVENTS_STREAM)
            lag = 0
            for group in groups:
                name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
                if name == keys.STORE_GROUP and group.get("lag") is not None:
                    lag = int(group["lag"])
            return pending + lag
        except redis.RedisError:
            return 0

    async def _run(self) -> None:
        backoff = 0.1
        # Our own pending events first (left by a previous run under the same consumer name).
        cursor = "0"
        next_claim = 0.0
        group_ready = False
        while True:
            try:
                if not group_ready:
                    # On start and after a failure (Redis may have restarted without the group).
                    await self.ensure_group()
                    group_ready = True
                loop_time = asyncio.get_running_loop().time()
                if loop_time >= next_claim:
                    next_claim = loop_time + 15
                    await self._claim_abandoned()
                response = await self.redis.xreadgroup(
                    keys.STORE_GROUP,
                    self.consumer,
                    {keys.EVENTS_STREAM: cursor},
                    count=BATCH,
                    block=None if cursor == "0" else 1000,
                )
                entries = read_entries(response)
                if self.last_error is not None and self.last_error.startswith("redis"):
                    self.last_error = None  # Redis answered again
                if cursor == "0" and not entries:
                    cursor = ">"
                    continue
                if not entries:
                    continue
                await self.write(entries)
                backoff = 0.1
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except (SQLAlchemyError, OSError) as exc:
                self.last_error = f"database: {exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"
                log.error(
                    "store cannot write (%s); events wait in Redis, retrying in %.1fs",
                    self.last_error,
                    backoff,
                )
                cursor = "0"  # retry the unacknowledged batch first
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except redis.RedisError as exc:
                self.last_error = f"redis: {exc}"
                log.warning("store lost Redis (%s); retrying in %.1fs", exc, backoff)
                group_ready = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _claim_abandoned(self) -> None:
        """Take over events a dead hub read but never wrote."""
        start = "0-0"
        while True:
            result = await self.redis.xautoclaim(
                keys.EVENTS_STREAM,
                keys.STORE_GROUP,
                self.consumer,
                CLAIM_IDLE_MS,
                start_id=start,
                count=BATCH,
            )
            start, claimed = result[0], result[1]
            if claimed:
                await self.write([entry for entry in claimed if entry and entry[1]])
            if not claimed or start in (b"0-0", "0-0"):
                break

    async def write(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        events: list[StreamEvent] = []
        ids = [entry_id for entry_id, _ in entries]
        for index, (entry_id, fields) in enumerate(entries, 1):
            # A pending entry the stream has trimmed since comes back without fields: nothing to write.
            data = fields.get(b"m") if fields else None
            if data is not None:
                try:
                    events.append(parse_stream_event(data))
                except ValidationError as exc:
                    log.error("dropping unreadable event %s: %s", entry_id, exc)
            if index % PARSE_SLICE == 0:
                # Let the sockets have the loop between slices: validating a whole batch at once held
                # it for milliseconds, a delay every line in flight took (the store is not in a hurry).
                await asyncio.sleep(0)
        if events:
            async with self.sessions() as session, session.begin():
                await apply(session, events)
            if self.status_counter is not None:
                for event in events:
                    if isinstance(event, CommandStatus):
                        self.status_counter.labels(event.payload.status.value).inc()
        if ids:
            await self.redis.xack(keys.EVENTS_STREAM, keys.STORE_GROUP, *ids)
        self.written += len(events)


async def apply(session: AsyncSession, events: list[StreamEvent]) -> None:
    lines: list[tuple[Any, ...]] = []
    max_seq: dict[tuple[str, str], int] = defaultdict(lambda: -1)
    for event in events:
        if isinstance(event, TerminalStream):
            p = event.payload
            # In _OUTPUT_COLUMNS order.
            lines.append(
                (
                    p.command_id,
                    p.agent_id,
                    p.sequence,
                    p.stream_type.value,
                    without_nul(p.content),
                    p.ansi_codes,
                    p.emitted_at,
                )
            )
            key = (p.command_id, p.agent_id)
            max_seq[key] = max(max_seq[key], p.sequence)
    if lines:
        # One driver call per batch for the lines, one for the line counts of all the executions in
        # it (a statement per execution cost a round trip to the database thread each, 1-2 ms).
        conn = await session.connection()
        await _insert_lines(conn, lines)
        await conn.execute(
            _BUMP_OUTPUT_LINES,
            [{"b_command": c, "b_agent": a, "b_lines": seq + 1} for (c, a), seq in max_seq.items()],
        )
    await _apply_traces(session, [e for e in events if isinstance(e, TraceUpdate)])
    # An agent's record takes its latest status in the batch: one statement for all of them.
    agents: dict[str, dict[str, Any]] = {}
    for event in events:
        if isinstance(event, AgentStatusMessage):
            a = event.payload
            agents[a.id] = {
                "b_id": a.id,
                "b_status": a.status.value,
                "b_agent_type": a.agent_type.value,
                "b_host_machine": a.host_machine,
                "b_version": a.version,
                "b_last_seen": a.last_seen,
                "b_health": a.health.wire(),
                "b_capabilities": a.capabilities,
            }
    if agents:
        conn = await session.connection()
        await conn.execute(_UPDATE_AGENT, list(agents.values()))
    for event in events:
        if isinstance(event, CommandStatus):
            await _apply_status(session, event)
        elif isinstance(event, ReportReady):
            r = event.payload
            values = {
                "id": r.id,
                "command_id": r.command_id,
                "agent_id": r.agent_id,
                "status": r.status.value,
                "title": r.title,
                "summary": r.summary,
                "content": r.content.wire(),
                "created_at": r.created_at,
            }
            stmt = _insert(session, ReportRow).values(values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["id"], set_={k: v for k, v in values.items() if k != "id"}
            )
            await session.execute(stmt)
        elif isinstance(event, AuditEvent):
            entry = event.payload
            session.add(
                AuditLogRow(
                    at=entry.at,
                    actor=entry.actor,
                    action=entry.action,
                    agent_id=entry.agent_id,
                    command_id=entry.command_id,
                    details=entry.details,
                )
            )


async def _apply_traces(session: AsyncSession, updates: list[TraceUpdate]) -> None:
    """Upsert a batch of trace nodes in one driver call. A node comes more than once (a tool call,
    then its end): later values win, but a value left out (None) never erases one already known.

    As driver SQL, like the output lines: the compiled multi-row statement cost about 0.5 ms of the
    hub's event loop a node (its compilation, 12 parameters a row), so a CLI's 20,000 model turns held
    the hub at a full core for 13 s."""
    if not updates:
        return
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for update_event in updates:
        t = update_event.payload
        values: dict[str, Any] = {
            "command_id": t.command_id,
            "agent_id": t.agent_id,
            "trace_id": t.trace_id,
            "parent_id": t.parent_id,
            "type": t.type.value,
            "name": t.name,
            "content": t.content,
            "started_at": t.started_at,
            "completed_at": t.completed_at,
            "duration_ms": t.duration_ms,
            "tokens_used": t.tokens_used,
            "error": t.error,
        }
        key = (t.command_id, t.agent_id, t.trace_id)
        known = merged.get(key)
        if known is None:
            merged[key] = values
        else:
            known.update({k: v for k, v in values.items() if v is not None and (k != "tokens_used" or v)})
    conn = await session.connection()
    sql = _trace_sql(conn.dialect.paramstyle)
    if sql is not None:
        # The JSON column as its type would bind it (json.dumps; None is SQL NULL, none_as_null), and
        # text without NUL, as CleanString/CleanText would.
        rows = []
        for values in merged.values():
            content = values["content"]
            values["content"] = None if content is None else json.dumps(content)
            values["name"] = without_nul(values["name"])
            values["error"] = without_nul(values["error"])
            rows.append(tuple(values[column] for column in _TRACE_COLUMNS))
        await conn.exec_driver_sql(sql, rows)
        return
    all_rows = list(merged.values())
    for start in range(0, len(all_rows), 500):
        stmt = _insert(session, TraceRow).values(all_rows[start : start + 500])
        keep: dict[str, Any] = {
            column: func.coalesce(getattr(stmt.excluded, column), getattr(TraceRow, column))
            for column in _TRACE_KEPT
        }
        keep["tokens_used"] = case(
            (stmt.excluded.tokens_used > 0, stmt.excluded.tokens_used), else_=TraceRow.tokens_used
        )
        keep["name"] = stmt.excluded.name
        keep["type"] = stmt.excluded.type
        await session.execute(stmt.on_conflict_do_update(index_elements=list(_TRACE_KEY), set_=keep))


async def _apply_status(session: AsyncSession, event: CommandStatus) -> None:
    p = event.payload
    rank = p.status.rank
    values: dict[str, Any] = {"status": p.status.value, "status_rank": rank}
    if p.end_reason is not None:
        values["end_reason"] = p.end_reason.value
    if p.error is not None:
        values["error"] = p.error
    if p.started_at is not None:
        values["started_at"] = p.started_at
    if p.completed_at is not None:
        values["completed_at"] = p.completed_at
    if p.tokens_used:
        values["tokens_used"] = p.tokens_used
    if p.cost_usd:
        values["cost_usd"] = p.cost_usd
    if p.changes is not None:
        values["changes"] = p.changes.wire()
    await session.execute(
        update(ExecutionRow)
        .where(
            ExecutionRow.command_id == p.command_id,
            ExecutionRow.agent_id == p.agent_id,
            ExecutionRow.status_rank < rank,
        )
        .values(**values)
    )
