"""The hub's WebSocket transport: uvicorn's sans-I/O ``websockets`` protocol with a cheaper
permessage-deflate.

Every frame to a TUI that negotiated compression is deflated once per client; with zlib's default
level that was the hub's largest single cost under streaming load (about 9 µs per event per
client). Level 1 compresses terminal output JSON nearly as well (about 4.2 times against 4.9) at half
the CPU. ``ws_compression_level = 0`` turns compression off.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol


def protocol_class(compression_level: int) -> type[WebSocketsSansIOProtocol]:
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

    return HubWebSocketProtocol
