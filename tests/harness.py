"""Real processes for the tests: hubs (uvicorn on port 0 with embedded RQ workers and Redis),
wrapper agents, and dashboard clients over real WebSockets on loopback.

Timeouts scale with ONSEMBL_TEST_TIMEOUT_FACTOR (default 1) for slow machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin

import httpx
import redis
import websockets
from websockets.asyncio.client import ClientConnection, connect

from server.auth.tokens import TokenKind, mint
from server.cli import _ensure_agent
from server.redis_embedded import no_retry
from shared.config import Settings
from shared.protocol import DashboardConnect, DashboardConnectPayload, HubToDashboard, parse_hub_to_dashboard

FACTOR = float(os.environ.get("ONSEMBL_TEST_TIMEOUT_FACTOR", "1"))
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now (for servers the test starts on a fixed port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timeout(seconds: float) -> float:
    return seconds * FACTOR


def wait_until(predicate: Callable[[], Any], seconds: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout(seconds)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout(seconds):.1f}s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], Any], seconds: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout(seconds)
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout(seconds):.1f}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class HubProcess:
    data_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    workers: int = 16
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    #: 0 until the first start; a restart listens on the same port so agents find it again.
    port: int = 0
    log_path: Path = Path()

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
        env.update(
            ONSEMBL_DATA_DIR=str(self.data_dir),
            ONSEMBL_HEARTBEAT_INTERVAL_S="2",
            ONSEMBL_CANCEL_GRACE_S="5",
            ONSEMBL_DISPATCH_RETRY_S="1",
            ONSEMBL_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env_overrides)
        return env

    @property
    def settings(self) -> Settings:
        overrides: dict[str, Any] = {}
        for key, value in self.env.items():
            if key.startswith("ONSEMBL_"):
                name = key[len("ONSEMBL_") :].lower()
                field = Settings.model_fields.get(name)
                # A list (allowed_origins) comes from the environment as JSON, as pydantic-settings
                # reads it; as an argument it must be the list itself.
                if field is not None and get_origin(field.annotation) is list:
                    overrides[name] = json.loads(value)
                else:
                    overrides[name] = value
        return Settings(**overrides)

    def start(self) -> HubProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / f"hub-{time.monotonic_ns()}.json"
        self.log_path = self.data_dir / "hub.log"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                str(BIN / "onsembl"),
                "server",
                "--port",
                str(self.port),
                "--port-file",
                str(port_file),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"hub exited with {self.process.returncode}:\n{self.log_tail()}")
            return port_file.exists()

        wait_until(ready, 30, "the hub to listen")
        info = json.loads(port_file.read_text())
        self.url, self.port = info["url"], info["port"]
        wait_until(self._workers_ready, 30, "RQ workers to register")
        return self

    def _workers_ready(self) -> bool:
        if self.workers == 0:
            return True
        try:
            body = httpx.get(self.url + "/health", timeout=5).json()
        except httpx.HTTPError:
            return False
        return bool(body["workers"]["ok"])

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout(20))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def shutdown_redis(self) -> None:
        """Stop an embedded redis-server this hub (or a killed one) left running."""
        settings = self.settings
        if settings.redis_url:
            return
        with contextlib.suppress(redis.RedisError, OSError):
            redis.Redis(
                unix_socket_path=str(settings.embedded_redis_socket), socket_timeout=5, retry=no_retry()
            ).shutdown(nosave=True)

    # ---- tokens and clients --------------------------------------------------------------------

    def user_token(self, email: str = "tester@example.com") -> str:
        return mint(self.settings, TokenKind.ACCESS, email)

    def sign_in_code(self, email: str, seconds: float = 10) -> str:
        """The latest one-time code the hub logged for ``email`` (a hub without SMTP logs them)."""
        pattern = re.compile(rf"sign-in code for {re.escape(email)}: (\d{{6}})")
        return str(
            wait_until(
                lambda: (found := pattern.findall(self.log_path.read_text(errors="replace"))) and found[-1],
                seconds,
                "the sign-in code in the hub's log",
            )
        )

    def agent_token(self, name: str, ttl_s: int | None = None) -> tuple[str, str]:
        settings = self.settings
        agent_id = (
            asyncio.run(_ensure_agent(settings, name, "shell"))
            if not _in_loop()
            else _run_in_thread(settings, name)
        )
        return agent_id, mint(settings, TokenKind.AGENT, agent_id, name=name, ttl_s=ttl_s)

    def client(self, email: str = "tester@example.com") -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/v1",
            headers={"Authorization": f"Bearer {self.user_token(email)}"},
            timeout=timeout(15),
        )

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _run_in_thread(settings: Settings, name: str) -> str:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(_ensure_agent(settings, name, "shell"))).result()


@dataclass
class AgentProcess:
    name: str
    agent_id: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout(15))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


FAKES = Path(__file__).parent / "fakes" / "bin"


def start_agent(
    hub: HubProcess,
    name: str,
    *program: str,
    wait_online: bool = True,
    kind: str = "shell",
    workdir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
    server_url: str | None = None,
    token: str | None = None,
) -> AgentProcess:
    """A real ``onsembl-agent`` process. For claude, gemini and codex the fake CLIs of tests/fakes
    come first on PATH, so the wrapper runs them exactly as it would run the real ones. ``token``:
    this one instead of a new one (of the agent ``name``)."""
    agent_id, new_token = hub.agent_token(name)
    token = token or new_token
    log_path = hub.data_dir / f"agent-{name}.log"
    state_dir = hub.data_dir / "agents" / name
    log = open(log_path, "ab")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    env.update(
        ONSEMBL_HEARTBEAT_INTERVAL_S="1",
        PYTHONUNBUFFERED="1",
        PATH=f"{FAKES}{os.pathsep}{env.get('PATH', '')}",
        FAKE_CLI_STATE_DIR=str(hub.data_dir / "fake-cli-state"),
    )
    env.update(extra_env or {})
    server = server_url or hub.url  # e.g. a proxy in front of the hub
    argv = [str(BIN / "onsembl-agent"), kind, "--name", name, "--server", server, "--token", token]
    argv += ["--state-dir", str(state_dir), *options]
    if workdir is not None:
        argv += ["--workdir", str(workdir)]
    if kind == "shell":
        argv += ["--", *(program or ("bash", "-c"))]
    elif program:
        argv += ["--", *program]
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    agent = AgentProcess(name, agent_id, process, log_path)
    if wait_online:
        with hub.client() as client:
            wait_until(
                lambda: client.get(f"/agents/{agent_id}").json()["status"] == "ONLINE",
                20,
                f"agent {name} online",
            )
    return agent


class Dashboard:
    """A TUI-like client: connects, keeps every message it receives (batches unpacked)."""

    def __init__(self, hub: HubProcess, token: str | None = None) -> None:
        self.hub = hub
        self.token = token or hub.user_token()
        self.messages: list[HubToDashboard] = []
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self.last_position: str | None = None
        self.error: BaseException | None = None

    async def connect(self, resume_from: str | None = None) -> Dashboard:
        self.ws = await connect(
            self.hub.ws_url + "/ws/dashboard", additional_headers={"Authorization": f"Bearer {self.token}"}
        )
        await self.ws.send(
            DashboardConnect(payload=DashboardConnectPayload(resume_from=resume_from)).to_json()
        )
        self._reader = asyncio.create_task(self._read())
        await self.wait_for(lambda m: m.type == "DASHBOARD_READY", 10)
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                message = parse_hub_to_dashboard(frame)
                items = message.payload.events if message.type == "EVENT_BATCH" else [message]  # type: ignore[union-attr]
                for item in items:
                    position = getattr(item, "position", None)
                    if position:
                        self.last_position = position
                    self.messages.append(item)
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:  # a frame the protocol refuses: the test must see it
            self.error = exc

    async def send(self, message: Any) -> None:
        assert self.ws is not None
        await self.ws.send(message.to_json())

    async def wait_for(self, predicate: Callable[[Any], bool], seconds: float) -> Any:
        found: list[Any] = []

        def check() -> bool:
            if self.error is not None:
                raise AssertionError(f"the dashboard client failed: {self.error!r}")
            found[:] = [m for m in self.messages if predicate(m)]
            return bool(found)

        await async_wait_until(check, seconds, "a dashboard message")
        return found[0]

    def output_of(self, command_id: str) -> list[Any]:
        return [
            m.payload
            for m in self.messages
            if m.type == "TERMINAL_STREAM" and m.payload.command_id == command_id
        ]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def wait_command(client: httpx.Client, command_id: str, seconds: float = 30) -> dict[str, Any]:
    """Wait until the command has ended; on timeout say where it stood."""
    last: dict[str, Any] = {}

    def ended() -> bool:
        last.update(client.get(f"/commands/{command_id}").json())
        return last.get("status") in TERMINAL

    try:
        wait_until(ended, seconds, f"command {command_id} to end")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it stands at {json.dumps(last, indent=1)}") from None
    return last
