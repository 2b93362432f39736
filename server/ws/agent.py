"""``/ws/agent``: where wrappers connect. The token names the agent; AGENT_CONNECT must carry the
same id. Output, traces and statuses go to the event stream; requests from RQ jobs come back through
Redis pub/sub to whichever hub holds the agent's socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from functools import partial

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError

from server import keys
from server.auth.tokens import TokenKind, mint
from server.db.models import AgentRow
from server.hub import Hub
from server.queue import executions, lifecycle, reconcile
from server.redis_text import as_text
from server.services import publish_queues
from server.ws.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY,
    Connection,
    validation_details,
)
from server.ws.transport import DIRECT_RECEIVE, DirectReceive
from shared.api import HealthMetrics, Report
from shared.enums import AckStatus, AgentType, CompletionStatus, EndReason, ErrorCode, ExecutionStatus
from shared.logs import bind_log_context, log_context
from shared.protocol import (
    MAX_AGENT_MESSAGE_BYTES,
    AgentBatch,
    AgentConnect,
    AgentError,
    AgentHeartbeat,
    AgentReport,
    AgentToHub,
    CommandAck,
    CommandComplete,
    Error,
    InputRequired,
    InputRequiredPayload,
    InvestigationReport,
    NeedsInput,
    ReportReady,
    ServerHeartbeat,
    ServerHeartbeatPayload,
    TerminalOutput,
    TerminalStreamEncoder,
    TokenRefresh,
    TokenRefreshPayload,
    TraceEvent,
    error,
    now_ms,
    parse_agent_message,
    trace_update_json,
)

log = logging.getLogger(__name__)
router = APIRouter()

CONNECT_TIMEOUT_S = 10.0
_COMPLETION = {
    CompletionStatus.COMPLETED: ExecutionStatus.COMPLETED,
    CompletionStatus.FAILED: ExecutionStatus.FAILED,
    CompletionStatus.CANCELLED: ExecutionStatus.CANCELLED,
}


#: Messages waiting for an agent's session task (``AgentSession.drain``) past which its socket is not
#: read until they are handled (they wait for Redis, typically).
BACKLOG_PAUSE = 256

#: An agent's token is renewed on a heartbeat once less than this part of its lifetime is left.
TOKEN_RENEW_AT = 1 / 3
#: A heartbeat whose health is unchanged is announced at least this often (last seen, uptime).
HEALTH_REFRESH_MS = 5 * 60_000


def health_changed(before: HealthMetrics, after: HealthMetrics) -> bool:
    """Whether a TUI would show something else: a counter moved, or a gauge moved by 5 points (CPU,
    memory %) or 10 % (memory bytes). Uptime alone does not count."""
    return (
        before.commands_processed != after.commands_processed
        or before.tokens_used != after.tokens_used
        or before.cost_usd != after.cost_usd
        or before.process_count != after.process_count
        or before.average_response_ms != after.average_response_ms
        or abs(before.cpu_percent - after.cpu_percent) >= 5.0
        or abs(before.memory_percent - after.memory_percent) >= 5.0
        or abs(before.memory_bytes - after.memory_bytes) > before.memory_bytes // 10
    )


class AgentSession:
    """One connected agent, from AGENT_CONNECT to disconnect."""

    def __init__(self, hub: Hub, conn: Connection, row: AgentRow) -> None:
        self.hub = hub
        self.conn = conn
        self.row = row
        self.agent_id = row.id
        self.agent_type = AgentType(row.agent_type)
        #: The health last announced to the TUIs (AGENT_STATUS) on a heartbeat, and when.
        self._announced_health: HealthMetrics | None = None
        self._announced_at = 0
        #: command id -> execution id, for this agent.
        self._executions: dict[str, str] = {}
        self.stream_encoder = TerminalStreamEncoder(
            agent_id=self.agent_id, agent_name=row.name, agent_type=self.agent_type
        )
        #: Messages that wait for this session's task (``drain``), in the order they came. While
        #: any wait, the messages after them wait too.
        self._backlog: deque[AgentToHub | AgentReport] = deque()
        self._backlog_added = asyncio.Event()
        self._ended = False
        self._direct: DirectReceive | None = None
        #: When the token this socket authenticated with (or the last one sent it) expires, and its
        #: lifetime (s).
        self.token_expires_at = 0
        self.token_lifetime_s = 0

    def token_runs_low(self) -> bool:
        left = self.token_expires_at - time.time()
        return self.hub.settings.agent_token_renewal and left < self.token_lifetime_s * TOKEN_RENEW_AT

    async def renew_token(self) -> None:
        """Send the agent a new token of the same lifetime (TOKEN_REFRESH) for its next connection:
        a wrapper that runs past its token's end would not get back in after its next disconnect.
        (``agent_token_renewal = false``: tokens end when they expire.)"""
        settings = self.hub.settings
        lifetime = self.token_lifetime_s
        token = mint(settings, TokenKind.AGENT, self.agent_id, name=self.row.name, ttl_s=lifetime)
        self.token_expires_at = int(time.time()) + lifetime
        refresh = TokenRefreshPayload(access_token=token, expires_in=lifetime)
        self.conn.send(TokenRefresh(payload=refresh))
        log.info("agent %s: its token ran low; sent a new one", self.row.name)
        await self.hub.audit(f"agent:{self.row.name}", "agent.token_renewed", agent_id=self.agent_id)

    # AgentSink
    def forward(self, raw: str) -> None:
        self.conn.send_raw(raw)

    async def close_stale(self) -> None:
        self.conn.close(CLOSE_GOING_AWAY, "replaced by a newer connection of this agent")

    async def execution_of(self, command_id: str) -> str | None:
        execution_id = self._executions.get(command_id)
        if execution_id is None:
            execution_id = await asyncio.to_thread(
                executions.resolve, self.hub.redis_sync, command_id, self.agent_id
            )
            if execution_id is not None:
                self._executions[command_id] = execution_id
        return execution_id

    async def unknown_command(self, command_id: str, request_id: str) -> None:
        self.conn.send(
            error(
                ErrorCode.INVALID_MESSAGE,
                f"command {command_id} is not assigned to agent {self.agent_id}",
                details={"commandId": command_id},
                request_id=request_id,
            )
        )

    # ---- taking frames in -----------------------------------------------------------------------

    def take_frame(self, frame: str) -> None:
        """Validate a frame and handle its messages in order: output and traces of a known command at
        once, when the event stream has room (no await needed: the bulk of all messages), the rest
        through ``drain``. On the direct path it runs in the transport's callback (``_take_direct``)."""
        try:
            message = parse_agent_message(frame)
        except ValidationError as exc:
            self.conn.send(
                error(
                    ErrorCode.INVALID_MESSAGE,
                    "message does not match the protocol",
                    details=validation_details(exc),
                )
            )
            return
        backlog = self._backlog
        try:
            # A batch is handled message by message, in order, as if each had come alone.
            for item in message.payload.messages if isinstance(message, AgentBatch) else [message]:
                if backlog or not self._handle_now(item):
                    backlog.append(item)
        finally:
            if backlog:
                self._backlog_added.set()
                # A read already taken may bring a few more: the pause bounds the backlog, roughly.
                if self._direct is not None and len(backlog) >= BACKLOG_PAUSE:
                    self._direct.pause()

    def _take_direct(self, data: str | bytes) -> None:
        frame = self.conn.admit(data)
        if frame is None:
            return
        try:
            self.take_frame(frame)
        except Exception:  # a bug: say so, and keep the socket (the transport must not see it)
            log.exception("agent %s: failed to take a frame", self.row.name)
            self.conn.send(error(ErrorCode.INTERNAL_ERROR, "the hub failed to handle a message"))

    def go_direct(self, direct: DirectReceive) -> None:
        """Take frames from the transport's callback from now on (``transport.DIRECT_RECEIVE``)."""
        self._direct = direct
        direct.attach(self._take_direct)

    async def drain(self) -> None:
        """Handle the messages that wait, in order."""
        backlog = self._backlog
        while backlog:
            # Left in the backlog while it is handled: what comes meanwhile queues behind it.
            await self.receive(backlog[0])
            backlog.popleft()
        if self._direct is not None:
            self._direct.resume()

    async def pump(self) -> None:
        """``drain`` whenever messages wait, until ``end``; then what is left."""
        while True:
            await self.drain()
            if self._ended:
                return
            self._backlog_added.clear()
            await self._backlog_added.wait()

    def end(self) -> None:
        self._ended = True
        self._backlog_added.set()

    def _accepted(self, message: AgentToHub | AgentReport) -> bool:
        """Count the message, and check that it speaks for this agent (say so when it does not)."""
        self.hub.metrics.agent_message(message.type)
        payload_agent = getattr(message.payload, "agent_id", self.agent_id)
        if payload_agent != self.agent_id:
            self.conn.send(
                error(ErrorCode.AUTH_FAILED, "agentId does not match this connection", request_id=message.id)
            )
            return False
        return True

    def _failed(self, message: AgentToHub | AgentReport, command_id: str | None) -> None:
        log.exception(
            "agent %s: failed to handle %s (command %s)", self.row.name, message.type, command_id or "-"
        )
        self.conn.send(
            error(ErrorCode.INTERNAL_ERROR, f"the hub failed to handle {message.type}", request_id=message.id)
        )

    def _handle_now(self, message: AgentToHub | AgentReport) -> bool:
        """Handle output or a trace without awaiting anything, when that can be done: its command's
        execution is known here (and, for output, its highest sequence so far), and the event stream
        has room. False: the message needs ``receive``."""
        if not isinstance(message, TerminalOutput | TraceEvent):
            return False
        hub = self.hub
        command_id = message.payload.command_id
        execution_id = self._executions.get(command_id)
        if execution_id is None or not hub.publisher.has_room:
            return False
        if isinstance(message, TerminalOutput) and execution_id not in hub.output_sequences:
            return False
        if self._accepted(message):
            try:
                if isinstance(message, TerminalOutput):
                    self._pass_output(message, execution_id)
                else:
                    hub.publisher.publish_json(trace_update_json(message.payload))
            except Exception:
                self._failed(message, command_id)
        return True

    async def receive(self, message: AgentToHub | AgentReport) -> None:
        """Check that the message speaks for this agent, then handle it; say so when it fails."""
        command_id = getattr(message.payload, "command_id", None)
        try:
            if not self._accepted(message):
                return
            # Output and traces, the bulk of all messages, are handled without a log context: their
            # path logs nothing (an exception below still names the message type and command).
            if command_id is None or isinstance(message, TerminalOutput | TraceEvent):
                await self.handle(message)
            else:
                with log_context(command_id=command_id):
                    await self.handle(message)
        except Exception:
            self._failed(message, command_id)

    def _pass_output(self, message: TerminalOutput, execution_id: str) -> None:
        """Hand a line to this hub's TUIs (unless the agent sent it before) and to the event stream."""
        hub = self.hub
        output = message.payload
        # The event's JSON straight from the validated message (what the TerminalStream model
        # serialises to, without building it): this runs for every line of output.
        frame = self.stream_encoder.encode(output, emitted_at=message.timestamp)
        local_tag = ""
        if hub.output_sequences.is_new(execution_id, output.sequence):
            local_tag = hub.deliver_local(frame)
        # Also a replay goes to the stream, which drops what it has (by sequence, atomically):
        # another hub may have lost some of it before it got there.
        hub.publisher.publish_json(
            frame, dedupe_key=keys.execution(execution_id), sequence=output.sequence, local_tag=local_tag
        )
        content = output.content
        hub.metrics.output_lines += content.count("\n") + (not content.endswith("\n"))

    async def handle(self, message: object) -> None:
        hub = self.hub
        if isinstance(message, TerminalOutput):
            output = message.payload
            execution_id = await self.execution_of(output.command_id)
            if execution_id is None:
                await self.unknown_command(output.command_id, message.id)
                return
            if execution_id not in hub.output_sequences:
                # First output here (a new command, or an agent back from another hub or a restart):
                # what the stream already has, which an agent's replay must not bring twice.
                last = await hub.redis.hget(keys.execution(execution_id), "last_seq")
                hub.output_sequences.record(execution_id, int(last) if last is not None else -1)
            self._pass_output(message, execution_id)
            await hub.publisher.wait_for_room()
        elif isinstance(message, AgentHeartbeat):
            health = message.payload.health_metrics
            await hub.agents.touch(self.agent_id, health)
            if self.token_runs_low():
                await self.renew_token()
            # The heartbeat keeps the agent online (above); the TUIs and the store hear of it only when
            # the health they show changed, or every few minutes: most beats change nothing visible.
            at = now_ms()
            if (
                self._announced_health is None
                or health_changed(self._announced_health, health)
                or at - self._announced_at >= HEALTH_REFRESH_MS
            ):
                self._announced_health, self._announced_at = health, at
                await hub.publish_agent(self.agent_id, self.row)
        elif isinstance(message, CommandAck):
            await self.on_ack(message)
        elif isinstance(message, CommandComplete):
            await self.on_complete(message)
        elif isinstance(message, TraceEvent):
            trace = message.payload
            if await self.execution_of(trace.command_id) is None:
                await self.unknown_command(trace.command_id, message.id)
                return
            # receive() checked that the payload's agentId is this agent's.
            hub.publisher.publish_json(trace_update_json(trace))
            await hub.publisher.wait_for_room()
        elif isinstance(message, InvestigationReport):
            investigation = message.payload
            if await self.execution_of(investigation.command_id) is None:
                await self.unknown_command(investigation.command_id, message.id)
                return
            report = Report(
                id=investigation.report_id,
                command_id=investigation.command_id,
                agent_id=self.agent_id,
                status=investigation.status,
                title=investigation.title,
                summary=investigation.summary,
                content=investigation.content,
                created_at=message.timestamp,
            )
            await hub.publish(ReportReady(payload=report))
        elif isinstance(message, NeedsInput):
            await self.on_needs_input(message)
        elif isinstance(message, AgentError):
            failure = message.payload
            log.warning("agent %s reports %s: %s", self.row.name, failure.error_type, failure.message)
            await hub.audit(
                f"agent:{self.row.name}",
                "agent.error",
                agent_id=self.agent_id,
                error_type=failure.error_type,
                message=failure.message,
                recoverable=failure.recoverable,
            )
        elif isinstance(message, Error):
            log.info(
                "agent %s sent ERROR %s: %s", self.row.name, message.payload.code, message.payload.message
            )
        elif isinstance(message, AgentConnect):
            self.conn.send(error(ErrorCode.INVALID_MESSAGE, "already connected", request_id=message.id))

    async def on_needs_input(self, message: NeedsInput) -> None:
        hub = self.hub
        need = message.payload
        if await self.execution_of(need.command_id) is None:
            await self.unknown_command(need.command_id, message.id)
            return
        required = InputRequiredPayload(**need.model_dump(), agent_name=self.row.name, at=message.timestamp)
        await hub.redis.hset(
            keys.agent(self.agent_id), "waiting_input", required.model_dump_json(by_alias=True)
        )
        await hub.publish(InputRequired(payload=required))
        await hub.publish_agent(self.agent_id, self.row)
        await hub.audit(
            f"agent:{self.row.name}",
            "agent.needs_input",
            agent_id=self.agent_id,
            command_id=need.command_id,
            tool=need.tool_name,
            can_answer=need.can_answer,
        )

    async def on_ack(self, message: CommandAck) -> None:
        hub = self.hub
        p = message.payload
        execution_id = await self.execution_of(p.command_id)
        if execution_id is None:
            await self.unknown_command(p.command_id, message.id)
            return
        await lifecycle.signal(hub.redis, execution_id, lifecycle.ACK)
        if p.status is AckStatus.EXECUTING:
            at = now_ms()
            ref = lifecycle.Ref(execution_id, p.command_id, self.agent_id)
            if await lifecycle.apply(
                hub.redis, lifecycle.executing(ref, at), hub.settings.event_stream_maxlen
            ):
                # The start is the dispatch's; an ACK that beats the job's mark of it gives its own.
                await hub.redis.hsetnx(keys.execution(execution_id), "started_at", at)
                await hub.agents.set_current(self.agent_id, p.command_id)
                await publish_queues(hub, {self.agent_id})

    async def on_complete(self, message: CommandComplete) -> None:
        hub = self.hub
        p = message.payload
        execution_id = await self.execution_of(p.command_id)
        if execution_id is None:
            await self.unknown_command(p.command_id, message.id)
            return
        state = await hub.redis.hgetall(keys.execution(execution_id))
        hint = as_text(state.get(b"cancel_reason", b""))
        status = _COMPLETION[p.status]
        reason = p.reason
        if reason is None:
            if status is ExecutionStatus.CANCELLED and hint:
                reason = EndReason(hint)
            elif status is ExecutionStatus.CANCELLED:
                reason = EndReason.USER_CANCEL
            else:
                reason = EndReason.FINISHED if status is ExecutionStatus.COMPLETED else EndReason.ERROR
        started = int(state[b"started_at"]) if state.get(b"started_at") else None
        ref = lifecycle.Ref(execution_id, p.command_id, self.agent_id)
        ending = lifecycle.reported(ref, p, status, reason, started, now_ms())
        applied = await lifecycle.apply(hub.redis, ending, hub.settings.event_stream_maxlen)
        if applied:
            await lifecycle.signal(hub.redis, execution_id, lifecycle.DONE)
            found = await asyncio.to_thread(executions.load, hub.redis_sync, execution_id)
            if found is not None:
                await asyncio.to_thread(executions.forget, hub.redis_sync, found[0])
            await hub.agents.add_usage(self.agent_id, p.execution_time)
        current = await hub.redis.hget(keys.agent(self.agent_id), "current_command")
        if current is not None and as_text(current) == p.command_id:
            await hub.agents.set_current(self.agent_id, None)
        # Whatever it waited for is moot now.
        await hub.redis.hdel(keys.agent(self.agent_id), "waiting_input")
        self._executions.pop(p.command_id, None)
        await publish_queues(hub, {self.agent_id})


