"""Fixtures of the hub's tests that talk to Redis directly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from server.redis_embedded import EmbeddedRedis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of the module's own (the embedded one the hub starts)."""
    path = tmp_path_factory.mktemp("redis")
    server = EmbeddedRedis(path, path / "r.sock")
    yield server.ensure()
    server.stop()


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    """A client of it, flushed for each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()
