"""Output latency: agent send -> dashboard receive, per line, under load, every command supervised.

100 simulated agents (real WebSockets, one asyncio process) each get a real command (REST POST, the
hub's RQ job supervises it, the agent ACKs EXECUTING), then stream 50 lines/s for that command, one
TERMINAL_OUTPUT per line, each line carrying its send time (time.time_ns()). 5 dashboard clients
(another process) receive the TERMINAL_STREAM events and measure, per line, the time from the agent's
send to their receive (same machine clock). At the end: lines lost and duplicated per client, and the
stored output count over REST against the lines sent.

The hub runs as users run it: the default worker setting (``Settings.workers``, idle RQ workers; the
pool grows with the running commands), every command EXECUTING under its supervising RQ job for the
whole stream. Before the stream the script checks every execution is EXECUTING (REST) and its job
running (RQ's started-job registry of the command queue: ``supervised_executions``), checks it again
after the stream (``supervised_after_run``), then completes the commands (``commands_completed``).

``--runs N`` (default 3, ``--quick`` 1) repeats everything N times on the same hub (fresh commands
each run); per-run metric lines are prefixed ``runN_``, and the summary gives the worst run's p99
against the target and the ratios to the bare relays of the same runs.

``--dashboard-compression``: the dashboard clients connect with the TUI's options (``none``: no
permessage-deflate), or offer deflate as a client of the ``websockets`` library does by default
(``deflate``: the hub, with ``ws_compression_level`` > 0, then deflates every frame to them), or
``both``: a hub phase each way in every run (order alternating), with the hub's CPU, p50/p99 and the
bytes on the wire of each, and the ratio of the hub's CPU deflate / none. Metric lines of a deflate
phase are prefixed ``deflate_``.

Baselines (skip with ``--baseline none``): the same agents, load and dashboard clients against a
bare relay, one asyncio process with the ``websockets`` library that parses each agent frame with
``json.loads`` and passes each line on to every client: no validation, no Redis, no store.
``baseline_line_*`` sends one message per line (the saturation benchmark's baseline);
``baseline_batched_*`` sends each client one EVENT_BATCH of the lines that arrived in one turn of
the event loop, as the hub batches. They run in every run, between the hub phases (the same
minutes), and show what this machine allows at this load.

    PYTHONPATH=. .venv/bin/python benchmarks/output_latency.py [--quick] [--seconds N] [--runs N]
        [--dashboard-compression none|deflate|both] [--baseline both|line|batched|none] [--workers N]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import heapq
import json
import multiprocessing
import signal
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis
import websockets
from rq import Queue, Worker
from rq.registry import StartedJobRegistry
from websockets.asyncio.server import ServerConnection, serve

from benchmarks._common import (
    COMPRESSIONS,
    ClientResult,
    CpuSampler,
    DashboardProcess,
    SimAgent,
    agent_tokens,
    connect_agents,
    hold_receiver,
    hub_processes,
    latencies,
    metric,
    note,
    other_load_metric,
    percentile,
    run_async,
    running_hub,
    self_process,
    split_latencies,
    submit_commands,
    use_uvloop,
    verdict,
    wait_stored,
)
from server import keys
from shared.config import Settings
from shared.protocol import (
    PROTOCOL_VERSION,
    DashboardReady,
    DashboardReadyPayload,
    ServerHeartbeat,
    ServerHeartbeatPayload,
    now_ms,
)
from tests.harness import HubProcess

TARGET_P99_MS = 50.0
PAD = "x" * 48  # a line of ~80-100 characters, like terminal output
#: How long the dashboards may take, after the last line was sent, to receive everything (a line
#: not received by then counts as lost), and the store to hold everything.
DRAIN_S = 60.0
STORE_WAIT_S = 60.0
#: How long the supervising jobs may take to be running after the agents' ACKs (the pool grows from
#: its idle workers to one per running command), and to end after COMMAND_COMPLETE.
SUPERVISION_WAIT_S = 60.0


async def stream_all(
    agents: list[SimAgent], commands: dict[str, str], rate: float, seconds: float
) -> tuple[dict[str, int], array.array[float], float]:
    """Every agent's lines at their due times, from one task (a timer and a task per agent cost the
    load generator, on the hub's machine, as much as the sends). Returns the lines sent per command,
    how late the sends that were behind schedule were (ms), and the streaming time (s). The commands
    stay EXECUTING: the caller completes them."""
    sent: dict[str, int] = {}
    lag_ms = array.array("d")
    interval = 1.0 / rate
    lines_per_agent = int(seconds * rate)
    step_s = interval
    begin = time.monotonic()
    wall_begin_ns = time.time_ns()
    # Agents are not in step: each starts at its own phase of the tick.
    due = [(begin + interval * i / len(agents), i, 0) for i in range(len(agents))]
    heapq.heapify(due)
    while due:
        at, index, seq = due[0]
        delay = at - time.monotonic()
        if delay > 0.0005:
            await asyncio.sleep(delay)
            continue
        heapq.heappop(due)
        if delay < 0:
            lag_ms.append(-delay * 1000)
        agent = agents[index]
        command_id = commands[agent.agent_id]
        # "<sent ns> <due ns> ...": the dashboards measure from both.
        due_ns = wall_begin_ns + int((at - begin) * 1e9)
        content = f"{time.time_ns()} {due_ns} {agent.name} line {seq:06d} {PAD}"
        if not await agent.send_frame(agent.output(command_id, seq, content)):
            continue  # this agent's socket is gone (closed_reason says why)
        sent[command_id] = seq + 1
        if seq + 1 < lines_per_agent:
            heapq.heappush(due, (at + step_s, index, seq + 1))
    return sent, lag_ms, time.monotonic() - begin


def report_latency(prefix: str, results: list[ClientResult], target: bool) -> tuple[float, float]:
    """The latency figures of all clients together and of each; returns the p50 and p99 (ms)."""
    merged = array.array("d", sorted(v for r in results for v in latencies(r)))
    p50, p99 = percentile(merged, 50), percentile(merged, 99)
    metric(f"{prefix}latency_p50", p50, "ms", "-")
    goal = f"<= {TARGET_P99_MS:g} ms: {verdict(p99 <= TARGET_P99_MS)}" if target else "- (the floor)"
    metric(f"{prefix}latency_p99", p99, "ms", goal)
    metric(f"{prefix}latency_max", percentile(merged, 100), "ms")
    due = array.array("d", sorted(v for r in results for v in latencies(r, scheduled=True)))
    for q in (50, 99):
        metric(
            f"{prefix}latency_from_due_time_p{q}",
            percentile(due, q),
            "ms",
            "- (includes the load generator's own lag)",
        )
    splits = [split_latencies(r) for r in results]
    to_hub = array.array("d", sorted(v for t, _ in splits for v in t))
    from_hub = array.array("d", sorted(v for _, f in splits for v in f))
    for name, values, where in (
        ("to_hub", to_hub, "send -> the hub's stamp on the event (ms clock)"),
        ("from_hub", from_hub, "the hub's stamp -> client receive: Redis, relay, socket, client"),
    ):
        metric(f"{prefix}latency_{name}_p50", percentile(values, 50), "ms", f"- ({where})")
        metric(f"{prefix}latency_{name}_p99", percentile(values, 99), "ms", "-")
    for i, r in enumerate(results):
        own = latencies(r)
        metric(f"{prefix}client{i}_latency_p50", percentile(own, 50), "ms")
        metric(f"{prefix}client{i}_latency_p99", percentile(own, 99), "ms")
    return p50, p99


def report_delivery(prefix: str, results: list[ClientResult], total_sent: int) -> None:
    for i, r in enumerate(results):
        metric(f"{prefix}client{i}_lines_received", r.lines, "lines", f"= {total_sent}")
    lost = sum(r.lost for r in results)
    dupes = sum(r.duplicates for r in results)
    metric(
        f"{prefix}lines_lost",
        lost,
        "lines",
        f"0 (all clients; not received within {DRAIN_S:g} s of the end counts): {verdict(lost == 0)}",
    )
    metric(f"{prefix}duplicates", dupes, "lines", f"0 (all clients): {verdict(dupes == 0)}")
    for i, r in enumerate(results):
        if r.closed or r.error:
            metric(
                f"{prefix}client{i}_disconnected",
                f"{r.closed} {r.error}".strip(),
                "",
                "no disconnect: MISSED",
            )


def report_probe(prefix: str, rtts: list[float]) -> None:
    if rtts:
        metric(f"{prefix}ping_rtt_p50", percentile(rtts, 50), "ms", "- (idle agent socket, ping every 20 ms)")
        metric(f"{prefix}ping_rtt_p99", percentile(rtts, 99), "ms", "- (event-loop stalls show here)")
        metric(f"{prefix}ping_rtt_max", percentile(rtts, 100), "ms", "-")


def report_wire(prefix: str, results: list[ClientResult], elapsed: float) -> None:
    """Bytes the dashboards' sockets delivered: per client and second, per line, and how much the
    messages they carried were compressed."""
    wire = sum(r.wire_bytes for r in results)
    lines = sum(r.lines for r in results)
    carried = sum(r.message_bytes for r in results)
    negotiated = sum(1 for r in results if "permessage-deflate" in r.extensions)
    metric(f"{prefix}dashboard_deflate_negotiated", f"{negotiated} of {len(results)}", "clients", "-")
    if not results or not lines:
        return
    metric(
        f"{prefix}dashboard_wire_rate",
        wire / len(results) / elapsed / 1000,
        "kB/s per client",
        "- (received bytes on the socket, framing included)",
    )
    metric(f"{prefix}dashboard_wire_bytes_per_line", wire / lines, "bytes", "-")
    frames = sum(r.frames for r in results)
    metric(
        f"{prefix}dashboard_lines_per_frame",
        lines / frames if frames else float("nan"),
        "lines",
        "- (the hub batches the events of a loop turn into one frame, deflated as one message)",
    )
    metric(
        f"{prefix}dashboard_messages_over_wire",
        carried / wire if wire else float("nan"),
        "x",
        "- (message bytes / wire bytes: the compression)",
    )


def all_delivered(results: list[ClientResult]) -> bool:
    return all(not (r.lost or r.closed or r.error) for r in results)


# ---- supervision: every execution EXECUTING, its RQ job running ---------------------------------


@dataclass
class Supervision:
    """Where the benchmark's executions stand, from REST (status) and Redis (the RQ jobs)."""

    statuses: Counter[str] = field(default_factory=Counter)
    #: EXECUTING (REST) and the supervising job running (in the command queue's started-job registry,
    #: its entry not expired: the worker's heartbeat keeps it alive).
    supervised: int = 0
    #: Executions whose job is still running (whatever their status).
    jobs_running: int = 0
    workers: int = 0
    busy_workers: int = 0


