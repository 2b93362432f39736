"""Records the hub serves over REST and pushes to TUIs: agents, commands, output, traces, reports.

These are also the payloads of several dashboard messages, so they live here once.
"""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import ConfigDict, Field, model_validator

from shared.enums import (
    AgentActivity,
    AgentStatus,
    AgentType,
    CommandType,
    ControlAction,
    EndReason,
    ExecutionStatus,
    ReportStatus,
    Severity,
    StreamType,
    TraceType,
)
from shared.model import MAX_INT, EpochMs, Id, NonNegInt, SBool, SFloat, SInt, SStr, WireModel

MAX_COMMAND_CHARS = 100_000
Priority = Annotated[int, Field(ge=0, le=100, strict=True)]
#: A command's time limit (a week at most) and token budget, given with it or by a constraint profile.
TimeLimitMs = Annotated[int, Field(gt=0, le=7 * 24 * 3600 * 1000, strict=True)]
TokenBudget = Annotated[int, Field(gt=0, le=MAX_INT, strict=True)]


class ExecutionConstraints(WireModel):
    time_limit_ms: TimeLimitMs | None = None
    token_budget: TokenBudget | None = None


class HealthMetrics(WireModel):
    cpu_percent: Annotated[float, Field(ge=0, strict=True)] = 0.0
    memory_bytes: NonNegInt = 0
    memory_percent: Annotated[float, Field(ge=0, strict=True)] = 0.0
    process_count: NonNegInt = 0
    uptime_seconds: Annotated[float, Field(ge=0, strict=True)] = 0.0
    commands_processed: NonNegInt = 0
    average_response_ms: Annotated[float, Field(ge=0, strict=True)] = 0.0
    tokens_used: NonNegInt = 0
    cost_usd: Annotated[float, Field(ge=0, strict=True)] = 0.0


class Agent(WireModel):
    id: Id
    name: SStr
    agent_type: AgentType
    status: AgentStatus
    activity: AgentActivity
    host_machine: SStr = ""
    version: SStr = ""
    capabilities: dict[str, object] = Field(default_factory=dict)
    connected_at: EpochMs | None = None
    last_seen: EpochMs | None = None
    queue_length: NonNegInt = 0
    current_command_id: Id | None = None
    health: HealthMetrics = Field(default_factory=HealthMetrics)


# ---- commands -------------------------------------------------------------------------------------


class CommandCreate(WireModel):
    # The rule of _targets below, in the JSON schema: the OpenAPI document states it too.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["broadcast"],
                    "properties": {
                        "broadcast": {"const": True},
                        "targetAgents": {"anyOf": [{"type": "null"}, {"maxItems": 0}]},
                    },
                },
                {
                    "required": ["targetAgents"],
                    "properties": {
                        "targetAgents": {"type": "array", "minItems": 1},
                        "broadcast": {"const": False},
                    },
                },
            ]
        }
    )

    content: Annotated[str, Field(min_length=1, max_length=MAX_COMMAND_CHARS, strict=True)]
    type: CommandType = CommandType.NATURAL
    target_agents: (
        Annotated[list[Id], Field(max_length=500, json_schema_extra={"uniqueItems": True})] | None
    ) = None
    broadcast: SBool = False
    priority: Priority = 50
    execution_constraints: ExecutionConstraints | None = None
    constraint_profile_id: Id | None = None
    preset_id: Id | None = None
    queue_if_offline: SBool = False

    @model_validator(mode="after")
    def _targets(self) -> CommandCreate:
        if self.broadcast and self.target_agents:
            raise ValueError("give either targetAgents or broadcast: true, not both")
        if not self.broadcast and not self.target_agents:
            raise ValueError("give targetAgents (one or more agent ids) or broadcast: true")
        if self.target_agents and len(set(self.target_agents)) != len(self.target_agents):
            raise ValueError("targetAgents has duplicates")
        return self


