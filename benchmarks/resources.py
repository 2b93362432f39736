"""Resources: the hub's idle CPU with 100 connected agents, and its memory under load.

Phase 1, idle: 100 simulated agents connect and then only send heartbeats (one at connect, then
every 30 s, the hub's default interval, spread over that interval as agents started at different
times would be; plus the WebSocket pings of the real wrapper's settings). After a short settle
time, the CPU time of the hub process (and, separately, of its RQ worker child and the embedded
redis-server) is measured over 60 s.

Phase 2, load: each agent gets a command and streams 50 lines/s for it (one TERMINAL_OUTPUT per
line), 10 dashboard clients (another process) receive everything; RSS of the hub process, the worker
child and redis-server is sampled every second and reported after 60 s (and the peak).

    PYTHONPATH=. .venv/bin/python benchmarks/resources.py [--quick] [--seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import psutil

from benchmarks._common import (
    CpuSampler,
    DashboardProcess,
    SimAgent,
    agent_tokens,
    connect_agents,
    hub_processes,
    metric,
    note,
    other_load_metric,
    rss_mb,
    run_async,
    running_hub,
    submit_commands,
    verdict,
)

TARGET_RSS_MB = 300.0
TARGET_IDLE_CPU = 2.0
PAD = "x" * 48
SETTLE_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="15 s per phase instead of 60 s")
    parser.add_argument("--seconds", type=float, help="length of each phase (default 60, --quick 15)")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--dashboards", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0, help="lines per second per agent in phase 2")
    args = parser.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 60.0)

    with running_hub(args.agents + 10) as hub:
        creds = agent_tokens(hub, args.agents, "res")
        procs = hub_processes(hub)

        async def scenario() -> None:
            agents = await connect_agents(hub.ws_url, creds)
            note(f"{len(agents)} agents connected; settling {SETTLE_S:g}s, then idle CPU for {seconds:g}s")
            await asyncio.sleep(SETTLE_S)
            idle_rss = rss_mb(procs)
            before = sum(a.sent_messages for a in agents)
            sampler = CpuSampler(procs)
            sampler.start()
            await asyncio.sleep(seconds)
            idle_cpu = sampler.percent()
            idle_others = sampler.others()
            heartbeats = sum(a.sent_messages for a in agents) - before

            commands = await asyncio.to_thread(submit_commands, hub, [a.agent_id for a in agents])
            for agent in agents:
                _, request = await agent.next_request(60)
                await agent.ack(request.payload.command_id)
            dashboards = DashboardProcess(
                hub.ws_url, hub.user_token(), args.dashboards, list(commands.values()), latency=False
            )
            samples: list[dict[str, float]] = []
            try:
                await asyncio.to_thread(dashboards.start)
                note(f"load: {len(agents)} agents x {args.rate:g} lines/s, {args.dashboards} dashboards")
                sent: dict[str, int] = {}
                interval = 1.0 / args.rate
                end = time.monotonic() + seconds

                async def stream(agent: SimAgent, index: int) -> None:
                    command_id = commands[agent.agent_id]
                    assert agent.ws is not None
                    start = time.monotonic() + interval * index / len(agents)
                    seq = 0
                    while True:
                        delay = start + seq * interval - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        if time.monotonic() >= end:
                            break
                        content = f"{time.time_ns()} {agent.name} line {seq:06d} {PAD}"
                        if not await agent.send_frame(agent.output(command_id, seq, content)):
                            break
                        seq += 1
                        sent[command_id] = seq

                async def sample() -> None:
                    while True:
                        with contextlib.suppress(psutil.Error):
                            samples.append(rss_mb(procs))
                        await asyncio.sleep(1.0)

                sampler_task = asyncio.create_task(sample())
                load_cpu = CpuSampler(procs)
                load_cpu.start()
                await asyncio.gather(*(stream(a, i) for i, a in enumerate(agents)))
                load_cpu_pct = load_cpu.percent()
                load_others = load_cpu.others()
                final = rss_mb(procs)
                sampler_task.cancel()
                dashboards.stream_ended()
                results, _ = await asyncio.to_thread(dashboards.finish, sent, 5.0)
                disconnected = [a.closed_reason for a in agents if a.closed_reason]
            finally:
                dashboards.stop()
                await asyncio.gather(*(a.close() for a in agents))

            for name in ("hub", "workers", "redis"):
                if name in idle_cpu:
                    target = (
                        f"<= {TARGET_IDLE_CPU:g}%: {verdict(idle_cpu[name] <= TARGET_IDLE_CPU)}"
                        if name == "hub"
                        else "-"
                    )
                    metric(f"idle_cpu_{name}", idle_cpu[name], "% of one core", target)
            metric("idle_cpu_total", sum(idle_cpu.values()), "% of one core", "- (hub + workers + redis)")
            metric(
                "idle_heartbeats_sent",
                heartbeats,
                "messages",
                f"- (by {len(agents)} agents during the {seconds:g} s)",
            )
            other_load_metric(idle_others)
            for name, value in idle_rss.items():
                metric(f"idle_rss_{name}", value, "MB")
            for name, value in final.items():
                target = (
                    f"<= {TARGET_RSS_MB:g} MB: {verdict(value <= TARGET_RSS_MB)}" if name == "hub" else "-"
                )
                metric(f"load_rss_{name}", value, "MB", target)
            total = sum(final.values())
            metric(
                "load_rss_total",
                total,
                "MB",
                f"<= {TARGET_RSS_MB:g} MB if it counts for the whole hub: {verdict(total <= TARGET_RSS_MB)}",
            )
            for name in final:
                metric(
                    f"load_rss_peak_{name}",
                    max(s.get(name, 0.0) for s in samples) if samples else final[name],
                    "MB",
                )
            for name, value in load_cpu_pct.items():
                metric(f"load_cpu_{name}", value, "% of one core")
            other_load_metric(load_others)
            total_sent = sum(sent.values())
            metric("load_lines_sent", total_sent, "lines")
            received = [r.lines for r in results]
            metric(
                "load_lines_received_per_client_min",
                min(received) if received else 0,
                "lines",
                f"- (of {total_sent}, 5 s after the stream)",
            )
            if disconnected:
                metric(
                    "load_agents_disconnected",
                    len(disconnected),
                    "agents",
                    f"0 (first: {disconnected[0][:100]})",
                )
            dropped = [f"{r.closed} {r.error}".strip() for r in results if r.closed or r.error]
            if dropped:
                metric(
                    "load_dashboards_disconnected", len(dropped), "clients", f"0 (first: {dropped[0][:100]})"
                )

        run_async(scenario)


if __name__ == "__main__":
    main()