class Supervisor:
    """Reads the state of the benchmark's executions: GET /v1/commands/{id} and, over the hub's
    embedded Redis socket, the RQ started-job registry and workers of the command queue."""

    def __init__(self, hub: HubProcess) -> None:
        self.client = hub.client()
        self.conn = redis.Redis(unix_socket_path=str(hub.settings.embedded_redis_socket), socket_timeout=10)
        self.registry = StartedJobRegistry(keys.COMMAND_QUEUE, connection=self.conn)
        self.queue = Queue(keys.COMMAND_QUEUE, connection=self.conn)

    def close(self) -> None:
        self.client.close()
        self.conn.close()

    def state(self, command_ids: list[str], workers: bool = True) -> Supervision:
        s = Supervision()
        executing: set[str] = set()
        execution_ids: set[str] = set()
        for command_id in command_ids:
            response = self.client.get(f"/commands/{command_id}")
            response.raise_for_status()
            for execution in response.json()["executions"]:
                s.statuses[execution["status"]] += 1
                execution_ids.add(execution["id"])
                if execution["status"] == "EXECUTING":
                    executing.add(execution["id"])
        # Live entries only (an expired one is a job whose worker stopped beating): no cleanup, which
        # would change what it reads.
        entries = self.conn.zrangebyscore(self.registry.key, time.time(), "+inf")
        running = {
            StartedJobRegistry.parse_job_id(e.decode() if isinstance(e, bytes) else str(e)) for e in entries
        }
        s.jobs_running = len(running & execution_ids)
        s.supervised = len(running & executing)
        if workers:
            self.count_workers(s)
        return s

    def count_workers(self, s: Supervision) -> None:
        states = [w.get_state() for w in Worker.all(connection=self.conn, queue=self.queue)]
        s.workers, s.busy_workers = len(states), sum(1 for st in states if st == "busy")

    def wait(self, command_ids: list[str], done: Any, seconds: float) -> tuple[Supervision, float]:
        """Poll until ``done(state)`` or ``seconds`` pass; the last state and the time it took."""
        started = time.monotonic()
        while True:
            s = self.state(command_ids, workers=False)
            if done(s) or time.monotonic() - started > seconds:
                elapsed = time.monotonic() - started
                self.count_workers(s)
                return s, elapsed
            time.sleep(0.25)


