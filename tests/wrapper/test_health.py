"""Health that tells the truth: CPU of the agent's process tree from cpu_times (a new process is not
read as 0 %, a child that came and went between two samples counts, once), sampled every 2 s while
a command runs, and a heartbeat as soon as a figure moved meaningfully, at most one per 2 s."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import jwt
import psutil
import pytest

import wrapper.client as client_module
import wrapper.health as health_module
from shared.api import HealthMetrics
from shared.enums import AgentType
from tests.harness import HubProcess, start_agent, timeout, wait_until
from wrapper.client import AgentClient
from wrapper.health import HealthSampler, moved
from wrapper.outbox import Outbox

BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(BUSY_LOOP)
    yield child
    child.kill()
    child.wait()


# ---- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "worth"),
    [
        ({"cpu_percent": 0.0}, {"cpu_percent": 9.9}, False),
        ({"cpu_percent": 0.0}, {"cpu_percent": 10.0}, True),
        ({"cpu_percent": 95.0}, {"cpu_percent": 3.0}, True),
        ({"cpu_percent": 150.0}, {"cpu_percent": 142.0}, False),
        ({"memory_bytes": 100_000_000}, {"memory_bytes": 109_000_000}, False),
        ({"memory_bytes": 100_000_000}, {"memory_bytes": 110_000_000}, True),
        ({"memory_bytes": 100_000_000}, {"memory_bytes": 89_000_000}, True),
        ({"memory_bytes": 0}, {"memory_bytes": 1}, True),
        # Counters and uptime are not gauges: a finished command sends its heartbeat by itself.
        ({"uptime_seconds": 1.0, "process_count": 1}, {"uptime_seconds": 90.0, "process_count": 3}, False),
    ],
)
def test_a_figure_moved_meaningfully(before: dict[str, Any], after: dict[str, Any], worth: bool) -> None:
    assert moved(HealthMetrics(**before), HealthMetrics(**after)) is worth


# ---- the sampler ---------------------------------------------------------------------------------


def test_a_new_busy_process_is_not_read_as_idle(busy_child: subprocess.Popen[bytes]) -> None:
    """The first sample that sees a process counts what it used since it started: psutil's
    cpu_percent said 0 % there."""
    sampler = HealthSampler()
    # The busy loop started after the sampler's baseline (its priming sample); it has not been seen.
    proc = psutil.Process(busy_child.pid)
    wait_until(lambda: cpu_seconds(proc) >= 0.5, 5, "the busy loop to use 0.5 s of CPU")
    since = sampler.sampled_at
    used = cpu_seconds(proc)
    metrics = sampler.sample()
    assert metrics.process_count >= 2
    # All it used since it started is in the figure (the machine may give it less than a core).
    assert metrics.cpu_percent * (sampler.sampled_at - since) / 100 >= used - 0.05, (metrics, used)


def test_a_busy_loop_shows_within_5_seconds(busy_child: subprocess.Popen[bytes]) -> None:
    """Over 50 %, or, on a machine too busy to give the loop half a core, what it does get."""
    sampler = HealthSampler()
    proc = psutil.Process(busy_child.pid)
    readings: list[tuple[float, float]] = []
    child_before = 0.0  # it started after the sampler's baseline

    def shows() -> bool:
        nonlocal child_before
        since = sampler.sampled_at
        shown = sampler.sample().cpu_percent
        child_now = cpu_seconds(proc)
        actual = 100 * (child_now - child_before) / (sampler.sampled_at - since)
        child_before = child_now
        readings.append((shown, actual))
        return shown > 50 or (actual < 55 and shown >= actual - 5)

    wait_until(shows, 5, f"a busy loop to show over 50 % CPU; (shown, actual): {readings}", interval=0.5)


def test_what_a_child_used_is_counted_once_though_it_ended_between_samples() -> None:
    """A child seen while it ran, and one that started and ended between two samples: over the
    samples the CPU adds up to what they used (their parent's reaped-children times), not more."""
    sampler = HealthSampler()
    begin = sampler.sampled_at
    self_before = time.process_time()
    children_before = os.times()
    measured = 0.0

    def take() -> None:
        nonlocal measured
        last = sampler.sampled_at
        metrics = sampler.sample()
        measured += metrics.cpu_percent * (sampler.sampled_at - last) / 100

    seen = subprocess.Popen(BUSY_LOOP)
    proc = psutil.Process(seen.pid)
    wait_until(lambda: cpu_seconds(proc) >= 0.3, 5, "the child to use 0.3 s of CPU")
    take()  # sees it running
    wait_until(lambda: cpu_seconds(proc) >= 0.6, 5, "the child to use 0.6 s of CPU")
    seen.kill()
    seen.wait()
    # One that comes and goes between two samples.
    subprocess.run(
        [sys.executable, "-c", "import time\nwhile time.process_time() < 0.4: pass"],
        check=True,
    )
    take()
    take()
    children_after = os.times()
    used = (
        (time.process_time() - self_before)
        + (children_after.children_user - children_before.children_user)
        + (children_after.children_system - children_before.children_system)
    )
    assert sampler.sampled_at > begin
    # Clock ticks are 10 ms; the sampler's own reads of /proc count on both sides.
    assert measured == pytest.approx(used, abs=0.1), (measured, used)
    assert used > 0.9


def test_the_tree_walk_of_proc_children_finds_what_psutil_finds(
    busy_child: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The /proc/PID/task/TID/children walk (Linux with CONFIG_PROC_CHILDREN), here fed from
    psutil where the kernel lacks those files."""
    grandchild = subprocess.Popen(["bash", "-c", "sleep 30 & wait"])
    try:
        wait_until(lambda: psutil.Process(grandchild.pid).children(), 5, "bash to start sleep")
        expected = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
        if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
            monkeypatch.setattr(
                health_module, "_children", lambda pid: [p.pid for p in psutil.Process(pid).children()]
            )
        sampler = HealthSampler()
        sampler._proc_children = True
        assert set(sampler._tree()) >= expected
        assert sampler._tree()[0] == os.getpid()
    finally:
        for proc in psutil.Process(grandchild.pid).children():
            proc.kill()
        grandchild.kill()
        grandchild.wait()


# ---- the heartbeat loop --------------------------------------------------------------------------


class FakeExecutor:
    def __init__(self) -> None:
        self.running: dict[str, object] = {}
        self.input_listeners: list[object] = []

    def bind(self, agent_id: str, outbox: Outbox, health: HealthSampler) -> None:
        pass


class ScriptedSampler(HealthSampler):
    """CPU 0, 100, 0, 100...: every sample moved."""

    def __init__(self) -> None:
        super().__init__()
        self.samples = 0

    def sample(self) -> HealthMetrics:
        self.samples += 1
        return HealthMetrics(cpu_percent=100.0 * (self.samples % 2))


def test_the_loop_samples_while_busy_and_bounds_moved_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle: one heartbeat per interval, no sampling between. Busy: a sample every BUSY_SAMPLE_S,
    and a heartbeat for each that moved, but never two closer than MIN_MOVED_GAP_S."""
    monkeypatch.setattr(client_module, "BUSY_SAMPLE_S", 0.1)
    monkeypatch.setattr(client_module, "MIN_MOVED_GAP_S", 0.3)
    monkeypatch.setattr(client_module, "BUSY_POLL_S", 0.05)
    token = jwt.encode({"sub": "agent-h1", "typ": "agent", "exp": 2**40}, "s" * 40, algorithm="HS256")
    executor = FakeExecutor()
    sampler = ScriptedSampler()
    client = AgentClient(
        server="http://127.0.0.1:9",
        token=token,
        agent_type=AgentType.SHELL,
        executor=executor,  # type: ignore[arg-type]
        heartbeat_s=3600,
        health=sampler,
    )

    async def scenario() -> None:
        task = asyncio.create_task(client._heartbeat())
        try:
            await asyncio.sleep(0.5)
            # Idle: the first heartbeat, then nothing for the interval.
            assert sampler.samples == 1
            assert len(client.outbox) == 1
            executor.running["c1"] = object()
            started = time.monotonic()
            await asyncio.sleep(1.5)
            executor.running.clear()
            elapsed = time.monotonic() - started
            samples, sent = sampler.samples - 1, len(client.outbox) - 1
            assert samples >= 3, samples
            assert samples <= elapsed / 0.1 + 2, samples
            # Every sample moved; the gap allows one heartbeat per 0.3 s, plus the first.
            assert 1 <= sent <= elapsed / 0.3 + 1, (sent, samples)
            assert sent < samples
            # Idle again: a sample or two while the gauge settles, then no more sampling.
            await asyncio.sleep(0.6)
            idle_samples = sampler.samples
            await asyncio.sleep(0.5)
            assert sampler.samples == idle_samples
            # A finished command (record) sends at once.
            before = len(client.outbox)
            sampler.record(10)
            await asyncio.sleep(0.2)
            assert len(client.outbox) == before + 1
        finally:
            task.cancel()

    asyncio.run(asyncio.wait_for(scenario(), timeout(20)))


# ---- end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_heartbeat_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub expecting a heartbeat every 30 s, as a default one does."""
    process = HubProcess(
        tmp_path_factory.mktemp("hub"), env_overrides={"ONSEMBL_HEARTBEAT_INTERVAL_S": "30"}
    ).start()
    yield process
    process.stop()
    process.shutdown_redis()


class BusyLoopUsage:
    """The CPU the busy loop under a wrapper really gets, over the last BUSY_SAMPLE_S or so."""

    def __init__(self, wrapper_pid: int) -> None:
        self.wrapper = psutil.Process(wrapper_pid)
        self.history: list[tuple[float, float]] = []

    def recent_percent(self) -> float | None:
        try:
            loops = [
                p for p in self.wrapper.children(recursive=True) if "while True" in " ".join(p.cmdline())
            ]
            if not loops:
                return None
            used = cpu_seconds(loops[0])
        except psutil.Error:
            return None
        now = time.monotonic()
        self.history.append((now, used))
        then = [h for h in self.history if now - h[0] >= health_module.BUSY_SAMPLE_S]
        if not then:
            return None
        start = then[-1]
        return 100 * (self.history[-1][1] - start[1]) / (now - start[0])


def test_a_busy_command_shows_on_the_hub_within_5_seconds(slow_heartbeat_hub: HubProcess) -> None:
    """A real wrapper with the default 30 s heartbeat runs a busy loop: the hub's record of the
    agent shows over 50 % CPU within 5 s, and the agent is idle again after."""
    hub = slow_heartbeat_hub
    agent = start_agent(hub, "busy", extra_env={"ONSEMBL_HEARTBEAT_INTERVAL_S": "30"})
    try:
        with hub.client() as client:
            response = client.post(
                "/commands",
                json={
                    "content": f"exec {sys.executable} -c 'while True: pass'",
                    "targetAgents": [agent.agent_id],
                },
            )
            assert response.status_code == 201, response.text
            command_id = response.json()["id"]
            sent = time.monotonic()

            usage = BusyLoopUsage(agent.process.pid)

            def busy_loop_shows() -> bool:
                health = client.get(f"/agents/{agent.agent_id}").json()["health"]
                actual = usage.recent_percent()
                # The command's process counts (not the wrapper's own start-up); on a machine too
                # busy to give the loop half a core, the hub shows what it gets.
                return bool(
                    health["processCount"] >= 2
                    and (
                        health["cpuPercent"] > 50
                        or (actual is not None and actual < 55 and health["cpuPercent"] >= 0.7 * actual)
                    )
                )

            wait_until(busy_loop_shows, 5, "the hub to show the busy loop's CPU", interval=0.1)
            assert time.monotonic() - sent < timeout(5)
            cancel = client.post(f"/commands/{command_id}/cancel", json={"reason": "enough"})
            assert cancel.status_code in (200, 202), cancel.text
            wait_until(
                lambda: client.get(f"/agents/{agent.agent_id}").json()["health"]["cpuPercent"] < 50,
                10,
                "the CPU to fall once the command ended",
            )
    finally:
        agent.stop()
