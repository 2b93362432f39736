"""The TUI's event stream client delivers each output line once: output of an agent on the TUI's own
hub comes before it reaches the stream (no position), and after a resume the replay brings it again
(with a position)."""

from __future__ import annotations

from collections.abc import Sequence

from shared.enums import AgentType, StreamType
from shared.protocol import StreamEnvelope, TerminalStream, TerminalStreamPayload
from tui.client.auth import TokenSource
from tui.client.stream import EventStream


def line(sequence: int, position: str | None = None, command_id: str = "cmd-1") -> TerminalStream:
    return TerminalStream(
        position=position,
        payload=TerminalStreamPayload(
            command_id=command_id,
            agent_id="agent-1",
            agent_name="a",
            agent_type=AgentType.SHELL,
            stream_type=StreamType.STDOUT,
            content=f"line {sequence}\n",
            sequence=sequence,
            emitted_at=1_700_000_000_000,
        ),
    )


def test_output_lines_are_delivered_once_whichever_way_they_come() -> None:
    delivered: list[tuple[str, int]] = []

    def on_events(events: Sequence[StreamEnvelope]) -> None:
        delivered.extend((e.payload.command_id, e.payload.sequence) for e in events)  # type: ignore[attr-defined]

    stream = EventStream(
        "ws://127.0.0.1:1", TokenSource("t"), on_ready=lambda _: None, on_events=on_events, on_status=print
    )
    # Live from the hub the agent is on: no positions.
    stream._deliver([line(0), line(1), line(0, command_id="cmd-2"), line(2)])
    # After a reconnect, the replay from the last position brings lines 1-2 again, then new ones.
    stream._deliver([line(1, "5-0"), line(2, "6-0"), line(3, "7-0"), line(1, "8-0", command_id="cmd-2")])
    # A positioned event at or before the last position is dropped as before.
    stream._deliver([line(4, "7-0")])
    assert delivered == [("cmd-1", 0), ("cmd-1", 1), ("cmd-2", 0), ("cmd-1", 2), ("cmd-1", 3), ("cmd-2", 1)]
    assert stream.position == "8-0"