def statuses_text(s: Supervision) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(s.statuses.items()))


# ---- phases ------------------------------------------------------------------------------------


@dataclass
class Phase:
    """What the summary needs of one phase (hub or bare relay) of one run."""

    run: int
    kind: str  # "hub", "baseline_line", "baseline_batched"
    mode: str = "none"  # the dashboards' compression (hub phases)
    p50: float = float("nan")
    p99: float = float("nan")
    cpu: dict[str, float] = field(default_factory=dict)
    others: float = 0.0
    wire_bytes: int = 0
    lines: int = 0
    clients: int = 0
    elapsed: float = 0.0
    supervised_ok: bool = True
    #: Every client received every line, none was cut off (else the phase's CPU and bytes are
    #: not those of the full load).
    delivered: bool = True

    @property
    def server_cpu(self) -> float:
        """The CPU of the server side: hub + worker child + redis-server, or the relay."""
        return sum(v for k, v in self.cpu.items() if k in ("hub", "workers", "redis", "relay"))


@dataclass
class Bench:
    args: argparse.Namespace
    seconds: float
    hub: HubProcess
    agents: list[SimAgent]
    probe: tuple[str, str, str]
    supervisor: Supervisor


async def next_request_for(agent: SimAgent, command_id: str, seconds: float) -> None:
    """Wait for the COMMAND_REQUEST of ``command_id`` (a resend of an earlier run's is skipped)."""
    deadline = time.monotonic() + seconds
    while True:
        _, request = await agent.next_request(max(0.1, deadline - time.monotonic()))
        if request.payload.command_id == command_id:
            return


