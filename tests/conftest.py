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
