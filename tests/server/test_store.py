"""The store's output writes: one batch of TERMINAL_STREAM events into a real database, through the
driver SQL the shipped drivers get and through the SQLAlchemy statement any other driver gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from server import store
from server.db.models import CommandRow, ExecutionRow, OutputLineRow
from server.db.session import make_engine, make_sessionmaker, upgrade_async
from shared.config import Settings
from shared.enums import AgentType, ExecutionStatus, StreamType
from shared.protocol import StreamEvent, TerminalStream, TerminalStreamPayload


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
        async with sessions() as session:
            rows = (
                await session.execute(
                    select(
                        OutputLineRow.sequence,
                        OutputLineRow.stream_type,
                        OutputLineRow.content,
                        OutputLineRow.ansi_codes,
                        OutputLineRow.emitted_at,
                    ).order_by(OutputLineRow.sequence)
                )
            ).all()
            counted = (await session.get(ExecutionRow, "cmd-1")).output_lines  # type: ignore[union-attr]
        return [tuple(r) for r in rows], counted
    finally:
        await engine.dispose()


EXPECTED = [
    (0, "STDOUT", "zero\n", False, 1_700_000_000_000),
    (1, "STDERR", "one\ufffd\n", False, 1_700_000_000_001),
    (2, "STDOUT", "\x1b[1mtwo\n", True, 1_700_000_000_002),
    (3, "STDOUT", "three\n", False, 1_700_000_000_003),
]


@pytest.mark.parametrize("driver_sql", [True, False], ids=["driver-sql", "sqlalchemy-statement"])
async def test_output_batches_are_written_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver_sql: bool
) -> None:
    if not driver_sql:
        monkeypatch.setattr(store, "_output_sql", lambda paramstyle: None)
    url = Settings(data_dir=tmp_path).sqlalchemy_url
    assert await write_and_read(url) == (EXPECTED, 4)


@pytest.mark.postgres
async def test_output_batches_on_postgresql(postgres_database: str) -> None:
    url = postgres_database.replace("postgresql://", "postgresql+asyncpg://", 1)
    assert await write_and_read(url) == (EXPECTED, 4)