async def hub_phase(b: Bench, run: int, prefix: str, mode: str) -> Phase:
    args, hub = b.args, b.hub
    agents = [a for a in b.agents if not a.closed_reason]
    commands = await asyncio.to_thread(submit_commands, hub, [a.agent_id for a in agents])
    ids = list(commands.values())
    for agent in agents:
        await next_request_for(agent, commands[agent.agent_id], 60)
        await agent.ack(commands[agent.agent_id])
    note(f"{len(commands)} commands dispatched and acknowledged")
    before, ready_s = await asyncio.to_thread(
        b.supervisor.wait, ids, lambda s: s.supervised >= len(ids), SUPERVISION_WAIT_S
    )
    note(
        f"{before.supervised} executions supervised after {ready_s:.1f}s ({statuses_text(before)}; "
        f"{before.busy_workers} busy RQ workers of {before.workers})"
    )
    errors_before = [len(a.errors) for a in agents]
    rate_limited_before = sum(a.rate_limited for a in agents)
    dashboards = DashboardProcess(
        hub.ws_url, hub.user_token(), args.dashboards, ids, latency=True, probe=b.probe,
        compression=COMPRESSIONS[mode],
    )  # fmt: skip
    try:
        await asyncio.to_thread(dashboards.start)
        await asyncio.sleep(1.0)  # let the ACK's status events pass
        note(
            f"{prefix or 'hub '}streaming {args.rate:g} lines/s from each of {len(agents)} agents for "
            f"{b.seconds:g}s (dashboards: compression {mode})"
        )
        sampler = CpuSampler(
            {**hub_processes(hub), "loadgen": self_process(), "dashboards": psutil.Process(dashboards.pid())}
        )
        sampler.start()
        sent, lag_ms, elapsed = await stream_all(agents, commands, args.rate, b.seconds)
        cpu = sampler.percent()
        others = sampler.others()
        dashboards.stream_ended()
        total_sent = sum(sent.values())
        results, drained = await asyncio.to_thread(dashboards.finish, sent, DRAIN_S)
        note(f"sent {total_sent} lines in {elapsed:.1f}s; dashboards drained in {drained:.1f}s")
    finally:
        dashboards.stop()
    # Still supervised after the stream; then each agent completes its command, as the wrapper would.
    after = await asyncio.to_thread(b.supervisor.state, ids)
    for agent in agents:
        command_id = commands[agent.agent_id]
        await agent.complete(command_id, sent.get(command_id, 0))
    stored, store_s = await asyncio.to_thread(wait_stored, hub, sent, STORE_WAIT_S)
    settled, settle_s = await asyncio.to_thread(
        b.supervisor.wait,
        ids,
        lambda s: s.statuses.get("COMPLETED", 0) >= len(ids) and s.jobs_running == 0,
        SUPERVISION_WAIT_S,
    )
    rate_limited = sum(a.rate_limited for a in agents) - rate_limited_before
    disconnected = [a.closed_reason for a in b.agents if a.closed_reason]
    other_errors = [
        e.payload.message
        for a, n in zip(agents, errors_before, strict=True)
        for e in a.errors[n:]
        if e.payload.code != "RATE_LIMIT"
    ]

    n = args.agents  # every agent of the benchmark: one that dropped out counts against the run
    metric(
        f"{prefix}supervised_executions",
        before.supervised,
        "",
        f"{n}: {verdict(before.supervised == n)} (EXECUTING, RQ job running; {statuses_text(before)})",
    )
    metric(f"{prefix}supervision_ready", ready_s, "s", "- (after the last ACK: all jobs running)")
    metric(
        f"{prefix}rq_workers_busy",
        before.busy_workers,
        "workers",
        f"- (of {before.workers} alive; the pool keeps {b.hub.workers} idle)",
    )
    metric(
        f"{prefix}supervised_after_run",
        after.supervised,
        "",
        f"{n}: {verdict(after.supervised == n)} ({statuses_text(after)})",
    )
    completed = settled.statuses.get("COMPLETED", 0)
    metric(
        f"{prefix}commands_completed",
        completed,
        "",
        f"{n}: {verdict(completed == n and settled.jobs_running == 0)} "
        f"({settle_s:.1f} s after COMMAND_COMPLETE; jobs still running: {settled.jobs_running})",
    )
    p50, p99 = report_latency(prefix, results, target=True)
    metric(
        f"{prefix}lines_sent",
        total_sent,
        "lines",
        f"{len(agents)} agents x {args.rate:g}/s x {b.seconds:g} s",
    )
    metric(f"{prefix}send_rate", total_sent / elapsed, "lines/s", f"{len(agents) * args.rate:g}/s")
    report_delivery(prefix, results, total_sent)
    stored_total = sum(stored.values())
    metric(f"{prefix}lines_stored", stored_total, "lines", f"= {total_sent}")
    metric(
        f"{prefix}lines_lost_in_store",
        total_sent - stored_total,
        "lines",
        f"0 (unstored {STORE_WAIT_S:g} s after the end counts): {verdict(total_sent == stored_total)}",
    )
    metric(f"{prefix}store_catch_up", store_s, "s", "- (after the last line was sent)")
    metric(f"{prefix}dashboard_drain", drained, "s", "- (after the last line was sent)")
    metric(f"{prefix}rate_limit_errors", rate_limited, "errors", "0")
    first = f" (first: {disconnected[0][:120]})" if disconnected else ""
    metric(
        f"{prefix}agents_disconnected", len(disconnected), "agents", f"0: {verdict(not disconnected)}{first}"
    )
    if other_errors:
        metric(
            f"{prefix}other_agent_errors", len(other_errors), "errors", f"0 (first: {other_errors[0][:120]})"
        )
    if lag_ms:
        lag = sorted(lag_ms)
        metric(
            f"{prefix}loadgen_late_sends_p99",
            percentile(lag, 99),
            "ms",
            f"- ({len(lag)} of {total_sent} sends behind schedule)",
        )
    report_probe(f"{prefix}hub_", dashboards.ping_rtts_ms)
    report_wire(prefix, results, elapsed)
    for name, value in cpu.items():
        metric(f"{prefix}cpu_{name}", value, "% of one core", "- (while streaming)")
    other_load_metric(others, prefix)
    return Phase(
        run=run, kind="hub", mode=mode, p50=p50, p99=p99, cpu=cpu, others=others,
        wire_bytes=sum(r.wire_bytes for r in results), lines=sum(r.lines for r in results),
        clients=len(results), elapsed=elapsed, supervised_ok=before.supervised == after.supervised == n,
        delivered=all_delivered(results),
    )  # fmt: skip


