"""The WebSocket protocol: every message as a pydantic model, one discriminated union per direction.

Every message is ``{"type", "id", "timestamp", "payload"}`` (camelCase payload fields, UPPER_SNAKE
enum values), so clients of the original TypeScript protocol can speak to this hub. Messages from the
hub to a TUI that come from the hub's event stream also carry ``position``: the stream position a
client passes back as ``resumeFrom`` after a reconnect. (TERMINAL_STREAM of an agent on the TUI's own
hub comes before it reaches the stream, without one: see docs/protocol.md.)

Parse with :func:`parse_agent_message` / :func:`parse_dashboard_message` (and the hub-side ones);
build with the classes, serialise with ``.to_json()``. Nothing builds message dicts by hand.
"""

from __future__ import annotations

import time
from enum import StrEnum
from functools import cache
from random import getrandbits
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter
from pydantic_core import to_json

from shared.api import (
    Agent,
    AgentQueue,
    AuditLog,
    ChangeSet,
    Command,
    CommandCreate,
    EmergencyStopResult,
    ExecutionConstraints,
    HealthMetrics,
    Report,
    ReportContent,
    TraceEventRecord,
)
from shared.enums import (
    AckStatus,
    AgentType,
    CommandType,
    CompletionStatus,
    ControlAction,
    EndReason,
    ErrorCode,
    ExecutionStatus,
    ReportStatus,
    StreamType,
    TraceType,
)
from shared.model import (
    ID_PATTERN,
    MAX_INT,
    EpochMs,
    FreeJson,
    FreeJsonObject,
    Id,
    NonNegInt,
    SBool,
    SInt,
    SStr,
    WireModel,
)

PROTOCOL_VERSION = 1
#: Largest message an agent may send, and a TUI (bytes of the text frame).
MAX_AGENT_MESSAGE_BYTES = 1024 * 1024
MAX_DASHBOARD_MESSAGE_BYTES = 512 * 1024
AGENT_MESSAGES_PER_SECOND = 100
DASHBOARD_MESSAGES_PER_SECOND = 50
MAX_CONCURRENT_COMMANDS_PER_AGENT = 5
HEARTBEAT_INTERVAL_S = 30
MISSED_HEARTBEATS_OFFLINE = 3


class MessageType(StrEnum):
    # agent -> hub
    AGENT_CONNECT = "AGENT_CONNECT"
    AGENT_HEARTBEAT = "AGENT_HEARTBEAT"
    COMMAND_ACK = "COMMAND_ACK"
    TERMINAL_OUTPUT = "TERMINAL_OUTPUT"
    TRACE_EVENT = "TRACE_EVENT"
    COMMAND_COMPLETE = "COMMAND_COMPLETE"
    INVESTIGATION_REPORT = "INVESTIGATION_REPORT"
    AGENT_ERROR = "AGENT_ERROR"
    NEEDS_INPUT = "NEEDS_INPUT"
    AGENT_BATCH = "AGENT_BATCH"
    # hub -> agent
    COMMAND_REQUEST = "COMMAND_REQUEST"
    INPUT_RESPONSE = "INPUT_RESPONSE"
    COMMAND_CANCEL = "COMMAND_CANCEL"
    AGENT_CONTROL = "AGENT_CONTROL"
    TOKEN_REFRESH = "TOKEN_REFRESH"
    SERVER_HEARTBEAT = "SERVER_HEARTBEAT"
    # dashboard (TUI) -> hub
    DASHBOARD_CONNECT = "DASHBOARD_CONNECT"
    COMMAND_SUBMIT = "COMMAND_SUBMIT"
    COMMAND_CANCEL_REQUEST = "COMMAND_CANCEL_REQUEST"
    AGENT_CONTROL_REQUEST = "AGENT_CONTROL_REQUEST"
    QUEUE_REORDER = "QUEUE_REORDER"
    EMERGENCY_STOP = "EMERGENCY_STOP"
    INPUT_RESPONSE_REQUEST = "INPUT_RESPONSE_REQUEST"
    PING = "PING"
    # hub -> dashboard
    DASHBOARD_READY = "DASHBOARD_READY"
    AGENT_STATUS = "AGENT_STATUS"
    COMMAND_STATUS = "COMMAND_STATUS"
    COMMAND_ACCEPTED = "COMMAND_ACCEPTED"
    TERMINAL_STREAM = "TERMINAL_STREAM"
    TRACE_UPDATE = "TRACE_UPDATE"
    QUEUE_UPDATE = "QUEUE_UPDATE"
    REPORT_READY = "REPORT_READY"
    AUDIT_EVENT = "AUDIT_EVENT"
    EMERGENCY_STOP_RESULT = "EMERGENCY_STOP_RESULT"
    REQUEST_OK = "REQUEST_OK"
    PONG = "PONG"
    EVENT_BATCH = "EVENT_BATCH"
    INPUT_REQUIRED = "INPUT_REQUIRED"
    # both ways
    ERROR = "ERROR"


