"""The TUI's state, fed the hub's events directly: output sequences, gaps and their refill."""

from __future__ import annotations

from shared.api import OutputLine
from shared.enums import AgentType, EndReason, ExecutionStatus, StreamType
from shared.protocol import CommandStatus, CommandStatusPayload, TerminalStream, TerminalStreamPayload
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


def status(
    value: ExecutionStatus, reason: EndReason | None = None, *, command: str = "c1", age_ms: int = 0
) -> CommandStatus:
    event = CommandStatus(
        payload=CommandStatusPayload(command_id=command, agent_id="a1", status=value, end_reason=reason)
    )
    event.timestamp -= age_ms
    return event


def test_failures_and_stops_by_a_limit_are_alerted_once() -> None:
    state = HubState()
    running = state.apply([status(ExecutionStatus.EXECUTING)])
    assert not running.ended
    budget = state.apply([status(ExecutionStatus.CANCELLED, EndReason.TOKEN_BUDGET)])
    assert [(s.command_id, s.end_reason) for s in budget.ended] == [("c1", EndReason.TOKEN_BUDGET)]
    assert not state.apply([status(ExecutionStatus.CANCELLED, EndReason.TOKEN_BUDGET)]).ended  # a repeat
    failed = state.apply([status(ExecutionStatus.FAILED, EndReason.ERROR, command="c2")])
    assert [s.command_id for s in failed.ended] == ["c2"]


def test_the_users_own_stops_and_old_endings_are_not_alerted() -> None:
    state = HubState()
    quiet = state.apply(
        [
            status(ExecutionStatus.CANCELLED, EndReason.USER_CANCEL, command="c1"),
            status(ExecutionStatus.CANCELLED, EndReason.EMERGENCY_STOP, command="c2"),
            status(ExecutionStatus.COMPLETED, EndReason.FINISHED, command="c3"),
            # Replayed at start-up or after a reconnect: long over.
            status(ExecutionStatus.FAILED, EndReason.ERROR, command="c4", age_ms=120_000),
        ]
    )
    assert not quiet.ended and quiet.commands == {"c1", "c2", "c3", "c4"}


def test_a_status_that_comes_after_a_later_one_is_stale() -> None:
    state = HubState()
    state.apply([status(ExecutionStatus.DISPATCHED)])
    stale = state.apply([status(ExecutionStatus.QUEUED)])
    assert state.execution("c1", "a1").status is ExecutionStatus.DISPATCHED  # type: ignore[union-attr]
    assert not stale.commands
    state.apply([status(ExecutionStatus.EXECUTING)])
    assert state.execution("c1", "a1").status is ExecutionStatus.EXECUTING  # type: ignore[union-attr]


def test_a_live_audit_page_shows_what_the_store_has_not_written_yet() -> None:
    from shared.api import AuditLog, Page
    from shared.protocol import AuditEvent
    from tui.screens.audit import with_live_entries

    def entry(at: int, action: str, stored: bool) -> AuditLog:
        return AuditLog(id=at if stored else None, at=at, actor="me", action=action, command_id=f"c{at}")

    state = HubState()
    state.apply([AuditEvent(payload=entry(at, "command.created", False)) for at in (5, 30, 40)])
    # The store has 30 (and older ones), not yet 40; 5 is older than the full page's oldest.
    page = Page[AuditLog](
        items=[entry(30, "command.created", True), entry(20, "x", True)], total=9, limit=2, offset=0
    )
    shown = with_live_entries(page, state.recent_audit)
    assert [(i.at, i.id) for i in shown.items] == [(40, None), (30, 30)]
    assert shown.total == 10
    # Once stored, the entry is not shown twice.
    stored = Page[AuditLog](
        items=[entry(40, "command.created", True), entry(30, "command.created", True)],
        total=10,
        limit=2,
        offset=0,
    )
    assert with_live_entries(stored, state.recent_audit).items == stored.items
