"""What the benchmarks share: a hub in a temp dir (tests.harness.HubProcess) that is always cleaned up,
simulated agents and dashboard clients over real WebSockets, a child process that runs the
dashboards, percentiles and the ``name: value unit (target ...)`` output lines.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets
from pydantic_core import to_json
from websockets.asyncio.client import ClientConnection, connect

from shared.api import HealthMetrics
from shared.enums import AckStatus, AgentType, CompletionStatus, StreamType
from shared.protocol import (
    AgentConnect,
    AgentConnectPayload,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    CommandAck,
    CommandAckPayload,
    CommandComplete,
    CommandCompletePayload,
    CommandRequest,
    DashboardConnect,
    Error,
    ServerHeartbeat,
    TerminalOutput,
    TerminalOutputPayload,
    new_id,
    now_ms,
    parse_hub_to_agent,
    parse_hub_to_dashboard,
)
from tests.harness import HubProcess
from tui.client.stream import CONNECT_OPTIONS

#: Production-like settings for the hub under test (the harness defaults are tuned for fast tests).
HUB_ENV = {
    "ONSEMBL_LOG_LEVEL": "WARNING",
    "ONSEMBL_HEARTBEAT_INTERVAL_S": "30",
    "ONSEMBL_DISPATCH_RETRY_S": "5",
    "ONSEMBL_CANCEL_GRACE_S": "15",
}


def use_uvloop() -> None:
    """The hub runs on uvloop (uvicorn picks it); the load generators and the baseline relay too."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass


# ---- output ----------------------------------------------------------------------------------------


def metric(name: str, value: float | int | str, unit: str = "", target: str = "") -> None:
    if isinstance(value, float):
        text = f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    else:
        text = str(value)
    line = f"{name}: {text}"
    if unit:
        line += f" {unit}"
    line += f" (target {target})" if target else " (target -)"
    print(line, flush=True)


def note(text: str) -> None:
    """Progress and context go to stderr, so stdout holds only the metric lines."""
    print(f"# {text}", file=sys.stderr, flush=True)


