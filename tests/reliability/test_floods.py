"""Floods against a live hub: ten times the per-connection rate limit on an agent socket and on a
dashboard socket (RATE_LIMIT answered, the connection kept, everyone else served meanwhile within a
bound), a frame one byte over the size limit (close 1009), sockets past the hub's connection cap
(refused with ERROR RESOURCE_EXHAUSTED and close 1013 while the open ones keep working), and a few
hundred idle authenticated connections (the hub's RSS per idle connection; benchmarks/
idle_connections.py opens up to 10,000).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from benchmarks.idle_connections import hold_idle, raise_open_files
from shared.api import HealthMetrics
from shared.enums import AgentType
from shared.protocol import (
    MAX_AGENT_MESSAGE_BYTES,
    MAX_DASHBOARD_MESSAGE_BYTES,
    AgentConnect,
    AgentConnectPayload,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    DashboardConnect,
    Ping,
)
from tests.harness import HubProcess, timeout
from tests.reliability.helpers import (
    closed_with,
    figure,
    heartbeat_works,
    keep_beating,
    next_of_type,
    open_agent,
    open_dashboard,
    output_frame,
)

pytestmark = pytest.mark.reliability

#: Times the per-connection limit the floods send, and for how long.
FLOOD_FACTOR = 10
FLOOD_SECONDS = 3.0
#: What another connection's round trip, and a REST call, may take while a flood goes on.
SERVED_WITHIN_S = 1.0
#: The connection cap of the cap test's hub.
CAP = 50
#: Idle authenticated connections the idle test opens (the benchmark goes up to 10,000).
IDLE_CONNECTIONS = 300
#: What one idle connection may cost the hub, at most (a leak shows as far more).
IDLE_KIB_BOUND = 256


@pytest.fixture(scope="module")
def flood_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(
        tmp_path_factory.mktemp("flood-hub"),
        # The documented limits, spelled out; production's heartbeat interval, so that hundreds of
        # idle agents beating every 30 s are not swept as silent.
        env_overrides={
            "ONSEMBL_AGENT_RATE_LIMIT": "100",
            "ONSEMBL_DASHBOARD_RATE_LIMIT": "50",
            "ONSEMBL_HEARTBEAT_INTERVAL_S": "30",
        },
        workers=2,
    ).start()
    yield hub
    hub.stop()
    hub.shutdown_redis()


class Prober:
    """Measures, while a flood goes on, another agent's round trip (a TERMINAL_OUTPUT for an unknown
    command, answered with an ERROR naming it) and a REST call's time, every 100 ms."""

    def __init__(self, hub: HubProcess, ws: ClientConnection, agent_id: str) -> None:
        self.hub = hub
        self.ws = ws
        self.agent_id = agent_id
        self.round_trips: list[float] = []
        self.rest: list[float] = []
        self.rest_failures = 0

    async def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        n = 0
        async with httpx.AsyncClient(
            base_url=self.hub.url + "/v1",
            headers={"Authorization": f"Bearer {self.hub.user_token()}"},
            timeout=timeout(10),
        ) as client:
            while time.monotonic() < end:
                n += 1
                started = time.monotonic()
                await self.ws.send(output_frame(f"probe-{n}", self.agent_id, 0, "p"))
                while True:
                    reply = json.loads(await asyncio.wait_for(self.ws.recv(), timeout(10)))
                    details = reply.get("payload", {}).get("details")
                    if isinstance(details, dict) and details.get("commandId") == f"probe-{n}":
                        break
                self.round_trips.append(time.monotonic() - started)
                started = time.monotonic()
                response = await client.get(f"/agents/{self.agent_id}")
                self.rest.append(time.monotonic() - started)
                self.rest_failures += response.status_code != 200
                await asyncio.sleep(0.1)


async def _read_errors(ws: ClientConnection, into: list[dict[str, Any]], counts: dict[str, int]) -> None:
    try:
        async for frame in ws:
            message = json.loads(frame)
            counts[message["type"]] = counts.get(message["type"], 0) + 1
            if message["type"] == "ERROR":
                into.append(message["payload"])
    except ConnectionClosed:
        pass


async def _flood(ws: ClientConnection, frame: str, rate: float, seconds: float) -> int:
    """Send ``frame`` at ``rate`` per second for ``seconds`` (in bursts every 10 ms); how many sent."""
    sent = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            await ws.send(frame)
            sent += 1
        await asyncio.sleep(0.01)
    return sent