def to_id(value: str, fallback: str = "id") -> str:
    """An arbitrary string (a CLI's tool-use id, say) made into a protocol id: letters, digits and
    ``_.:-`` only, at most 128 characters."""
    if ID_PATTERN.fullmatch(value):
        return value  # the common case, a CLI's own ids: one regex match, not a loop over characters
    # ASCII only: str.isalnum() takes any script's letters, which Id refuses.
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in "_.:-" else "-" for c in value)[:128]
    return cleaned or fallback


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives, at a fraction of the cost:
    every message the hub relays gets one. The bits come from ``random`` (reseeded in every forked
    child), not the system's entropy source: a message id must be unique, not secret, and a
    ``getrandom`` system call per line of output was a measurable share of the hub's time."""
    n = (getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: The version (4) and variant (RFC 4122) bits of a UUID, for ``new_id``.
_UUID4_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_SET = (0x4 << 76) | (0x2 << 62)


class Envelope(WireModel):
    id: Id = Field(default_factory=new_id)
    timestamp: EpochMs = Field(default_factory=now_ms)


# ==== agent -> hub ==================================================================================


class AgentConnectPayload(WireModel):
    agent_id: Id
    agent_type: AgentType
    version: Annotated[str, Field(max_length=200, strict=True)] = ""
    host_machine: Annotated[str, Field(max_length=255, strict=True)] = ""
    capabilities: FreeJsonObject = Field(default_factory=dict)
    protocol_version: SInt = PROTOCOL_VERSION
    #: Executions the wrapper still runs or holds results for after a reconnect (command ids).
    active_commands: Annotated[list[Id], Field(max_length=100)] = Field(default_factory=list)


class AgentConnect(Envelope):
    type: Literal[MessageType.AGENT_CONNECT] = MessageType.AGENT_CONNECT
    payload: AgentConnectPayload


class AgentHeartbeatPayload(WireModel):
    agent_id: Id
    health_metrics: HealthMetrics


class AgentHeartbeat(Envelope):
    type: Literal[MessageType.AGENT_HEARTBEAT] = MessageType.AGENT_HEARTBEAT
    payload: AgentHeartbeatPayload


class CommandAckPayload(WireModel):
    command_id: Id
    agent_id: Id
    status: AckStatus


class CommandAck(Envelope):
    type: Literal[MessageType.COMMAND_ACK] = MessageType.COMMAND_ACK
    payload: CommandAckPayload


class TerminalOutputPayload(WireModel):
    command_id: Id
    agent_id: Id
    stream_type: StreamType
    content: SStr
    ansi_codes: SBool = False
    sequence: NonNegInt


class TerminalOutput(Envelope):
    type: Literal[MessageType.TERMINAL_OUTPUT] = MessageType.TERMINAL_OUTPUT
    payload: TerminalOutputPayload


class TraceEventPayload(WireModel):
    command_id: Id
    agent_id: Id
    trace_id: Id
    parent_id: Id | None = None
    type: TraceType
    name: Annotated[str, Field(max_length=500, strict=True)]
    content: FreeJson = None
    started_at: EpochMs | None = None
    completed_at: EpochMs | None = None
    duration_ms: NonNegInt | None = None
    tokens_used: NonNegInt = 0
    error: SStr | None = None


class TraceEvent(Envelope):
    type: Literal[MessageType.TRACE_EVENT] = MessageType.TRACE_EVENT
    payload: TraceEventPayload


class CommandCompletePayload(WireModel):
    command_id: Id
    agent_id: Id
    status: CompletionStatus
    error: SStr | None = None
    execution_time: NonNegInt = 0
    tokens_used: NonNegInt = 0
    cost_usd: Annotated[float, Field(ge=0, strict=True)] = 0.0
    #: Which limit or action ended the command, when it did not simply finish.
    reason: EndReason | None = None
    exit_code: SInt | None = None
    #: Output sequence numbers sent for this command (the last is output_lines - 1).
    output_lines: NonNegInt | None = None
    #: What the command changed in the agent's working tree, when it works in a git repository.
    changes: ChangeSet | None = None


class CommandComplete(Envelope):
    type: Literal[MessageType.COMMAND_COMPLETE] = MessageType.COMMAND_COMPLETE
    payload: CommandCompletePayload


class InvestigationReportPayload(WireModel):
    command_id: Id
    agent_id: Id
    report_id: Id
    status: ReportStatus
    title: Annotated[str, Field(max_length=500, strict=True)]
    summary: SStr = ""
    content: ReportContent = Field(default_factory=ReportContent)


class InvestigationReport(Envelope):
    type: Literal[MessageType.INVESTIGATION_REPORT] = MessageType.INVESTIGATION_REPORT
    payload: InvestigationReportPayload


class AgentErrorPayload(WireModel):
    agent_id: Id
    error_type: Annotated[str, Field(max_length=100, strict=True)]
    message: SStr
    recoverable: SBool = True
    details: FreeJson = None


class AgentError(Envelope):
    type: Literal[MessageType.AGENT_ERROR] = MessageType.AGENT_ERROR
    payload: AgentErrorPayload


class NeedsInputPayload(WireModel):
    """The agent is blocked on an approval: a tool permission the CLI asks for."""

    command_id: Id
    agent_id: Id
    request_id: Id
    tool_name: Annotated[str, Field(max_length=200, strict=True)]
    tool_input: FreeJson = None
    #: True when the CLI waits for an answer the hub can give (Claude's stdio permission prompt);
    #: False when the tool was denied already (the user has to change the agent's permissions).
    can_answer: SBool = True


class NeedsInput(Envelope):
    type: Literal[MessageType.NEEDS_INPUT] = MessageType.NEEDS_INPUT
    payload: NeedsInputPayload


# ==== hub -> agent ==================================================================================


class CommandRequestPayload(WireModel):
    command_id: Id
    content: SStr
    type: CommandType
    priority: SInt
    execution_constraints: ExecutionConstraints = Field(default_factory=ExecutionConstraints)


class CommandRequest(Envelope):
    type: Literal[MessageType.COMMAND_REQUEST] = MessageType.COMMAND_REQUEST
    payload: CommandRequestPayload


class CommandCancelPayload(WireModel):
    command_id: Id
    reason: SStr = ""
    end_reason: EndReason = EndReason.USER_CANCEL


class CommandCancel(Envelope):
    type: Literal[MessageType.COMMAND_CANCEL] = MessageType.COMMAND_CANCEL
    payload: CommandCancelPayload


class AgentControlPayload(WireModel):
    action: ControlAction
    reason: SStr = ""


class AgentControl(Envelope):
    type: Literal[MessageType.AGENT_CONTROL] = MessageType.AGENT_CONTROL
    payload: AgentControlPayload


class InputResponsePayload(WireModel):
    command_id: Id
    request_id: Id
    allow: SBool
    message: Annotated[str, Field(max_length=2000, strict=True)] = ""


class InputResponse(Envelope):
    type: Literal[MessageType.INPUT_RESPONSE] = MessageType.INPUT_RESPONSE
    payload: InputResponsePayload


class TokenRefreshPayload(WireModel):
    access_token: SStr
    expires_in: SInt


class TokenRefresh(Envelope):
    type: Literal[MessageType.TOKEN_REFRESH] = MessageType.TOKEN_REFRESH
    payload: TokenRefreshPayload


class ServerHeartbeatPayload(WireModel):
    server_time: EpochMs
    next_ping_expected: SInt


class ServerHeartbeat(Envelope):
    type: Literal[MessageType.SERVER_HEARTBEAT] = MessageType.SERVER_HEARTBEAT
    payload: ServerHeartbeatPayload


# ==== both ways =====================================================================================


class ErrorPayload(WireModel):
    code: ErrorCode
    message: SStr
    details: FreeJson = None
    recoverable: SBool = True
    #: The id of the message this answers, when there is one.
    request_id: Id | None = None


class Error(Envelope):
    type: Literal[MessageType.ERROR] = MessageType.ERROR
    payload: ErrorPayload


# ==== dashboard (TUI) -> hub =======================================================================


class DashboardConnectPayload(WireModel):
    protocol_version: SInt = PROTOCOL_VERSION
    #: The last ``position`` the client saw; the hub replays everything after it.
    resume_from: Annotated[str, Field(max_length=64, pattern=r"^[0-9]+-[0-9]+$", strict=True)] | None = None


class DashboardConnect(Envelope):
    type: Literal[MessageType.DASHBOARD_CONNECT] = MessageType.DASHBOARD_CONNECT
    payload: DashboardConnectPayload = Field(default_factory=DashboardConnectPayload)


class CommandSubmit(Envelope):
    type: Literal[MessageType.COMMAND_SUBMIT] = MessageType.COMMAND_SUBMIT
    payload: CommandCreate


class CommandCancelRequestPayload(WireModel):
    command_id: Id
    agent_id: Id | None = None
    reason: Annotated[str, Field(max_length=1000, strict=True)] = ""


class CommandCancelRequest(Envelope):
    type: Literal[MessageType.COMMAND_CANCEL_REQUEST] = MessageType.COMMAND_CANCEL_REQUEST
    payload: CommandCancelRequestPayload


class AgentControlRequestPayload(WireModel):
    agent_id: Id
    action: ControlAction
    reason: Annotated[str, Field(max_length=1000, strict=True)] = ""


class AgentControlRequest(Envelope):
    type: Literal[MessageType.AGENT_CONTROL_REQUEST] = MessageType.AGENT_CONTROL_REQUEST
    payload: AgentControlRequestPayload


class QueueReorderPayload(WireModel):
    agent_id: Id
    order: Annotated[list[Id], Field(min_length=1, max_length=10_000)]


class QueueReorderMessage(Envelope):
    type: Literal[MessageType.QUEUE_REORDER] = MessageType.QUEUE_REORDER
    payload: QueueReorderPayload


class EmergencyStopPayload(WireModel):
    reason: Annotated[str, Field(max_length=1000, strict=True)] = ""


class EmergencyStop(Envelope):
    type: Literal[MessageType.EMERGENCY_STOP] = MessageType.EMERGENCY_STOP
    payload: EmergencyStopPayload = Field(default_factory=EmergencyStopPayload)


class InputResponseRequestPayload(WireModel):
    command_id: Id
    agent_id: Id | None = None
    request_id: Id
    allow: SBool
    message: Annotated[str, Field(max_length=2000, strict=True)] = ""


class InputResponseRequest(Envelope):
    type: Literal[MessageType.INPUT_RESPONSE_REQUEST] = MessageType.INPUT_RESPONSE_REQUEST
    payload: InputResponseRequestPayload


class PingPayload(WireModel):
    pass


class Ping(Envelope):
    type: Literal[MessageType.PING] = MessageType.PING
    payload: PingPayload = Field(default_factory=PingPayload)


# ==== hub -> dashboard =============================================================================


class StreamEnvelope(Envelope):
    #: Position in the hub's event stream; pass the last one seen as ``resumeFrom``.
    position: SStr | None = None


class DashboardReadyPayload(WireModel):
    protocol_version: SInt
    server_time: EpochMs
    hub_id: SStr
    user: SStr
    position: SStr
    #: False when ``resumeFrom`` was older than the stream keeps: refetch state over REST.
    resumed: SBool
    agents: list[Agent]


class DashboardReady(Envelope):
    type: Literal[MessageType.DASHBOARD_READY] = MessageType.DASHBOARD_READY
    payload: DashboardReadyPayload


class AgentStatusMessage(StreamEnvelope):
    type: Literal[MessageType.AGENT_STATUS] = MessageType.AGENT_STATUS
    payload: Agent


class CommandStatusPayload(WireModel):
    command_id: Id
    agent_id: Id
    status: ExecutionStatus
    end_reason: EndReason | None = None
    queue_position: NonNegInt | None = None
    error: SStr | None = None
    started_at: EpochMs | None = None
    completed_at: EpochMs | None = None
    tokens_used: NonNegInt = 0
    cost_usd: Annotated[float, Field(ge=0, strict=True)] = 0.0
    output_lines: NonNegInt | None = None
    changes: ChangeSet | None = None


class CommandStatus(StreamEnvelope):
    type: Literal[MessageType.COMMAND_STATUS] = MessageType.COMMAND_STATUS
    payload: CommandStatusPayload


class CommandAcceptedPayload(WireModel):
    request_id: Id
    command: Command


class CommandAccepted(Envelope):
    type: Literal[MessageType.COMMAND_ACCEPTED] = MessageType.COMMAND_ACCEPTED
    payload: CommandAcceptedPayload


class TerminalStreamPayload(WireModel):
    command_id: Id
    agent_id: Id
    agent_name: SStr
    agent_type: AgentType
    stream_type: StreamType
    content: SStr
    ansi_codes: SBool = False
    sequence: NonNegInt
    emitted_at: EpochMs


class TerminalStream(StreamEnvelope):
    type: Literal[MessageType.TERMINAL_STREAM] = MessageType.TERMINAL_STREAM
    payload: TerminalStreamPayload


class TraceUpdate(StreamEnvelope):
    type: Literal[MessageType.TRACE_UPDATE] = MessageType.TRACE_UPDATE
    payload: TraceEventRecord


class QueueUpdate(StreamEnvelope):
    type: Literal[MessageType.QUEUE_UPDATE] = MessageType.QUEUE_UPDATE
    payload: AgentQueue


class ReportReady(StreamEnvelope):
    type: Literal[MessageType.REPORT_READY] = MessageType.REPORT_READY
    payload: Report


class AuditEvent(StreamEnvelope):
    type: Literal[MessageType.AUDIT_EVENT] = MessageType.AUDIT_EVENT
    payload: AuditLog


class InputRequiredPayload(NeedsInputPayload):
    agent_name: SStr = ""
    at: EpochMs = 0


class InputRequired(StreamEnvelope):
    """An agent waits for an approval: the TUI alerts, and may answer with INPUT_RESPONSE_REQUEST."""

    type: Literal[MessageType.INPUT_REQUIRED] = MessageType.INPUT_REQUIRED
    payload: InputRequiredPayload


class EmergencyStopResultPayload(EmergencyStopResult):
    request_id: Id | None = None


class EmergencyStopResultMessage(StreamEnvelope):
    type: Literal[MessageType.EMERGENCY_STOP_RESULT] = MessageType.EMERGENCY_STOP_RESULT
    payload: EmergencyStopResultPayload


class RequestOkPayload(WireModel):
    request_id: Id


class RequestOk(Envelope):
    type: Literal[MessageType.REQUEST_OK] = MessageType.REQUEST_OK
    payload: RequestOkPayload


class Pong(Envelope):
    type: Literal[MessageType.PONG] = MessageType.PONG
    payload: ServerHeartbeatPayload


#: Events the hub relays from its stream to every TUI, in stream order.
StreamEvent = Annotated[
    AgentStatusMessage
    | CommandStatus
    | TerminalStream
    | TraceUpdate
    | QueueUpdate
    | ReportReady
    | AuditEvent
    | EmergencyStopResultMessage
    | InputRequired,
    Field(discriminator="type"),
]


class EventBatchPayload(WireModel):
    events: list[StreamEvent]


class EventBatch(Envelope):
    """Several stream events in one frame: the hub batches what piled up for a client."""

    type: Literal[MessageType.EVENT_BATCH] = MessageType.EVENT_BATCH
    payload: EventBatchPayload


def stream_frame(event_json: str | bytes, position: str) -> str:
    """The frame a TUI gets for a stream event: its JSON as stored (serialised without
    ``position``, see :func:`stream_json`) with the stream position added, so the relay neither
    parses nor serialises events (tests/shared check the result parses to the same event)."""
    text = event_json.decode() if isinstance(event_json, bytes) else event_json
    return f'{{"position":"{position}",{text[1:]}'


def stream_json(event: StreamEnvelope) -> str:
    """A stream event as stored in the hub's event stream: without ``position``, which the stream
    itself assigns."""
    return event.model_dump_json(by_alias=True, exclude={"position"})


class TerminalStreamEncoder:
    """``stream_json`` of the TERMINAL_STREAM event for a validated TERMINAL_OUTPUT of one agent: byte
    for byte what ``stream_json(TerminalStream(payload=TerminalStreamPayload(...)))`` gives
    (tests/shared check the equality), in a tenth of the time, for the hub's hottest path. The agent's
    part is serialised once per connection. The values come validated (the agent's message, the
    agent's record): ids match ``Id``, whose characters need no escaping in JSON; text goes through
    pydantic's own JSON encoder; the store and every TUI validate the event when they read it."""

    __slots__ = ("_agent",)

    def __init__(self, *, agent_id: str, agent_name: str, agent_type: AgentType) -> None:
        self._agent = (
            f'"agentId":{to_json(agent_id).decode()},"agentName":{to_json(agent_name).decode()},'
            f'"agentType":"{agent_type.value}"'
        )

    def encode(self, output: TerminalOutputPayload, *, emitted_at: int) -> str:
        # StrEnum members format as their value; the command id is an ``Id`` (JSON-safe as it is).
        return (
            f'{{"id":"{new_id()}","timestamp":{now_ms()},"type":"TERMINAL_STREAM",'
            f'"payload":{{"commandId":"{output.command_id}",{self._agent},'
            f'"streamType":"{output.stream_type}","content":{to_json(output.content).decode()},'
            f'"ansiCodes":{"true" if output.ansi_codes else "false"},'
            f'"sequence":{int(output.sequence)},"emittedAt":{int(emitted_at)}}}}}'
        )


def trace_event_json(
    *,
    command_id: str,
    agent_id: str,
    trace_id: str,
    parent_id: str | None,
    type: TraceType,
    name: str,
    content: Any,
    started_at: int | None,
    completed_at: int | None,
    duration_ms: int | None,
    tokens_used: int,
    error: str | None,
) -> str:
    """``TraceEvent(payload=TraceEventPayload(...)).to_json()``, byte for byte (tests/shared check
    the equality), for the wrapper's hottest path: building and validating the two models cost
    ~35 µs a trace event, a model turn each, more than the CLI took to print it. The caller gives
    valid ids (the executor: through ``to_id``) and content (through ``bounded_json``); the name is
    cut to 500 characters and counts are clamped here, text goes through pydantic's JSON encoder,
    and the hub validates the message on arrival."""

    def count(value: int | None) -> str:
        return "null" if value is None else str(min(max(0, int(value)), MAX_INT))

    parent = "null" if parent_id is None else f'"{parent_id}"'
    failure = "null" if error is None else to_json(error).decode()
    return (
        f'{{"id":"{new_id()}","timestamp":{now_ms()},"type":"TRACE_EVENT",'
        f'"payload":{{"commandId":"{command_id}","agentId":"{agent_id}","traceId":"{trace_id}",'
        f'"parentId":{parent},"type":"{type}","name":{to_json(name[:500]).decode()},'
        f'"content":{to_json(content).decode()},"startedAt":{count(started_at)},'
        f'"completedAt":{count(completed_at)},"durationMs":{count(duration_ms)},'
        f'"tokensUsed":{count(tokens_used)},"error":{failure}}}}}'
    )


def trace_update_json(trace: TraceEventPayload) -> str:
    """``stream_json`` of the TRACE_UPDATE event for a validated TRACE_EVENT (from the agent it names):
    the record has the payload's fields in the payload's order, so the payload's JSON is the
    record's (tests/shared check the equality). Each model turn and tool call of every agent comes
    through here: this skips a dump, a validation and a model."""
    return (
        f'{{"id":"{new_id()}","timestamp":{now_ms()},"type":"TRACE_UPDATE",'
        f'"payload":{trace.model_dump_json(by_alias=True)}}}'
    )


def agent_batch_frame(frames: list[str]) -> str:
    """The JSON of ``AgentBatch`` holding the already serialised agent messages ``frames`` (what
    ``AgentBatch(payload=AgentBatchPayload(messages=...)).to_json()`` gives)."""
    envelope = Envelope()
    return (
        f'{{"id":"{envelope.id}","timestamp":{envelope.timestamp},"type":"{MessageType.AGENT_BATCH.value}",'
        f'"payload":{{"messages":[{",".join(frames)}]}}}}'
    )


def event_batch_frame(frames: list[str]) -> str:
    """The JSON of ``EventBatch`` holding the already serialised stream events ``frames``.

    Byte for byte what ``EventBatch(payload=EventBatchPayload(events=...)).to_json()`` gives, without
    parsing and serialising every event again for every client (tests/shared check the equality).
    """
    envelope = Envelope()
    return (
        f'{{"id":"{envelope.id}","timestamp":{envelope.timestamp},"type":"{MessageType.EVENT_BATCH.value}",'
        f'"payload":{{"events":[{",".join(frames)}]}}}}'
    )


# ==== unions ========================================================================================

#: What an agent may put in an AGENT_BATCH: everything it sends but AGENT_CONNECT and batches.
AgentReport = Annotated[
    AgentHeartbeat
    | CommandAck
    | TerminalOutput
    | TraceEvent
    | CommandComplete
    | InvestigationReport
    | AgentError
    | NeedsInput
    | Error,
    Field(discriminator="type"),
]


class AgentBatchPayload(WireModel):
    messages: Annotated[list[AgentReport], Field(min_length=1, max_length=2000)]


class AgentBatch(Envelope):
    """Several agent messages in one frame, handled in order; one message for the rate limit. The
    wrapper sends what piled up this way, so a chatty CLI is mirrored whole within the limit."""

    type: Literal[MessageType.AGENT_BATCH] = MessageType.AGENT_BATCH
    payload: AgentBatchPayload


AgentToHub = Annotated[
    AgentConnect
    | AgentHeartbeat
    | CommandAck
    | TerminalOutput
    | TraceEvent
    | CommandComplete
    | InvestigationReport
    | AgentError
    | NeedsInput
    | AgentBatch
    | Error,
    Field(discriminator="type"),
]
HubToAgent = Annotated[
    CommandRequest | CommandCancel | AgentControl | InputResponse | TokenRefresh | ServerHeartbeat | Error,
    Field(discriminator="type"),
]
DashboardToHub = Annotated[
    DashboardConnect
    | CommandSubmit
    | CommandCancelRequest
    | AgentControlRequest
    | QueueReorderMessage
    | EmergencyStop
    | InputResponseRequest
    | Ping,
    Field(discriminator="type"),
]
HubToDashboard = Annotated[
    DashboardReady
    | AgentStatusMessage
    | CommandStatus
    | CommandAccepted
    | TerminalStream
    | TraceUpdate
    | QueueUpdate
    | ReportReady
    | AuditEvent
    | EmergencyStopResultMessage
    | InputRequired
    | RequestOk
    | Pong
    | EventBatch
    | Error,
    Field(discriminator="type"),
]


# Each union's validator is built on first use (see ``WireModel``'s ``defer_build``): a wrapper never
# builds the dashboards' side.
@cache
def _agent_to_hub() -> TypeAdapter[AgentToHub]:
    return TypeAdapter(AgentToHub)


@cache
def _hub_to_agent() -> TypeAdapter[HubToAgent]:
    return TypeAdapter(HubToAgent)


@cache
def _dashboard_to_hub() -> TypeAdapter[DashboardToHub]:
    return TypeAdapter(DashboardToHub)


@cache
def _hub_to_dashboard() -> TypeAdapter[HubToDashboard]:
    return TypeAdapter(HubToDashboard)


@cache
def _stream_event() -> TypeAdapter[StreamEvent]:
    return TypeAdapter(StreamEvent)


def parse_agent_message(data: str | bytes) -> AgentToHub:
    """Validate a frame an agent sent. Raises pydantic.ValidationError."""
    return _agent_to_hub().validate_json(data)


def parse_hub_to_agent(data: str | bytes) -> HubToAgent:
    return _hub_to_agent().validate_json(data)


def parse_dashboard_message(data: str | bytes) -> DashboardToHub:
    return _dashboard_to_hub().validate_json(data)


def parse_hub_to_dashboard(data: str | bytes) -> HubToDashboard:
    return _hub_to_dashboard().validate_json(data)


def parse_stream_event(data: str | bytes) -> StreamEvent:
    return _stream_event().validate_json(data)


def prepare() -> None:
    """Build every message validator now: a hub or TUI does so at start, so that no message pays
    for it on arrival."""
    for adapter in (_agent_to_hub, _hub_to_agent, _dashboard_to_hub, _hub_to_dashboard, _stream_event):
        adapter()


def error(
    code: ErrorCode,
    message: str,
    *,
    details: Any = None,
    recoverable: bool = True,
    request_id: str | None = None,
) -> Error:
    return Error(
        payload=ErrorPayload(
            code=code, message=message, details=details, recoverable=recoverable, request_id=request_id
        )
    )


__all__ = [
    "AGENT_MESSAGES_PER_SECOND",
    "DASHBOARD_MESSAGES_PER_SECOND",
    "HEARTBEAT_INTERVAL_S",
    "MAX_AGENT_MESSAGE_BYTES",
    "MAX_CONCURRENT_COMMANDS_PER_AGENT",
    "MAX_DASHBOARD_MESSAGE_BYTES",
    "MISSED_HEARTBEATS_OFFLINE",
    "PROTOCOL_VERSION",
    "CommandStatusPayload",
    "MessageType",
    "now_ms",
]
