"""The agent daemon's connection to the hub: connect out, say AGENT_CONNECT, then run the receive,
send and heartbeat tasks until one ends; reconnect with backoff: network faults 1 s doubling to 30 s,
for ever; a refusal of the token (ERROR AUTH_FAILED, close code 1008, HTTP 401 or 403) at most 5
tries, then a message naming the fix and exit code EXIT_AUTH. Commands keep running while the hub
is away; their messages wait in the outbox and go out in order on reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect

from shared.api import HealthMetrics
from shared.enums import AgentType, ControlAction, ErrorCode
from shared.model import ID_PATTERN, bounded_json
from shared.protocol import (
    MAX_AGENT_MESSAGE_BYTES,
    AgentConnect,
    AgentConnectPayload,
    AgentControl,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    CommandCancel,
    CommandRequest,
    Error,
    InputResponse,
    NeedsInput,
    NeedsInputPayload,
    TokenRefresh,
    agent_batch_frame,
    parse_hub_to_agent,
    to_id,
)
from shared.tokens import token_claims
from wrapper.executor import Executor
from wrapper.health import BUSY_SAMPLE_S, MIN_MOVED_GAP_S, HealthSampler, moved
from wrapper.outbox import Outbox

log = logging.getLogger("onsembl.agent")

#: Frames per second sent to the hub, under its limit of 100 per agent connection.
SEND_RATE = 80.0
BATCH_MAX_MESSAGES = 1000
#: Characters in a batch: even at 4 bytes each it stays under the hub's 1 MiB frame limit.
BATCH_MAX_BYTES = 240 * 1024
#: How often the heartbeat loop looks whether a command started (sampling starts then).
BUSY_POLL_S = 0.5
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
#: Refusals of the token in a row before the wrapper gives up (EXIT_AUTH), 0.5, 1, 2 and 4 s apart:
#: a refusal is no network fault, retrying longer only hides it (a hub briefly started with another
#: secret is the case the retries are for).
MAX_AUTH_FAILURES = 5
AUTH_BACKOFF_S = 0.5
AUTH_BACKOFF_MAX_S = 4.0
#: The close code the hub refuses a connection with (RFC 6455 policy violation).
CLOSE_POLICY = 1008
EXIT_AUTH = 3
EXIT_CONFIG = 2


class AuthRefused(Exception):
    pass


def auth_refusal(exc: BaseException) -> str | None:
    """Why the hub refused this agent, when ``exc`` says it did (ERROR AUTH_FAILED, close code
    1008, HTTP 401 or 403 from the hub or a proxy before it); None for a network fault."""
    if isinstance(exc, AuthRefused):
        return str(exc) or "authentication failed"
    if isinstance(exc, websockets.InvalidStatus) and exc.response.status_code in (401, 403):
        return f"HTTP {exc.response.status_code}"
    closed = exc.rcvd if isinstance(exc, websockets.ConnectionClosed) else None
    if closed is not None and closed.code == CLOSE_POLICY:
        return f"closed with code {CLOSE_POLICY}: {closed.reason or 'policy violation'}"
    return None


def describe_fault(exc: BaseException) -> str:
    """A network fault for the log: its kind, and what it says (HTTP status, close code, errno)."""
    if isinstance(exc, websockets.InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def token_expiry(token: str) -> int:
    """The token's exp (seconds since the epoch); 0 when it has none or is not a JWT."""
    try:
        exp = token_claims(token).get("exp")
    except ValueError:
        return 0
    return exp if isinstance(exp, int) else 0


def agent_id_from_token(token: str) -> str:
    """The agent id is the token's subject."""
    claims = token_claims(token)
    if claims.get("typ") != "agent" or not claims.get("sub"):
        raise ValueError("this is not an agent token; mint one with `onsembl token agent NAME`")
    agent_id = str(claims["sub"])
    if not ID_PATTERN.fullmatch(agent_id):
        raise ValueError("the token's agent id is not a valid id; mint one with `onsembl token agent NAME`")
    return agent_id


