"""RQ workers for the command queue: ``onsembl worker`` and the hub's embedded pool.

A command's job supervises it for as long as the agent works on it, and spends that time waiting on
Redis, so one process runs many RQ workers, each in its own thread (SimpleWorker, with the
thread-safe timer death penalty). The pool grows with the running commands: it keeps ``spare``
workers idle, starting new ones as jobs take them, so every idle agent gets its next command at
once whatever the fleet's size; a worker started that way quits after ``idle_s`` without a job. (A
fixed pool was the cap on how many commands ran at once: with 64 workers, the 65th agent's command
waited QUEUED behind 64 long ones.) A killed worker process loses nothing: the hub's sweeper
notices its jobs stopped beating and queues their supervision again.
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
from rq.job import Job
from rq.timeouts import TimerDeathPenalty
from rq.utils import now

from server import keys
from server.redis_embedded import ensure_redis_url
from shared.config import Settings

log = logging.getLogger(__name__)

#: A worker the pool added for a burst quits after this many seconds without a job.
EXTRA_IDLE_S = 120
#: An added worker's RQ maintenance interval: in effect never (the pool's own workers do it).
EXTRA_MAINTENANCE_S = 7 * 24 * 3600
#: Workers in one process at most: far above any fleet a hub accepts; a guard against a runaway.
MAX_WORKERS = 10_000


class SupervisorWorker(SimpleWorker):
    """An RQ worker that can run in a thread: signals belong to the process's main thread."""

    death_penalty_class = TimerDeathPenalty
    #: The pool that counts this worker's jobs (none when used alone, as in tests).
    pool: WorkerPool | None = None

    def _install_signal_handlers(self) -> None:
        pass

    # RQ's worker commands over pub/sub (shutdown, kill-horse, stop-job) are not used: signals stop
    # the process, and a cancel reaches a job on its signal list. The listener would cost each worker
    # a thread and a connection, and stopping it held a quitting worker for up to a minute.
    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass

    def execute_job(self, job: Job, queue: Queue) -> None:
        pool = self.pool
        if pool is not None:
            pool.job_started()
        try:
            super().execute_job(job, queue)
        finally:
            if pool is not None:
                pool.job_ended()


class WorkerPool:
    """Worker threads that grow with the running jobs and shrink when idle."""

    def __init__(
        self,
        url: str,
        spare: int,
        *,
        maximum: int = MAX_WORKERS,
        idle_s: int = EXTRA_IDLE_S,
        burst: bool = False,
        log_level: str = "INFO",
    ) -> None:
        self.url = url
        self.spare = max(1, spare)
        self.maximum = max(self.spare, maximum)
        self.idle_s = idle_s
        self.burst = burst
        self.log_level = log_level
        self._lock = threading.Lock()
        self._busy = 0
        self._workers: dict[threading.Thread, SupervisorWorker] = {}
        self._changed = threading.Event()
        #: The most workers alive at once, for the log and the tests.
        self.peak = 0

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def alive(self) -> int:
        return sum(1 for thread in list(self._workers) if thread.is_alive())

    def job_started(self) -> None:
        with self._lock:
            self._busy += 1
        self._changed.set()

    def job_ended(self) -> None:
        with self._lock:
            self._busy -= 1
        self._changed.set()

    def _start(self, extra: bool) -> None:
        conn = redis.Redis.from_url(self.url, health_check_interval=30)
        worker = SupervisorWorker([Queue(keys.COMMAND_QUEUE, connection=conn)], connection=conn)
        worker.pool = self
        if extra:
            # RQ's maintenance (cleaning the registries of every queue and rate limit) runs at a
            # worker's birth and every 10 minutes, one worker at a time but each in full: a burst of
            # 500 new workers ran it 500 times in a row. The pool's own workers keep doing it.
            worker.last_cleaned_at = now()  # type: ignore[assignment]  # RQ's own annotation is None
            worker.maintenance_interval = EXTRA_MAINTENANCE_S
        thread = threading.Thread(
            target=self._work,
            args=(worker, extra),
            name=f"rq-{worker.name[:8]}",
            daemon=True,
        )
        self._workers[thread] = worker
        self.peak = max(self.peak, len(self._workers))
        thread.start()

    def _work(self, worker: SupervisorWorker, extra: bool) -> None:
        try:
            worker.work(
                burst=self.burst,
                logging_level=self.log_level,
                with_scheduler=False,
                # The pool's own workers stay; those added for a burst go when it has passed.
                max_idle_time=self.idle_s if extra and not self.burst else None,
            )
        finally:
            self._changed.set()

    def grow(self) -> int:
        """Start workers until ``spare`` are idle (within ``maximum``). Returns how many started."""
        for thread in [t for t in self._workers if not t.is_alive()]:
            del self._workers[thread]
        idle = len(self._workers) - self._busy
        wanted = min(self.spare - idle, self.maximum - len(self._workers))
        for _ in range(max(0, wanted)):
            self._start(extra=True)
        return max(0, wanted)

    def run(self, stop: threading.Event) -> None:
        for _ in range(self.spare):
            self._start(extra=False)
        log.info("%d RQ workers listening on %s (more as commands run)", self.spare, keys.COMMAND_QUEUE)
        while not stop.is_set():
            self._changed.wait(0.5)
            self._changed.clear()
            if self.burst:
                if not any(t.is_alive() for t in self._workers):
                    break
                continue
            try:
                if started := self.grow():
                    log.debug("pool grew by %d to %d workers (%d busy)", started, self.alive, self._busy)
            except redis.RedisError as exc:
                # Redis is away (restarting): the workers wait for it too; try again next turn.
                log.warning("cannot start a worker: %s", exc)
                stop.wait(0.5)

    def shut_down(self) -> None:
        # Idle workers leave cleanly; busy ones are cut off (their commands' supervision resumes
        # elsewhere).
        for worker in list(self._workers.values()):
            try:
                worker.register_death()  # type: ignore[no-untyped-call]
            except redis.RedisError:
                pass


def run(settings: Settings, count: int, burst: bool = False) -> None:
    url, _ = ensure_redis_url(settings.redis_url, settings.data_dir, settings.embedded_redis_socket)
    stop = threading.Event()
    pool = WorkerPool(url, count, burst=burst, log_level=settings.log_level)

    def request_stop(signum: int, _frame: object) -> None:
        log.info("worker process got %s: stopping %d workers", signal.Signals(signum).name, pool.alive)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        pool.run(stop)
    finally:
        pool.shut_down()
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
