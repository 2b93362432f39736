"""RQ workers for the command queue: ``onsembl worker`` and the hub's embedded pool.

A command's job supervises it for as long as the agent works on it, and spends that time waiting on
Redis, so one process runs many RQ workers, each in its own thread (SimpleWorker, with the
thread-safe timer death penalty). A killed worker process loses nothing: the hub's sweeper notices
its jobs stopped beating and queues their supervision again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import redis
from rq import Queue, SimpleWorker
from rq.timeouts import TimerDeathPenalty

from server import keys
from server.redis_embedded import ensure_redis_url
from shared.config import Settings

log = logging.getLogger(__name__)


class SupervisorWorker(SimpleWorker):
    """An RQ worker that can run in a thread: signals belong to the process's main thread."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass


def run(settings: Settings, count: int, burst: bool = False) -> None:
    url, _ = ensure_redis_url(settings.redis_url, settings.data_dir, settings.embedded_redis_socket)
    stop = threading.Event()
    workers: list[SupervisorWorker] = []
    threads: list[threading.Thread] = []
    for _ in range(max(1, count)):
        conn = redis.Redis.from_url(url, health_check_interval=30)
        worker = SupervisorWorker([Queue(keys.COMMAND_QUEUE, connection=conn)], connection=conn)
        workers.append(worker)
        thread = threading.Thread(
            target=worker.work,
            kwargs={"burst": burst, "logging_level": settings.log_level, "with_scheduler": False},
            name=f"rq-{worker.name[:8]}",
            daemon=True,
        )
        threads.append(thread)

    def request_stop(signum: int, _frame: object) -> None:
        log.info("worker process got %s: stopping %d workers", signal.Signals(signum).name, len(workers))
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for thread in threads:
        thread.start()
    log.info("%d RQ workers listening on %s", len(threads), keys.COMMAND_QUEUE)
    while not stop.is_set() and any(t.is_alive() for t in threads):
        stop.wait(0.5)
    # Idle workers leave cleanly; busy ones are cut off (their commands' supervision resumes elsewhere).
    for worker in workers:
        try:
            worker.register_death()  # type: ignore[no-untyped-call]
        except redis.RedisError:
            pass
    time.sleep(0.05)


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