def percentile(sorted_values: list[float] | array.array[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[index])


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


# ---- the hub ---------------------------------------------------------------------------------------


def _terminate_to_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def running_hub(workers: int, env: dict[str, str] | None = None) -> Iterator[HubProcess]:
    """A hub (with its worker child and embedded redis-server) in a temp dir; stopped and removed
    afterwards, also on Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, _terminate_to_exit)
    tmp = Path(tempfile.mkdtemp(prefix="onsembl-bench-"))
    hub = HubProcess(tmp / "hub", env_overrides={**HUB_ENV, **(env or {})}, workers=workers)
    children: list[psutil.Process] = []
    try:
        note(f"starting a hub with {workers} workers in {tmp}")
        started = time.monotonic()
        try:
            hub.start()
        finally:
            if hub.process is not None:
                with contextlib.suppress(psutil.Error):
                    children = psutil.Process(hub.process.pid).children(recursive=True)
        pid = hub.process.pid if hub.process else "?"
        note(f"hub {hub.url} (pid {pid}) up in {time.monotonic() - started:.1f}s")
        yield hub
    finally:
        hub.stop()
        hub.shutdown_redis()
        # Whatever the hub started and left behind (it should leave nothing).
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    note(f"killing leftover pid {child.pid} ({child.name()})")
                    child.kill()
        _report_hub_log(hub)
        shutil.rmtree(tmp, ignore_errors=True)


def _report_hub_log(hub: HubProcess) -> None:
    """Errors the hub logged (its data dir is removed after the run): counted, the first shown, the
    whole log kept in /tmp when there are any."""
    try:
        text = hub.log_path.read_text(errors="replace")
    except OSError:
        return
    errors = [
        line
        for line in text.splitlines()
        if '"level": "ERROR"' in line or " ERROR " in line or line.startswith("Traceback")
    ]
    if errors or os.environ.get("BENCH_KEEP_HUB_LOG"):
        kept = Path(tempfile.gettempdir()) / f"onsembl-bench-hub-{os.getpid()}.log"
        shutil.copyfile(hub.log_path, kept)
        note(
            f"the hub logged {len(errors)} errors (log kept in {kept})"
            + (f"; first: {errors[0][:300]}" if errors else "")
        )


def hub_processes(hub: HubProcess) -> dict[str, psutil.Process]:
    """The hub process, its RQ worker child and the embedded redis-server."""
    assert hub.process is not None
    main = psutil.Process(hub.process.pid)
    found: dict[str, psutil.Process] = {"hub": main}
    for child in main.children(recursive=True):
        name = child.name()
        cmdline = " ".join(child.cmdline())
        if "redis-server" in name or "redis-server" in cmdline:
            found["redis"] = child
        elif "worker" in cmdline:
            found["workers"] = child
    return found


def agent_tokens(hub: HubProcess, count: int, prefix: str) -> list[tuple[str, str, str]]:
    """(name, agent id, token) for ``count`` agents, registered in the hub's database: what
    ``HubProcess.agent_token`` does, with one database engine for all of them."""
    from server.agents import AgentDirectory
    from server.auth.tokens import TokenKind, mint
    from server.db.session import make_engine, make_sessionmaker

    settings = hub.settings
    hub.agent_token(f"{prefix}-000")  # migrates the database if needed

    async def ensure_all() -> list[tuple[str, str]]:
        engine = make_engine(settings.sqlalchemy_url)
        try:
            directory = AgentDirectory(None, make_sessionmaker(engine))  # type: ignore[arg-type]
            names = [f"{prefix}-{i:03d}" for i in range(count)]
            return [(name, (await directory.ensure(name, AgentType.SHELL)).id) for name in names]
        finally:
            await engine.dispose()

    rows = asyncio.run(ensure_all())
    return [(name, agent_id, mint(settings, TokenKind.AGENT, agent_id, name=name)) for name, agent_id in rows]


def submit_commands(hub: HubProcess, agent_ids: list[str], content: str = "bench") -> dict[str, str]:
    """One command per agent over REST; agent id -> command id."""
    commands: dict[str, str] = {}
    with hub.client() as client:
        for agent_id in agent_ids:
            response = client.post("/commands", json={"content": content, "targetAgents": [agent_id]})
            if response.status_code != 201:
                raise RuntimeError(f"POST /v1/commands: {response.status_code} {response.text[:300]}")
            commands[agent_id] = response.json()["id"]
    return commands


def stored_count(client: httpx.Client, command_id: str) -> int:
    response = client.get(f"/commands/{command_id}/output", params={"limit": 1})
    response.raise_for_status()
    return int(response.json()["total"])


def wait_stored(
    hub: HubProcess, expected: dict[str, int], seconds: float, interval: float = 1.0
) -> tuple[dict[str, int], float]:
    """Poll the stored output counts until they reach ``expected`` (command id -> rows) or time runs
    out. Returns the last counts and the time it took."""
    started = time.monotonic()
    counts: dict[str, int] = {}
    with hub.client() as client:
        while True:
            for command_id, want in expected.items():
                if counts.get(command_id) != want:
                    counts[command_id] = stored_count(client, command_id)
            if all(counts[c] >= w for c, w in expected.items()) or time.monotonic() - started > seconds:
                return counts, time.monotonic() - started
            time.sleep(interval)


# ---- a simulated agent -----------------------------------------------------------------------------


@dataclass
class SimAgent:
    """An agent speaking the protocol over a real WebSocket, without a wrapper or a process behind it."""

    ws_url: str
    name: str
    agent_id: str
    token: str
    heartbeat_s: float = 30.0
    ws: ClientConnection | None = None
    requests: asyncio.Queue[tuple[int, CommandRequest]] = field(default_factory=asyncio.Queue)
    errors: list[Error] = field(default_factory=list)
    rate_limited: int = 0
    sent_messages: int = 0
    #: Why the socket closed under us, if it did (e.g. the client's keepalive ping timed out).
    closed_reason: str = ""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _output_templates: dict[str, str] = field(default_factory=dict)

    async def connect(self) -> SimAgent:
        # The same connection options as the real wrapper (wrapper/client.py), deflate off included.
        self.ws = await connect(
            self.ws_url + "/ws/agent",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=None,
            compression=None,
            open_timeout=30,
            ping_interval=20,
            ping_timeout=20,
        )
        await self.ws.send(
            AgentConnect(
                payload=AgentConnectPayload(agent_id=self.agent_id, agent_type=AgentType.SHELL)
            ).to_json()
        )
        first = parse_hub_to_agent(await asyncio.wait_for(self.ws.recv(), 30))
        if not isinstance(first, ServerHeartbeat):
            raise RuntimeError(f"agent {self.name}: expected SERVER_HEARTBEAT, got {first!r}")
        self._tasks.append(asyncio.create_task(self._read()))
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self.ws:
                received = time.perf_counter_ns()
                message = parse_hub_to_agent(frame)
                if isinstance(message, CommandRequest):
                    self.requests.put_nowait((received, message))
                elif isinstance(message, Error):
                    self.errors.append(message)
                    if message.payload.code == "RATE_LIMIT":
                        self.rate_limited += 1

    async def _heartbeat(self) -> None:
        # Like the wrapper: one at once, then one per interval. Agents that connected together are
        # spread over the interval after the first, as agents started at different times would be.
        first = True
        while not self.closed_reason:
            await self.send(
                AgentHeartbeat(
                    payload=AgentHeartbeatPayload(agent_id=self.agent_id, health_metrics=HealthMetrics())
                )
            )
            await asyncio.sleep(random.uniform(0, self.heartbeat_s) if first else self.heartbeat_s)
            first = False

    async def send(self, message: Any) -> None:
        await self.send_frame(message.to_json())

    async def send_frame(self, frame: str) -> bool:
        """Send; False (and ``closed_reason`` set) when the connection is gone."""
        assert self.ws is not None
        if self.closed_reason:
            return False
        try:
            await self.ws.send(frame)
        except websockets.ConnectionClosed as exc:
            self.closed_reason = str(exc)[:200]
            return False
        self.sent_messages += 1
        return True

    async def next_request(self, seconds: float) -> tuple[int, CommandRequest]:
        return await asyncio.wait_for(self.requests.get(), seconds)

    async def ack(self, command_id: str) -> None:
        await self.send(
            CommandAck(
                payload=CommandAckPayload(
                    command_id=command_id, agent_id=self.agent_id, status=AckStatus.EXECUTING
                )
            )
        )

    def output(self, command_id: str, sequence: int, content: str) -> str:
        """TERMINAL_OUTPUT for one line: the frame the model gives, with a fresh id, time, sequence
        and content put into a template the model serialised once (the load generator runs on the
        hub's machine, so its cost per line matters; tests/benchmarks check it parses as sent)."""
        template = self._output_templates.get(command_id)
        if template is None:
            sample = TerminalOutput(
                id="ID", timestamp=1,
                payload=TerminalOutputPayload(
                    command_id=command_id, agent_id=self.agent_id, stream_type=StreamType.STDOUT,
                    content="CONTENT", sequence=0,
                ),
            ).to_json()  # fmt: skip
            template = self._output_templates[command_id] = (
                sample.replace("{", "{{")
                .replace("}", "}}")
                .replace('"ID"', '"{id}"', 1)
                .replace('"timestamp":1', '"timestamp":{timestamp}', 1)
                .replace('"CONTENT"', "{content}", 1)
                .replace('"sequence":0', '"sequence":{sequence}', 1)
            )
        return template.format(
            id=new_id(), timestamp=now_ms(), content=to_json(content).decode(), sequence=sequence
        )

    async def complete(self, command_id: str, output_lines: int | None = None) -> None:
        await self.send(
            CommandComplete(
                payload=CommandCompletePayload(
                    command_id=command_id, agent_id=self.agent_id, status=CompletionStatus.COMPLETED,
                    output_lines=output_lines,
                )
            )
        )  # fmt: skip

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)


async def connect_agents(
    ws_url: str, creds: list[tuple[str, str, str]], concurrency: int = 20
) -> list[SimAgent]:
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str, agent_id: str, token: str) -> SimAgent:
        async with gate:
            return await SimAgent(ws_url, name, agent_id, token).connect()

    return list(await asyncio.gather(*(one(*c) for c in creds)))