class FileChange(WireModel):
    path: SStr
    #: added, modified or deleted
    status: SStr = "modified"
    added: NonNegInt = 0
    removed: NonNegInt = 0
    binary: SBool = False


class ChangeSet(WireModel):
    """What a command changed in its agent's working tree (recorded by the wrapper with git)."""

    files: list[FileChange] = Field(default_factory=list)
    added: NonNegInt = 0
    removed: NonNegInt = 0
    #: The unified diff, cut at about 200 KiB (then ``truncated``).
    patch: SStr = ""
    truncated: SBool = False


class Execution(WireModel):
    """One command on one agent."""

    id: Id
    command_id: Id
    agent_id: Id
    agent_name: SStr = ""
    status: ExecutionStatus
    end_reason: EndReason | None = None
    queue_position: NonNegInt | None = None
    created_at: EpochMs
    started_at: EpochMs | None = None
    completed_at: EpochMs | None = None
    error: SStr | None = None
    tokens_used: NonNegInt = 0
    cost_usd: SFloat = 0.0
    output_lines: NonNegInt = 0
    changes: ChangeSet | None = None


class Command(WireModel):
    id: Id
    content: SStr
    type: CommandType
    target_agents: list[Id]
    broadcast: SBool
    status: ExecutionStatus
    priority: SInt
    execution_constraints: ExecutionConstraints
    created_at: EpochMs
    created_by: SStr = ""
    preset_id: Id | None = None
    executions: list[Execution] = Field(default_factory=list)


class QueueItem(WireModel):
    command_id: Id
    execution_id: Id
    position: NonNegInt  # 0 = running, 1.. = waiting
    status: ExecutionStatus
    priority: SInt
    content: SStr
    type: CommandType
    created_at: EpochMs


class AgentQueue(WireModel):
    agent_id: Id
    paused: SBool = False
    items: list[QueueItem]


class QueueReorder(WireModel):
    """The new order of the waiting commands of one agent, by command id, first to run first."""

    order: Annotated[list[Id], Field(min_length=1, max_length=10_000)]


class CancelRequest(WireModel):
    reason: Annotated[str, Field(max_length=1000, strict=True)] = ""
    agent_id: Id | None = None


class ControlRequest(WireModel):
    reason: Annotated[str, Field(max_length=1000, strict=True)] = ""


class InputAnswer(WireModel):
    """A user's answer to an agent waiting for an approval."""

    request_id: Id
    allow: SBool
    message: Annotated[str, Field(max_length=2000, strict=True)] = ""
    agent_id: Id | None = None


class EmergencyStopResult(WireModel):
    cancelled_running: NonNegInt
    cleared_queued: NonNegInt
    agents: NonNegInt
    #: From the request until the last interrupted execution ended (its agent confirms once the
    #: command's processes are gone), or until the wait for them gave up (see ``unsettled``).
    duration_ms: NonNegInt
    #: Interrupted executions that had not ended when the hub answered (their agents did not confirm
    #: within the grace period; their jobs end them).
    unsettled: NonNegInt = 0


# ---- output, traces, reports ----------------------------------------------------------------------


class OutputLine(WireModel):
    command_id: Id
    agent_id: Id
    sequence: NonNegInt
    stream_type: StreamType
    content: SStr
    ansi_codes: SBool = False
    emitted_at: EpochMs


class TraceEventRecord(WireModel):
    command_id: Id
    agent_id: Id
    trace_id: Id
    parent_id: Id | None = None
    type: TraceType
    name: SStr
    content: object = None
    started_at: EpochMs | None = None
    completed_at: EpochMs | None = None
    duration_ms: NonNegInt | None = None
    tokens_used: NonNegInt = 0
    error: SStr | None = None


class Finding(WireModel):
    title: SStr
    severity: Severity = Severity.INFO
    description: SStr = ""
    evidence: list[SStr] = Field(default_factory=list)


