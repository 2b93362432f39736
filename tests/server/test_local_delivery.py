"""Output handed to this hub's TUIs before it reaches the stream: a TUI gets every event once and an
agent's output in order, whichever way each event came (directly, or through the relay), also while
the TUI goes live with events of the hub's own still on their way to Redis."""

from __future__ import annotations

from typing import Any, cast

from server.hub import RelayItem, relay_items
from server.ws.connection import Connection
from server.ws.dashboard import DashboardClient


class Socket:
    """What DashboardClient sends, frame by frame, in order."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def send_batchable(self, frames: list[str]) -> None:
        self.frames.extend(frames)


def client() -> tuple[DashboardClient, Socket]:
    socket = Socket()
    return DashboardClient(cast(Connection, socket)), socket


def item(ms: int, frame: str, local: int | None = None) -> RelayItem:
    return ((ms, 0), frame, local)


def test_a_live_client_gets_local_output_directly_and_not_again_from_the_relay() -> None:
    tui, socket = client()
    tui.go_live(local_next=5, local_relayed=4)
    tui.deliver_local("line-5")
    tui.deliver_local("line-6")
    # The relay reads them back (numbers 5 and 6, this hub's), between other hubs' events.
    tui.deliver_many([item(1, "status"), item(2, "line-5", 5), item(3, "line-6", 6), item(4, "other")], 6)
    assert socket.frames == ["line-5", "line-6", "status", "other"]


def test_going_live_with_own_events_still_on_the_way_keeps_the_order() -> None:
    tui, socket = client()
    # Lines 0-2 were handed over before this TUI was live and have not come back from Redis yet.
    tui.go_live(local_next=3, local_relayed=-1)
    tui.deliver_local("line-3")
    tui.deliver_local("line-4")
    assert socket.frames == []  # waiting: lines 0-2 must come first
    tui.deliver_many([item(1, "line-0", 0), item(2, "line-1", 1)], 1)
    assert socket.frames == ["line-0", "line-1"]
    tui.deliver_many([item(3, "line-2", 2), item(4, "line-3", 3)], 3)
    assert socket.frames == ["line-0", "line-1", "line-2", "line-3", "line-4"]
    tui.deliver_local("line-5")
    assert socket.frames[-1] == "line-5"


def test_waiting_output_goes_once_the_hub_knows_the_rest_was_dropped() -> None:
    tui, socket = client()
    tui.go_live(local_next=3, local_relayed=1)
    tui.deliver_local("line-3")
    # Number 2 never comes back (the stream dropped it as a replay): the hub says so when idle.
    tui.local_caught_up(2)
    assert socket.frames == ["line-3"]


def test_a_client_not_live_yet_gets_everything_through_the_relay_once() -> None:
    tui, socket = client()
    tui.last_sent = (1, 0)  # where its replay ended
    tui.deliver_local("line-0")  # not live: not sent; the relay brings it
    tui.deliver_many([item(1, "replayed"), item(2, "line-0", 0)], 0)
    assert socket.frames == []
    tui.go_live(local_next=1, local_relayed=0)
    assert socket.frames == ["line-0"]


def test_relay_items_read_the_local_tag_of_this_hub_only() -> None:
    entries: list[Any] = [
        (b"10-0", [b"m", b'{"type":"A"}']),
        (b"11-0", [b"m", b'{"type":"B"}', b"l", b"hub-1:7"]),
        (b"12-0", [b"m", b'{"type":"C"}', b"l", b"hub-2:7"]),
        (b"13-0", []),  # trimmed
    ]
    resp2 = [[b"stream", entries]]
    resp3 = {b"stream": [(entry_id, dict(zip(f[::2], f[1::2], strict=True))) for entry_id, f in entries]}
    for response in (resp2, resp3):
        items = relay_items(response, b"hub-1:")
        assert [(position, local) for position, _, local in items] == [
            ((10, 0), None),
            ((11, 0), 7),
            ((12, 0), None),
        ]
        assert items[1][1] == '{"position":"11-0","type":"B"}'