async def _connect_message(conn: Connection) -> AgentConnect | None:
    try:
        frame = await asyncio.wait_for(conn.receive(), CONNECT_TIMEOUT_S)
    except TimeoutError:
        conn.send(error(ErrorCode.INVALID_MESSAGE, "expected AGENT_CONNECT within 10 s", recoverable=False))
        return None
    if frame is None:
        return None
    try:
        message = parse_agent_message(frame)
    except ValidationError as exc:
        conn.send(
            error(
                ErrorCode.INVALID_MESSAGE,
                "invalid AGENT_CONNECT",
                details=validation_details(exc),
                recoverable=False,
            )
        )
        return None
    if not isinstance(message, AgentConnect):
        conn.send(
            error(ErrorCode.INVALID_MESSAGE, "the first message must be AGENT_CONNECT", recoverable=False)
        )
        return None
    return message


async def _reconcile(hub: Hub, row: AgentRow, active_commands: list[str]) -> None:
    """Settle what the hub believes runs on the agent and the agent says it does not (it restarted)."""
    lost = await asyncio.to_thread(
        reconcile.settle_lost, hub.redis_sync, row.id, active_commands, hub.settings.event_stream_maxlen
    )
    if not lost:
        return
    current = await hub.redis.hget(keys.agent(row.id), "current_command")
    if current is not None and as_text(current) in {spec.command_id for spec in lost}:
        await hub.agents.set_current(row.id, None)
        await hub.redis.hdel(keys.agent(row.id), "waiting_input")
    for spec in lost:
        log.warning("agent %s restarted without command %s: settled FAILED", row.name, spec.command_id)
        await hub.audit(
            "hub",
            "command.agent_restarted",
            agent_id=row.id,
            command_id=spec.command_id,
            reason=EndReason.AGENT_RESTARTED.value,
        )