# ---- the baseline: a bare relay -----------------------------------------------------------------


def _relay_entry(conn: Any, batched: bool) -> None:
    """A bare relay in its own process: agents' TERMINAL_OUTPUT frames, parsed with ``json.loads``,
    go on to every dashboard client, one message per line or batched per turn of the event loop. It
    answers the handshakes the load generator and the clients expect (valid protocol messages), and
    nothing else."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_uvloop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        receivers: set[ServerConnection] = set()
        pending: list[str] = []
        sends: set[asyncio.Task[None]] = set()

        def flush() -> None:
            frame = '{"type":"EVENT_BATCH","payload":{"events":[' + ",".join(pending) + "]}}"
            pending.clear()
            for receiver in list(receivers):
                task = asyncio.ensure_future(receiver.send(frame))
                sends.add(task)
                task.add_done_callback(sends.discard)

        async def relay(event: str) -> None:
            if batched:
                if not pending:
                    loop.call_soon(flush)
                pending.append(event)
                return
            for receiver in list(receivers):
                with contextlib.suppress(websockets.ConnectionClosed):
                    await receiver.send(event)

        async def handler(ws: ServerConnection) -> None:
            assert ws.request is not None
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.recv()  # AGENT_CONNECT or DASHBOARD_CONNECT
                if ws.request.path == "/ws/dashboard":
                    ready = DashboardReadyPayload(
                        protocol_version=PROTOCOL_VERSION, server_time=now_ms(), hub_id="baseline",
                        user="bench", position="0-0", resumed=True, agents=[],
                    )  # fmt: skip
                    await ws.send(DashboardReady(payload=ready).to_json())
                    await hold_receiver(receivers, ws)
                    return
                beat = ServerHeartbeatPayload(server_time=now_ms(), next_ping_expected=30_000)
                await ws.send(ServerHeartbeat(payload=beat).to_json())
                async for frame in ws:
                    message = json.loads(frame)
                    if message["type"] != "TERMINAL_OUTPUT":
                        continue
                    p = message["payload"]
                    event = {
                        "type": "TERMINAL_STREAM",
                        "timestamp": now_ms(),
                        "payload": {
                            "commandId": p["commandId"],
                            "agentId": p["agentId"],
                            "sequence": p["sequence"],
                            "content": p["content"],
                        },
                    }
                    await relay(json.dumps(event))

        async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            conn.send(port)
            await loop.run_in_executor(None, conn.recv)

    asyncio.run(main())


@contextlib.asynccontextmanager
async def bare_relay(batched: bool) -> AsyncIterator[tuple[str, int]]:
    """A bare relay in a child process: (its ws:// URL, its pid)."""
    ctx = multiprocessing.get_context("spawn")
    relay_conn, relay_child = ctx.Pipe()
    relay = ctx.Process(target=_relay_entry, args=(relay_child, batched), daemon=True)
    relay.start()
    try:
        if not await asyncio.to_thread(relay_conn.poll, 30):
            raise RuntimeError("the baseline relay did not start")
        assert relay.pid is not None
        yield f"ws://127.0.0.1:{relay_conn.recv()}", relay.pid
    finally:
        with contextlib.suppress(OSError):
            relay_conn.send("stop")
        await asyncio.to_thread(relay.join, 10)
        if relay.is_alive():
            relay.kill()
            relay.join()


async def baseline_phase(b: Bench, run: int, prefix: str, batched: bool) -> Phase:
    args = b.args
    creds = [(f"base{i:03d}", f"base-agent-{i:03d}", "-") for i in range(len(b.agents))]
    async with bare_relay(batched) as (url, relay_pid):
        agents = await connect_agents(url, creds)
        commands = {a.agent_id: f"base-command-{i:03d}" for i, a in enumerate(agents)}
        dashboards = DashboardProcess(
            url, "-", args.dashboards, list(commands.values()), latency=True,
            probe=("probe", "base-probe", "-"),
        )  # fmt: skip
        try:
            await asyncio.to_thread(dashboards.start)
            note(f"{prefix[:-1]}: the same load through a bare relay for {b.seconds:g}s")
            sampler = CpuSampler(
                {
                    "relay": psutil.Process(relay_pid),
                    "loadgen": self_process(),
                    "dashboards": psutil.Process(dashboards.pid()),
                }
            )
            sampler.start()
            sent, _, elapsed = await stream_all(agents, commands, args.rate, b.seconds)
            cpu = sampler.percent()
            others = sampler.others()
            dashboards.stream_ended()
            results, _ = await asyncio.to_thread(dashboards.finish, sent, DRAIN_S)
        finally:
            dashboards.stop()
            await asyncio.gather(*(a.close() for a in agents))
    p50, p99 = report_latency(prefix, results, target=False)
    report_delivery(prefix, results, sum(sent.values()))
    report_probe(f"{prefix}relay_", dashboards.ping_rtts_ms)
    for name, value in cpu.items():
        metric(f"{prefix}cpu_{name}", value, "% of one core", "- (while streaming)")
    other_load_metric(others, prefix)
    return Phase(
        run=run, kind="baseline_batched" if batched else "baseline_line", p50=p50, p99=p99, cpu=cpu,
        others=others, wire_bytes=sum(r.wire_bytes for r in results),
        lines=sum(r.lines for r in results), clients=len(results), elapsed=elapsed,
        delivered=all_delivered(results),
    )  # fmt: skip


# ---- the whole -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one run of 10 s instead of three of 30 s")
    parser.add_argument("--seconds", type=float, help="streaming time of each phase (default 30, --quick 10)")
    parser.add_argument(
        "--runs", type=int, help="runs, each: the hub phase(s) and the baselines (default 3, --quick 1)"
    )
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="lines per second per agent")
    parser.add_argument("--dashboards", type=int, default=5)
    default_workers = Settings.model_fields["workers"].default
    parser.add_argument(
        "--workers",
        type=int,
        help=f"idle RQ workers of the hub's pool (default: the hub's default, now {default_workers})",
    )
    parser.add_argument(
        "--dashboard-compression",
        choices=("none", "deflate", "both"),
        default="none",
        help="the dashboards' permessage-deflate: none (the TUI's), deflate (the websockets library's "
        "default), both (a hub phase each way in every run)",
    )
    parser.add_argument(
        "--ws-compression-level",
        type=int,
        help="the hub's ws_compression_level (default: the hub's default, now "
        f"{Settings.model_fields['ws_compression_level'].default}; 0: it never negotiates deflate)",
    )
    parser.add_argument(
        "--baseline", choices=("both", "line", "batched", "none"), default="both", help="bare relays to run"
    )
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    runs = args.runs or (1 if args.quick else 3)
    modes = ["none", "deflate"] if args.dashboard_compression == "both" else [args.dashboard_compression]
    baselines = [b for b in ("line", "batched") if args.baseline in ("both", b)]
    workers = default_workers if args.workers is None else args.workers

    phases: list[Phase] = []
    env = (
        {}
        if args.ws_compression_level is None
        else {"ONSEMBL_WS_COMPRESSION_LEVEL": str(args.ws_compression_level)}
    )
    with running_hub(workers, env) as hub:
        creds = agent_tokens(hub, args.agents, "lat")
        probe = agent_tokens(hub, 1, "probe")[0]
        level = hub.settings.ws_compression_level
        metric(
            "hub_idle_workers",
            workers,
            "workers",
            "- (Settings.workers, the default)" if args.workers is None else "- (--workers)",
        )
        metric(
            "hub_ws_compression_level",
            level,
            "",
            f"- ({'the default' if args.ws_compression_level is None else '--ws-compression-level'}; "
            "0: the hub never negotiates permessage-deflate)",
        )
        if "deflate" in modes and level == 0:
            note("the hub's ws_compression_level is 0: the deflate dashboards will not get deflate")

        async def scenario() -> None:
            agents = await connect_agents(hub.ws_url, creds)
            note(f"{len(agents)} agents connected")
            supervisor = Supervisor(hub)
            b = Bench(args, seconds, hub, agents, probe, supervisor)
            try:
                for run in range(runs):
                    run_prefix = f"run{run + 1}_" if runs > 1 else ""
                    steps: list[tuple[str, str]] = [("hub", m) for m in modes]
                    steps += [("baseline", k) for k in baselines]
                    if run % 2:  # every other run the other way round: order effects fall on all alike
                        steps.reverse()
                    if runs > 1:
                        note(f"run {run + 1} of {runs}: {', '.join(f'{k} {v}' for k, v in steps)}")
                    for kind, which in steps:
                        if kind == "hub":
                            prefix = run_prefix + ("deflate_" if which == "deflate" else "")
                            phases.append(await hub_phase(b, run, prefix, which))
                        else:
                            prefix = f"{run_prefix}baseline_{which}_"
                            phases.append(await baseline_phase(b, run, prefix, which == "batched"))
            finally:
                await asyncio.to_thread(supervisor.close)
                await asyncio.gather(*(a.close() for a in agents))

        run_async(scenario)
    summarize(phases, runs, modes, baselines)