async def test_agent_flood_is_rate_limited_and_everyone_else_is_served(flood_hub: HubProcess) -> None:
    hub = flood_hub
    limit = hub.settings.agent_rate_limit
    flooder, flooder_id = await open_agent(hub, "flooder")
    calm, calm_id = await open_agent(hub, "calm")
    errors: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    reader = asyncio.create_task(_read_errors(flooder, errors, counts))
    beat = keep_beating(calm, calm_id)
    try:
        frame = AgentHeartbeat(
            payload=AgentHeartbeatPayload(agent_id=flooder_id, health_metrics=HealthMetrics())
        ).to_json()
        prober = Prober(hub, calm, calm_id)
        sent, _ = await asyncio.gather(
            _flood(flooder, frame, limit * FLOOD_FACTOR, FLOOD_SECONDS), prober.run(FLOOD_SECONDS)
        )
        await asyncio.sleep(0.5)
        rate_limited = [e for e in errors if e["code"] == "RATE_LIMIT"]
        dropped = max((e["details"]["dropped"] for e in rate_limited), default=0)
        figure(
            "flood agent messages sent",
            f"{sent} in {FLOOD_SECONDS:g} s ({FLOOD_FACTOR}x the limit of {limit:g}/s)",
        )
        figure("flood agent RATE_LIMIT errors answered", len(rate_limited))
        figure("flood agent messages dropped (the hub's count)", dropped)
        figure("flood other agent's round trip, max", f"{max(prober.round_trips) * 1000:.0f}", "ms")
        figure("flood REST call, max", f"{max(prober.rest) * 1000:.0f}", "ms")
        assert rate_limited, counts
        assert all(e["recoverable"] for e in errors) and {e["code"] for e in errors} == {"RATE_LIMIT"}, errors
        # The bucket holds one second's worth: about that much more than the limit gets through.
        assert dropped >= sent - limit * (FLOOD_SECONDS + 2), (sent, dropped)
        assert len(prober.round_trips) >= 5 and prober.rest_failures == 0
        assert max(prober.round_trips) < timeout(SERVED_WITHIN_S)
        assert max(prober.rest) < timeout(SERVED_WITHIN_S)
        # The flooder keeps its connection: once the bucket refills it is served again.
        await asyncio.sleep(1.1)
        reader.cancel()
        await heartbeat_works(flooder, flooder_id, hub)
        figure("flood agent connection kept", "yes")
    finally:
        reader.cancel()
        beat.cancel()
        await flooder.close()
        await calm.close()


async def test_dashboard_flood_is_rate_limited_and_other_dashboards_are_served(flood_hub: HubProcess) -> None:
    hub = flood_hub
    limit = hub.settings.dashboard_rate_limit
    flooder, _ = await open_dashboard(hub)
    calm, _ = await open_dashboard(hub)
    errors: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    reader = asyncio.create_task(_read_errors(flooder, errors, counts))
    try:
        round_trips: list[float] = []

        async def probe() -> None:
            end = time.monotonic() + FLOOD_SECONDS
            while time.monotonic() < end:
                started = time.monotonic()
                await calm.send(Ping().to_json())
                await next_of_type(calm, "PONG", 10)
                round_trips.append(time.monotonic() - started)
                await asyncio.sleep(0.1)

        sent, _ = await asyncio.gather(
            _flood(flooder, Ping().to_json(), limit * FLOOD_FACTOR, FLOOD_SECONDS), probe()
        )
        await asyncio.sleep(0.5)
        rate_limited = [e for e in errors if e["code"] == "RATE_LIMIT"]
        pongs = counts.get("PONG", 0)
        figure(
            "flood dashboard PINGs sent",
            f"{sent} in {FLOOD_SECONDS:g} s ({FLOOD_FACTOR}x the limit of {limit:g}/s)",
        )
        figure("flood dashboard PONGs (served within the limit)", pongs)
        figure("flood dashboard RATE_LIMIT errors answered", len(rate_limited))
        figure("flood other dashboard's PING round trip, max", f"{max(round_trips) * 1000:.0f}", "ms")
        assert rate_limited and {e["code"] for e in errors} == {"RATE_LIMIT"}, errors
        assert pongs <= limit * (FLOOD_SECONDS + 2), pongs
        assert max(round_trips) < timeout(SERVED_WITHIN_S)
        await asyncio.sleep(1.1)
        reader.cancel()
        await flooder.send(Ping().to_json())
        await next_of_type(flooder, "PONG", 10)
        figure("flood dashboard connection kept", "yes")
    finally:
        reader.cancel()
        await flooder.close()
        await calm.close()


