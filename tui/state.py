"""What the TUI knows about the hub, built from the event stream (and REST on a cold start).

The hub's events are applied in stream order; each :meth:`HubState.apply` returns a
:class:`Changes` summary so the screens redraw only what moved. Output is kept in bounded deques
(the scrollback; older lines come back from the hub's store on demand), with per-(command, agent)
sequence tracking: a line already seen is dropped, and a jump in sequence is recorded as a gap that
the app refills from ``GET /v1/commands/{id}/output``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from shared.api import (
    Agent,
    AgentQueue,
    AuditLog,
    EmergencyStopResult,
    OutputLine,
    Report,
    TraceEventRecord,
)
from shared.enums import AgentActivity, AgentStatus, EndReason, ExecutionStatus, StreamType
from shared.protocol import (
    AgentStatusMessage,
    AuditEvent,
    CommandStatus,
    CommandStatusPayload,
    EmergencyStopResultMessage,
    InputRequired,
    InputRequiredPayload,
    QueueUpdate,
    ReportReady,
    StreamEnvelope,
    TerminalStream,
    TerminalStreamPayload,
    TraceUpdate,
    now_ms,
)

DEFAULT_SCROLLBACK = 10_000
PANE_SCROLLBACK = 2_000
#: Commands whose traces are kept live in memory (the rest come from REST when opened).
TRACE_COMMANDS_KEPT = 50
COMMANDS_KEPT = 2_000
RECENT_AUDIT_KEPT = 100
#: A larger jump is not refilled line by line (the command's stored output is one key away).
MAX_GAP_TRACKED = 50_000


#: Fields a later trace record leaves out (None) without erasing what an earlier one said.
_TRACE_KEPT = ("parent_id", "content", "started_at", "completed_at", "duration_ms", "error")


def merge_record(old: TraceEventRecord | None, new: TraceEventRecord) -> TraceEventRecord:
    """``new`` over ``old``, as the hub merges them: later values win, None (and 0 tokens) never
    erases a known value (a tool call's end record has no input)."""
    if old is None:
        return new
    keep: dict[str, object] = {
        name: getattr(old, name)
        for name in _TRACE_KEPT
        if getattr(new, name) is None and getattr(old, name) is not None
    }
    if not new.tokens_used and old.tokens_used:
        keep["tokens_used"] = old.tokens_used
    return new.model_copy(update=keep) if keep else new


class OutputEntry(NamedTuple):
    """One TERMINAL_STREAM payload as the views need it. A tuple of plain values, so the garbage
    collector stops tracking it (hundreds of thousands of these must not slow down its passes)."""

    agent_id: str
    command_id: str
    sequence: int
    stderr: bool
    content: str
    ansi: bool
    emitted_at: int

    @classmethod
    def of(cls, line: OutputLine | TerminalStreamPayload) -> OutputEntry:
        return cls(
            line.agent_id,
            line.command_id,
            line.sequence,
            line.stream_type is StreamType.STDERR,
            line.content,
            line.ansi_codes,
            line.emitted_at,
        )


@dataclass(frozen=True, slots=True)
class Gap:
    command_id: str
    agent_id: str
    after: int
    until: int  # exclusive: the sequence that revealed the gap


#: Endings a user hears of at once: a failure, or a stop the user did not ask for (their own cancel,
#: interrupt or emergency stop is answered where they gave it).
ALERTED_ENDS = frozenset(
    {
        EndReason.TIME_LIMIT,
        EndReason.TOKEN_BUDGET,
        EndReason.AGENT_LOST,
        EndReason.AGENT_RESTARTED,
        EndReason.WORKER_LOST,
    }
)
#: An ending older than this (a replay after a reconnect, the backfill at start) is not alerted.
ALERT_RECENT_MS = 60_000


def alerted(before: CommandStatusPayload | None, after: CommandStatusPayload) -> bool:
    if before is not None and before.status.terminal:
        return False  # already ended (a repeat)
    if after.status is ExecutionStatus.FAILED:
        return True
    return after.status is ExecutionStatus.CANCELLED and after.end_reason in ALERTED_ENDS


@dataclass
class Changes:
    agents: set[str] = field(default_factory=set)
    output: list[OutputEntry] = field(default_factory=list)
    commands: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)
    traces: set[str] = field(default_factory=set)
    reports: list[Report] = field(default_factory=list)
    input_required: list[InputRequiredPayload] = field(default_factory=list)
    emergency_stops: list[EmergencyStopResult] = field(default_factory=list)
    #: Executions that failed or were stopped by a limit or a lost agent or worker, just now.
    ended: list[CommandStatusPayload] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    audit: int = 0

    def __bool__(self) -> bool:
        return bool(
            self.agents
            or self.output
            or self.commands
            or self.queues
            or self.traces
            or self.reports
            or self.input_required
            or self.emergency_stops
            or self.ended
            or self.gaps
            or self.audit
        )