# ---- dashboards in a child process ----------------------------------------------------------------


@dataclass
class ClientResult:
    """What one dashboard client saw of the TERMINAL_STREAM events of the benchmark's commands."""

    events: int = 0
    lines: int = 0
    duplicates: int = 0
    lost: int = 0
    frames: int = 0
    latencies_ms: bytes = b""  # array('d') of per-line latencies (from the send), sorted
    #: The same from the time the line was due by the agent's schedule (includes the agent's own lag).
    scheduled_latencies_ms: bytes = b""
    #: The send -> hub split: from the send to the hub's stamp on the event (when it took the line in),
    #: and from that stamp to the receive (publish, Redis, relay, socket, this client). Milliseconds.
    to_hub_ms: bytes = b""
    from_hub_ms: bytes = b""
    #: Lines received per 100 ms of wall clock (key: time.time_ns() // 100_000_000), for rates.
    buckets: dict[int, int] = field(default_factory=dict)
    error: str = ""
    closed: str = ""
    first_ns: int = 0
    last_ns: int = 0
    #: The extensions the connection negotiated ("permessage-deflate" or "").
    extensions: str = ""
    #: Bytes the socket delivered after DASHBOARD_READY (WebSocket frames as on the wire, compressed
    #: when the connection negotiated deflate), and the size of the messages they carried.
    wire_bytes: int = 0
    message_bytes: int = 0


