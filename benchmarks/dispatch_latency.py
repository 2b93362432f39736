"""Dispatch latency: REST POST of a command -> COMMAND_REQUEST at the agent.

One idle simulated agent. Commands go one after another: POST /v1/commands, wait for the
COMMAND_REQUEST at the agent, answer COMMAND_ACK (EXECUTING) and COMMAND_COMPLETE at once, wait until
a dashboard client sees the command COMPLETED and the agent's queue without it (the completion is
processed), then the next. The time
measured runs from just before the POST is sent to the moment the agent's socket delivers the
COMMAND_REQUEST (one process, one monotonic clock). A few warm-up commands go first and are not
counted.

Every other command waits --gap seconds first (0.25 by default), so the hub has finished with the
one before (its store writes, queue and status events), as when a person sends a command; the others
go at once, while the hub still works through the last one (13 commands/s keep it at 90 % of a
core). The two kinds alternate, so the machine's drift falls on both alike, and each gets its own
figures: ``dispatch_*`` (spaced) and ``dispatch_back_to_back_*``.

Every other pair of commands is sent as the TUI's own connection can send it, as COMMAND_SUBMIT on
the dashboard socket (answered by COMMAND_ACCEPTED) instead of REST: ``dispatch_socket_*``.

    PYTHONPATH=. .venv/bin/python benchmarks/dispatch_latency.py [--quick] [--commands N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict

import httpx

from benchmarks._common import (
    CpuSampler,
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
from shared.api import CommandCreate
from shared.protocol import CommandSubmit
from tests.harness import Dashboard

TARGET_P50_MS = 15.0
TARGET_P99_MS = 60.0
WARMUP = 5


async def completed(dashboard: Dashboard, agent_id: str, command_id: str, seconds: float) -> None:
    """Wait (1 ms polls) until the dashboard has seen the command COMPLETED and then the agent's queue
    without it (the hub's last step of handling COMMAND_COMPLETE)."""
    deadline = time.monotonic() + seconds
    checked = 0
    done = False
    while True:
        messages = dashboard.messages
        for m in messages[checked:]:
            if (
                m.type == "COMMAND_STATUS"
                and m.payload.command_id == command_id
                and m.payload.status == "COMPLETED"
            ):
                done = True
            elif (
                done
                and m.type == "QUEUE_UPDATE"
                and m.payload.agent_id == agent_id
                and all(item.command_id != command_id for item in m.payload.items)
            ):
                return
        checked = len(messages)
        if dashboard.error is not None:
            raise RuntimeError(f"the dashboard client failed: {dashboard.error!r}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"command {command_id} was not seen COMPLETED and off the queue within {seconds:g}s"
            )
        await asyncio.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 commands instead of 200")
    parser.add_argument("--commands", type=int, help="commands measured (default 200, --quick 50)")
    parser.add_argument("--workers", type=int, default=16, help="RQ workers in the hub (default 16)")
    parser.add_argument(
        "--gap", type=float, default=0.25, help="seconds before every other command (default 0.25)"
    )
    args = parser.parse_args()
    count = args.commands or (50 if args.quick else 200)

    with running_hub(args.workers) as hub:
        creds = agent_tokens(hub, 1, "dispatch")
        procs = hub_processes(hub)

        async def scenario() -> None:
            (agent,) = await connect_agents(hub.ws_url, creds)
            dashboard = await Dashboard(hub).connect()
            #: (via, spaced) -> dispatch times
            dispatch: dict[tuple[str, bool], list[float]] = defaultdict(list)
            post_ms: list[float] = []
            complete_ms: list[float] = []
            cycle_ms: list[float] = []
            headers = {"Authorization": f"Bearer {hub.user_token()}"}
            sampler = CpuSampler(procs)
            async with httpx.AsyncClient(base_url=hub.url + "/v1", headers=headers, timeout=30) as client:
                for i in range(WARMUP + count):
                    if i == WARMUP:
                        sampler.start()
                        note(f"warm-up done; measuring {count} commands")
                    spaced = i % 2 == 1
                    via = "socket" if i % 4 >= 2 else "rest"
                    if spaced:
                        await asyncio.sleep(args.gap)
                    dashboard.messages.clear()
                    started = time.perf_counter_ns()
                    if via == "rest":
                        response = await client.post(
                            "/commands", json={"content": f"echo {i}", "targetAgents": [agent.agent_id]}
                        )
                        posted = time.perf_counter_ns()
                        if response.status_code != 201:
                            raise RuntimeError(
                                f"POST /v1/commands: {response.status_code} {response.text[:300]}"
                            )
                        command_id = response.json()["id"]
                        received, request = await agent.next_request(30)
                    else:
                        submit = CommandSubmit(
                            payload=CommandCreate(content=f"echo {i}", target_agents=[agent.agent_id])
                        )
                        await dashboard.send(submit)
                        received, request = await agent.next_request(30)
                        accepted = await dashboard.wait_for(
                            lambda m, rid=submit.id: (
                                m.type == "COMMAND_ACCEPTED" and m.payload.request_id == rid
                            ),
                            30,
                        )
                        command_id = accepted.payload.command.id
                    if request.payload.command_id != command_id:
                        raise RuntimeError(
                            f"got COMMAND_REQUEST for {request.payload.command_id}, expected {command_id}"
                        )
                    await agent.ack(command_id)
                    completing = time.perf_counter_ns()
                    await agent.complete(command_id, 0)
                    await completed(dashboard, agent.agent_id, command_id, 30)
                    done = time.perf_counter_ns()
                    if i >= WARMUP:
                        dispatch[via, spaced].append((received - started) / 1e6)
                        if via == "rest":
                            post_ms.append((posted - started) / 1e6)
                        complete_ms.append((done - completing) / 1e6)
                        cycle_ms.append((done - started) / 1e6)
            cpu = sampler.percent()
            others = sampler.others()
            await dashboard.close()
            await agent.close()
            errors = [e.payload.message for e in agent.errors]

            for (via, spaced), values in sorted(
                dispatch.items(), key=lambda kv: (kv[0][0] != "rest", not kv[0][1])
            ):
                name = (
                    "dispatch" + ("_socket" if via == "socket" else "") + ("" if spaced else "_back_to_back")
                )
                d = sorted(values)
                p50, p99 = percentile(d, 50), percentile(d, 99)
                metric(f"{name}_p50", p50, "ms", f"<= {TARGET_P50_MS:g} ms: {verdict(p50 <= TARGET_P50_MS)}")
                metric(f"{name}_p99", p99, "ms", f"<= {TARGET_P99_MS:g} ms: {verdict(p99 <= TARGET_P99_MS)}")
            metric(
                "commands",
                sum(len(v) for v in dispatch.values()),
                "commands",
                f"{count} (after {WARMUP} warm-up), every other one {args.gap:g} s after the last,"
                " every other pair over the dashboard socket",
            )
            p = sorted(post_ms)
            metric("post_response_p50", percentile(p, 50), "ms", "- (POST sent -> 201 received)")
            metric("post_response_p99", percentile(p, 99), "ms")
            c = sorted(complete_ms)
            metric(
                "complete_to_status_p50",
                percentile(c, 50),
                "ms",
                "- (ACK+COMPLETE sent -> COMPLETED and queue update at a dashboard)",
            )
            metric("complete_to_status_p99", percentile(c, 99), "ms")
            cy = sorted(cycle_ms)
            metric("command_cycle_p50", percentile(cy, 50), "ms", "- (POST -> COMPLETED at a dashboard)")
            metric("commands_per_s", 1000 * len(cy) / sum(cy), "commands/s", "- (one at a time, no gaps)")
            metric(
                "agent_errors",
                len(errors),
                "errors",
                "0" + (f" (first: {errors[0][:120]})" if errors else ""),
            )
            for name, value in cpu.items():
                metric(f"cpu_{name}", value, "% of one core", "-")
            other_load_metric(others)

        run_async(scenario)


if __name__ == "__main__":
    main()