class HubState:
    def __init__(self, scrollback: int = DEFAULT_SCROLLBACK) -> None:
        self.scrollback = scrollback
        #: Per agent (the grid's panes): a pane shows a few dozen lines, so less is kept for each.
        self.pane_scrollback = min(scrollback, PANE_SCROLLBACK)
        self.agents: dict[str, Agent] = {}
        #: Latest status of each execution, by (command id, agent id).
        self.executions: OrderedDict[tuple[str, str], CommandStatusPayload] = OrderedDict()
        self.queues: dict[str, AgentQueue] = {}
        self.waiting_input: dict[str, InputRequiredPayload] = {}
        self.output: deque[OutputEntry] = deque(maxlen=scrollback)
        self.output_by_agent: dict[str, deque[OutputEntry]] = {}
        self.traces: OrderedDict[str, dict[str, TraceEventRecord]] = OrderedDict()
        self.last_emergency_stop: EmergencyStopResult | None = None
        #: Audit entries as they happened: the store writes them a moment later, so a live view that
        #: reloads on one may not find it yet.
        self.recent_audit: deque[AuditLog] = deque(maxlen=RECENT_AUDIT_KEPT)
        self.lines_received = 0
        self._last_sequence: dict[tuple[str, str], int] = {}
        self._missing: dict[tuple[str, str], set[int]] = {}

    # -- counts for the header ---------------------------------------------------------------------
    @property
    def online(self) -> int:
        return sum(1 for a in self.agents.values() if a.status is AgentStatus.ONLINE)

    @property
    def busy(self) -> int:
        return sum(
            1
            for a in self.agents.values()
            if a.status is AgentStatus.ONLINE
            and a.activity in (AgentActivity.PROCESSING, AgentActivity.WAITING_INPUT)
        )

    @property
    def queued(self) -> int:
        return sum(a.queue_length for a in self.agents.values())

    @property
    def needs_input(self) -> int:
        return sum(1 for a in self.agents.values() if a.activity is AgentActivity.WAITING_INPUT)

    def agent_name(self, agent_id: str) -> str:
        agent = self.agents.get(agent_id)
        return agent.name if agent else agent_id[:8]

    def agent_by_name(self, name: str) -> Agent | None:
        wanted = name.lower()
        for agent in self.agents.values():
            if agent.name.lower() == wanted:
                return agent
        return None

    def sorted_agents(self) -> list[Agent]:
        return sorted(self.agents.values(), key=lambda a: a.name.lower())

    # -- applying what the hub says ----------------------------------------------------------------
    def set_agents(self, agents: Iterable[Agent]) -> Changes:
        self.agents = {a.id: a for a in agents}
        for agent_id in list(self.waiting_input):
            agent = self.agents.get(agent_id)
            if agent is None or agent.activity is not AgentActivity.WAITING_INPUT:
                del self.waiting_input[agent_id]
        return Changes(agents=set(self.agents))

    def apply(self, events: Sequence[StreamEnvelope]) -> Changes:
        changes = Changes()
        for event in events:
            if isinstance(event, TerminalStream):
                self._add_line(OutputEntry.of(event.payload), changes)
            elif isinstance(event, AgentStatusMessage):
                agent = event.payload
                self.agents[agent.id] = agent
                if agent.activity is not AgentActivity.WAITING_INPUT:
                    self.waiting_input.pop(agent.id, None)
                changes.agents.add(agent.id)
            elif isinstance(event, CommandStatus):
                status = event.payload
                key = (status.command_id, status.agent_id)
                known = self.executions.get(key)
                if known is not None and known.status.rank > status.status.rank:
                    # A status only moves forward on the hub; one that comes after a later one (two
                    # writers, two hubs) is stale.
                    continue
                if alerted(self.executions.get(key), status) and now_ms() - event.timestamp < ALERT_RECENT_MS:
                    changes.ended.append(status)
                self.executions[key] = status
                self.executions.move_to_end(key)
                while len(self.executions) > COMMANDS_KEPT:
                    self.executions.popitem(last=False)
                if status.status.terminal:
                    waiting = self.waiting_input.get(status.agent_id)
                    if waiting is not None and waiting.command_id == status.command_id:
                        del self.waiting_input[status.agent_id]
                        changes.agents.add(status.agent_id)
                changes.commands.add(status.command_id)
            elif isinstance(event, QueueUpdate):
                self.queues[event.payload.agent_id] = event.payload
                changes.queues.add(event.payload.agent_id)
            elif isinstance(event, TraceUpdate):
                self.add_trace(event.payload)
                changes.traces.add(event.payload.command_id)
            elif isinstance(event, InputRequired):
                self.waiting_input[event.payload.agent_id] = event.payload
                changes.input_required.append(event.payload)
                changes.agents.add(event.payload.agent_id)
            elif isinstance(event, ReportReady):
                changes.reports.append(event.payload)
            elif isinstance(event, EmergencyStopResultMessage):
                self.last_emergency_stop = event.payload
                changes.emergency_stops.append(event.payload)
            elif isinstance(event, AuditEvent):
                self.recent_audit.append(event.payload)
                changes.audit += 1
        return changes

    def add_trace(self, record: TraceEventRecord) -> None:
        nodes = self.traces.get(record.command_id)
        if nodes is None:
            nodes = self.traces[record.command_id] = {}
            while len(self.traces) > TRACE_COMMANDS_KEPT:
                self.traces.popitem(last=False)
        # Trace ids are unique per agent: a broadcast's agents may reuse them.
        key = f"{record.agent_id}/{record.trace_id}"
        nodes[key] = merge_record(nodes.get(key), record)

    def refill(self, lines: Iterable[OutputLine]) -> list[OutputEntry]:
        """Lines fetched from the store for a gap: only those still missing are added, in sequence
        order, after what the scrollback holds (the views show them with their own timestamps)."""
        added: list[OutputEntry] = []
        for line in sorted(lines, key=lambda item: item.sequence):
            key = (line.command_id, line.agent_id)
            missing = self._missing.get(key)
            if not missing or line.sequence not in missing:
                continue
            missing.discard(line.sequence)
            if not missing:
                del self._missing[key]
            entry = OutputEntry.of(line)
            self._store_line(entry)
            added.append(entry)
        return added

    def _add_line(self, entry: OutputEntry, changes: Changes) -> None:
        key = (entry.command_id, entry.agent_id)
        last = self._last_sequence.get(key, -1)
        if entry.sequence <= last:
            missing = self._missing.get(key)
            if not missing or entry.sequence not in missing:
                return  # a duplicate
            missing.discard(entry.sequence)
        else:
            if entry.sequence > last + 1 and last >= 0:
                # Lines this TUI never got (it joined late or the hub's replay window ran out).
                gap = range(last + 1, entry.sequence)
                if len(gap) <= MAX_GAP_TRACKED:
                    self._missing.setdefault(key, set()).update(gap)
                    changes.gaps.append(Gap(entry.command_id, entry.agent_id, last, entry.sequence))
            self._last_sequence[key] = entry.sequence
        self._store_line(entry)
        changes.output.append(entry)

    def _store_line(self, entry: OutputEntry) -> None:
        self.output.append(entry)
        per_agent = self.output_by_agent.get(entry.agent_id)
        if per_agent is None:
            per_agent = self.output_by_agent[entry.agent_id] = deque(maxlen=self.pane_scrollback)
        per_agent.append(entry)
        self.lines_received += 1

    def execution(self, command_id: str, agent_id: str) -> CommandStatusPayload | None:
        return self.executions.get((command_id, agent_id))

    def running_status(self, command_id: str) -> ExecutionStatus | None:
        statuses = [s.status for (c, _), s in self.executions.items() if c == command_id]
        return max(statuses, key=lambda s: s.rank) if statuses else None