class ReportSection(WireModel):
    title: SStr
    content: SStr = ""


class ReportContent(WireModel):
    sections: list[ReportSection] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    recommendations: list[SStr] = Field(default_factory=list)
    raw: SStr | None = None


class Report(WireModel):
    id: Id
    command_id: Id
    agent_id: Id
    status: ReportStatus
    title: SStr
    summary: SStr = ""
    content: ReportContent = Field(default_factory=ReportContent)
    created_at: EpochMs


# ---- presets, constraint profiles, audit -----------------------------------------------------------


class PresetCreate(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=200, strict=True)]
    description: Annotated[str, Field(max_length=2000, strict=True)] = ""
    type: CommandType = CommandType.NATURAL
    content: Annotated[str, Field(min_length=1, max_length=MAX_COMMAND_CHARS, strict=True)]
    target_agents: list[Id] = Field(default_factory=list)
    priority: Priority = 50
    execution_constraints: ExecutionConstraints | None = None


class Preset(PresetCreate):
    id: Id
    variables: list[SStr] = Field(default_factory=list)
    usage_count: NonNegInt = 0
    created_at: EpochMs
    updated_at: EpochMs


class ConstraintProfileCreate(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=200, strict=True)]
    description: Annotated[str, Field(max_length=2000, strict=True)] = ""
    #: The same bounds as ExecutionConstraints: a profile fills in a command's limits.
    time_limit_ms: TimeLimitMs | None = None
    token_budget: TokenBudget | None = None
    is_default: SBool = False


class ConstraintProfile(ConstraintProfileCreate):
    id: Id
    created_at: EpochMs


class AuditLog(WireModel):
    #: Assigned when stored; None on the live event.
    id: SInt | None = None
    at: EpochMs
    actor: SStr
    action: SStr
    agent_id: Id | None = None
    command_id: Id | None = None
    details: dict[str, object] = Field(default_factory=dict)


T = TypeVar("T")


class Page(WireModel, Generic[T]):
    items: list[T]
    total: NonNegInt
    limit: NonNegInt
    offset: NonNegInt


class ControlResult(WireModel):
    agent_id: Id
    action: ControlAction
    delivered: SBool


# ---- auth -----------------------------------------------------------------------------------------


class MagicLinkRequest(WireModel):
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$", strict=True)]


class MagicLinkSent(WireModel):
    sent: SBool
    expires_in: SInt


class VerifyRequest(WireModel):
    """Either the one-time code (with the email) or the token from the magic link."""

    # The rule of _one below, in the JSON schema: the OpenAPI document states it too.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["token"], "properties": {"token": {"type": "string"}}},
                {
                    "required": ["email", "code"],
                    "properties": {"email": {"type": "string", "minLength": 1}, "code": {"type": "string"}},
                },
            ]
        }
    )

    email: Annotated[str, Field(max_length=320, strict=True)] | None = None
    code: Annotated[str, Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$", strict=True)] | None = None
    token: Annotated[str, Field(min_length=16, max_length=200, strict=True)] | None = None

    @model_validator(mode="after")
    def _one(self) -> VerifyRequest:
        if not self.token and not (self.email and self.code):
            raise ValueError("give the magic-link token, or email and code")
        return self


class RefreshRequest(WireModel):
    refresh_token: Annotated[str, Field(min_length=16, max_length=200, strict=True)]


class TokenPair(WireModel):
    access_token: SStr
    refresh_token: SStr
    token_type: SStr = "bearer"
    expires_in: SInt
    email: SStr


class ErrorBody(WireModel):
    error: SStr
    message: SStr
    details: object = None


class ComponentHealth(WireModel):
    ok: SBool
    detail: SStr = ""


class Health(WireModel):
    status: SStr
    version: SStr
    hub_id: SStr
    redis: ComponentHealth
    database: ComponentHealth
    workers: ComponentHealth
    store_backlog: NonNegInt = 0