async def test_one_byte_over_the_size_limit_closes_1009(flood_hub: HubProcess) -> None:
    hub = flood_hub
    bystander, bystander_id = await open_agent(hub, "size-limit-bystander")
    try:
        ws, _ = await open_agent(hub, "size-limit-agent")
        await ws.send("x" * (MAX_AGENT_MESSAGE_BYTES + 1))
        agent_code, agent_messages = await closed_with(ws)
        dash, _ = await open_dashboard(hub)
        await dash.send("x" * (MAX_DASHBOARD_MESSAGE_BYTES + 1))
        dashboard_code, _ = await closed_with(dash)
        figure("size limit + 1 byte, agent socket", f"close {agent_code}")
        figure("size limit + 1 byte, dashboard socket", f"close {dashboard_code}")
        assert agent_code == 1009 and dashboard_code == 1009
        assert agent_messages and agent_messages[-1]["payload"]["code"] == "INVALID_MESSAGE"
        await heartbeat_works(bystander, bystander_id, hub)
    finally:
        await bystander.close()


async def _refused_past_cap(
    hub: HubProcess, path: str, headers: dict[str, str], hello: str
) -> tuple[int | None, str]:
    ws = await connect(hub.ws_url + path, additional_headers=headers)
    try:
        await ws.send(hello)
    except ConnectionClosed:
        pass
    code, messages = await closed_with(ws)
    return code, messages[0]["payload"]["code"] if messages else ""


@pytest.mark.timeout(300)
async def test_past_the_connection_cap_new_sockets_are_refused_and_open_ones_work(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", env_overrides={"ONSEMBL_MAX_CONNECTIONS": str(CAP)}, workers=2)
    await asyncio.to_thread(hub.start)
    dashboards: list[ClientConnection] = []
    try:
        agent_ws, agent_id = await open_agent(hub, "cap-agent")
        beat = keep_beating(agent_ws, agent_id)
        while len(dashboards) < CAP - 1:
            dashboards.append((await open_dashboard(hub))[0])
        other_id, other_token = hub.agent_token("cap-late-agent")
        hello = AgentConnect(
            payload=AgentConnectPayload(agent_id=other_id, agent_type=AgentType.SHELL)
        ).to_json()
        attempts = {
            "dashboard": await _refused_past_cap(
                hub,
                "/ws/dashboard",
                {"Authorization": f"Bearer {hub.user_token()}"},
                DashboardConnect().to_json(),
            ),
            "agent": await _refused_past_cap(
                hub, "/ws/agent", {"Authorization": f"Bearer {other_token}"}, hello
            ),
            "no token": await _refused_past_cap(hub, "/ws/dashboard", {}, DashboardConnect().to_json()),
        }
        refused = {
            name: result for name, result in attempts.items() if result == (1013, "RESOURCE_EXHAUSTED")
        }
        # The open ones keep working, and REST too.
        answering = 0
        for ws in dashboards:
            await ws.send(Ping().to_json())
            await next_of_type(ws, "PONG", 10)
            answering += 1
        beat.cancel()
        await heartbeat_works(agent_ws, agent_id, hub)
        answering += 1
        async with httpx.AsyncClient(timeout=timeout(10)) as client:
            rest = (await client.get(hub.url + "/health")).status_code
        # A slot that frees up is taken again.
        await dashboards.pop().close()
        await asyncio.sleep(0.5)
        dashboards.append((await open_dashboard(hub))[0])
        figure(
            f"connection cap {CAP}: refused past it",
            f"{len(refused)} of {len(attempts)} (ERROR RESOURCE_EXHAUSTED, close 1013)",
        )
        figure(f"connection cap {CAP}: open connections answering", f"{answering} of {CAP}")
        assert refused == attempts, attempts
        assert answering == CAP and rest == 200
        await agent_ws.close()
    finally:
        for ws in dashboards:
            await ws.close()
        await asyncio.to_thread(hub.stop)
        hub.shutdown_redis()


@pytest.mark.timeout(300)
def test_idle_connections_cost_the_hub_little(flood_hub: HubProcess) -> None:
    raise_open_files()
    result = hold_idle(flood_hub, IDLE_CONNECTIONS, "agent")
    figure("idle connections opened", f"{result.opened} of {IDLE_CONNECTIONS} in {result.open_seconds:.1f} s")
    figure(
        "hub RSS per idle connection",
        f"{result.per_connection_kib:.1f} KiB ({result.rss_before / 2**20:.0f} MB before, "
        f"{result.rss_after / 2**20:.0f} MB after)",
    )
    assert result.error == "" and result.opened == IDLE_CONNECTIONS
    assert result.per_connection_kib < IDLE_KIB_BOUND
    assert httpx.get(flood_hub.url + "/health", timeout=timeout(10)).json()["status"] == "ok"
