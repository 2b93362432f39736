"""Real health of the agent: CPU and memory of the wrapper's whole process tree (psutil)."""

from __future__ import annotations

import asyncio
import os
import time

import psutil

from shared.api import HealthMetrics


class HealthSampler:
    def __init__(self) -> None:
        self.process = psutil.Process(os.getpid())
        self.started = time.monotonic()
        self._cpu: dict[int, psutil.Process] = {}
        self.commands_processed = 0
        self.response_ms_total = 0
        self.tokens_used = 0
        self.cost_usd = 0.0
        #: Set when the numbers changed, so a heartbeat goes out without waiting for the interval.
        self.changed = asyncio.Event()

    def record(self, duration_ms: int, tokens: int = 0, cost: float = 0.0) -> None:
        self.commands_processed += 1
        self.response_ms_total += duration_ms
        self.tokens_used += tokens
        self.cost_usd += cost
        self.changed.set()

    def sample(self) -> HealthMetrics:
        try:
            tree = [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            tree = [self.process]
        cpu = 0.0
        rss = 0
        seen: dict[int, psutil.Process] = {}
        for proc in tree:
            # Reuse Process objects so cpu_percent measures since the previous sample.
            known = self._cpu.get(proc.pid, proc)
            try:
                cpu += known.cpu_percent(None)
                rss += known.memory_info().rss
            except psutil.Error:
                continue
            seen[proc.pid] = known
        self._cpu = seen
        total = psutil.virtual_memory().total
        average = self.response_ms_total / self.commands_processed if self.commands_processed else 0.0
        return HealthMetrics(
            cpu_percent=round(cpu, 1),
            memory_bytes=rss,
            memory_percent=round(100.0 * rss / total, 2) if total else 0.0,
            process_count=len(seen),
            uptime_seconds=round(time.monotonic() - self.started, 1),
            commands_processed=self.commands_processed,
            average_response_ms=round(average, 1),
            tokens_used=self.tokens_used,
            cost_usd=round(self.cost_usd, 6),
        )