def _pump_ended(conn: Connection, pump: asyncio.Task[None]) -> None:
    """A session's task must not end while its socket is open: its messages would wait for ever."""
    if not pump.cancelled() and pump.exception() is not None:
        log.error("agent session failed; closing its socket", exc_info=pump.exception())
        conn.close(CLOSE_INTERNAL_ERROR, "internal error")


@router.websocket("/ws/agent")
@router.websocket("/ws/agent/{path_agent_id}")
async def agent_socket(ws: WebSocket, path_agent_id: str | None = None) -> None:
    hub: Hub = ws.app.state.hub
    accepted = await Connection.accept(
        ws,
        hub.settings,
        TokenKind.AGENT,
        max_bytes=MAX_AGENT_MESSAGE_BYTES,
        rate=hub.settings.agent_rate_limit,
        label="agent",
        metrics=hub.metrics,
    )
    if accepted is None:
        return
    conn, principal = accepted
    # This socket's task logs with the agent's id (its token's subject) on every line.
    bind_log_context(agent_id=principal.subject, agent=principal.name)
    session: AgentSession | None = None
    try:
        hello = await _connect_message(conn)
        if hello is None:
            conn.close(CLOSE_POLICY, "no AGENT_CONNECT")
            return
        claimed = hello.payload.agent_id
        if claimed != principal.subject or (path_agent_id is not None and path_agent_id != principal.subject):
            conn.send(
                error(
                    ErrorCode.AUTH_FAILED,
                    "this token belongs to another agent",
                    recoverable=False,
                    request_id=hello.id,
                )
            )
            conn.close(CLOSE_POLICY, "agent id does not match the token")
            return
        row = await hub.agents.row(claimed)
        if row is None:
            # The token is valid but the record is gone (a new database): recreate it under its id.
            row = await hub.agents.ensure(principal.name, hello.payload.agent_type)
            if row.id != claimed:
                conn.send(error(ErrorCode.AUTH_FAILED, "unknown agent", recoverable=False))
                conn.close(CLOSE_POLICY, "unknown agent")
                return
        conn.label = f"agent {row.name}"
        p = hello.payload
        row.agent_type = p.agent_type.value
        session = AgentSession(hub, conn, row)
        session.token_expires_at = principal.expires_at
        session.token_lifetime_s = principal.expires_at - principal.issued_at
        await hub.agents.mark_online(
            row,
            hub.hub_id,
            {
                "agent_type": p.agent_type.value,
                "version": p.version,
                "host_machine": p.host_machine,
                "capabilities": p.capabilities,
            },
        )
        await hub.attach_agent(row.id, session)
        conn.send(
            ServerHeartbeat(
                payload=ServerHeartbeatPayload(
                    server_time=now_ms(), next_ping_expected=int(hub.settings.heartbeat_interval_s * 1000)
                )
            )
        )
        await hub.publish_agent(row.id)
        await hub.audit(
            f"agent:{row.name}", "agent.connected", agent_id=row.id, host=p.host_machine, version=p.version
        )
        await _reconcile(hub, row, p.active_commands)
        await asyncio.to_thread(executions.release_pending, hub.redis_sync, row.id)
        await publish_queues(hub, {row.id})
        log.info("agent %s (%s) connected from %s", row.name, row.id, p.host_machine)
        direct: DirectReceive | None = ws.scope.get("extensions", {}).get(DIRECT_RECEIVE)
        if direct is None:  # another ASGI server: frames come through receive()
            while (frame := await conn.receive()) is not None:
                session.take_frame(frame)
                await session.drain()
        else:
            session.go_direct(direct)
            pump = asyncio.create_task(session.pump(), name=f"agent-{row.name}")
            pump.add_done_callback(partial(_pump_ended, conn))
            try:
                # Frames go to the session from the transport; this returns at the disconnect. (Should
                # a frame come this way all the same, it is taken in its turn.)
                while (frame := await conn.receive()) is not None:
                    session.take_frame(frame)
                session.end()
                # What came before the disconnect is still handled (a failure was logged already).
                await asyncio.wait([pump])
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
    finally:
        await conn.finish()
        if session is not None and await hub.detach_agent(session.agent_id, session):
            if await hub.agents.mark_offline(session.agent_id, hub.hub_id):
                # With the row at hand, as for heartbeats: no database read per disconnect (10,000
                # agents going at once queued on the database pool past its time-out).
                await hub.publish_agent(session.agent_id, session.row)
                await hub.audit(f"agent:{session.row.name}", "agent.disconnected", agent_id=session.agent_id)
            log.info("agent %s disconnected", session.row.name)
