"""``/ws/dashboard``: where TUIs connect. After DASHBOARD_CONNECT the hub replays the event stream
from the client's ``resumeFrom`` (so a reconnect has no gap and no duplicate), then relays every
event live; commands, cancels, controls, reorders and the emergency stop come in the other way."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError

from server import keys, services
from server.auth.tokens import TokenKind
from server.errors import ServiceError
from server.hub import Hub, Position, RelayItem, parse_position
from server.redis_text import as_text, stream_entries
from server.ws.connection import Connection, validation_details
from shared.api import InputAnswer
from shared.enums import ErrorCode
from shared.logs import bind_log_context
from shared.protocol import (
    MAX_DASHBOARD_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    AgentControlRequest,
    CommandAccepted,
    CommandAcceptedPayload,
    CommandCancelRequest,
    CommandSubmit,
    DashboardConnect,
    DashboardReady,
    DashboardReadyPayload,
    EmergencyStop,
    InputResponseRequest,
    Ping,
    Pong,
    QueueReorderMessage,
    RequestOk,
    RequestOkPayload,
    ServerHeartbeatPayload,
    error,
    event_batch_frame,
    now_ms,
    parse_dashboard_message,
    stream_frame,
)

log = logging.getLogger(__name__)
router = APIRouter()

#: Events replayed on resume, at most; older gaps are refetched over REST (``resumed: false``).
MAX_REPLAY = 100_000


class DashboardClient:
    """Receives relayed events, and the output of this hub's own agents before it reaches the stream
    (local events); drops any it already sent.

    Local events numbered from ``local_from`` on (those handed over once this client was live) come
    to it directly, and the relay skips them; earlier ones come through the relay. Until the relay
    has read back every local event numbered before ``local_from``, the direct ones wait here, so an
    agent's output never arrives out of order."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.last_sent: Position = (0, 0)
        self.live = False
        self.local_from = 0
        self._held: list[RelayItem] = []
        self._catching_up = False
        self._waiting_local: list[str] = []

    def deliver_many(self, items: list[RelayItem], local_relayed: int) -> None:
        """Send events (in stream order) this client has not had yet, as one queued batch."""
        if not self.live:
            self._held.extend(items)
            return
        frames = [
            frame
            for position, frame, local in items
            if position > self.last_sent and (local is None or local < self.local_from)
        ]
        if items and items[-1][0] > self.last_sent:
            self.last_sent = items[-1][0]
        if frames:
            self.conn.send_batchable(frames)
        self.local_caught_up(local_relayed)

    def local_caught_up(self, local_relayed: int) -> None:
        """The hub's local events up to ``local_relayed`` went through the relay, or are known
        dropped: the direct ones held for them can go."""
        if self._catching_up and local_relayed >= self.local_from - 1:
            self._catching_up = False
            waiting, self._waiting_local = self._waiting_local, []
            if waiting:
                self.conn.send_batchable(waiting)

    def deliver_local(self, frame: str) -> None:
        if not self.live:
            return  # the relay brings it (held until the replay is done)
        if self._catching_up:
            self._waiting_local.append(frame)
        else:
            self.conn.send_batchable([frame])

    def go_live(self, local_next: int, local_relayed: int) -> None:
        self.local_from = local_next
        self._catching_up = local_relayed < local_next - 1
        self.live = True
        held, self._held = self._held, []
        self.deliver_many(held, local_relayed)


async def _replay(hub: Hub, client: DashboardClient, resume_from: str) -> bool:
    """Send every event after ``resume_from``. False when the stream no longer reaches back that far."""
    start = parse_position(resume_from)
    first = stream_entries(await hub.redis.xrange(keys.EVENTS_STREAM, count=1))
    complete = not first or parse_position(first[0][0]) <= start or start == (0, 0)
    cursor = f"({start[0]}-{start[1]}"
    sent = 0
    while sent < MAX_REPLAY:
        entries = stream_entries(await hub.redis.xrange(keys.EVENTS_STREAM, min=cursor, count=1000))
        if not entries:
            break
        frames = []
        for entry_id, fields in entries:
            data = fields.get(b"m") if fields else None
            if data is not None:
                frames.append(stream_frame(data, as_text(entry_id)))
        # One queued batch per page, as the relay does.
        if frames:
            client.conn.send_batchable(frames)
        sent += len(frames)
        last = parse_position(entries[-1][0])
        client.last_sent = last
        cursor = f"({last[0]}-{last[1]}"
    return complete and sent < MAX_REPLAY


