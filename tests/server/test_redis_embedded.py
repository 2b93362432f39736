"""The embedded redis-server: a server left running by a hub that was killed is adopted by the next hub
and stopped when that hub shuts down; a live owner keeps it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.redis_embedded import EmbeddedRedis, _answers
from tests.harness import timeout


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


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
    (started.directory / "owner").write_text(str(dead_pid()))  # the hub that started it was killed

    bystander = EmbeddedRedis(started.directory, started.socket)
    bystander.ensure()  # a token command or a worker uses it, and does not take it over
    assert not bystander.adopted

    hub = EmbeddedRedis(started.directory, started.socket)
    hub.ensure(adopt=True)
    assert hub.adopted and hub.process is None
    assert (started.directory / "owner").read_text() == str(os.getpid())
    hub.stop()
    assert started.process is not None
    assert started.process.wait(timeout(10)) == 0  # SHUTDOWN SAVE: a clean exit
    assert not _answers(started.socket)


def test_a_server_with_a_live_owner_is_left_to_it(started: EmbeddedRedis) -> None:
    other = EmbeddedRedis(started.directory, started.socket)
    other.ensure(adopt=True)
    assert not other.adopted
    other.stop()
    assert _answers(started.socket)
