"""Soak: many agents, several TUI clients, commands every few seconds, for minutes.

100 simulated agents (real WebSockets, one process) answer every COMMAND_REQUEST as the wrapper
does (ACK, output lines, COMMAND_COMPLETE); a submitter sends a command to a random agent over REST
every few seconds per agent; 10 TUI clients (another process, the TUI's connection options) read
the stream and time every line from its send. Printed: commands completed against sent, p99 line
latency per period (it must not drift), hub RSS per period (it must stay flat), errors in the hub's
log.

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py                 # 100 agents, 10 clients, 10 min
    PYTHONPATH=. .venv/bin/python benchmarks/soak.py --quick         # 20 agents, 3 clients, 1 min
"""

from __future__ import annotations

import argparse
import array
import asyncio
import multiprocessing
import random
import time
from multiprocessing.connection import Connection
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import connect

from benchmarks._common import (
    SimAgent,
    agent_tokens,
    connect_agents,
    hub_processes,
    metric,
    note,
    percentile,
    rss_mb,
    run_async,
    running_hub,
    use_uvloop,
    verdict,
)
from shared.protocol import DashboardConnect, parse_hub_to_dashboard
from tui.client.stream import CONNECT_OPTIONS

LINES_PER_COMMAND = 20
LINE_PAUSE_S = 0.02
#: Settling time after the last submit: every command must have completed by then.
DRAIN_S = 60.0


async def serve_commands(agent: SimAgent, stop: asyncio.Event) -> None:
    """What the wrapper does with a command, minus the program: ACK, the lines, COMPLETE."""
    while not stop.is_set():
        try:
            _, request = await agent.next_request(1.0)
        except TimeoutError:
            continue
        command_id = request.payload.command_id
        await agent.ack(command_id)
        for sequence in range(LINES_PER_COMMAND):
            await agent.send_frame(agent.output(command_id, sequence, f"{time.time_ns()} soak line\n"))
            await asyncio.sleep(LINE_PAUSE_S)
        await agent.complete(command_id, LINES_PER_COMMAND)


# ---- TUI clients, in their own process ---------------------------------------------------------------


def _clients_entry(conn: Connection, ws_url: str, token: str, count: int, period_s: float) -> None:
    use_uvloop()
    asyncio.run(_clients_main(conn, ws_url, token, count, period_s))


async def _clients_main(conn: Connection, ws_url: str, token: str, count: int, period_s: float) -> None:
    #: period index -> latencies (ms) of every line every client received in it.
    periods: dict[int, array.array[float]] = {}
    started = time.monotonic()
    errors: list[str] = []

    async def client() -> None:
        async with connect(
            ws_url + "/ws/dashboard",
            additional_headers={"Authorization": f"Bearer {token}"},
            **CONNECT_OPTIONS,
        ) as ws:
            await ws.send(DashboardConnect().to_json())
            async for frame in ws:
                now_ns = time.time_ns()
                message = parse_hub_to_dashboard(frame)
                items = message.payload.events if message.type == "EVENT_BATCH" else [message]  # type: ignore[union-attr]
                period = int((time.monotonic() - started) // period_s)
                for item in items:
                    if item.type == "TERMINAL_STREAM" and item.payload.content.endswith(" soak line\n"):
                        sent_ns = int(item.payload.content.split(" ", 1)[0])
                        periods.setdefault(period, array.array("d")).append((now_ns - sent_ns) / 1e6)

    async def guarded() -> None:
        try:
            await client()
        except (websockets.WebSocketException, OSError) as exc:
            errors.append(repr(exc))

    tasks = [asyncio.create_task(guarded()) for _ in range(count)]
    conn.send("connected")
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
    await asyncio.sleep(2)  # the last lines
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(({p: v.tobytes() for p, v in periods.items()}, errors))


# ---- the run ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 agents, 3 clients, 1 minute (the CI variant)"
    )
    parser.add_argument("--agents", type=int)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between commands, per agent")
    args = parser.parse_args()
    agents_n = args.agents or (20 if args.quick else 100)
    clients_n = args.clients or (3 if args.quick else 10)
    minutes = args.minutes or (1.0 if args.quick else 10.0)
    period_s = 10.0 if minutes <= 2 else 60.0
    ok = run(agents_n, clients_n, minutes, args.every, period_s)
    raise SystemExit(0 if ok else 1)


