"""Output latency: agent send -> dashboard receive, per line, under load.

100 simulated agents (real WebSockets, one asyncio process) each get a real command (REST POST, the
hub's RQ job sends COMMAND_REQUEST, the agent ACKs EXECUTING), then stream 50 lines/s for that
command, one TERMINAL_OUTPUT per line, each line carrying its send time (time.time_ns()). 5
dashboard clients (another process) receive the TERMINAL_STREAM events and measure, per line, the
time from the agent's send to their receive (same machine clock). At the end: lines lost and
duplicated per client, and the stored output count over REST against the lines sent.

Baselines (skip with ``--baseline none``): the same agents, load and dashboard clients against a
bare relay, one asyncio process with the ``websockets`` library that parses each agent frame with
``json.loads`` and passes each line on to every client: no validation, no Redis, no store.
``baseline_line_*`` sends one message per line (the saturation benchmark's baseline);
``baseline_batched_*`` sends each client one EVENT_BATCH of the lines that arrived in one turn of
the event loop, as the hub batches. They show what this machine allows at this load.

    PYTHONPATH=. .venv/bin/python benchmarks/output_latency.py [--quick] [--seconds N]
        [--baseline both|line|batched|none]
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
import time
from typing import Any

import psutil
import websockets
from websockets.asyncio.server import ServerConnection, serve

from benchmarks._common import (
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
from shared.protocol import (
    PROTOCOL_VERSION,
    DashboardReady,
    DashboardReadyPayload,
    ServerHeartbeat,
    ServerHeartbeatPayload,
    now_ms,
)

TARGET_P99_MS = 50.0
PAD = "x" * 48  # a line of ~80-100 characters, like terminal output
#: How long the dashboards may take, after the last line was sent, to receive everything (a line
#: not received by then counts as lost), and the store to hold everything.
DRAIN_S = 60.0
STORE_WAIT_S = 60.0


async def stream_all(
    agents: list[SimAgent], commands: dict[str, str], rate: float, seconds: float
) -> tuple[dict[str, int], array.array[float], float]:
    """Every agent's lines at their due times, from one task (a timer and a task per agent cost the
    load generator, on the hub's machine, as much as the sends), then COMMAND_COMPLETE each. Returns
    the lines sent per command, how late the sends that were behind schedule were (ms), and the
    streaming time (s)."""
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
    elapsed = time.monotonic() - begin
    for agent in agents:
        command_id = commands[agent.agent_id]
        await agent.complete(command_id, sent.get(command_id, 0))
    return sent, lag_ms, elapsed


def report_latency(prefix: str, results: list[ClientResult], target: bool) -> float:
    """The latency figures of all clients together and of each; returns the p99 (ms)."""
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
    return p99


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="stream for 10 s instead of 30 s")
    parser.add_argument("--seconds", type=float, help="streaming time (default 30, --quick 10)")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="lines per second per agent")
    parser.add_argument("--dashboards", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="RQ workers (default: agents + 10)")
    parser.add_argument(
        "--baseline", choices=("both", "line", "batched", "none"), default="both", help="bare relays to run"
    )
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    run_hub(args, seconds)
    for batched in (False, True):
        if args.baseline in ("both", "batched" if batched else "line"):
            run_baseline(args, seconds, batched=batched)


def run_hub(args: argparse.Namespace, seconds: float) -> None:
    workers = args.workers or args.agents + 10
    with running_hub(workers) as hub:
        creds = agent_tokens(hub, args.agents, "lat")
        probe = agent_tokens(hub, 1, "probe")[0]
        procs = hub_processes(hub)

        async def scenario() -> None:
            agents = await connect_agents(hub.ws_url, creds)
            note(f"{len(agents)} agents connected")
            commands = await asyncio.to_thread(submit_commands, hub, [a.agent_id for a in agents])
            for agent in agents:
                _, request = await agent.next_request(60)
                assert request.payload.command_id == commands[agent.agent_id]
                await agent.ack(request.payload.command_id)
            note(f"{len(commands)} commands dispatched and acknowledged")
            dashboards = DashboardProcess(
                hub.ws_url,
                hub.user_token(),
                args.dashboards,
                list(commands.values()),
                latency=True,
                probe=probe,
            )
            try:
                await asyncio.to_thread(dashboards.start)
                await asyncio.sleep(1.0)  # let the ACK's status events pass
                note(f"streaming {args.rate:g} lines/s from each of {len(agents)} agents for {seconds:g}s")
                sampler = CpuSampler(
                    {**procs, "loadgen": self_process(), "dashboards": psutil.Process(dashboards.pid())}
                )
                sampler.start()
                sent, lag_ms, elapsed = await stream_all(agents, commands, args.rate, seconds)
                cpu = sampler.percent()
                others = sampler.others()
                dashboards.stream_ended()
                total_sent = sum(sent.values())
                results, drained = await asyncio.to_thread(dashboards.finish, sent, DRAIN_S)
                note(f"sent {total_sent} lines in {elapsed:.1f}s; dashboards drained in {drained:.1f}s")
                stored, store_s = await asyncio.to_thread(wait_stored, hub, sent, STORE_WAIT_S)
                rate_limited = sum(a.rate_limited for a in agents)
                disconnected = [a.closed_reason for a in agents if a.closed_reason]
                other_errors = [
                    e.payload.message for a in agents for e in a.errors if e.payload.code != "RATE_LIMIT"
                ]
            finally:
                dashboards.stop()
                await asyncio.gather(*(a.close() for a in agents))

            report_latency("", results, target=True)
            metric(
                "lines_sent", total_sent, "lines", f"{args.agents} agents x {args.rate:g}/s x {seconds:g} s"
            )
            metric("send_rate", total_sent / elapsed, "lines/s", f"{args.agents * args.rate:g}/s")
            report_delivery("", results, total_sent)
            stored_total = sum(stored.values())
            metric("lines_stored", stored_total, "lines", f"= {total_sent}")
            store_ok = verdict(total_sent == stored_total)
            unstored = total_sent - stored_total
            metric(
                "lines_lost_in_store",
                unstored,
                "lines",
                f"0 (unstored {STORE_WAIT_S:g} s after the end counts): {store_ok}",
            )
            metric("store_catch_up", store_s, "s", "- (after the last line was sent)")
            metric("dashboard_drain", drained, "s", "- (after the last line was sent)")
            metric("rate_limit_errors", rate_limited, "errors", "0")
            first = f" (first: {disconnected[0][:120]})" if disconnected else ""
            metric(
                "agents_disconnected", len(disconnected), "agents", f"0: {verdict(not disconnected)}{first}"
            )
            if other_errors:
                metric(
                    "other_agent_errors", len(other_errors), "errors", f"0 (first: {other_errors[0][:120]})"
                )
            if lag_ms:
                lag = sorted(lag_ms)
                metric(
                    "loadgen_late_sends_p99",
                    percentile(lag, 99),
                    "ms",
                    f"- ({len(lag)} of {total_sent} sends behind schedule)",
                )
            report_probe("hub_", dashboards.ping_rtts_ms)
            for name, value in cpu.items():
                metric(f"cpu_{name}", value, "% of one core", "- (while streaming)")
            other_load_metric(others)

        run_async(scenario)


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


def run_baseline(args: argparse.Namespace, seconds: float, *, batched: bool) -> None:
    prefix = "baseline_batched_" if batched else "baseline_line_"
    ctx = multiprocessing.get_context("spawn")
    relay_conn, relay_child = ctx.Pipe()
    relay = ctx.Process(target=_relay_entry, args=(relay_child, batched), daemon=True)
    relay.start()
    try:
        if not relay_conn.poll(30):
            raise RuntimeError("the baseline relay did not start")
        url = f"ws://127.0.0.1:{relay_conn.recv()}"
        creds = [(f"base{i:03d}", f"base-agent-{i:03d}", "-") for i in range(args.agents)]

        async def scenario() -> None:
            agents = await connect_agents(url, creds)
            commands = {a.agent_id: f"base-command-{i:03d}" for i, a in enumerate(agents)}
            dashboards = DashboardProcess(
                url, "-", args.dashboards, list(commands.values()), latency=True,
                probe=("probe", "base-probe", "-"),
            )  # fmt: skip
            try:
                await asyncio.to_thread(dashboards.start)
                note(f"{prefix[:-1]}: the same load through a bare relay for {seconds:g}s")
                sampler = CpuSampler(
                    {
                        "relay": psutil.Process(relay.pid),
                        "loadgen": self_process(),
                        "dashboards": psutil.Process(dashboards.pid()),
                    }
                )
                sampler.start()
                sent, _, _ = await stream_all(agents, commands, args.rate, seconds)
                cpu = sampler.percent()
                dashboards.stream_ended()
                results, _ = await asyncio.to_thread(dashboards.finish, sent, DRAIN_S)
            finally:
                dashboards.stop()
                await asyncio.gather(*(a.close() for a in agents))
            report_latency(prefix, results, target=False)
            report_delivery(prefix, results, sum(sent.values()))
            report_probe(f"{prefix}relay_", dashboards.ping_rtts_ms)
            for name, value in cpu.items():
                metric(f"{prefix}cpu_{name}", value, "% of one core", "- (while streaming)")

        run_async(scenario)
    finally:
        relay_conn.send("stop")
        relay.join(10)
        if relay.is_alive():
            relay.kill()


if __name__ == "__main__":
    main()