class _CountingConnection(ClientConnection):
    """A client connection that counts the bytes its socket delivers."""

    wire_bytes = 0

    def data_received(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        super().data_received(data)


#: ``compression`` of the dashboard clients: None (the TUI's, no deflate) or "deflate" (what a
#: client of the ``websockets`` library offers by default).
COMPRESSIONS: dict[str, str | None] = {"none": None, "deflate": "deflate"}


class _Client:
    def __init__(
        self, ws_url: str, token: str, commands: set[str], latency: bool, compression: str | None = None
    ) -> None:
        self.ws_url = ws_url
        self.token = token
        self.commands = commands
        self.latency = latency
        self.compression = compression
        self.wire_base = 0
        #: command id -> per-sequence receive counts
        self.seen: dict[str, bytearray] = {c: bytearray() for c in commands}
        self.latencies = array.array("d")
        self.scheduled = array.array("d")
        self.to_hub = array.array("d")
        self.from_hub = array.array("d")
        self.result = ClientResult()
        self.ws: ClientConnection | None = None

    async def connect(self) -> None:
        # The TUI's connection options (no deflate, unless asked for), with room for slow start-up.
        options = CONNECT_OPTIONS | {"max_size": None, "open_timeout": 30, "compression": self.compression}
        self.ws = await connect(
            self.ws_url + "/ws/dashboard",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            create_connection=_CountingConnection,
            **options,
        )
        self.result.extensions = ",".join(e.name for e in self.ws.protocol.extensions)
        await self.ws.send(DashboardConnect().to_json())
        while True:
            message = parse_hub_to_dashboard(await asyncio.wait_for(self.ws.recv(), 30))
            if message.type == "DASHBOARD_READY":
                self.wire_base = self.ws.wire_bytes  # type: ignore[attr-defined]
                return

    async def run(self) -> None:
        assert self.ws is not None
        r = self.result
        try:
            async for frame in self.ws:
                now_ns = time.time_ns()
                r.frames += 1
                r.message_bytes += len(frame)
                # The measuring instrument reads the frames with the C JSON parser, not the protocol
                # models: the TUI's own parsing is measured by tui_streaming.py, and five clients
                # validating 25,000 events/s took half a core from the hub under test on 2 cores.
                message = json.loads(frame)
                items = message["payload"]["events"] if message["type"] == "EVENT_BATCH" else [message]
                for item in items:
                    if item["type"] != "TERMINAL_STREAM":
                        continue
                    p = item["payload"]
                    seen = self.seen.get(p["commandId"])
                    if seen is None:
                        continue
                    if not r.first_ns:
                        r.first_ns = now_ns
                    r.last_ns = now_ns
                    r.events += 1
                    sequence = p["sequence"]
                    if sequence >= len(seen):
                        seen.extend(bytes(sequence + 1 - len(seen) + 1024))
                    seen[sequence] = min(255, seen[sequence] + 1)
                    if seen[sequence] > 1:
                        r.duplicates += 1
                        continue
                    content = p["content"]
                    n = content.count("\n") + 1
                    r.lines += n
                    bucket = now_ns // 100_000_000
                    r.buckets[bucket] = r.buckets.get(bucket, 0) + n
                    if self.latency:
                        # "<sent ns> <due ns> ...": see output_latency.py
                        first = content.index(" ")
                        sent_ns = int(content[:first])
                        self.latencies.append((now_ns - sent_ns) / 1e6)
                        self.to_hub.append(item["timestamp"] - sent_ns / 1e6)
                        self.from_hub.append(now_ns / 1e6 - item["timestamp"])
                        second = content.find(" ", first + 1)
                        if second > 0:
                            self.scheduled.append((now_ns - int(content[first + 1 : second])) / 1e6)
        except websockets.ConnectionClosed as exc:
            r.closed = f"{exc.rcvd.code if exc.rcvd else '?'} {exc.rcvd.reason if exc.rcvd else ''}"
        except Exception as exc:
            r.error = repr(exc)

    def unique_events(self) -> int:
        return sum(sum(1 for b in seen if b) for seen in self.seen.values())

    def finish(self, expected: dict[str, int]) -> ClientResult:
        r = self.result
        lost = 0
        for command_id, count in expected.items():
            seen = self.seen.get(command_id, bytearray())
            lost += sum(1 for s in range(count) if s >= len(seen) or not seen[s])
        r.lost = lost
        if self.ws is not None:
            r.wire_bytes = self.ws.wire_bytes - self.wire_base  # type: ignore[attr-defined]
        r.latencies_ms = array.array("d", sorted(self.latencies)).tobytes()
        r.scheduled_latencies_ms = array.array("d", sorted(self.scheduled)).tobytes()
        r.to_hub_ms = array.array("d", sorted(self.to_hub)).tobytes()
        r.from_hub_ms = array.array("d", sorted(self.from_hub)).tobytes()
        return r


async def _probe(
    ws_url: str, creds: tuple[str, str, str], rtts: array.array[float], stop: asyncio.Event
) -> None:
    """An idle agent connection that pings the hub every 20 ms: the pong comes from the hub's event
    loop, so its round trip shows how long the loop was busy with other work (stalls)."""
    agent = await SimAgent(ws_url, *creds).connect()
    assert agent.ws is not None
    try:
        while not stop.is_set():
            started = time.perf_counter()
            waiter = await agent.ws.ping()
            await asyncio.wait_for(waiter, 30)
            rtts.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)
    finally:
        await agent.close()


