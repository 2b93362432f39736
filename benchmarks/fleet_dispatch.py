"""Fleet dispatch (issue 16): N idle agents, one command each, all running at once on a default hub.

For each fleet size N (``--agents 100,500``) a hub starts on the default worker pool (the default
``workers`` of ``shared.config.Settings``: that many idle RQ workers kept ready, more started as
commands take them), and N + 1 simulated idle agents connect. Then:

1. Baseline, in the same minutes and under the same connections: dispatch latency to the one extra
   agent, commands one after another (a few warm-up ones first), each ACKed, completed and seen
   COMPLETED by a dashboard before the next, which waits ``--gap`` more (as ``dispatch_*`` of
   dispatch_latency.py).
2. Fleet: one command to each of the N agents, one ``POST /v1/commands`` per agent with
   ``targetAgents: [agent]``, as a user's script would send them: ``--in-flight`` requests at a time
   (1 by default: in sequence, each sent when the one before was answered). Each agent ACKs
   EXECUTING the moment its COMMAND_REQUEST arrives and does not complete, so the N commands keep
   running, each under its supervising RQ job. Dispatch latency: from just before the command's POST
   to its agent's socket delivering the COMMAND_REQUEST (one process, one monotonic clock).
3. Check they all run under supervision: N busy RQ workers (their hashes in Redis), N supervised
   executions, N EXECUTING over REST; the pool's size and when it got there.
4. Hold them all running for ``--hold`` seconds (30; ``--quick`` 10) and measure the hub's, the
   worker pool's and redis-server's CPU and RSS, and the pool's threads.
5. Complete them all (COMMAND_COMPLETE) and check that the N reach COMPLETED.

Each fleet size gets its own hub, so each starts from the default pool (workers a burst added stay
for two minutes). The dispatch target is that of dispatch_latency.py (p50 <= 15 ms, p99 <= 60 ms);
``ratio`` is the fleet's p99 over the baseline's.

    PYTHONPATH=. .venv/bin/python benchmarks/fleet_dispatch.py [--quick] [--agents 100,500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

import httpx
import redis
from rq.registry import StartedJobRegistry
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from benchmarks._common import (
    CpuSampler,
    SimAgent,
    agent_tokens,
    connect_agents,
    hub_processes,
    metric,
    note,
    other_load_metric,
    percentile,
    run_async,
    running_hub,
    verdict,
)
from benchmarks.dispatch_latency import completed
from server import keys
from server.queue import dispatch
from shared.config import Settings
from tests.harness import Dashboard, HubProcess

TARGET_P50_MS = 15.0
TARGET_P99_MS = 60.0
#: The hub's default worker pool: the idle workers it keeps ready (``onsembl server`` with no flag).
DEFAULT_WORKERS: int = Settings.model_fields["workers"].default
BASELINE_WARMUP = 5
#: How long the N commands may take to reach their agents, to run and to complete.
DISPATCH_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 60.0


@dataclass
class PoolSample:
    at_s: float
    busy: int
    idle: int


@dataclass
class Phase:
    agents: int
    dispatch_ms: list[float] = field(default_factory=list)
    #: The same by the order the commands were sent in, and who sent each first request.
    dispatch_in_order: list[float] = field(default_factory=list)
    dispatch_by_job_ms: list[float] = field(default_factory=list)
    post_ms: list[float] = field(default_factory=list)
    baseline_ms: list[float] = field(default_factory=list)
    send_s: float = 0.0
    all_received_s: float = float("nan")
    all_busy_s: float = float("nan")
    by_job: int = 0
    by_hub: int = 0
    pool_timeline: list[PoolSample] = field(default_factory=list)


def redis_client(hub: HubProcess) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(hub.settings.embedded_redis_socket), socket_timeout=10)


def pool_state(conn: redis.Redis) -> tuple[int, int]:
    """(busy, idle) RQ workers of the command queue, from their registrations in Redis."""
    names = sorted(conn.smembers(WORKERS_BY_QUEUE_KEY % keys.COMMAND_QUEUE))
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.hget(name, "state")
    states = [s.decode() if s else "" for s in pipe.execute()]
    return states.count("busy"), states.count("idle")


def count_commands(client: httpx.Client, status: str, query: str) -> int:
    response = client.get("/commands", params={"status": status, "q": query, "limit": 1})
    response.raise_for_status()
    return int(response.json()["total"])


def wait_for(predicate: object, seconds: float, interval: float = 0.2) -> tuple[bool, float]:
    """Poll ``predicate()`` until true or ``seconds`` pass; (true?, seconds waited)."""
    started = time.monotonic()
    while True:
        if predicate():  # type: ignore[operator]
            return True, time.monotonic() - started
        if time.monotonic() - started > seconds:
            return False, time.monotonic() - started
        time.sleep(interval)


async def baseline(
    hub: HubProcess, client: httpx.AsyncClient, agent: SimAgent, count: int, gap: float
) -> list[float]:
    """Dispatch latency to one idle agent, one command at a time, each finished before the next."""
    dashboard = await Dashboard(hub).connect()
    values: list[float] = []
    try:
        for i in range(BASELINE_WARMUP + count):
            await asyncio.sleep(gap)
            dashboard.messages.clear()
            started = time.perf_counter_ns()
            response = await client.post(
                "/commands", json={"content": f"baseline {i}", "targetAgents": [agent.agent_id]}
            )
            if response.status_code != 201:
                raise RuntimeError(f"POST /v1/commands: {response.status_code} {response.text[:300]}")
            command_id = response.json()["id"]
            received, request = await agent.next_request(30)
            if request.payload.command_id != command_id:
                raise RuntimeError(f"got {request.payload.command_id}, expected {command_id}")
            await agent.ack(command_id)
            await agent.complete(command_id, 0)
            await completed(dashboard, agent.agent_id, command_id, 30)
            if i >= BASELINE_WARMUP:
                values.append((received - started) / 1e6)
    finally:
        await dashboard.close()
    return values


async def dispatch_fleet(
    client: httpx.AsyncClient,
    conn: redis.Redis,
    fleet: list[SimAgent],
    in_flight: int,
    spacing: float,
    phase: Phase,
) -> dict[str, str]:
    """One command per agent; each agent ACKs EXECUTING at once and keeps it running. Returns agent id
    -> command id of those whose request arrived."""
    n = len(fleet)
    started_ns: dict[str, int] = {}
    command_of: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()

    async def take(agent: SimAgent) -> tuple[str, int, str]:
        # No timeout of its own: the wait for stragglers counts from the last POST (below).
        received, request = await agent.requests.get()
        await agent.ack(request.payload.command_id)
        return agent.agent_id, received, request.payload.command_id

    # The pool's busy and idle workers, every 100 ms while the commands go out (in a thread: the
    # Redis calls would hold up this loop's timestamps).
    stop_sampling = threading.Event()
    all_busy = asyncio.Event()

    def sample_pool() -> None:
        while not stop_sampling.is_set():
            with contextlib.suppress(redis.RedisError):
                busy, idle = pool_state(conn)
                phase.pool_timeline.append(PoolSample(time.perf_counter() - t0, busy, idle))
                if busy >= n and not all_busy.is_set():
                    phase.all_busy_s = time.perf_counter() - t0
                    loop.call_soon_threadsafe(all_busy.set)
            stop_sampling.wait(0.1)

    gate = asyncio.Semaphore(in_flight)

    async def post(index: int, agent: SimAgent) -> None:
        async with gate:
            if spacing:
                await asyncio.sleep(spacing)
            started_ns[agent.agent_id] = started = time.perf_counter_ns()
            response = await client.post(
                "/commands", json={"content": f"fleet {index}", "targetAgents": [agent.agent_id]}
            )
            phase.post_ms.append((time.perf_counter_ns() - started) / 1e6)
            if response.status_code != 201:
                raise RuntimeError(f"POST /v1/commands: {response.status_code} {response.text[:300]}")
            command_of[agent.agent_id] = response.json()["id"]

    takers = [asyncio.create_task(take(a)) for a in fleet]
    sampler = loop.run_in_executor(None, sample_pool)
    try:
        await asyncio.gather(*(post(i, a) for i, a in enumerate(fleet)))
        phase.send_s = time.perf_counter() - t0
        done, _ = await asyncio.wait(takers, timeout=DISPATCH_TIMEOUT_S)
        # Then (up to the timeout) for every job to be running.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_busy.wait(), SETTLE_TIMEOUT_S)
    finally:
        stop_sampling.set()
        for task in takers:
            task.cancel()
        await sampler

    received: dict[str, str] = {}
    latency: dict[str, float] = {}
    last_ns = 0
    for task in done:
        if task.cancelled() or task.exception() is not None:
            continue
        agent_id, received_ns, command_id = task.result()
        if command_of.get(agent_id) != command_id:
            raise RuntimeError(f"agent {agent_id} got {command_id}, expected {command_of.get(agent_id)}")
        received[agent_id] = command_id
        latency[agent_id] = (received_ns - started_ns[agent_id]) / 1e6
        last_ns = max(last_ns, received_ns)
    if len(received) == n:
        phase.all_received_s = last_ns / 1e9 - t0

    # Who sent each first request: the hub at admission, or the supervising job when it started
    # (its claim came first, or no idle worker was registered at admission: see pool_idle_min).
    pipe = conn.pipeline(transaction=False)
    for command_id in command_of.values():
        pipe.hget(keys.execution(command_id), "dispatcher")
    by = {
        agent_id: value.decode() if value else ""
        for agent_id, value in zip(command_of, pipe.execute(), strict=True)
    }
    phase.by_hub = sum(1 for v in by.values() if v.startswith(dispatch.HUB_PREFIX))
    phase.by_job = sum(1 for v in by.values() if v == dispatch.BY_JOB)
    phase.dispatch_ms = list(latency.values())
    phase.dispatch_in_order = [latency[a.agent_id] for a in fleet if a.agent_id in latency]
    phase.dispatch_by_job_ms = [v for a, v in latency.items() if by.get(a) == dispatch.BY_JOB]
    return received


def run_phase(n: int, args: argparse.Namespace) -> float:
    """One hub, N fleet agents; prints the phase's metrics; returns the CPU of other processes."""
    p = f"n{n}_"
    phase = Phase(n)
    with running_hub(DEFAULT_WORKERS) as hub:
        note(f"N={n}: registering {n + 1} agents")
        creds = agent_tokens(hub, n + 1, f"fleet{n}")
        procs = hub_processes(hub)
        conn = redis_client(hub)
        others = CpuSampler(procs)
        others.start()

        async def scenario() -> None:
            started = time.monotonic()
            agents = await connect_agents(hub.ws_url, creds)
            base_agent, fleet = agents[0], agents[1:]
            note(f"N={n}: {len(agents)} agents connected in {time.monotonic() - started:.1f}s")
            rss_before = {k: pr.memory_info().rss / 2**20 for k, pr in procs.items()}
            headers = {"Authorization": f"Bearer {hub.user_token()}"}
            limits = httpx.Limits(max_connections=max(10, args.in_flight))
            async with httpx.AsyncClient(
                base_url=hub.url + "/v1", headers=headers, timeout=30, limits=limits
            ) as client:
                note(f"N={n}: baseline, {args.baseline} commands to one idle agent")
                phase.baseline_ms = await baseline(hub, client, base_agent, args.baseline, args.gap)
                await asyncio.sleep(args.gap)
                note(f"N={n}: one command to each of {n} agents, {args.in_flight} in flight")
                dispatch_cpu = CpuSampler(procs)
                dispatch_cpu.start()
                running = await dispatch_fleet(client, conn, fleet, args.in_flight, args.spacing, phase)
                cpu_dispatch = dispatch_cpu.percent()

            # Are they all running, each under its job?
            busy, idle = pool_state(conn)
            supervised = conn.zcard(keys.SUPERVISED)
            started_jobs = StartedJobRegistry(keys.COMMAND_QUEUE, connection=conn).get_job_count()
            with hub.client() as rest:
                ok, waited = wait_for(lambda: count_commands(rest, "EXECUTING", "fleet") >= n, 30)
                executing = count_commands(rest, "EXECUTING", "fleet")
            workers = procs.get("workers")
            threads_after_dispatch = workers.num_threads() if workers else 0

            note(f"N={n}: holding {n} running commands for {args.hold:g}s")
            hold = CpuSampler(procs)
            hold.start()
            peak = {k: 0.0 for k in procs}
            max_threads = 0
            end = time.monotonic() + args.hold
            while time.monotonic() < end:
                for k, pr in procs.items():
                    peak[k] = max(peak[k], pr.memory_info().rss / 2**20)
                if workers:
                    max_threads = max(max_threads, workers.num_threads())
                await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            hold_cpu = hold.percent()
            rss_hold = {k: pr.memory_info().rss / 2**20 for k, pr in procs.items()}
            busy_after_hold, _ = pool_state(conn)
            # A request sent again (no ACK seen by the job) would wait in the agent's queue.
            resent = sum(a.requests.qsize() for a in fleet)

            note(f"N={n}: completing the {len(running)} commands")
            by_id = {a.agent_id: a for a in fleet}
            completing = time.monotonic()
            for agent_id, command_id in running.items():
                await by_id[agent_id].complete(command_id, 0)
            with hub.client() as rest:
                all_done, done_s = wait_for(
                    lambda: count_commands(rest, "COMPLETED", "fleet") >= len(running), SETTLE_TIMEOUT_S
                )
                completed_n = count_commands(rest, "COMPLETED", "fleet")
            note(f"N={n}: completions took {time.monotonic() - completing:.1f}s")
            idle_again, _ = wait_for(lambda: pool_state(conn)[0] == 0, 30)
            errors = [e.payload.message for a in agents for e in a.errors]
            disconnected = sum(1 for a in agents if a.closed_reason)
            for agent in agents:
                await agent.close()

            # ---- report ----
            d = sorted(phase.dispatch_ms)
            b = sorted(phase.baseline_ms)
            d50, d99 = percentile(d, 50), percentile(d, 99)
            b99 = percentile(b, 99)
            how = "in sequence" if args.in_flight == 1 else f"{args.in_flight} in flight"
            if args.spacing:
                how += f", {args.spacing:g} s apart"
            metric(
                f"{p}dispatched",
                f"{len(running)}/{n}",
                "commands",
                f"all: {verdict(len(running) == n)} (one POST per agent, {how})",
            )
            metric(f"{p}dispatch_p50", d50, "ms", f"<= {TARGET_P50_MS:g} ms: {verdict(d50 <= TARGET_P50_MS)}")
            metric(f"{p}dispatch_p99", d99, "ms", f"<= {TARGET_P99_MS:g} ms: {verdict(d99 <= TARGET_P99_MS)}")
            metric(f"{p}dispatch_max", d[-1] if d else float("nan"), "ms")
            metric(
                f"{p}baseline_dispatch_p50",
                percentile(b, 50),
                "ms",
                f"- (1 idle agent on the same hub, {len(b)} commands one at a time, each completed,"
                f" {args.gap:g} s gap)",
            )
            metric(f"{p}baseline_dispatch_p99", b99, "ms")
            metric(f"{p}ratio", d99 / b99 if b99 else float("nan"), "x", "- (fleet p99 / baseline p99)")
            fifth = max(1, len(phase.dispatch_in_order) // 5)
            first, last = (sorted(phase.dispatch_in_order[:fifth]), sorted(phase.dispatch_in_order[-fifth:]))
            metric(
                f"{p}dispatch_p50_first_fifth",
                percentile(first, 50),
                "ms",
                f"- (the first {fifth} sent; p99 {percentile(first, 99):.1f} ms)",
            )
            metric(
                f"{p}dispatch_p50_last_fifth",
                percentile(last, 50),
                "ms",
                f"- (the last {fifth} sent, {n - fifth}+ running; p99 {percentile(last, 99):.1f} ms)",
            )
            pm = sorted(phase.post_ms)
            metric(f"{p}post_response_p50", percentile(pm, 50), "ms", "- (POST sent -> 201)")
            metric(f"{p}post_response_p99", percentile(pm, 99), "ms")
            metric(f"{p}send_all_s", phase.send_s, "s", f"- ({n} POSTs, {n / phase.send_s:.0f}/s)")
            metric(f"{p}all_received_s", phase.all_received_s, "s", "- (first POST -> last request in)")
            metric(
                f"{p}all_jobs_running_s",
                phase.all_busy_s,
                "s",
                f"- (first POST -> {n} busy RQ workers)",
            )
            metric(
                f"{p}first_request_by_job",
                phase.by_job,
                "commands",
                f"- (sent by the supervising job, one pub/sub hop more: its claim came before the"
                f" hub's, or no worker was idle at admission; {phase.by_hub} sent by the hub)",
            )
            if phase.dispatch_by_job_ms:
                j = sorted(phase.dispatch_by_job_ms)
                metric(
                    f"{p}dispatch_by_job_p50",
                    percentile(j, 50),
                    "ms",
                    f"- (those {len(j)}; max {j[-1]:.1f} ms)",
                )
            peak_idle_low = min((s.idle for s in phase.pool_timeline), default=-1)
            metric(f"{p}pool_idle_min", peak_idle_low, "workers", "- (fewest idle, sampled every 100 ms)")
            metric(f"{p}busy_workers", busy, "workers", f"{n}: {verdict(busy == n)} ({idle} idle)")
            metric(f"{p}supervised", supervised, "executions", f"{n}: {verdict(supervised == n)}")
            metric(f"{p}started_jobs", started_jobs, "jobs", f"{n}: {verdict(started_jobs == n)}")
            metric(
                f"{p}executing",
                executing,
                "commands",
                f"{n}: {verdict(ok and executing == n)} (REST, after {waited:.1f}s)",
            )
            metric(
                f"{p}busy_after_hold",
                busy_after_hold,
                "workers",
                f"{n}: {verdict(busy_after_hold == n)}",
            )
            metric(f"{p}requests_resent", resent, "requests", "0: " + verdict(resent == 0))
            for k, v in cpu_dispatch.items():
                metric(f"{p}dispatch_cpu_{k}", v, "% of one core", "- (while the commands went out)")
            for k, v in hold_cpu.items():
                metric(f"{p}running_cpu_{k}", v, "% of one core", f"- ({n} running, {args.hold:g} s)")
            for k, v in rss_hold.items():
                metric(
                    f"{p}running_rss_{k}",
                    v,
                    "MB",
                    f"- (before the commands {rss_before[k]:.0f} MB, peak {peak[k]:.0f} MB)",
                )
            if workers:
                metric(
                    f"{p}running_threads_workers",
                    max_threads,
                    "threads",
                    f"- (worker pool process; {threads_after_dispatch} right after dispatch)",
                )
            metric(
                f"{p}completed",
                f"{completed_n}/{n}",
                "commands",
                f"all: {verdict(all_done and completed_n == n)} (after {done_s:.1f}s)",
            )
            metric(f"{p}workers_idle_again", 0 if idle_again else pool_state(conn)[0], "busy workers", "0")
            metric(
                f"{p}agent_errors",
                len(errors),
                "errors",
                "0" + (f" (first: {errors[0][:120]})" if errors else ""),
            )
            metric(f"{p}agents_disconnected", disconnected, "agents", "0")

        try:
            run_async(scenario)
            return others.others()
        finally:
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 agents only, 10 s hold")
    parser.add_argument("--agents", help="fleet sizes, comma separated (default 100,500; --quick 100)")
    parser.add_argument("--hold", type=float, help="seconds all run (default 30, --quick 10)")
    parser.add_argument(
        "--in-flight", type=int, default=1, help="POSTs in flight at once (default 1: in sequence)"
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=0.0,
        help="seconds before each fleet POST (default 0: as fast as the hub answers)",
    )
    parser.add_argument(
        "--baseline", type=int, help="baseline commands (default 40, --quick 20; 5 warm-up first)"
    )
    parser.add_argument(
        "--gap", type=float, default=0.25, help="seconds between baseline commands (default 0.25)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in (args.agents or ("100" if args.quick else "100,500")).split(",")]
    args.hold = args.hold if args.hold is not None else (10.0 if args.quick else 30.0)
    args.baseline = args.baseline or (20 if args.quick else 40)
    args.in_flight = max(1, args.in_flight)
    note(f"default hub: {DEFAULT_WORKERS} idle RQ workers kept ready (Settings.workers)")
    others = [run_phase(n, args) for n in sizes]
    other_load_metric(max(others))


if __name__ == "__main__":
    main()