async def _handle(hub: Hub, conn: Connection, user: str, message: object) -> None:
    if isinstance(message, CommandSubmit):
        command = await services.create_command(hub, user, message.payload)
        conn.send(CommandAccepted(payload=CommandAcceptedPayload(request_id=message.id, command=command)))
    elif isinstance(message, CommandCancelRequest):
        cancel = message.payload
        await services.cancel_command(hub, user, cancel.command_id, cancel.agent_id, cancel.reason)
        conn.send(RequestOk(payload=RequestOkPayload(request_id=message.id)))
    elif isinstance(message, AgentControlRequest):
        control = message.payload
        await services.control_agent(hub, user, control.agent_id, control.action, control.reason)
        conn.send(RequestOk(payload=RequestOkPayload(request_id=message.id)))
    elif isinstance(message, QueueReorderMessage):
        await services.reorder_queue(hub, user, message.payload.agent_id, message.payload.order)
        conn.send(RequestOk(payload=RequestOkPayload(request_id=message.id)))
    elif isinstance(message, EmergencyStop):
        # The result reaches every TUI as EMERGENCY_STOP_RESULT through the stream.
        await services.emergency_stop(hub, user, message.payload.reason, request_id=message.id)
    elif isinstance(message, InputResponseRequest):
        answer = message.payload
        await services.answer_input(
            hub,
            user,
            answer.command_id,
            InputAnswer(
                request_id=answer.request_id,
                allow=answer.allow,
                message=answer.message,
                agent_id=answer.agent_id,
            ),
        )
        conn.send(RequestOk(payload=RequestOkPayload(request_id=message.id)))
    elif isinstance(message, Ping):
        conn.send(Pong(payload=ServerHeartbeatPayload(server_time=now_ms(), next_ping_expected=30_000)))
    elif isinstance(message, DashboardConnect):
        conn.send(error(ErrorCode.INVALID_MESSAGE, "already connected", request_id=message.id))


@router.websocket("/ws/dashboard")
async def dashboard_socket(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    accepted = await Connection.accept(
        ws,
        hub.settings,
        TokenKind.ACCESS,
        max_bytes=MAX_DASHBOARD_MESSAGE_BYTES,
        rate=hub.settings.dashboard_rate_limit,
        label="dashboard",
        metrics=hub.metrics,
    )
    if accepted is None:
        return
    conn, principal = accepted
    conn.label = f"dashboard {principal.subject}"
    bind_log_context(user=principal.subject)
    conn.on_batch = event_batch_frame
    client = DashboardClient(conn)
    hub.dashboards.add(client)
    try:
        first: object = None
        try:
            frame = await asyncio.wait_for(conn.receive(), 10)
        except TimeoutError:
            frame = ""
        if frame is None:
            return
        hello = DashboardConnect()
        if frame:
            try:
                first = parse_dashboard_message(frame)
            except ValidationError as exc:
                conn.send(
                    error(
                        ErrorCode.INVALID_MESSAGE,
                        "message does not match the protocol",
                        details=validation_details(exc),
                    )
                )
            if isinstance(first, DashboardConnect):
                hello, first = first, None
        if hello.payload.protocol_version != PROTOCOL_VERSION:
            conn.send(
                error(
                    ErrorCode.INVALID_MESSAGE,
                    f"protocol version {hello.payload.protocol_version} is not supported "
                    f"(hub speaks {PROTOCOL_VERSION})",
                    recoverable=False,
                )
            )
            conn.close(1002, "protocol version")
            return
        position = hub.relay_position
        resumed = True
        if hello.payload.resume_from:
            resumed = await _replay(hub, client, hello.payload.resume_from)
        else:
            client.last_sent = position
        agents = await hub.agents.list()
        conn.send(
            DashboardReady(
                payload=DashboardReadyPayload(
                    protocol_version=PROTOCOL_VERSION,
                    server_time=now_ms(),
                    hub_id=hub.hub_id,
                    user=principal.subject,
                    position=f"{client.last_sent[0]}-{client.last_sent[1]}",
                    resumed=resumed,
                    agents=agents,
                )
            )
        )
        client.go_live(hub.local_next, hub.local_relayed)
        await hub.audit(principal.subject, "dashboard.connected")
        pending = [first] if first is not None else []
        while True:
            if pending:
                message = pending.pop()
            else:
                frame = await conn.receive()
                if frame is None:
                    break
                try:
                    message = parse_dashboard_message(frame)
                except ValidationError as exc:
                    conn.send(
                        error(
                            ErrorCode.INVALID_MESSAGE,
                            "message does not match the protocol",
                            details=validation_details(exc),
                        )
                    )
                    continue
            try:
                await _handle(hub, conn, principal.subject, message)
            except ServiceError as exc:
                conn.send(
                    error(exc.code, exc.message, details=exc.details, request_id=getattr(message, "id", None))
                )
            except Exception:
                log.exception("dashboard request failed")
                conn.send(
                    error(
                        ErrorCode.INTERNAL_ERROR,
                        "the hub failed to handle the request",
                        request_id=getattr(message, "id", None),
                    )
                )
    finally:
        hub.dashboards.discard(client)
        await conn.finish()
