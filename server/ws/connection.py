"""What both WebSocket endpoints share: the handshake (token, origin, connection cap), a send queue
per client drained by its own task (so a slow client never holds up the rest), and the per-message
size and rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from server.auth.tokens import Principal, TokenError, TokenKind, verify
from server.ws.limits import TokenBucket
from shared.config import Settings
from shared.enums import ErrorCode
from shared.protocol import Error, error

if TYPE_CHECKING:
    from server.metrics import HubMetrics

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011

#: Frames queued for a client before it counts as not reading.
SEND_QUEUE_LIMIT = 10_000
#: Stream events that piled up go out in one EVENT_BATCH of at most 500 events, and no more events are
#: added once it holds this many characters (UTF-8: at most 4 bytes each): a batch stays well under
#: the 16 MiB a TUI takes in a frame, also when agents send output in messages of up to 1 MiB.
BATCH_MAX_EVENTS = 500
BATCH_MAX_CHARS = 1024 * 1024


def _batches(frames: list[str]) -> list[list[str]]:
    """``frames`` cut into runs of at most BATCH_MAX_EVENTS events, each stopped once it holds
    BATCH_MAX_CHARS characters (a single larger event is a run of its own)."""
    runs: list[list[str]] = []
    run: list[str] = []
    size = 0
    for frame in frames:
        if run and (len(run) >= BATCH_MAX_EVENTS or size >= BATCH_MAX_CHARS):
            runs.append(run)
            run, size = [], 0
        run.append(frame)
        size += len(frame)
    if run:
        runs.append(run)
    return runs


def bearer_token(ws: WebSocket) -> str:
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return ws.query_params.get("token", "")


def validation_details(exc: ValidationError) -> list[dict[str, object]]:
    return [
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)[:10]
    ]


class Connection:
    """One accepted socket: a send queue, a sender task and the limits on what it receives."""

    open_count = 0

    def __init__(
        self, ws: WebSocket, *, max_bytes: int, rate: float, label: str, metrics: HubMetrics | None = None
    ) -> None:
        self.ws = ws
        #: "agent" or "dashboard" (``label`` gets the peer's name once known).
        self.kind = label
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.bucket = TokenBucket(rate, burst=rate)
        self.label = label
        #: (a frame, or frames that may go out inside an EVENT_BATCH, whether it may); None closes.
        self.queue: asyncio.Queue[tuple[str | list[str], bool] | None] = asyncio.Queue()
        #: Frames in ``queue`` (an item may hold many).
        self.queued_frames = 0
        self.closed = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""
        #: A frame over ``max_bytes`` came: the socket is closing, and nothing more is taken.
        self.oversize = False
        self._sender: asyncio.Task[None] | None = None
        #: The batch of stream events queued last, while the sender has not taken it.
        self._open_batch: list[str] | None = None
        self.on_batch: Callable[[list[str]], str] | None = None

    @classmethod
    async def accept(
        cls,
        ws: WebSocket,
        settings: Settings,
        kind: TokenKind,
        *,
        max_bytes: int,
        rate: float,
        label: str,
        metrics: HubMetrics | None = None,
    ) -> tuple[Connection, Principal] | None:
        """Accept the socket and authenticate it; on failure say why and close 1008 (None)."""

        def refused(reason: str) -> None:
            if metrics is not None:
                metrics.connections_refused.labels(label, reason).inc()

        origin = ws.headers.get("origin")
        if origin and settings.allowed_origins and origin not in settings.allowed_origins:
            await ws.accept()
            await ws.send_text(
                error(ErrorCode.AUTH_FAILED, f"origin {origin} is not allowed", recoverable=False).to_json()
            )
            await ws.close(CLOSE_POLICY, "origin not allowed")
            refused("origin")
            return None
        if cls.open_count >= settings.max_connections:
            await ws.accept()
            await ws.send_text(
                error(ErrorCode.RESOURCE_EXHAUSTED, "the hub is at its connection limit").to_json()
            )
            await ws.close(CLOSE_TRY_AGAIN, "connection limit")
            refused("limit")
            return None
        await ws.accept()
        try:
            principal = verify(settings, bearer_token(ws), kind)
        except TokenError as exc:
            await ws.send_text(error(ErrorCode.AUTH_FAILED, str(exc), recoverable=False).to_json())
            await ws.close(CLOSE_POLICY, "authentication failed")
            refused("authentication")
            return None
        conn = cls(ws, max_bytes=max_bytes, rate=rate, label=label, metrics=metrics)
        cls.open_count += 1
        conn._sender = asyncio.create_task(conn._send_loop(), name=f"send-{label}")
        return conn, principal

    # ---- sending -------------------------------------------------------------------------------

    def send(self, message: BaseModel, *, batchable: bool = False) -> None:
        if isinstance(message, Error) and self.metrics is not None:
            self.metrics.errors_sent.labels(self.kind, message.payload.code.value).inc()
        self.send_raw(message.model_dump_json(by_alias=True), batchable=batchable)

    def send_raw(self, frame: str, *, batchable: bool = False) -> None:
        self._enqueue(frame, 1, batchable)

    def send_batchable(self, frames: Sequence[str]) -> None:
        """Queue stream events that may go out together in EVENT_BATCH frames. Until the sender takes
        the last batch queued, more events join it: a queue item per loop turn, not per event."""
        open_batch = self._open_batch
        if open_batch is not None and self.queued_frames < SEND_QUEUE_LIMIT and not self.closed.is_set():
            open_batch.extend(frames)
            self.queued_frames += len(frames)
            return
        batch = list(frames)
        if self._enqueue(batch, len(batch), True):
            self._open_batch = batch

    def _enqueue(self, payload: str | list[str], count: int, batchable: bool) -> bool:
        if self.closed.is_set():
            return False
        if self.queued_frames >= SEND_QUEUE_LIMIT:
            log.warning("%s is not reading (%d frames queued); dropping it", self.label, self.queued_frames)
            if self.metrics is not None:
                self.metrics.slow_clients_dropped.labels(self.kind).inc()
            self.close(CLOSE_TRY_AGAIN, "client too slow", drop_pending=True)
            return False
        self.queued_frames += count
        # What comes after this frame must not join a batch queued before it.
        self._open_batch = None
        self.queue.put_nowait((payload, batchable))
        return True

    def _take(self, payload: str | list[str]) -> list[str]:
        if payload is self._open_batch:
            self._open_batch = None  # taken: it no longer grows
        frames = [payload] if isinstance(payload, str) else payload
        self.queued_frames -= len(frames)
        return frames

    async def _send_loop(self) -> None:
        carried: deque[tuple[str | list[str], bool] | None] = deque()
        try:
            while True:
                item = carried.popleft() if carried else await self.queue.get()
                if item is None:
                    break
                frames = self._take(item[0])
                if not item[1] or self.on_batch is None:
                    for frame in frames:
                        await self.ws.send_text(frame)
                    continue
                # Stream events that piled up go out together in EVENT_BATCH frames.
                while not self.queue.empty() and len(frames) < BATCH_MAX_EVENTS:
                    nxt = self.queue.get_nowait()
                    if nxt is None or not nxt[1]:
                        carried.append(nxt)
                        break
                    frames.extend(self._take(nxt[0]))
                for chunk in _batches(frames):
                    await self.ws.send_text(chunk[0] if len(chunk) == 1 else self.on_batch(chunk))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self.closed.set()
            self._open_batch = None
            with contextlib.suppress(Exception):
                if self.ws.application_state == WebSocketState.CONNECTED:
                    await self.ws.close(self.close_code, self.close_reason)

    def close(self, code: int = 1000, reason: str = "", *, drop_pending: bool = False) -> None:
        """Close after what is queued (an ERROR saying why goes out first), or at once."""
        if self.closed.is_set() or self.close_code != 1000:
            return
        self.close_code = code
        self.close_reason = reason
        self._open_batch = None  # nothing joins what goes out before the close
        if drop_pending:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queued_frames = 0
        self.queue.put_nowait(None)

    async def finish(self) -> None:
        self.close(self.close_code, self.close_reason)
        # The socket may be gone already (close() then did nothing): the sender still has to stop.
        self.queue.put_nowait(None)
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._sender, 5)
        Connection.open_count -= 1

    # ---- receiving -----------------------------------------------------------------------------

    async def receive(self) -> str | None:
        """The next frame that passed the size and rate limits, or None when the socket is done."""
        while True:
            if self.closed.is_set():
                return None
            # No race against ``closed`` here (two tasks per message): the sender always ends by
            # closing the socket (or finding it gone), and the server then hands the app
            # ``websocket.disconnect``, which ends this wait.
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return None
            if message["type"] == "websocket.disconnect":
                self.closed.set()
                return None
            data = self.admit(message.get("text") or message.get("bytes") or b"")
            if data is not None:
                return data
            if self.oversize:
                return None

    def admit(self, data: str | bytes) -> str | None:
        """A received frame as text when it passes the size and rate limits. Otherwise None, and the
        sender was told: a frame that is not UTF-8 or over the rate is dropped; one too big closes the
        socket, and nothing after it is taken (``oversize``)."""
        if self.oversize or self.closed.is_set():
            return None
        if isinstance(data, bytes):
            try:
                data = data.decode()
            except UnicodeDecodeError:
                self.send(error(ErrorCode.INVALID_MESSAGE, "binary frames must be UTF-8 JSON"))
                return None
        # A character is at most 4 bytes in UTF-8: encode only when the text may be too big.
        if len(data) * 4 > self.max_bytes and len(data.encode()) > self.max_bytes:
            self.send(
                error(
                    ErrorCode.INVALID_MESSAGE,
                    f"message larger than {self.max_bytes} bytes",
                    recoverable=False,
                )
            )
            self.oversize = True
            self.close(CLOSE_TOO_BIG, "message too big")
            return None
        if not self.bucket.allow():
            if self.bucket.refused % 50 == 1:
                self.send(
                    error(
                        ErrorCode.RATE_LIMIT,
                        f"more than {self.bucket.rate:g} messages/s; messages over the limit are dropped",
                        details={"dropped": self.bucket.refused},
                    )
                )
            return None
        return data
