"""The dashboard event stream: one WebSocket to ``/ws/dashboard``, reconnected for ever.

Reconnects wait 0.5 s, growing by 1.5x to 5 s (the SPEC's TUI schedule). Each reconnect sends the
last stream position seen as ``resumeFrom``, so the hub replays exactly what was missed: no gap, no
duplicate (and events at or before that position are dropped here too, in case). When the hub no
longer holds that far back (``resumed: false``), the owner is told to refetch its state over REST.

Output of an agent connected to the same hub comes before it reaches the hub's stream, without a
position; after a resume it may come again, with one. So output lines are also dropped here when
their sequence (per command and agent) was delivered already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import websockets
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect

from shared.enums import ErrorCode
from shared.protocol import (
    DashboardConnect,
    DashboardConnectPayload,
    DashboardReady,
    Error,
    EventBatch,
    StreamEnvelope,
    TerminalStream,
    now_ms,
    parse_hub_to_dashboard,
)
from shared.sequences import HighestSequences
from tui.client.auth import TokenSource

log = logging.getLogger(__name__)

FIRST_DELAY_S = 0.5
GROWTH = 1.5
MAX_DELAY_S = 5.0
#: Commands (per agent) whose highest output sequence is kept for dropping repeats.
OUTPUT_SEQUENCES_KEPT = 10_000
#: The dashboard socket's options (the benchmarks connect with these too). No permessage-deflate:
#: terminal output deflates well, but inflating every frame costs the TUI more than the bytes cost a
#: LAN or an SSH tunnel, and the hub deflates once per client.
CONNECT_OPTIONS: dict[str, Any] = {
    "open_timeout": 10,
    "ping_interval": 20,
    "ping_timeout": 20,
    "max_size": 16 * 1024 * 1024,
    "compression": None,
}


class LinkState(StrEnum):
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    #: The hub refused the token; retries go on (a refreshed token may fix it) but the user must know.
    AUTH_FAILED = "AUTH_FAILED"


@dataclass(frozen=True)
class LinkStatus:
    state: LinkState
    detail: str = ""
    #: Seconds until the next attempt, when disconnected.
    retry_in: float = 0.0
    attempt: int = 0


def retry_delay(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: 0.5, 0.75, 1.125, ... capped at 5."""
    return float(min(MAX_DELAY_S, FIRST_DELAY_S * GROWTH ** max(0, attempt - 1)))


def position_key(position: str) -> tuple[int, int]:
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


class EventStream:
    def __init__(
        self,
        ws_url: str,
        tokens: TokenSource,
        *,
        on_ready: Callable[[DashboardReady], None],
        on_events: Callable[[Sequence[StreamEnvelope]], None],
        on_status: Callable[[LinkStatus], None],
        on_error: Callable[[Error], None] | None = None,
        backfill_ms: int = 0,
    ) -> None:
        self.ws_url = ws_url.rstrip("/") + "/ws/dashboard"
        self.tokens = tokens
        self.on_ready = on_ready
        self.on_events = on_events
        self.on_status = on_status
        self.on_error = on_error
        self.position: str | None = None
        self._position_key: tuple[int, int] = (0, 0)
        self.ws: ClientConnection | None = None
        self.connects = 0
        self._was_ready = False
        #: On the first connection, replay this much of the hub's recent past (output, statuses).
        self.backfill_ms = backfill_ms
        #: (command id, agent id) -> the highest output sequence delivered.
        self._output_sequences: HighestSequences[tuple[str, str]] = HighestSequences(OUTPUT_SEQUENCES_KEPT)

    async def run(self) -> None:
        """Connect, stream, reconnect; returns only when cancelled."""
        attempt = 0
        while True:
            attempt += 1
            self.on_status(LinkStatus(LinkState.CONNECTING, attempt=attempt))
            detail = ""
            state = LinkState.DISCONNECTED
            try:
                await self._session()
                detail = "the hub closed the connection"
                if self._was_ready:
                    attempt = 0
            except asyncio.CancelledError:
                raise
            except websockets.InvalidStatus as exc:
                code = exc.response.status_code
                state = LinkState.AUTH_FAILED if code in (401, 403) else LinkState.DISCONNECTED
                detail = f"the hub refused the connection (HTTP {code})"
            except websockets.ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1008:
                    state, detail = LinkState.AUTH_FAILED, f"the hub refused the token ({exc.rcvd.reason})"
                else:
                    detail = "the connection to the hub was lost"
                if self._was_ready:
                    attempt = 0  # it worked: start the schedule over
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                detail = f"cannot reach the hub ({type(exc).__name__}: {exc})"
            finally:
                self.ws = None
            wait = retry_delay(max(1, attempt))
            self.on_status(LinkStatus(state, detail=detail, retry_in=wait, attempt=attempt))
            await asyncio.sleep(wait)

    async def _session(self) -> None:
        self._was_ready = False
        token = await self.tokens.token()
        async with connect(
            self.ws_url,
            additional_headers={"Authorization": f"Bearer {token}"},
            **CONNECT_OPTIONS,
        ) as ws:
            self.ws = ws
            resume_from = self.position
            if resume_from is None and self.backfill_ms > 0:
                resume_from = f"{max(0, now_ms() - self.backfill_ms)}-0"
            hello = DashboardConnect(payload=DashboardConnectPayload(resume_from=resume_from))
            await ws.send(hello.to_json())
            async for frame in ws:
                self._receive(frame)
                # Frames already buffered would be handled back to back: let the UI have a turn
                # between them, so a key press never waits behind a burst.
                await asyncio.sleep(0)

    def _receive(self, frame: str | bytes) -> None:
        try:
            message = parse_hub_to_dashboard(frame)
        except ValidationError as exc:
            # A newer hub may send what this TUI does not know: skip it, keep the stream.
            log.warning("skipped a hub message this TUI does not understand: %s", exc.errors()[:1])
            return
        if isinstance(message, EventBatch):
            self._deliver(message.payload.events)
        elif isinstance(message, DashboardReady):
            self._was_ready = True
            self.connects += 1
            if not message.payload.resumed or self.position is None:
                self._set_position(message.payload.position)
            self.on_status(LinkStatus(LinkState.CONNECTED, detail=f"hub {message.payload.hub_id}"))
            self.on_ready(message)
        elif isinstance(message, StreamEnvelope):
            self._deliver([message])
        elif isinstance(message, Error):
            if message.payload.code is ErrorCode.AUTH_FAILED:
                log.warning("hub: %s", message.payload.message)
            if self.on_error is not None:
                self.on_error(message)

    def _deliver(self, events: Sequence[StreamEnvelope]) -> None:
        fresh: list[StreamEnvelope] = []
        for event in events:
            if event.position is not None:
                key = position_key(event.position)
                if key <= self._position_key:
                    continue  # already seen before a reconnect
                self._position_key = key
                self.position = event.position
            if isinstance(event, TerminalStream):
                line = event.payload
                if not self._output_sequences.is_new((line.command_id, line.agent_id), line.sequence):
                    continue  # came before it reached the stream, and now again from the stream
            fresh.append(event)
        if fresh:
            self.on_events(fresh)

    def _set_position(self, position: str) -> None:
        self.position = position
        self._position_key = position_key(position)
