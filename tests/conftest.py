from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import HubProcess


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub with its own embedded Redis and SQLite file, shared by the tests of one module."""
    process = HubProcess(tmp_path_factory.mktemp("hub")).start()
    yield process
    process.stop()
    process.shutdown_redis()


@pytest.fixture
def fresh_hub(tmp_path: Path) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "hub")
    yield process
    process.stop()
    process.shutdown_redis()


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("ONSEMBL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ONSEMBL_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)")
    return url


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped after it."""
    import asyncio
    import uuid

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"onsembl_test_{uuid.uuid4().hex[:12]}"
    admin = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def run(statement: str) -> None:
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(statement))
        await engine.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
