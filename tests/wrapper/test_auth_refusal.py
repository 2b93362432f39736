"""A hub that refuses the agent's token is told from a network fault: real ``onsembl-agent``
processes give up after 5 refusals with exit code 3 and a message that names the fix, however the
refusal comes (ERROR AUTH_FAILED then close 1008, read with the handshake's answer over a real
network; a bare close 1008; HTTP 401 from a proxy), and keep retrying a hub they cannot reach."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from server.auth.tokens import TokenKind, mint
from tests.harness import BIN, HubProcess, free_port, timeout, wait_until
from wrapper.client import EXIT_AUTH

T = TypeVar("T")

#: 5 tries 0.5, 1, 2 and 4 s apart take about 8 s; the old wrapper went on for ~90 s or for ever.
GIVES_UP_WITHIN_S = 30


class Loop:
    """An asyncio loop in a thread, for servers the wrappers (subprocesses) talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout(10))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout(10))


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    background = Loop()
    yield background
    background.close()


class CoalescingProxy:
    """TCP to the hub that holds what the hub sends for a moment and passes it on in one write, as
    a link with some latency does: the hub's refusal (ERROR, close 1008) reaches the wrapper with
    the handshake's answer, before the wrapper has sent AGENT_CONNECT."""

    HOLD_S = 0.1

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, 0.0), self._pipe(up_reader, writer, self.HOLD_S))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: float) -> None:
        try:
            while data := await reader.read(65536):
                if hold:
                    deadline = time.monotonic() + hold
                    while (left := deadline - time.monotonic()) > 0:
                        try:
                            more = await asyncio.wait_for(reader.read(65536), left)
                        except TimeoutError:
                            break
                        if not more:
                            break
                        data += more
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@dataclass
class Wrapper:
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float

    @property
    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, seconds: float) -> int:
        try:
            return self.process.wait(timeout(seconds))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the wrapper still runs after {timeout(seconds):.0f}s; it logged:\n{self.stderr[-3000:]}"
            ) from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def launch(directory: Path, name: str, server: str, token: str) -> Wrapper:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    env["PYTHONUNBUFFERED"] = "1"
    log_path = directory / f"{name}.stderr"
    argv = [str(BIN / "onsembl-agent"), "shell", "--name", name, "--server", server, "--token", token]
    argv += ["--state-dir", str(directory / name), "--", "bash", "-c"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
    return Wrapper(process, log_path, time.monotonic())


def agent_token(
    hub: HubProcess, agent_id: str, name: str, secret: str | None = None, ttl_s: int = 3600
) -> str:
    settings = hub.settings
    if secret is None:
        return mint(settings, TokenKind.AGENT, agent_id, name=name, ttl_s=ttl_s)
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": agent_id,
        "typ": "agent",
        "name": name,
        "iat": now,
        "nbf": now - 5,
        "exp": now + ttl_s,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def assert_gave_up_on_auth(wrapper: Wrapper, name: str) -> None:
    code = wrapper.wait(GIVES_UP_WITHIN_S)
    elapsed = time.monotonic() - wrapper.started
    text = wrapper.stderr
    assert code == EXIT_AUTH, f"exit code {code}; it logged:\n{text[-3000:]}"
    assert elapsed < timeout(GIVES_UP_WITHIN_S)
    assert f"onsembl token agent {name}" in text, text[-3000:]
    assert "ONSEMBL_JWT_SECRET" in text, text[-3000:]
    assert text.count(" of 5; retrying in ") == 4, text[-3000:]
    assert "hub unreachable" not in text, text[-3000:]


def test_a_hub_refusing_the_token_stops_the_wrapper_with_exit_code_3(
    hub: HubProcess, loop: Loop, tmp_path: Path
) -> None:
    """Through a link that delivers the hub's refusal with its handshake: a token signed with
    another secret, an expired token, and the token of an agent whose record is gone."""
    proxy = CoalescingProxy(hub.port)
    loop.run(proxy.start())
    server = f"http://127.0.0.1:{proxy.port}"
    forged_id, _ = hub.agent_token("forged")
    expired_id, _ = hub.agent_token("expired")
    tokens = {
        "forged": agent_token(hub, forged_id, "forged", secret="another-secret-" + "x" * 40),
        "expired": agent_token(hub, expired_id, "expired", ttl_s=-60),
        "gone": agent_token(hub, str(uuid.uuid4()), "gone"),
    }
    wrappers = {name: launch(tmp_path, name, server, token) for name, token in tokens.items()}
    try:
        for name, wrapper in wrappers.items():
            assert_gave_up_on_auth(wrapper, name)
        assert "expired at" in wrappers["expired"].stderr
    finally:
        for wrapper in wrappers.values():
            wrapper.stop()
        loop.run(proxy.stop())


async def _refuse_401(connection: ServerConnection, request: Request) -> Response:
    return connection.respond(HTTPStatus.UNAUTHORIZED, "sign in first\n")


async def _close_1008(connection: ServerConnection) -> None:
    await connection.close(1008, "authentication failed")


def test_http_401_and_a_bare_close_1008_are_refusals_and_a_dead_hub_is_not(
    hub: HubProcess, loop: Loop, tmp_path: Path
) -> None:
    """A proxy in front of the hub answering 401, and a hub closing 1008 without an ERROR frame,
    end the wrapper the same way; a hub nobody listens for is retried for ever."""

    async def start_servers() -> tuple[Server, Server]:
        refusing = await serve(_close_1008, "127.0.0.1", 0, process_request=_refuse_401)
        closing = await serve(_close_1008, "127.0.0.1", 0)
        return refusing, closing

    refusing, closing = loop.run(start_servers())
    agent_id, token = hub.agent_token("refused")
    ports = {
        "http-401": refusing.sockets[0].getsockname()[1],
        "close-1008": closing.sockets[0].getsockname()[1],
    }
    wrappers = {
        name: launch(tmp_path, name, f"http://127.0.0.1:{port}", agent_token(hub, agent_id, name))
        for name, port in ports.items()
    }
    unreachable = launch(tmp_path, "unreachable", f"http://127.0.0.1:{free_port()}", token)
    try:
        for name, wrapper in wrappers.items():
            assert_gave_up_on_auth(wrapper, name)
        assert "HTTP 401" in wrappers["http-401"].stderr
        # Meanwhile the wrapper without a hub went on trying: a network fault is no refusal.
        wait_until(
            lambda: unreachable.stderr.count("hub unreachable") >= 3,
            20,
            "three retries of an unreachable hub",
        )
        assert unreachable.process.poll() is None, unreachable.stderr
        assert "refused" not in unreachable.stderr
    finally:
        for wrapper in [*wrappers.values(), unreachable]:
            wrapper.stop()

        async def stop_servers() -> None:
            for server in (refusing, closing):
                server.close()
                await server.wait_closed()

        loop.run(stop_servers())