def run(agents_n: int, clients_n: int, minutes: float, every: float, period_s: float) -> bool:
    with running_hub(agents_n + 10) as hub:
        creds = agent_tokens(hub, agents_n, "soak")
        processes = hub_processes(hub)
        parent, child = multiprocessing.Pipe()
        clients = multiprocessing.Process(
            target=_clients_entry,
            args=(child, hub.ws_url, hub.user_token(), clients_n, period_s),
            daemon=True,
        )
        clients.start()
        assert parent.recv() == "connected"
        rss_periods: dict[int, float] = {}

        async def scenario() -> tuple[list[str], int, int]:
            agents = await connect_agents(hub.ws_url, creds)
            note(f"{len(agents)} agents and {clients_n} TUI clients connected; soaking for {minutes:g} min")
            stop = asyncio.Event()
            servers = [asyncio.create_task(serve_commands(a, stop)) for a in agents]
            sent: list[str] = []
            refused = 0
            started = time.monotonic()
            interval = every / agents_n
            async with httpx.AsyncClient(
                base_url=hub.url + "/v1", headers={"Authorization": f"Bearer {hub.user_token()}"}, timeout=30
            ) as http:
                tick = 0
                while time.monotonic() - started < minutes * 60:
                    agent = random.choice(agents)
                    response = await http.post(
                        "/commands", json={"content": "soak", "targetAgents": [agent.agent_id]}
                    )
                    if response.status_code == 201:
                        sent.append(response.json()["id"])
                    else:
                        refused += 1
                    period = int((time.monotonic() - started) // period_s)
                    if period not in rss_periods:
                        rss_periods[period] = rss_mb(processes)["hub"]
                    tick += 1
                    await asyncio.sleep(max(0.0, started + tick * interval - time.monotonic()))
                note(f"{len(sent)} commands sent; waiting for them to complete")
                completed = await wait_completed(http, sent)
            stop.set()
            await asyncio.gather(*servers, return_exceptions=True)
            for agent in agents:
                await agent.close()
            return sent, completed, refused

        sent, completed, refused = run_async(scenario)
        parent.send("stop")
        raw_periods, client_errors = parent.recv()
        clients.join(10)
        errors = hub_errors(hub)

    metric("commands_sent", len(sent), "commands", f"- ({refused} refused by the hub)")
    metric("commands_completed", completed, "commands", f"= {len(sent)}: {verdict(completed == len(sent))}")
    p99s = []
    full_periods = int(minutes * 60 // period_s)
    for period in sorted(raw_periods):
        if period >= full_periods:
            continue  # the drain after the last submit: not a full period
        values = array.array("d")
        values.frombytes(raw_periods[period])
        if len(values) < 50:
            continue
        ordered = sorted(values)
        p99s.append(percentile(ordered, 99))
        metric(f"latency_p99_{int(period * period_s)}s", p99s[-1], "ms", f"- ({len(values)} lines)")
    for period, rss in sorted(rss_periods.items()):
        metric(f"hub_rss_{int(period * period_s)}s", rss, "MB")
    drift = (p99s[-1] / p99s[0]) if len(p99s) >= 2 and p99s[0] > 0 else 1.0
    rss_values = [v for _, v in sorted(rss_periods.items())]
    growth = (rss_values[-1] - rss_values[0]) if len(rss_values) >= 2 else 0.0
    metric("latency_p99_drift", drift, "x", "last period / first (no drift: about 1)")
    metric("hub_rss_growth", growth, "MB", "last period - first (flat: about 0)")
    metric("hub_log_errors", errors, "lines", f"0: {verdict(errors == 0)}")
    metric("client_errors", len(client_errors), "clients", f"0: {verdict(not client_errors)}")
    return completed == len(sent) and refused == 0 and errors == 0 and not client_errors


def hub_errors(hub: Any) -> int:
    try:
        text = hub.log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if '"level": "ERROR"' in line or " ERROR " in line)


async def wait_completed(http: httpx.AsyncClient, command_ids: list[str]) -> int:
    wanted = set(command_ids)
    deadline = time.monotonic() + DRAIN_S
    done: set[str] = set()
    while time.monotonic() < deadline:
        offset = 0
        while True:
            page = (await http.get("/commands", params={"limit": 100, "offset": offset})).json()
            for command in page["items"]:
                if command["id"] in wanted and command["status"] == "COMPLETED":
                    done.add(command["id"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
        if len(done) == len(wanted):
            break
        await asyncio.sleep(1)
    return len(done)


if __name__ == "__main__":
    main()
