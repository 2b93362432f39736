"""The store's batch writes (output lines, trace nodes) into a real database, through the driver SQL
the shipped drivers get and through the SQLAlchemy statement any other driver gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server import store
from server.db.models import CommandRow, ExecutionRow, OutputLineRow, TraceRow
from server.db.session import make_engine, make_sessionmaker, upgrade_async
from shared.api import TraceEventRecord
from shared.config import Settings
from shared.enums import AgentType, ExecutionStatus, StreamType, TraceType
from shared.protocol import StreamEvent, TerminalStream, TerminalStreamPayload, TraceUpdate


def line(sequence: int, content: str) -> TerminalStream:
    return TerminalStream(
        payload=TerminalStreamPayload(
            command_id="cmd-1",
            agent_id="agent-1",
            agent_name="a",
            agent_type=AgentType.SHELL,
            stream_type=StreamType.STDERR if sequence == 1 else StreamType.STDOUT,
            content=content,
            ansi_codes=sequence == 2,
            sequence=sequence,
            emitted_at=1_700_000_000_000 + sequence,
        )
    )


async def read_rows(sessions: async_sessionmaker[AsyncSession], *columns: Any) -> list[tuple[Any, ...]]:
    """The columns of every row, ordered by the first."""
    async with sessions() as session:
        rows = (await session.execute(select(*columns).order_by(columns[0]))).all()
    return [tuple(r) for r in rows]


async def write_and_read(url: str) -> tuple[list[tuple[object, ...]], int]:
    await upgrade_async(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session, session.begin():
            session.add(CommandRow(id="cmd-1", content="x", type="NATURAL", priority=50, created_at=1))
            await session.flush()
            running = ExecutionStatus.EXECUTING.value
            session.add(
                ExecutionRow(id="cmd-1", command_id="cmd-1", agent_id="agent-1", status=running, created_at=1)
            )
        first: list[StreamEvent] = [line(0, "zero\n"), line(1, "one\x00\n"), line(2, "\x1b[1mtwo\n")]
        async with sessions() as session, session.begin():
            await store.apply(session, first)
        # Written again (a batch retried after a crash), with one new line: nothing twice.
        async with sessions() as session, session.begin():
            await store.apply(session, [*first, line(3, "three\n")])
        rows = await read_rows(
            sessions,
            OutputLineRow.sequence,
            OutputLineRow.stream_type,
            OutputLineRow.content,
            OutputLineRow.ansi_codes,
            OutputLineRow.emitted_at,
        )
        async with sessions() as session:
            counted = (await session.get(ExecutionRow, "cmd-1")).output_lines  # type: ignore[union-attr]
        return rows, counted
    finally:
        await engine.dispose()


EXPECTED = [
    (0, "STDOUT", "zero\n", False, 1_700_000_000_000),
    (1, "STDERR", "one\ufffd\n", False, 1_700_000_000_001),
    (2, "STDOUT", "\x1b[1mtwo\n", True, 1_700_000_000_002),
    (3, "STDOUT", "three\n", False, 1_700_000_000_003),
]


@pytest.fixture(params=[True, False], ids=["driver-sql", "sqlalchemy-statement"])
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite database, written through the driver SQL or, as any other driver's would be, through
    the SQLAlchemy statements."""
    if not request.param:
        monkeypatch.setattr(store, "_insert_sql", lambda *args: None)
    return Settings(data_dir=tmp_path).sqlalchemy_url


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    return postgres_database.replace("postgresql://", "postgresql+asyncpg://", 1)


async def test_output_batches_are_written_once_each(sqlite_url: str) -> None:
    assert await write_and_read(sqlite_url) == (EXPECTED, 4)


@pytest.mark.postgres
async def test_output_batches_on_postgresql(postgres_url: str) -> None:
    assert await write_and_read(postgres_url) == (EXPECTED, 4)


def node(trace_id: str, **fields: object) -> TraceUpdate:
    values: dict[str, object] = {"type": TraceType.TOOL_CALL, "name": "Bash"} | fields
    return TraceUpdate(
        payload=TraceEventRecord(command_id="cmd-1", agent_id="agent-1", trace_id=trace_id, **values)
    )


async def write_traces(url: str) -> list[tuple[object, ...]]:
    await upgrade_async(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        # A tool call, then its end in the same batch and in the next: later values win, a value
        # left out (None, 0 tokens) keeps the one known.
        async with sessions() as session, session.begin():
            await store.apply(
                session,
                [
                    node(
                        "msg-1",
                        type=TraceType.RESPONSE,
                        name="model\x00x",
                        content={"text": "hi"},
                        tokens_used=7,
                    ),
                    node("tool-1", parent_id="msg-1", content={"command": "ls"}, started_at=10),
                    node("tool-1", completed_at=15, duration_ms=5),
                    node("tool-2", parent_id="msg-1", content="plain", started_at=20),
                ],
            )
        async with sessions() as session, session.begin():
            await store.apply(
                session,
                [
                    node("tool-2", completed_at=30, duration_ms=10, error="exit 1\x00"),
                    node("msg-1", type=TraceType.RESPONSE, name="model"),
                ],
            )
        return await read_rows(
            sessions,
            TraceRow.trace_id,
            TraceRow.parent_id,
            TraceRow.type,
            TraceRow.name,
            TraceRow.content,
            TraceRow.started_at,
            TraceRow.completed_at,
            TraceRow.duration_ms,
            TraceRow.tokens_used,
            TraceRow.error,
        )
    finally:
        await engine.dispose()


EXPECTED_TRACES = [
    ("msg-1", None, "RESPONSE", "model", {"text": "hi"}, None, None, None, 7, None),
    ("tool-1", "msg-1", "TOOL_CALL", "Bash", {"command": "ls"}, 10, 15, 5, 0, None),
    ("tool-2", "msg-1", "TOOL_CALL", "Bash", "plain", 20, 30, 10, 0, "exit 1\ufffd"),
]


async def test_trace_nodes_merge_and_keep_known_values(sqlite_url: str) -> None:
    assert await write_traces(sqlite_url) == EXPECTED_TRACES


@pytest.mark.postgres
async def test_trace_nodes_on_postgresql(postgres_url: str) -> None:
    assert await write_traces(postgres_url) == EXPECTED_TRACES
