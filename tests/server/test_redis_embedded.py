"""The embedded redis-server: a server left running by a hub that was killed is adopted by the next hub
and stopped when that hub shuts down; a live owner keeps it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from server.redis_embedded import EmbeddedRedis, _answers
from tests.harness import timeout


@pytest.fixture
def started(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    # A short path: a unix socket's path is limited to about 100 characters.
    first = EmbeddedRedis(tmp_path / "redis", tmp_path / "redis" / "r.sock")
    first.ensure()
    yield first
    if first.process is not None and first.process.poll() is None:
        first.process.kill()
        first.process.wait()


def test_a_server_whose_owner_died_is_adopted_and_stopped(started: EmbeddedRedis) -> None:
    assert (started.directory / "owner").read_text() == str(os.getpid())
    started._release()  # what the kernel does when the hub that started it is killed

    bystander = EmbeddedRedis(started.directory, started.socket)
    bystander.ensure()  # a token command or a worker uses it, and does not take it over
    assert not bystander.adopted

    hub = EmbeddedRedis(started.directory, started.socket)
    hub.ensure(adopt=True)
    assert hub.adopted and hub.process is None
    hub.stop()
    assert started.process is not None
    assert started.process.wait(timeout(10)) == 0  # SHUTDOWN SAVE: a clean exit
    assert not _answers(started.socket)


def test_a_server_with_a_live_owner_is_left_to_it(started: EmbeddedRedis) -> None:
    # The owner's pid in the file does not matter (it may be reused): its lock does.
    (started.directory / "owner").write_text("999999999")
    other = EmbeddedRedis(started.directory, started.socket)
    other.ensure(adopt=True)
    assert not other.adopted
    other.stop()
    assert _answers(started.socket)


def test_an_adopted_server_that_refuses_shutdown_gets_sigterm(
    started: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    started._release()
    hub = EmbeddedRedis(started.directory, started.socket)
    hub.ensure(adopt=True)

    def refused(self: redis.Redis, **_: object) -> None:
        raise redis.ResponseError("Errors trying to SHUTDOWN. Check logs.")

    monkeypatch.setattr(redis.Redis, "shutdown", refused)
    hub.stop()
    assert started.process is not None
    assert started.process.wait(timeout(10)) == 0  # SIGTERM: redis-server saves and exits
    assert not _answers(started.socket)
