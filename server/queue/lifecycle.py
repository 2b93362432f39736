"""An execution's lifecycle, in one place: its status transitions, the signals its supervising job
takes, and how a supervision ends.

Statuses only move forward (``ExecutionStatus.rank``). Each transition is one function here that
builds the change and the COMMAND_STATUS event announcing it; ``apply`` (the hub's loop) and
``apply_sync`` (RQ jobs, threads) write both in one Lua call (``scripts.ADVANCE_STATUS``), so a
status and its event are never apart and two writers never both end an execution.

    QUEUED ──dispatched──▶ DISPATCHED ──executing──▶ EXECUTING ──reported──▶ COMPLETED/FAILED/CANCELLED
       │                       │                         │
       └──────────────── ended_by_hub (cancel, time limit, agent lost or restarted, worker lost) ──▶ end
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis

from server import keys
from server.events import encode
from server.queue.scripts import ADVANCE_STATUS
from shared.enums import EndReason, ExecutionStatus
from shared.protocol import CommandCompletePayload, CommandStatus, CommandStatusPayload


class ExecutionRef(Protocol):
    """What names an execution: ``ExecutionSpec`` is one; so is ``Ref``."""

    @property
    def id(self) -> str: ...

    @property
    def command_id(self) -> str: ...

    @property
    def agent_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Ref:
    id: str
    command_id: str
    agent_id: str


# ---- signals to the supervising job ----------------------------------------------------------------


class SignalKind(StrEnum):
    #: The agent acknowledged the request: stop sending it.
    ACK = "ack"
    #: The execution ended (the agent reported, or the hub settled it): the job returns.
    DONE = "done"
    #: Stop the command: relay it to the agent, and end it after the grace period if it does not.
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Signal:
    """One item on the execution's signal list (``keys.execution_signals``), JSON on the wire."""

    kind: SignalKind
    reason: EndReason | None = None
    message: str = ""

    def encode(self) -> str:
        data: dict[str, str] = {"kind": self.kind.value}
        if self.reason is not None:
            data["reason"] = self.reason.value
        if self.message:
            data["message"] = self.message
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> Signal:
        """The signal; ValueError for anything else (the list is written only by hubs and jobs)."""
        try:
            data = json.loads(raw)
            kind = SignalKind(data["kind"])
            reason = EndReason(data["reason"]) if data.get("reason") else None
            message = str(data.get("message", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a supervision signal: {raw!r:.200}") from exc
        if kind is SignalKind.CANCEL and reason is None:
            raise ValueError("a cancel signal names its reason")
        return cls(kind, reason, message)


ACK = Signal(SignalKind.ACK)
DONE = Signal(SignalKind.DONE)


def cancel(reason: EndReason, message: str) -> Signal:
    return Signal(SignalKind.CANCEL, reason, message)


def signal_sync(conn: redis.Redis, execution_id: str, signal: Signal) -> None:
    conn.rpush(keys.execution_signals(execution_id), signal.encode())


async def signal(client: aioredis.Redis, execution_id: str, sent: Signal) -> None:
    await client.rpush(keys.execution_signals(execution_id), sent.encode())


# ---- how a supervision ends ------------------------------------------------------------------------


class SupervisionOutcome(StrEnum):
    """What ``jobs.run_execution`` returns (RQ keeps it as the job's result)."""

    MISSING = "missing"  # no record of the execution (expired, or never written)
    ALREADY_ENDED = "already-ended"  # it ended before this job ran
    PARKED = "parked"  # its agent cannot take it now; it waits in the agent's pending set
    DONE = "done"  # the agent reported its end, or the hub settled it
    CANCELLED = "cancelled"  # cancelled, and the agent did not confirm within the grace period
    AGENT_LOST = "agent-lost"  # its agent stayed away past agent_lost_timeout


# ---- transitions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """A status change of one execution, the event that announces it and the fields set with it."""

    execution_id: str
    status: ExecutionStatus
    event: CommandStatus
    fields: dict[str, Any] = field(default_factory=dict)

    def script_args(self, maxlen: int) -> list[Any]:
        args: list[Any] = [self.status.value, self.status.rank, maxlen, encode(self.event)]
        for name, value in self.fields.items():
            args.extend((name, "" if value is None else value))
        return args


def _event(ref: ExecutionRef, status: ExecutionStatus, **extra: Any) -> CommandStatus:
    return CommandStatus(
        payload=CommandStatusPayload(command_id=ref.command_id, agent_id=ref.agent_id, status=status, **extra)
    )


def queued_event(ref: ExecutionRef) -> CommandStatus:
    """An execution is created QUEUED (``executions.create``); this announces it."""
    return _event(ref, ExecutionStatus.QUEUED)


def dispatched(ref: ExecutionRef, at: int) -> Transition:
    """The first COMMAND_REQUEST went to the agent (the hub at admission, or the job)."""
    event = _event(ref, ExecutionStatus.DISPATCHED, queue_position=0, started_at=at)
    return Transition(ref.id, ExecutionStatus.DISPATCHED, event, {"started_at": at})


def executing(ref: ExecutionRef, at: int) -> Transition:
    """The agent acknowledged it and runs it. (The start stays the dispatch's: see ``started``.)"""
    event = _event(ref, ExecutionStatus.EXECUTING, queue_position=0, started_at=at)
    return Transition(ref.id, ExecutionStatus.EXECUTING, event)


def reported(
    ref: ExecutionRef,
    report: CommandCompletePayload,
    status: ExecutionStatus,
    reason: EndReason,
    started_at: int | None,
    at: int,
) -> Transition:
    """The agent reported the end (COMMAND_COMPLETE); ``status`` and ``reason`` are what the hub made
    of it (a cancel's reason when the agent gave none)."""
    event = _event(
        ref,
        status,
        end_reason=reason,
        error=report.error,
        completed_at=at,
        started_at=started_at,
        tokens_used=report.tokens_used,
        cost_usd=report.cost_usd,
        output_lines=report.output_lines,
        changes=report.changes,
    )
    fields = {
        "end_reason": reason.value,
        "error": report.error or "",
        "completed_at": at,
        # Kept with the status so a read before the store catches up is whole.
        "tokens_used": report.tokens_used,
        "cost_usd": report.cost_usd,
        "output_lines": report.output_lines or 0,
        "changes": report.changes.model_dump_json(by_alias=True) if report.changes is not None else "",
    }
    return Transition(ref.id, status, event, fields)


def ended_by_hub(
    ref: ExecutionRef, status: ExecutionStatus, reason: EndReason, error: str | None, at: int
) -> Transition:
    """The hub ended it without the agent's word: taken out of the queue, the time limit's grace ran
    out, the agent was lost or restarted without it, the supervising worker died."""
    assert status.terminal, status
    event = _event(ref, status, end_reason=reason, error=error or None, completed_at=at)
    return Transition(
        ref.id, status, event, {"end_reason": reason.value, "error": error or "", "completed_at": at}
    )


def apply_sync(conn: redis.Redis, transition: Transition, maxlen: int) -> bool:
    """Write the transition and its event unless the execution is already that far. True if written."""
    script = conn.register_script(ADVANCE_STATUS)
    result = script(
        keys=[keys.execution(transition.execution_id), keys.EVENTS_STREAM],
        args=transition.script_args(maxlen),
    )
    return int(result) == 1


async def apply(client: aioredis.Redis, transition: Transition, maxlen: int) -> bool:
    """``apply_sync`` for the hub's event loop."""
    script = client.register_script(ADVANCE_STATUS)
    result = await script(
        keys=[keys.execution(transition.execution_id), keys.EVENTS_STREAM],
        args=transition.script_args(maxlen),
    )
    return int(result) == 1
