"""The hub's WebSocket transport: uvicorn's sans-I/O ``websockets`` protocol with a cheaper
permessage-deflate, and a direct receive path for agent sockets.

Every frame to a client that negotiated compression is deflated once per client; with zlib's
default level that was the hub's largest single cost under streaming load (about 9 µs per event per
client). Level 1 compresses terminal output JSON nearly as well (about 4.2 times against 4.9) at half
the CPU, and still doubled the p99 latency of every client's lines with five deflating clients
(docs/performance.md), so ``ws_compression_level`` is 0 by default: never negotiated. The TUI and
the wrapper do not offer it; set it to 1 for clients on thin links.

Direct receive: through ASGI, every frame an agent sends is a queued ``websocket.receive`` message
that wakes the endpoint's task in the next turn of the event loop, and uvicorn pauses the socket's
reading until that task has taken it. At 5,000 lines/s that plumbing was a tenth of the hub's CPU,
and the extra loop turn a part of every line's latency. An endpoint may instead ask, through the
``DIRECT_RECEIVE`` scope extension, for the frames to be handed to a callback as they are parsed;
``websocket.disconnect`` still comes through ``receive()``. Servers without the extension (any other
ASGI server, or ``ws_direct_receive = false``) keep the standard path. The override uses uvicorn's
own state of the protocol (``frames``, ``queue``, ``read_paused``);
``tests/server/test_agent_receive.py`` runs both paths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

log = logging.getLogger(__name__)

#: The scope extension under which a ``DirectReceive`` is offered.
DIRECT_RECEIVE = "onsembl.direct_receive"

#: A received data frame: text, or bytes (binary frames, and text frames that are not UTF-8).
FrameHandler = Callable[[str | bytes], None]


class DirectReceive(Protocol):
    def attach(self, on_frame: FrameHandler) -> None:
        """From now on, hand every data frame to ``on_frame`` as it is parsed, in order, starting
        with those already queued for ``receive()``. ``on_frame`` runs in the transport's callback: it
        must not block, and it must not raise."""

    def pause(self) -> None:
        """Stop reading the socket (the peer's sends then wait in its TCP window)."""

    def resume(self) -> None: ...


def protocol_class(compression_level: int, *, direct_receive: bool = True) -> type[WebSocketsSansIOProtocol]:
    class HubWebSocketProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # As uvicorn builds it (window bits, memLevel), with our level; nothing has used it yet.
            extensions = (
                [
                    ServerPerMessageDeflateFactory(
                        server_max_window_bits=12,
                        client_max_window_bits=12,
                        compress_settings={"memLevel": 5, "level": compression_level},
                    )
                ]
                if compression_level > 0
                else []
            )
            self.conn = ServerProtocol(
                extensions=extensions,
                max_size=self.config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )
            self.on_frame: FrameHandler | None = None

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)  # none when the handshake was refused
            if scope is not None and direct_receive:
                scope["extensions"][DIRECT_RECEIVE] = self

        # DirectReceive
        def attach(self, on_frame: FrameHandler) -> None:
            queued = []
            while not self.queue.empty():
                queued.append(self.queue.get_nowait())
            self.on_frame = on_frame
            for message in queued:
                if message["type"] == "websocket.receive":
                    self._hand_over(message.get("text") or message.get("bytes") or b"")
                else:
                    self.queue.put_nowait(message)  # a disconnect: receive() still says so
            if self.read_paused:  # uvicorn's pause for the message it queued last
                self.read_paused = False
                self.transport.resume_reading()

        def pause(self) -> None:
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()

        def resume(self) -> None:
            if self.read_paused and self.queue.empty():
                self.read_paused = False
                self.transport.resume_reading()

        def send_receive_event_to_app(self) -> None:
            if self.on_frame is None:
                super().send_receive_event_to_app()
                return
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            self.frames = []
            if self.close_sent:
                return  # as uvicorn does: the endpoint is past its close
            if self.curr_msg_data_type != "text":
                self._hand_over(data)
                return
            try:
                text = data.decode()
            except UnicodeDecodeError:  # as uvicorn answers it: close 1007
                log.warning("a text frame that is not UTF-8; closing the socket")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            self._hand_over(text)

        def _hand_over(self, data: str | bytes) -> None:
            assert self.on_frame is not None
            try:
                self.on_frame(data)
            except Exception:  # the handler's own guard failed: never break the transport
                log.exception("a WebSocket frame handler failed")

    return HubWebSocketProtocol
