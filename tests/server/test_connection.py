"""A socket's send queue: stream events queued in one loop turn go out in one EVENT_BATCH, other
frames keep their place between them, and a client that stops reading is dropped."""

from __future__ import annotations

import asyncio
import json
from typing import cast

from starlette.websockets import WebSocket, WebSocketState

from server.ws import connection
from server.ws.connection import CLOSE_TRY_AGAIN, Connection


class Socket:
    """What the sender writes, frame by frame; ``gate`` holds a send until the test lets it go."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: int | None = None
        self.application_state = WebSocketState.CONNECTED
        self.gate = asyncio.Event()
        self.gate.set()
        #: The peer is gone: a send fails.
        self.gone = False

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        if self.gone:
            raise RuntimeError("the socket is closed")
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = code
        self.application_state = WebSocketState.DISCONNECTED


def batch(events: list[str]) -> str:
    return json.dumps({"type": "EVENT_BATCH", "events": events})


def open_connection() -> tuple[Connection, Socket]:
    socket = Socket()
    conn = Connection(cast(WebSocket, socket), max_bytes=1024, rate=100, label="dashboard")
    conn.on_batch = batch
    # As Connection.accept starts it (finish() undoes the count).
    Connection.open_count += 1
    conn._sender = asyncio.create_task(conn._send_loop())
    return conn, socket


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_events_of_one_turn_go_out_together_and_other_frames_keep_their_place() -> None:
    conn, socket = open_connection()
    conn.send_batchable(["a"])
    conn.send_batchable(["b", "c"])
    conn.send_raw("reply")
    conn.send_batchable(["d"])
    conn.send_batchable(["e"])
    # Three queue items, not five: events join the batch queued before them.
    assert conn.queue.qsize() == 3 and conn.queued_frames == 6
    await settle()
    assert socket.sent == [batch(["a", "b", "c"]), "reply", batch(["d", "e"])]
    assert conn.queued_frames == 0
    await conn.finish()


async def test_events_after_the_sender_took_a_batch_go_in_the_next() -> None:
    conn, socket = open_connection()
    socket.gate.clear()
    conn.send_batchable(["a"])
    await settle()  # the sender took ["a"] and waits in send_text
    conn.send_batchable(["b"])
    conn.send_batchable(["c"])
    socket.gate.set()
    await settle()
    assert socket.sent == ["a", batch(["b", "c"])]
    await conn.finish()


async def test_nothing_joins_what_goes_out_before_a_close() -> None:
    conn, socket = open_connection()
    socket.gate.clear()
    conn.send_batchable(["a"])
    conn.close(1001, "going away")
    conn.send_batchable(["late"])
    socket.gate.set()
    await settle()
    assert socket.sent == ["a"] and socket.closed_with == 1001
    await conn.finish()


async def test_a_client_that_stops_reading_is_dropped() -> None:
    conn, socket = open_connection()
    socket.gate.clear()
    limit = connection.SEND_QUEUE_LIMIT
    conn.send_batchable(["first"])
    await settle()  # taken; the socket does not read
    for n in range(limit):
        conn.send_batchable([f"e{n}"])
    assert conn.close_code == 1000  # at the limit, not over it
    conn.send_batchable(["one too many"])
    assert conn.close_code == CLOSE_TRY_AGAIN and conn.queued_frames == 0
    socket.gate.set()
    await settle()
    assert socket.sent == ["first"] and socket.closed_with == CLOSE_TRY_AGAIN
    await conn.finish()


async def test_nothing_piles_up_for_a_socket_that_is_gone() -> None:
    conn, socket = open_connection()
    socket.gate.clear()
    conn.send_batchable(["a"])
    await settle()  # taken; its send waits
    conn.send_batchable(["b"])  # queued behind it
    socket.gone = True  # the TUI vanished: the send of "a" fails and the sender ends
    socket.gate.set()
    await settle()
    assert conn.closed.is_set()
    for n in range(100):
        conn.send_batchable([f"late {n}"])
    assert conn.queued_frames <= 1
    await conn.finish()