def _runs_text(values: list[float], unit: str = "") -> str:
    return " / ".join(f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}" for v in values) + unit


def summarize(phases: list[Phase], runs: int, modes: list[str], baselines: list[str]) -> None:
    """Across the runs: the worst p99 against the target, the ratios to the bare relays of the same
    runs, and (with both) the cost of deflate to the hub."""
    hub_runs = {m: [p for p in phases if p.kind == "hub" and p.mode == m] for m in modes}
    for mode, own in hub_runs.items():
        mp = "deflate_" if mode == "deflate" else ""
        if runs > 1 and own:
            p99s = [p.p99 for p in own]
            ok = all(v <= TARGET_P99_MS for v in p99s) and all(p.supervised_ok for p in own)
            metric(
                f"{mp}latency_p99_worst_run",
                max(p99s),
                "ms",
                f"every run <= {TARGET_P99_MS:g} ms, supervised throughout: {verdict(ok)} "
                f"(runs: {_runs_text(p99s, ' ms')}; p50 {_runs_text([p.p50 for p in own], ' ms')})",
            )
        for kind in baselines:
            base = {p.run: p for p in phases if p.kind == f"baseline_{kind}"}
            pairs = [(p, base[p.run]) for p in own if p.run in base]
            if not pairs:
                continue
            caveat = (
                ""
                if all(h.delivered and r.delivered for h, r in pairs)
                else ("; not comparable: a phase lost lines or had a client cut off, see its lines")
            )
            ratios = [h.p99 / r.p99 for h, r in pairs]
            metric(
                f"{mp}latency_p99_over_baseline_{kind}",
                statistics.median(ratios),
                "x",
                f"- (hub p99 / bare relay p99 of the same run, median; runs: {_runs_text(ratios)}{caveat})",
            )
            cpu_ratios = [h.server_cpu / r.server_cpu for h, r in pairs if r.server_cpu]
            if cpu_ratios:
                metric(
                    f"{mp}cpu_over_baseline_{kind}",
                    statistics.median(cpu_ratios),
                    "x",
                    "- (hub + workers + redis CPU / relay CPU of the same run, median; "
                    f"runs: {_runs_text(cpu_ratios)}{caveat})",
                )
    if len(modes) == 2:
        none, deflate = hub_runs["none"], hub_runs["deflate"]
        caveat = (
            ""
            if all(p.delivered for p in none + deflate)
            else ("; not comparable: a phase lost lines or had a client cut off, see its lines")
        )
        for mode, own in hub_runs.items():
            cpus = [p.cpu.get("hub", 0.0) for p in own]
            metric(
                f"compression_{mode}_cpu_hub",
                statistics.mean(cpus),
                "% of one core",
                f"- (hub process, mean; runs: {_runs_text(cpus)}; "
                f"p50 {_runs_text([p.p50 for p in own], ' ms')}, "
                f"p99 {_runs_text([p.p99 for p in own], ' ms')})",
            )
            rates = [p.wire_bytes / p.clients / p.elapsed * 8 / 1e6 for p in own if p.clients and p.elapsed]
            if rates:
                metric(
                    f"compression_{mode}_wire_per_client",
                    statistics.mean(rates),
                    "Mbit/s",
                    f"- (received on one dashboard's socket at this load, mean; runs: {_runs_text(rates)})",
                )
        pairs = list(zip(none, deflate, strict=True))
        ratios = [d.cpu.get("hub", 0.0) / n.cpu["hub"] for n, d in pairs if n.cpu.get("hub")]
        if ratios:
            metric(
                "compression_cpu_hub_deflate_over_none",
                statistics.median(ratios),
                "x",
                f"- (hub process CPU while streaming, same run, median; runs: {_runs_text(ratios)}{caveat})",
            )
        # The hub's extra CPU with deflate, per line it delivered to one client (core-seconds per
        # second over deliveries per second).
        per_delivery = [
            (d.cpu.get("hub", 0.0) - n.cpu.get("hub", 0.0)) / 100 / (d.lines / d.elapsed) * 1e6
            for n, d in pairs
            if d.lines and d.elapsed
        ]
        if per_delivery:
            metric(
                "compression_cpu_per_line_per_client",
                statistics.median(per_delivery),
                "us",
                f"- (the hub's extra CPU with deflate per line sent to one client, median; "
                f"runs: {_runs_text(per_delivery)}{caveat})",
            )
        wire = {m: [p.wire_bytes / p.lines for p in own if p.lines] for m, own in hub_runs.items()}
        if wire["none"] and wire["deflate"]:
            metric(
                "compression_wire_bytes_none_over_deflate",
                statistics.mean(wire["none"]) / statistics.mean(wire["deflate"]),
                "x",
                f"- (bytes per line on the dashboards' sockets: {statistics.mean(wire['none']):.0f} "
                f"without, {statistics.mean(wire['deflate']):.0f} with deflate)",
            )


if __name__ == "__main__":
    main()
