"""Idle connections: the memory the hub holds per idle, authenticated connection.

Opens as many idle connections as it can, up to --count (default 10,000, the hub's default
max_connections): agents by default, each registered in the hub's database with its own token, that
connect (AGENT_CONNECT, SERVER_HEARTBEAT) and then only send a heartbeat every 30 s, as the wrapper
does (with the wrapper's connection options: WebSocket pings every 20 s); or TUIs (--kind dashboard,
DASHBOARD_CONNECT, then nothing). The limit on open files (RLIMIT_NOFILE) is raised as far as the hard
limit allows first, for this process and so for the hub it starts (a child inherits it; the hub also
raises its own soft limit to the hard one).

The hub's RSS is read before (the hub warmed up by one connection that came and went) and after
(settled); the figure is (RSS after - RSS before) / N, N the connections actually opened.

    PYTHONPATH=. .venv/bin/python benchmarks/idle_connections.py [--quick] [--count N] [--kind K]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from dataclasses import dataclass

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

from benchmarks._common import SimAgent, agent_tokens, metric, note, run_async, running_hub
from shared.protocol import DashboardConnect
from tests.harness import HubProcess

SETTLE_S = 3.0


def raise_open_files() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class IdleResult:
    kind: str
    requested: int
    opened: int
    rss_before: int
    rss_after: int
    open_seconds: float
    error: str = ""

    @property
    def per_connection_kib(self) -> float:
        return (self.rss_after - self.rss_before) / max(1, self.opened) / 1024


class _Dashboard:
    """An idle TUI connection: past DASHBOARD_READY, reading (and dropping) whatever comes."""

    def __init__(self, hub: HubProcess, token: str) -> None:
        self.hub = hub
        self.token = token
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self) -> _Dashboard:
        self.ws = await connect(
            self.hub.ws_url + "/ws/dashboard",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            open_timeout=60,
            max_size=None,
        )
        await self.ws.send(DashboardConnect().to_json())
        while '"DASHBOARD_READY"' not in str(await asyncio.wait_for(self.ws.recv(), 60)):
            pass
        self.task = asyncio.create_task(self._drain())
        return self

    async def _drain(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for _ in self.ws:
                pass

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)


def hub_rss(hub: HubProcess) -> int:
    assert hub.process is not None
    return int(psutil.Process(hub.process.pid).memory_info().rss)


def _wait_all_offline(hub: HubProcess, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with hub.client() as client:
        while time.monotonic() < deadline:
            try:
                agents = client.get("/agents", timeout=60).json()
            except httpx.HTTPError as exc:
                note(f"GET /v1/agents: {exc!r}")
                continue
            if not any(a["status"] == "ONLINE" for a in agents):
                return
            time.sleep(1.0)
    note(f"agents still online {seconds:g}s after their sockets closed")


def _wait_quiet(hub: HubProcess, seconds: float) -> None:
    """Until the hub holds no agent socket and its store has written everything, three polls in a row
    (disconnects are recorded after the socket is gone): stopping it sooner cancels that work."""
    deadline = time.monotonic() + seconds
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:
        try:
            metrics = httpx.get(hub.url + "/metrics", timeout=60).text
            backlog = httpx.get(hub.url + "/health", timeout=60).json()["storeBacklog"]
        except httpx.HTTPError:
            quiet = 0
            continue
        gauge = [line for line in metrics.splitlines() if line.startswith("onsembl_agents_connected")]
        connected = float(gauge[0].split()[-1]) if gauge else 0.0
        quiet = quiet + 1 if connected == 0 and backlog == 0 else 0
        time.sleep(1.0)


def hold_idle(hub: HubProcess, count: int, kind: str = "agent", concurrency: int = 50) -> IdleResult:
    """Open up to ``count`` idle connections of ``kind``, measure the hub's RSS, close them."""
    creds = agent_tokens(hub, count + 1, f"idle-{kind}") if kind == "agent" else []
    user_token = hub.user_token()
    return run_async(lambda: _hold(hub, count, kind, concurrency, creds, user_token))


async def _hold(
    hub: HubProcess,
    count: int,
    kind: str,
    concurrency: int,
    creds: list[tuple[str, str, str]],
    user_token: str,
) -> IdleResult:
    def make(i: int) -> SimAgent | _Dashboard:
        if kind == "agent":
            name, agent_id, token = creds[i]
            return SimAgent(hub.ws_url, name, agent_id, token)
        return _Dashboard(hub, user_token)

    # Warm up: one connection comes and goes, so what the first one allocates is in the baseline.
    first = await make(count).connect()
    await first.close()
    await asyncio.sleep(SETTLE_S)
    before = hub_rss(hub)

    opened: list[SimAgent | _Dashboard] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            if errors:
                return
            try:
                opened.append(await make(i).connect())
            except Exception as exc:  # EMFILE, a refusal (1013 past max_connections), a time-out
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    started = time.monotonic()
    try:
        step = 1000
        for chunk in range(0, count, step):
            await asyncio.gather(*(one(i) for i in range(chunk, min(count, chunk + step))))
            note(f"{len(opened)} {kind} connections open")
            if errors:
                break
        open_seconds = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)
        after = hub_rss(hub)
        lost = [c for c in opened if c.ws is None or c.ws.close_code is not None]
        if lost:
            errors.append(f"{len(lost)} of the connections closed while idle")
    finally:
        await asyncio.gather(*(c.close() for c in opened))
        if kind == "agent":
            # Let the hub see them all go (each disconnect is recorded) before it is stopped.
            await asyncio.to_thread(_wait_all_offline, hub, 120)
        await asyncio.to_thread(_wait_quiet, hub, 300)
    return IdleResult(kind, count, len(opened), before, after, open_seconds, errors[0] if errors else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 connections instead of 10,000")
    parser.add_argument("--count", type=int, help="idle connections to open, at most (default 10,000)")
    parser.add_argument("--kind", choices=["agent", "dashboard"], default="agent")
    parser.add_argument("--concurrency", type=int, default=50, help="connections being opened at once")
    args = parser.parse_args()
    count = args.count or (2000 if args.quick else 10_000)
    limit = raise_open_files()
    note(f"open files limit: {limit}")
    env = {"ONSEMBL_MAX_CONNECTIONS": str(count + 100)}
    with running_hub(2, env) as hub:
        result = hold_idle(hub, count, args.kind, args.concurrency)
    if result.error:
        note(f"stopped at {result.opened} connections: {result.error}")
    metric("idle_connections_opened", result.opened, f"{args.kind} connections", f"{count} asked")
    metric("idle_connections_open_time", result.open_seconds, "s")
    metric("hub_rss_before", result.rss_before / 2**20, "MB")
    metric("hub_rss_after", result.rss_after / 2**20, "MB")
    metric(
        "hub_rss_per_idle_connection",
        result.per_connection_kib,
        "KiB",
        f"- ((RSS after - RSS before) / {result.opened}; {result.kind} connections)",
    )


if __name__ == "__main__":
    main()