def websocket_url(server: str) -> str:
    base = server.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    elif not base.startswith(("ws://", "wss://")):
        base = "ws://" + base
    return base + "/ws/agent"


@dataclass
class AgentClient:
    server: str
    token: str
    agent_type: AgentType
    executor: Executor
    version: str = "onsembl-agent"
    heartbeat_s: float = 30.0
    outbox: Outbox = field(default_factory=Outbox)
    health: HealthSampler = field(default_factory=HealthSampler)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    #: Where a token the hub renewed (TOKEN_REFRESH) is kept for the next start (in the state dir).
    token_file: Path | None = None

    def __post_init__(self) -> None:
        self.agent_id = agent_id_from_token(self.token)
        self._given_token = self.token
        self.token = self._newest_token(self.token)
        self.executor.bind(self.agent_id, self.outbox, self.health)
        self.executor.input_listeners.append(self._needs_input)

    async def run_forever(self) -> int:
        """Connect, and again after every disconnect, until the hub refuses this agent
        MAX_AUTH_FAILURES times in a row (EXIT_AUTH); network faults are retried for ever."""
        backoff = BACKOFF_START_S
        auth_failures = 0
        url = websocket_url(self.server)
        while True:
            refusal: str | None = None
            try:
                async with connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=None,
                    # Output is mostly fresh text on a LAN: deflate would cost the CLI's machine
                    # more CPU than it saves on the wire.
                    compression=None,
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=20,
                ) as ws:
                    try:
                        await self._session(ws)
                    finally:
                        if self.connected.is_set():
                            # The link was up, however it ended: start the backoff over (a flaky
                            # network must not push every later reconnect out to 30 s).
                            backoff = BACKOFF_START_S
                            auth_failures = 0
            except (OSError, websockets.WebSocketException, TimeoutError, AuthRefused) as exc:
                refusal = auth_refusal(exc)
                if refusal is None:
                    log.warning("hub unreachable (%s); retrying in %.0fs", describe_fault(exc), backoff)
            self.connected.clear()
            if refusal is not None:
                if self._fall_back_to_given():
                    continue
                auth_failures += 1
                if auth_failures >= MAX_AUTH_FAILURES:
                    log.error("%s", self._refusal_advice(refusal, auth_failures))
                    return EXIT_AUTH
                wait = min(AUTH_BACKOFF_S * 2 ** (auth_failures - 1), AUTH_BACKOFF_MAX_S)
                log.error(
                    "the hub refused this agent (%s), attempt %d of %d; retrying in %.1fs",
                    refusal,
                    auth_failures,
                    MAX_AUTH_FAILURES,
                    wait,
                )
                await asyncio.sleep(wait)
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _refusal_advice(self, refusal: str, tries: int) -> str:
        """The last word on a token the hub keeps refusing: why, and how to fix it."""
        try:
            claims = token_claims(self._given_token)
        except ValueError:
            claims = {}
        name = claims.get("name") if isinstance(claims.get("name"), str) else None
        expiry = token_expiry(self._given_token)
        expired = f"; the token expired at {time.ctime(expiry)}" if 0 < expiry <= time.time() else ""
        return (
            f"giving up: the hub refused this agent's token {tries} times ({refusal}{expired}). "
            f"Mint a new one on the hub with `onsembl token agent {name or 'NAME'}` and start the agent "
            "with it; if the hub's tokens should be good here, check that ONSEMBL_JWT_SECRET is the "
            "hub's (every hub of a fleet shares one) and that the agent was not deleted"
        )

    async def _session(self, ws: ClientConnection) -> None:
        hello = AgentConnect(
            payload=AgentConnectPayload(
                agent_id=self.agent_id,
                agent_type=self.agent_type,
                version=self.version,
                host_machine=f"{socket.gethostname()} ({platform.system()})",
                capabilities={"interrupt": True, "maxConcurrentCommands": 1},
                active_commands=self.executor.active_commands(),
            )
        )
        try:
            await ws.send(hello.to_json())
        except websockets.ConnectionClosed:
            # The hub refuses a bad token as soon as the socket opens (ERROR, then close 1008): over
            # a real network both can come with the handshake's answer, before AGENT_CONNECT goes
            # out. The ERROR frame is still there to read.
            pass
        # The hub answers a good AGENT_CONNECT with SERVER_HEARTBEAT, a bad one with ERROR and 1008.
        first = await asyncio.wait_for(ws.recv(), 15)
        message = parse_hub_to_agent(first)
        if isinstance(message, Error):
            if message.payload.code is ErrorCode.AUTH_FAILED:
                raise AuthRefused(message.payload.message)
            raise OSError(f"hub error: {message.payload.message}")
        log.info("connected to %s as agent %s", self.server, self.agent_id)
        self.connected.set()
        self.outbox.rewind()
        tasks = [
            asyncio.create_task(self._receive(ws), name="receive"),
            asyncio.create_task(self._send(ws), name="send"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in done:
            exc = task.exception()
            if isinstance(exc, AuthRefused):
                raise exc
        if ws.close_code == CLOSE_POLICY:
            raise AuthRefused(ws.close_reason or "policy violation")

    async def _send(self, ws: ClientConnection) -> None:
        """Send in order, under the hub's message rate: what piles up between two sends goes in one
        AGENT_BATCH frame."""
        interval = 1.0 / SEND_RATE
        last = 0.0
        while True:
            await self.outbox.next()
            wait = last + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            frames = self.outbox.head(BATCH_MAX_MESSAGES, BATCH_MAX_BYTES)
            if len(frames) == 1 and len(frames[0].encode()) > MAX_AGENT_MESSAGE_BYTES:
                log.error("dropping a message larger than the hub accepts (%d bytes)", len(frames[0]))
                self.outbox.sent()
                continue
            await ws.send(frames[0] if len(frames) == 1 else agent_batch_frame(frames))
            last = time.monotonic()
            self.outbox.sent(len(frames))

    async def _receive(self, ws: ClientConnection) -> None:
        async for frame in ws:
            try:
                message = parse_hub_to_agent(frame)
            except ValidationError as exc:
                log.warning("ignoring a message the protocol does not know: %s", exc.errors()[:1])
                continue
            if isinstance(message, CommandRequest):
                self.executor.submit(message.payload)
            elif isinstance(message, CommandCancel):
                self.executor.cancel(
                    message.payload.command_id, message.payload.end_reason, message.payload.reason
                )
            elif isinstance(message, InputResponse):
                answer = message.payload
                if not await self.executor.answer_input(
                    answer.command_id, answer.request_id, answer.allow, answer.message
                ):
                    log.warning("no pending approval %s for command %s", answer.request_id, answer.command_id)
            elif isinstance(message, AgentControl):
                await self._control(message.payload.action, message.payload.reason)
            elif isinstance(message, TokenRefresh):
                self._renewed(message.payload.access_token)
            elif isinstance(message, Error):
                log.warning("hub error %s: %s", message.payload.code, message.payload.message)
                if message.payload.code is ErrorCode.AUTH_FAILED and not message.payload.recoverable:
                    raise AuthRefused(message.payload.message)

    def _needs_input(
        self, command_id: str, request_id: str, tool_name: str, tool_input: object, can_answer: bool
    ) -> None:
        log.warning("command %s waits for approval of %s (request %s)", command_id, tool_name, request_id)
        self.outbox.put(
            NeedsInput(
                payload=NeedsInputPayload(
                    command_id=command_id,
                    agent_id=self.agent_id,
                    request_id=to_id(request_id),
                    tool_name=tool_name[:200],
                    tool_input=bounded_json(tool_input),
                    can_answer=can_answer,
                )
            )
        )

    def _newest_token(self, given: str) -> str:
        """The given token, or the one the hub renewed last time when it is this agent's and lasts
        longer (a wrapper restarted with the token it was first given, which may have run out)."""
        if self.token_file is None:
            return given
        try:
            saved = self.token_file.read_text().strip()
            if agent_id_from_token(saved) != self.agent_id or token_expiry(saved) <= token_expiry(given):
                return given
        except (OSError, ValueError):
            return given
        log.info("using the token the hub renewed, from %s", self.token_file)
        return saved

    def _fall_back_to_given(self) -> bool:
        """The hub refused a renewed token (its secret changed, say): go back to the token this
        wrapper was given, and forget the renewed one. False when that is the one in use."""
        if self.token == self._given_token:
            return False
        log.warning("the hub refused the renewed token; trying the one this agent was started with")
        self.token = self._given_token
        if self.token_file is not None:
            with contextlib.suppress(OSError):
                self.token_file.unlink()
        return True

    def _renewed(self, token: str) -> None:
        """The hub sent a new token: use it from the next connection on, and keep it for a restart."""
        try:
            if agent_id_from_token(token) != self.agent_id:
                raise ValueError("it is another agent's")
        except ValueError as exc:
            log.warning("ignoring a renewed token: %s", exc)
            return
        self.token = token
        log.info("the hub renewed this agent's token (valid until %s)", time.ctime(token_expiry(token)))
        if self.token_file is None:
            return
        try:
            self.token_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.token_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(token)
            os.replace(tmp, self.token_file)
        except OSError as exc:
            log.warning("cannot keep the renewed token in %s: %s", self.token_file, exc)

    async def _control(self, action: ControlAction, reason: str) -> None:
        log.info("control %s (%s)", action.value, reason or "no reason given")
        if action is ControlAction.STOP:
            self.executor.cancel_all_running(reason)
        elif action is ControlAction.RESTART:
            self.executor.cancel_all_running(reason)
            self.executor.new_session()

    async def _heartbeat(self) -> None:
        """Health to the hub: every heartbeat interval; at once when a command ended (the counters
        changed); and while a command runs, a sample of the process tree every BUSY_SAMPLE_S (the
        first as soon as the command is seen, the last once a whole interval passed idle), sent when
        CPU or memory moved meaningfully since the last heartbeat, at most one such heartbeat per
        MIN_MOVED_GAP_S."""
        last: HealthMetrics | None = None
        sent_at = sampled_at = -math.inf
        was_busy = False
        #: Whether a command ran at the last sample; and whether the next sample must come after
        #: BUSY_SAMPLE_S, not the heartbeat interval: until a sample's whole window was idle, the
        #: gauge may still show the command.
        busy_at_sample = settling = False
        while True:
            now = time.monotonic()
            busy = bool(self.executor.running)
            changed = self.health.changed.is_set()
            due = now - sent_at >= self.heartbeat_s
            started = busy and not was_busy
            if changed or due or started or ((busy or settling) and now - sampled_at >= BUSY_SAMPLE_S):
                self.health.changed.clear()
                # Off the loop: psutil may read every process of the machine (no /proc children files).
                metrics = await asyncio.to_thread(self.health.sample)
                sampled_at, settling, busy_at_sample = now, busy or busy_at_sample, busy
                worth = last is None or (moved(last, metrics) and now - sent_at >= MIN_MOVED_GAP_S)
                if changed or due or worth:
                    self.outbox.put(
                        AgentHeartbeat(
                            payload=AgentHeartbeatPayload(agent_id=self.agent_id, health_metrics=metrics)
                        )
                    )
                    last, sent_at = metrics, now
            was_busy = busy
            # Awake often enough to see a command start (checking costs nothing; sampling does).
            wake = sent_at + self.heartbeat_s
            if busy or settling:
                wake = min(wake, sampled_at + BUSY_SAMPLE_S)
            wait = max(0.0, min(wake - time.monotonic(), BUSY_POLL_S))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.health.changed.wait(), wait)
