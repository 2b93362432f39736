"""The worker pool grows with the running jobs and shrinks when they are done, against a real Redis:
no fixed number of workers caps how many commands run at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from rq import Queue
from rq.registry import StartedJobRegistry

from server import keys
from server.worker import WorkerPool
from tests.harness import wait_until

RELEASE = keys.PREFIX + "test:release"


def hold(key: str) -> str:
    """A job that runs until the test releases it, as a supervising job runs until its command ends."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    job.connection.blpop([key], timeout=60)
    return "released"


@pytest.fixture
def pool(redis_url: str, conn: redis.Redis) -> Iterator[WorkerPool]:
    pool = WorkerPool(redis_url, 2, idle_s=1, log_level="WARNING")
    stop = threading.Event()
    thread = threading.Thread(target=pool.run, args=(stop,), daemon=True)
    thread.start()
    wait_until(lambda: pool.alive == 2, 10, "the pool's first workers")
    yield pool
    conn.rpush(RELEASE, *["go"] * 100)
    stop.set()
    thread.join(10)
    pool.shut_down()


def test_every_job_runs_at_once_whatever_the_pools_size(pool: WorkerPool, conn: redis.Redis) -> None:
    queue = Queue(keys.COMMAND_QUEUE, connection=conn)
    jobs = [queue.enqueue(hold, RELEASE, job_timeout=120) for _ in range(12)]
    started = StartedJobRegistry(queue=queue)
    # Twelve jobs that each hold a worker, on a pool of two: all twelve run, and two stay idle.
    wait_until(lambda: pool.busy == 12 and started.count == 12, 30, "all twelve jobs running")
    wait_until(lambda: pool.alive - pool.busy >= 2, 10, "two idle workers beside them")
    assert pool.peak >= 14
    conn.rpush(RELEASE, *["go"] * 12)
    wait_until(lambda: all(j.get_status() == "finished" for j in jobs), 30, "the jobs to finish")
    # The workers added for the burst leave once idle (idle_s=1); the pool's own two stay.
    wait_until(lambda: pool.alive == 2, 30, "the pool to shrink back to two")
