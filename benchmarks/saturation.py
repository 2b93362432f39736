"""Saturation: how many output lines per second the hub carries from agents to a dashboard, against
a bare WebSocket relay on the same machine.

Hub: 10 simulated agents each get a real command, then stream as fast as the hub takes it: 100 lines
per TERMINAL_OUTPUT message, at most 90 messages/s per agent (the hub drops what goes over 100/s).
One dashboard client (another process) counts the lines it receives. Afterwards the stored output is
counted over REST (rows x 100 lines).

Baseline: one asyncio process with the ``websockets`` library relays every message from 10 senders
to one client; the senders send one message per line, as fast as they can. Same machine, same
sender and client process layout, same line text, same duration.

    PYTHONPATH=. .venv/bin/python benchmarks/saturation.py [--quick] [--seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import signal
import time
from typing import Any

import psutil
import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from benchmarks._common import (
    CpuSampler,
    DashboardProcess,
    SimAgent,
    agent_tokens,
    connect_agents,
    hold_receiver,
    hub_processes,
    lines_between,
    metric,
    note,
    other_load_metric,
    run_async,
    running_hub,
    self_process,
    submit_commands,
    use_uvloop,
    verdict,
    wait_stored,
)

AGENTS = 10
LINES_PER_MESSAGE = 100
MESSAGES_PER_SECOND = 90.0  # per agent; the hub's limit is 100
TARGET_RATIO = 1.5


def line_text(sender: int, n: int) -> str:
    return f"sender {sender:02d} line {n:09d} " + "x" * 60


# ---- the hub ---------------------------------------------------------------------------------------


def run_hub(seconds: float) -> dict[str, Any]:
    with running_hub(16) as hub:
        creds = agent_tokens(hub, AGENTS, "sat")
        procs = hub_processes(hub)

        async def scenario() -> dict[str, Any]:
            agents = await connect_agents(hub.ws_url, creds)
            commands = await asyncio.to_thread(submit_commands, hub, [a.agent_id for a in agents])
            for agent in agents:
                _, request = await agent.next_request(60)
                await agent.ack(request.payload.command_id)
            dashboards = DashboardProcess(
                hub.ws_url, hub.user_token(), 1, list(commands.values()), latency=False
            )
            try:
                await asyncio.to_thread(dashboards.start)
                await asyncio.sleep(1.0)
                sent: dict[str, int] = {}
                interval = 1.0 / MESSAGES_PER_SECOND
                end = time.monotonic() + seconds

                async def stream(agent: SimAgent, index: int) -> None:
                    command_id = commands[agent.agent_id]
                    assert agent.ws is not None
                    start = time.monotonic() + interval * index / AGENTS
                    seq = 0
                    while True:
                        delay = start + seq * interval - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        elif delay < -1.0:
                            # Far behind (the hub is not reading): don't burst past its rate limit.
                            start = time.monotonic() - seq * interval
                        if time.monotonic() >= end:
                            break
                        first = seq * LINES_PER_MESSAGE
                        content = "\n".join(line_text(index, first + i) for i in range(LINES_PER_MESSAGE))
                        if not await agent.send_frame(agent.output(command_id, seq, content)):
                            break
                        seq += 1
                        sent[command_id] = seq
                    await agent.complete(command_id, seq)

                note(f"hub: {AGENTS} agents streaming {LINES_PER_MESSAGE} lines per message for {seconds:g}s")
                sampler = CpuSampler(
                    {**procs, "loadgen": self_process(), "client": psutil.Process(dashboards.pid())}
                )
                sampler.start()
                t0 = time.time_ns()
                await asyncio.gather(*(stream(a, i) for i, a in enumerate(agents)))
                t1 = time.time_ns()
                cpu = sampler.percent()
                others = sampler.others()
                dashboards.stream_ended()
                results, drained = await asyncio.to_thread(dashboards.finish, sent, 30.0)
                stream_started = time.monotonic() - (time.time_ns() - t0) / 1e9
                stored, _ = await asyncio.to_thread(wait_stored, hub, sent, 60.0)
                store_s = time.monotonic() - stream_started
                rate_limited = sum(a.rate_limited for a in agents)
                disconnected = [a.closed_reason for a in agents if a.closed_reason]
            finally:
                dashboards.stop()
                await asyncio.gather(*(a.close() for a in agents))
            r = results[0]
            window = (t1 - t0) / 1e9
            messages = sum(sent.values())
            return {
                "window": window,
                "sent": messages * LINES_PER_MESSAGE,
                "delivered_in_window": lines_between(r.buckets, t0, t1),
                "delivered": r.lines,
                "lost": r.lost * LINES_PER_MESSAGE,
                "duplicates": r.duplicates,
                "drain": drained,
                "stored": sum(stored.values()) * LINES_PER_MESSAGE,
                "store_s": store_s,
                "rate_limited": rate_limited,
                "disconnected": disconnected,
                "closed": f"{r.closed} {r.error}".strip(),
                "cpu": cpu,
                "others": others,
            }

        return run_async(scenario)


# ---- the baseline relay ----------------------------------------------------------------------------


def _relay_entry(conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_uvloop()

    async def main() -> None:
        receivers: set[ServerConnection] = set()

        async def handler(ws: ServerConnection) -> None:
            assert ws.request is not None
            if ws.request.path == "/recv":
                await hold_receiver(receivers, ws)
                return
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    for receiver in list(receivers):
                        with contextlib.suppress(websockets.ConnectionClosed):
                            await receiver.send(message)

        async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            conn.send(port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


def _baseline_client_entry(conn: Any, url: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_uvloop()

    async def main() -> None:
        buckets: dict[int, int] = {}
        total = 0
        async with connect(url + "/recv", max_size=None) as ws:
            conn.send("ready")

            async def count() -> None:
                nonlocal total
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for _ in ws:
                        bucket = time.time_ns() // 100_000_000
                        buckets[bucket] = buckets.get(bucket, 0) + 1
                        total += 1

            task = asyncio.create_task(count())
            expected, drain_s = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            deadline = time.monotonic() + drain_s
            started = time.monotonic()
            while total < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - with a deadline
                await asyncio.sleep(0.05)
            drained = time.monotonic() - started
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn.send((buckets, total, drained))

    asyncio.run(main())


def run_baseline(seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    relay_conn, relay_child = ctx.Pipe()
    relay = ctx.Process(target=_relay_entry, args=(relay_child,), daemon=True)
    client_proc = None
    try:
        relay.start()
        if not relay_conn.poll(30):
            raise RuntimeError("the baseline relay did not start")
        url = f"ws://127.0.0.1:{relay_conn.recv()}"
        client_conn, client_child = ctx.Pipe()
        client_proc = ctx.Process(target=_baseline_client_entry, args=(client_child, url), daemon=True)
        client_proc.start()
        if not client_conn.poll(30):
            raise RuntimeError("the baseline client did not connect")
        client_conn.recv()

        async def senders() -> tuple[int, int, int, dict[str, float], float]:
            sockets = [await connect(url + "/send", max_size=None, compression=None) for _ in range(AGENTS)]
            sent = [0] * AGENTS
            await asyncio.sleep(0.5)
            end = time.monotonic() + seconds

            async def send(index: int) -> None:
                ws = sockets[index]
                n = 0
                while time.monotonic() < end:
                    await ws.send(line_text(index, n))
                    n += 1
                    if n % 50 == 0:
                        await asyncio.sleep(0)  # let the other senders have their turn
                sent[index] = n

            note(f"baseline: {AGENTS} senders, one message per line, for {seconds:g}s")
            sampler = CpuSampler(
                {
                    "relay": psutil.Process(relay.pid),
                    "loadgen": self_process(),
                    "client": psutil.Process(client_proc.pid),
                }
            )
            sampler.start()
            t0 = time.time_ns()
            await asyncio.gather(*(send(i) for i in range(AGENTS)))
            t1 = time.time_ns()
            cpu = sampler.percent()
            others = sampler.others()
            for ws in sockets:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 5)
            return t0, t1, sum(sent), cpu, others

        t0, t1, sent, cpu, others = run_async(senders)
        client_conn.send((sent, 30.0))
        if not client_conn.poll(60):
            raise RuntimeError("the baseline client did not report")
        buckets, total, drained = client_conn.recv()
        relay_conn.send("stop")
        return {
            "window": (t1 - t0) / 1e9,
            "sent": sent,
            "delivered_in_window": lines_between(buckets, t0, t1),
            "delivered": total,
            "drain": drained,
            "cpu": cpu,
            "others": others,
        }
    finally:
        for proc in (client_proc, relay):
            if proc is not None and proc.is_alive():
                proc.terminate()
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 s per side instead of 30 s")
    parser.add_argument("--seconds", type=float, help="streaming time per side (default 30, --quick 10)")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 30.0)

    hub = run_hub(seconds)
    base = run_baseline(seconds)

    hub_rate = hub["delivered_in_window"] / hub["window"]
    base_rate = base["delivered_in_window"] / base["window"]
    metric(
        "hub_lines_sent_per_s",
        hub["sent"] / hub["window"],
        "lines/s",
        f"<= {AGENTS * MESSAGES_PER_SECOND * LINES_PER_MESSAGE:g} (agents' cap)",
    )
    metric("hub_lines_delivered_per_s", hub_rate, "lines/s", f">= {TARGET_RATIO:g} x baseline")
    metric("hub_lines_delivered_total", hub["delivered"], "lines", f"= {hub['sent']} sent")
    metric("hub_lines_lost", hub["lost"], "lines", f"0: {verdict(hub['lost'] == 0)}")
    metric("hub_duplicates", hub["duplicates"], "events", "0")
    metric("hub_client_drain", hub["drain"], "s", "- (after the last line was sent)")
    metric("hub_lines_stored", hub["stored"], "lines", f"= {hub['sent']}")
    metric(
        "hub_lines_stored_per_s",
        hub["stored"] / hub["store_s"],
        "lines/s",
        "- (stored lines / time from start until the store caught up)",
    )
    metric("hub_store_done_after", hub["store_s"], "s", f"- (stream lasted {hub['window']:.1f} s)")
    metric("hub_rate_limit_errors", hub["rate_limited"], "errors", "0")
    if hub["disconnected"]:
        metric(
            "hub_agents_disconnected",
            len(hub["disconnected"]),
            "agents",
            f"0 (first: {hub['disconnected'][0]})",
        )
    if hub["closed"]:
        metric("hub_client_disconnected", hub["closed"], "", "no disconnect: MISSED")
    for name, value in hub["cpu"].items():
        metric(f"hub_cpu_{name}", value, "% of one core", "-")
    other_load_metric(hub["others"])
    metric("baseline_lines_sent_per_s", base["sent"] / base["window"], "lines/s")
    metric("baseline_lines_delivered_per_s", base_rate, "lines/s", "- (received while the senders ran)")
    metric(
        "baseline_lines_delivered_total",
        base["delivered"],
        "lines",
        f"= {base['sent']} sent (the rest was still in socket buffers)",
    )
    metric("baseline_client_drain", base["drain"], "s", "- (after the last line was sent)")
    for name, value in base["cpu"].items():
        metric(f"baseline_cpu_{name}", value, "% of one core", "-")
    other_load_metric(base["others"])
    ratio = hub_rate / base_rate if base_rate else float("nan")
    metric("ratio_hub_to_baseline", ratio, "x", f">= {TARGET_RATIO:g}: {verdict(ratio >= TARGET_RATIO)}")


if __name__ == "__main__":
    main()
