"""RQ workers for the command queue: ``onsembl worker`` and the hub's embedded pool."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys

import redis
from rq import Queue, Worker
from rq.worker_pool import WorkerPool

from server import keys
from server.redis_embedded import ensure_redis_url
from shared.config import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, count: int, burst: bool = False) -> None:
    url, _ = ensure_redis_url(settings.redis_url, settings.data_dir, settings.embedded_redis_socket)
    conn = redis.Redis.from_url(url)
    queue = Queue(keys.COMMAND_QUEUE, connection=conn)
    if count <= 1:
        Worker([queue], connection=conn).work(burst=burst, logging_level=settings.log_level, with_scheduler=False)
        return
    WorkerPool([queue], connection=conn, num_workers=count).start(burst=burst, logging_level=settings.log_level)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    os.setsid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the pool ends if the hub is killed


def spawn_pool(count: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``count`` workers in a child process that ends with this one."""
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "worker", "-n", str(count)],
        env=env or os.environ.copy(),
        preexec_fn=_die_with_parent,
    )
