"""Enumerations of the wire protocol. Values are UPPER_SNAKE on the wire, as in the original protocol."""

from __future__ import annotations

from enum import StrEnum


class AgentType(StrEnum):
    CLAUDE = "CLAUDE"
    GEMINI = "GEMINI"
    CODEX = "CODEX"
    SHELL = "SHELL"


class AgentStatus(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    CONNECTING = "CONNECTING"
    ERROR = "ERROR"


class AgentActivity(StrEnum):
    IDLE = "IDLE"
    PROCESSING = "PROCESSING"
    QUEUED = "QUEUED"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"
    #: Blocked on an approval (a tool permission) that a user can give from the hub.
    WAITING_INPUT = "WAITING_INPUT"


class CommandType(StrEnum):
    NATURAL = "NATURAL"
    INVESTIGATE = "INVESTIGATE"
    REVIEW = "REVIEW"
    PLAN = "PLAN"
    SYNTHESIZE = "SYNTHESIZE"


class ExecutionStatus(StrEnum):
    """Status of one command on one agent. Ordered: a record only ever moves forward (see RANK)."""

    PENDING = "PENDING"  # waiting for an offline agent to return
    QUEUED = "QUEUED"
    DISPATCHED = "DISPATCHED"  # COMMAND_REQUEST sent, no ACK yet
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def rank(self) -> int:
        return _RANK[self]


TERMINAL_STATUSES = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED})
_RANK = {
    ExecutionStatus.PENDING: 0,
    ExecutionStatus.QUEUED: 0,
    ExecutionStatus.DISPATCHED: 1,
    ExecutionStatus.EXECUTING: 2,
    ExecutionStatus.COMPLETED: 3,
    ExecutionStatus.FAILED: 3,
    ExecutionStatus.CANCELLED: 3,
}


class AckStatus(StrEnum):
    RECEIVED = "RECEIVED"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"


class CompletionStatus(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class EndReason(StrEnum):
    """Why an execution ended, recorded with its status."""

    FINISHED = "FINISHED"
    ERROR = "ERROR"
    USER_CANCEL = "USER_CANCEL"
    INTERRUPTED = "INTERRUPTED"
    TIME_LIMIT = "TIME_LIMIT"
    TOKEN_BUDGET = "TOKEN_BUDGET"
    EMERGENCY_STOP = "EMERGENCY_STOP"
    AGENT_STOPPED = "AGENT_STOPPED"
    AGENT_LOST = "AGENT_LOST"
    #: The agent came back without it: its wrapper was restarted (crash, kill, reboot) while it ran.
    AGENT_RESTARTED = "AGENT_RESTARTED"
    WORKER_LOST = "WORKER_LOST"


class StreamType(StrEnum):
    STDOUT = "STDOUT"
    STDERR = "STDERR"


class TraceType(StrEnum):
    LLM_PROMPT = "LLM_PROMPT"
    TOOL_CALL = "TOOL_CALL"
    RESPONSE = "RESPONSE"


class ReportStatus(StrEnum):
    DRAFT = "DRAFT"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETE = "COMPLETE"


class ControlAction(StrEnum):
    STOP = "STOP"
    RESTART = "RESTART"
    PAUSE = "PAUSE"
    RESUME = "RESUME"


class ErrorCode(StrEnum):
    AUTH_FAILED = "AUTH_FAILED"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    RATE_LIMIT = "RATE_LIMIT"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    NOT_FOUND = "NOT_FOUND"
    AGENT_OFFLINE = "AGENT_OFFLINE"
    CONFLICT = "CONFLICT"


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    INFO = "INFO"
