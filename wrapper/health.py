"""Real health of the agent: CPU and memory of the wrapper's whole process tree.

CPU is worked out from ``cpu_times`` deltas, not psutil's ``cpu_percent`` (whose first reading of a
process is 0, so a command that ran between two heartbeats showed 0 %): each sample adds up, over
the tree, the CPU seconds (user + system, with the children each process reaped) used since the
previous sample; a process first seen counts all it used since it started (when it started after
the previous sample), and a process gone counts what its parent's reaped-children times gained.
The sum over the wall time between the two samples is the figure.

When to sample is the client's business (every heartbeat while idle, every BUSY_SAMPLE_S while a
command runs); ``moved`` says when a figure moved enough to be worth a heartbeat of its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import psutil

from shared.api import HealthMetrics

#: While a command runs the tree is sampled this often (seconds).
BUSY_SAMPLE_S = 2.0
#: A heartbeat sent because a figure moved comes at most this often (seconds): at hundreds of
#: agents the hub hears at most one such beat per agent per interval.
MIN_MOVED_GAP_S = 2.0
#: A move worth telling: CPU by this many points, memory by this fraction of what was sent last.
CPU_STEP = 10.0
MEMORY_STEP = 0.10
#: create_time() rests on the boot time, which Linux gives in whole seconds (and may move by one).
_CREATE_SLACK_S = 1.0


def moved(before: HealthMetrics, after: HealthMetrics) -> bool:
    """Whether a gauge moved by a meaningful amount: CPU by CPU_STEP points, or memory by
    MEMORY_STEP of what it was."""
    return abs(after.cpu_percent - before.cpu_percent) >= CPU_STEP or abs(
        after.memory_bytes - before.memory_bytes
    ) >= MEMORY_STEP * max(before.memory_bytes, 1)


@dataclass
class _Seen:
    create_time: float
    #: CPU seconds used by the process and the children it reaped, when last sampled.
    cpu: float
    ppid: int
    rss: int


class HealthSampler:
    def __init__(self) -> None:
        self.process = psutil.Process(os.getpid())
        self.started = time.monotonic()
        self.commands_processed = 0
        self.response_ms_total = 0
        self.tokens_used = 0
        self.cost_usd = 0.0
        #: Set when the numbers changed, so a heartbeat goes out without waiting for the interval.
        self.changed = asyncio.Event()
        self._memory_total = psutil.virtual_memory().total
        self._cpu_limit = 100.0 * (psutil.cpu_count() or 1)
        self._proc_children = os.path.exists(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        self._seen: dict[int, _Seen] = {}
        #: When the last sample was taken (time.monotonic()): the next one measures from there.
        self.sampled_at = time.monotonic()
        self._sampled_wall = time.time()
        # Prime: what the tree holds now is the baseline of the first sample.
        self._sample()

    def record(self, duration_ms: int, tokens: int = 0, cost: float = 0.0) -> None:
        self.commands_processed += 1
        self.response_ms_total += duration_ms
        self.tokens_used += tokens
        self.cost_usd += cost
        self.changed.set()

    def sample(self) -> HealthMetrics:
        """The figures now; CPU over the time since the previous sample."""
        return self._sample()

    def _sample(self) -> HealthMetrics:
        now, wall = time.monotonic(), time.time()
        seen: dict[int, _Seen] = {}
        spent = 0.0
        rss = 0
        for pid in self._tree():
            entry = self._read(pid)
            if entry is None:
                continue
            known = self._seen.get(pid)
            # The same start time (give or take the boot time's rounding): the same process.
            if known is not None and abs(known.create_time - entry.create_time) < _CREATE_SLACK_S:
                spent += entry.cpu - known.cpu
            elif entry.create_time >= self._sampled_wall - _CREATE_SLACK_S:
                # Started since the last sample: everything it used is new.
                spent += entry.cpu
            # else: it was there at the last sample but not in the tree (reparented to us): its
            # figures count from now on.
            seen[pid] = entry
            rss += entry.rss
        # A process gone since the last sample was reaped by its parent, whose children times now
        # hold all it used: what it had used when last seen was counted then already.
        for pid, gone in self._seen.items():
            now_there = seen.get(pid)
            if now_there is not None and abs(now_there.create_time - gone.create_time) < _CREATE_SLACK_S:
                continue
            if self._reaped_in_tree(gone, seen):
                spent -= gone.cpu
        elapsed = max(now - self.sampled_at, 1e-3)
        cpu = min(100.0 * max(spent, 0.0) / elapsed, self._cpu_limit)
        self._seen, self.sampled_at, self._sampled_wall = seen, now, wall
        total = self._memory_total
        average = self.response_ms_total / self.commands_processed if self.commands_processed else 0.0
        return HealthMetrics(
            cpu_percent=round(cpu, 1),
            memory_bytes=rss,
            memory_percent=round(100.0 * rss / total, 2) if total else 0.0,
            process_count=len(seen),
            uptime_seconds=round(now - self.started, 1),
            commands_processed=self.commands_processed,
            average_response_ms=round(average, 1),
            tokens_used=self.tokens_used,
            cost_usd=round(self.cost_usd, 6),
        )

    def _read(self, pid: int) -> _Seen | None:
        try:
            # A new Process each time: it reads the create time, which tells a reused pid.
            proc = self.process if pid == self.process.pid else psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                ppid = proc.ppid()
                rss = proc.memory_info().rss
            cpu = times.user + times.system + times.children_user + times.children_system
            return _Seen(proc.create_time(), cpu, ppid, rss)
        except psutil.Error:
            return None

    def _reaped_in_tree(self, gone: _Seen, alive: dict[int, _Seen]) -> bool:
        """Whether a process gone was reaped inside the tree: its parent (or, when that is gone
        too, its parent's parent...) is still in it."""
        ppid, hops = gone.ppid, 0
        while hops < 64:
            if ppid in alive:
                return True
            parent = self._seen.get(ppid)
            if parent is None:
                return False
            ppid, hops = parent.ppid, hops + 1
        return False

    def _tree(self) -> list[int]:
        """The wrapper's pid and its descendants'. On Linux from /proc/PID/task/TID/children, which
        costs a few reads per process of the tree; psutil reads every process of the machine."""
        root = self.process.pid
        if not self._proc_children:
            try:
                return [root, *(p.pid for p in self.process.children(recursive=True))]
            except psutil.Error:
                return [root]
        pids, found = [root], {root}
        index = 0
        while index < len(pids):
            for child in _children(pids[index]):
                if child not in found:
                    found.add(child)
                    pids.append(child)
            index += 1
        return pids


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                children.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return children