async def _dashboards_main(
    conn: Any, ws_url: str, token: str, count: int, commands: list[str], latency: bool,
    probe: tuple[str, str, str] | None, compression: str | None = None,
) -> None:  # fmt: skip
    clients = [_Client(ws_url, token, set(commands), latency, compression) for _ in range(count)]
    await asyncio.gather(*(c.connect() for c in clients))
    tasks = [asyncio.create_task(c.run()) for c in clients]
    loop = asyncio.get_running_loop()
    rtts = array.array("d")
    probe_stop = asyncio.Event()
    probe_task = asyncio.create_task(_probe(ws_url, probe, rtts, probe_stop)) if probe else None
    conn.send("ready")
    # The parent says how many events it sent per command, then how long to wait for stragglers;
    # (None, 0) first when it stops the stream, so the probe covers only the streaming.
    while True:
        expected, drain_s = await loop.run_in_executor(None, conn.recv)
        probe_stop.set()
        if expected is not None:
            break
    total = sum(expected.values())
    deadline = time.monotonic() + drain_s
    started = time.monotonic()
    while time.monotonic() < deadline:
        if all(c.unique_events() >= total or c.result.closed or c.result.error for c in clients):
            break
        await asyncio.sleep(0.1)
    drained_s = time.monotonic() - started
    if probe_task is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(probe_task, 35)
    for c in clients:
        assert c.ws is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.ws.close(), 5)
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    conn.send(([c.finish(expected) for c in clients], drained_s, sorted(rtts)))


def _dashboards_entry(
    conn: Any, ws_url: str, token: str, count: int, commands: list[str], latency: bool,
    probe: tuple[str, str, str] | None, compression: str | None = None,
) -> None:  # fmt: skip
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this process
    use_uvloop()
    asyncio.run(_dashboards_main(conn, ws_url, token, count, commands, latency, probe, compression))


class DashboardProcess:
    """``count`` dashboard clients in their own process (own CPU time, own event loop), so receive
    timestamps are not delayed by the agents' send loop. With ``probe`` (agent credentials), also an
    idle agent connection that measures the hub's event-loop stalls by ping round trips.
    ``compression``: None (the TUI's option: no permessage-deflate) or "deflate" (the ``websockets``
    library's default, which a hub with ``ws_compression_level`` > 0 accepts)."""

    def __init__(
        self, ws_url: str, token: str, count: int, commands: list[str], *, latency: bool,
        probe: tuple[str, str, str] | None = None, compression: str | None = None,
    ) -> None:  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_dashboards_entry,
            args=(child, ws_url, token, count, commands, latency, probe, compression),
            daemon=True,
        )
        self.ping_rtts_ms: list[float] = []

    def start(self, seconds: float = 60) -> DashboardProcess:
        self.process.start()
        if not self.conn.poll(seconds):
            raise RuntimeError("the dashboard clients did not connect in time")
        assert self.conn.recv() == "ready"
        return self

    def stream_ended(self) -> None:
        """Stop the ping probe (the drain that follows is not measured by it)."""
        self.conn.send((None, 0))

    def finish(self, expected: dict[str, int], drain_s: float) -> tuple[list[ClientResult], float]:
        """Tell the clients what was sent; they wait up to ``drain_s`` for the rest, then report."""
        self.conn.send((expected, drain_s))
        if not self.conn.poll(drain_s + 120):
            raise RuntimeError("the dashboard process did not report")
        results, drained, self.ping_rtts_ms = self.conn.recv()
        self.process.join(10)
        return results, drained

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def pid(self) -> int | None:
        return self.process.pid


