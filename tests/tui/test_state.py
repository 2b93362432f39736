"""The TUI's state, fed the hub's events directly: output sequences, gaps and their refill."""

from __future__ import annotations

from shared.api import OutputLine
from shared.enums import AgentType, StreamType
from shared.protocol import TerminalStream, TerminalStreamPayload
from tui.state import HubState


def line(sequence: int, command: str = "c1", agent: str = "a1") -> TerminalStream:
    return TerminalStream(
        payload=TerminalStreamPayload(
            command_id=command,
            agent_id=agent,
            agent_name=agent,
            agent_type=AgentType.SHELL,
            stream_type=StreamType.STDOUT,
            content=f"line {sequence}\n",
            sequence=sequence,
            emitted_at=1,
        )
    )


def stored(sequence: int) -> OutputLine:
    return OutputLine(
        command_id="c1", agent_id="a1", sequence=sequence, stream_type=StreamType.STDOUT,
        content=f"line {sequence}\n", emitted_at=1,
    )  # fmt: skip


def sequences(state: HubState) -> list[int]:
    return [e.sequence for e in state.output]


def test_duplicates_are_dropped_and_a_gap_is_reported() -> None:
    state = HubState()
    first = state.apply([line(0), line(1), line(1), line(0)])
    assert [e.sequence for e in first.output] == [0, 1] and not first.gaps
    jump = state.apply([line(5)])
    assert [(g.after, g.until) for g in jump.gaps] == [(1, 5)]
    assert sequences(state) == [0, 1, 5]


def test_refill_adds_only_what_is_missing_once() -> None:
    state = HubState()
    state.apply([line(0), line(4)])
    added = state.refill([stored(n) for n in range(0, 6)])  # the store also has 0, 4 and 5
    assert [e.sequence for e in added] == [1, 2, 3]
    assert state.refill([stored(2)]) == []  # refilled already
    late = state.apply([line(3), line(5)])  # a late live copy of a refilled line is a duplicate
    assert [e.sequence for e in late.output] == [5]
    assert sorted(sequences(state)) == [0, 1, 2, 3, 4, 5]


def test_a_command_joined_late_is_not_a_gap() -> None:
    state = HubState()
    changes = state.apply([line(500, command="c2")])
    assert not changes.gaps and sequences(state) == [500]