def lines_between(buckets: dict[int, int], start_ns: int, end_ns: int) -> int:
    """Lines received in [start_ns, end_ns) by the 100 ms buckets of a client."""
    return sum(n for b, n in buckets.items() if start_ns // 100_000_000 <= b < end_ns // 100_000_000)


def latencies(result: ClientResult, scheduled: bool = False) -> array.array[float]:
    values = array.array("d")
    values.frombytes(result.scheduled_latencies_ms if scheduled else result.latencies_ms)
    return values


def split_latencies(result: ClientResult) -> tuple[array.array[float], array.array[float]]:
    """(send -> hub stamp, hub stamp -> receive) latencies of a client, ms."""
    to_hub, from_hub = array.array("d"), array.array("d")
    to_hub.frombytes(result.to_hub_ms)
    from_hub.frombytes(result.from_hub_ms)
    return to_hub, from_hub


def _busy_seconds() -> float:
    """CPU seconds all processes of the machine spent running (user + nice + system, all cores; not
    interrupts, which no process is charged for), from /proc/stat via psutil."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system


class CpuSampler:
    """CPU use of named processes between start() and percent(), in % of one core; and the CPU that
    processes outside this benchmark (this process and everything it started) used meanwhile, which
    shows when another workload on the machine disturbed the figures."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.start_times: dict[str, float] = {}
        self.started = 0.0
        self._ours: list[psutil.Process] = []
        self._ours_start: dict[int, float] = {}
        self._busy_start = 0.0

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def start(self) -> None:
        self.started = time.monotonic()
        self.start_times = {k: self._cpu(p) for k, p in self.processes.items()}
        me = psutil.Process(os.getpid())
        self._ours = [me, *me.children(recursive=True)]
        self._ours_start = {}
        for p in self._ours:
            with contextlib.suppress(psutil.Error):
                self._ours_start[p.pid] = self._cpu(p)
        self._busy_start = _busy_seconds()

    def percent(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        return {k: 100 * (self._cpu(p) - self.start_times[k]) / wall for k, p in self.processes.items()}

    def others(self) -> float:
        """% of one core used by processes that are not part of this benchmark since start()."""
        wall = time.monotonic() - self.started
        ours = 0.0
        for p in self._ours:
            with contextlib.suppress(psutil.Error):
                ours += self._cpu(p) - self._ours_start.get(p.pid, 0.0)
        return max(0.0, 100 * (_busy_seconds() - self._busy_start - ours) / wall)


def other_load_metric(value: float, prefix: str = "") -> None:
    metric(
        f"{prefix}cpu_other_processes",
        value,
        "% of one core",
        f"~0: {'ok' if value < 10 else 'DISTURBED'} (CPU used meanwhile by processes outside this benchmark)",
    )


def rss_mb(processes: dict[str, psutil.Process]) -> dict[str, float]:
    return {k: p.memory_info().rss / 2**20 for k, p in processes.items()}


def pace(start: float, index: int, interval: float) -> float:
    """Seconds to sleep until the ``index``-th tick of a fixed schedule (never negative)."""
    return max(0.0, start + index * interval - time.monotonic())


async def hold_receiver(receivers: set[Any], ws: Any) -> None:
    """For a bare relay: ``ws`` receives what is relayed until it closes."""
    receivers.add(ws)
    try:
        await ws.wait_closed()
    finally:
        receivers.discard(ws)


def run_async(main: Callable[[], Any]) -> Any:
    use_uvloop()
    return asyncio.run(main())


def self_process() -> psutil.Process:
    return psutil.Process(os.getpid())
