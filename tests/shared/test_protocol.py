"""The protocol models: camelCase and UPPER_SNAKE on the wire, strict validation, one union per direction."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.api import CommandCreate, ExecutionConstraints, HealthMetrics
from shared.enums import AgentType, CompletionStatus, StreamType
from shared.protocol import (
    PROTOCOL_VERSION,
    AgentConnect,
    AgentConnectPayload,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    CommandComplete,
    CommandCompletePayload,
    CommandRequest,
    CommandRequestPayload,
    CommandSubmit,
    EventBatch,
    EventBatchPayload,
    TerminalOutput,
    TerminalOutputPayload,
    TerminalStream,
    TerminalStreamPayload,
    parse_agent_message,
    parse_dashboard_message,
    parse_hub_to_agent,
    parse_hub_to_dashboard,
)


def test_wire_shape_is_camel_case_with_envelope() -> None:
    message = TerminalOutput(
        payload=TerminalOutputPayload(
            command_id="c1", agent_id="a1", stream_type=StreamType.STDERR, content="x", sequence=3
        )
    )
    wire = json.loads(message.to_json())
    assert set(wire) == {"type", "id", "timestamp", "payload"}
    assert wire["type"] == "TERMINAL_OUTPUT"
    assert wire["payload"] == {
        "commandId": "c1",
        "agentId": "a1",
        "streamType": "STDERR",
        "content": "x",
        "ansiCodes": False,
        "sequence": 3,
    }
    assert parse_agent_message(message.to_json()) == message


def test_every_direction_round_trips() -> None:
    connect = AgentConnect(payload=AgentConnectPayload(agent_id="a", agent_type=AgentType.CLAUDE))
    assert json.loads(connect.to_json())["payload"]["protocolVersion"] == PROTOCOL_VERSION
    assert parse_agent_message(connect.to_json()) == connect
    heartbeat = AgentHeartbeat(
        payload=AgentHeartbeatPayload(agent_id="a", health_metrics=HealthMetrics(cpu_percent=12.5))
    )
    assert parse_agent_message(heartbeat.to_json()) == heartbeat
    complete = CommandComplete(
        payload=CommandCompletePayload(command_id="c", agent_id="a", status=CompletionStatus.FAILED)
    )
    assert parse_agent_message(complete.to_json()) == complete
    request = CommandRequest(
        payload=CommandRequestPayload(
            command_id="c",
            content="hi",
            type="NATURAL",
            priority=5,
            execution_constraints=ExecutionConstraints(time_limit_ms=1000),
        )
    )
    assert json.loads(request.to_json())["payload"]["executionConstraints"] == {
        "timeLimitMs": 1000,
        "tokenBudget": None,
    }
    assert parse_hub_to_agent(request.to_json()) == request
    submit = CommandSubmit(payload=CommandCreate(content="hi", broadcast=True))
    assert parse_dashboard_message(submit.to_json()) == submit
    stream = TerminalStream(
        payload=TerminalStreamPayload(
            command_id="c",
            agent_id="a",
            agent_name="n",
            agent_type=AgentType.SHELL,
            stream_type=StreamType.STDOUT,
            content="x",
            sequence=0,
            emitted_at=1,
        ),
        position="1-0",
    )
    batch = EventBatch(payload=EventBatchPayload(events=[stream, stream]))
    parsed = parse_hub_to_dashboard(batch.to_json())
    assert parsed.payload.events[1].position == "1-0"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "payload",
    [
        {
            "commandId": "c",
            "agentId": "a",
            "streamType": "STDOUT",
            "content": "x",
            "sequence": "1",
        },  # "1" is no int
        {
            "commandId": "c",
            "agentId": "a",
            "streamType": "stdout",
            "content": "x",
            "sequence": 1,
        },  # enum case
        {"commandId": "c", "agentId": "a", "streamType": "STDOUT", "content": "x", "sequence": -1},
        {"commandId": "c", "agentId": "a", "streamType": "STDOUT", "content": "x", "sequence": 1, "extra": 1},
        {"commandId": "c", "agentId": "a", "streamType": "STDOUT", "content": 5, "sequence": 1},
        {
            "commandId": "c d",
            "agentId": "a",
            "streamType": "STDOUT",
            "content": "x",
            "sequence": 1,
        },  # id charset
        {"agentId": "a", "streamType": "STDOUT", "content": "x", "sequence": 1},
    ],
)
def test_strict_validation_refuses(payload: dict) -> None:  # type: ignore[type-arg]
    frame = json.dumps({"type": "TERMINAL_OUTPUT", "id": "m", "timestamp": 1, "payload": payload})
    with pytest.raises(ValidationError):
        parse_agent_message(frame)


def test_direction_is_enforced() -> None:
    request = CommandRequest(
        payload=CommandRequestPayload(command_id="c", content="x", type="NATURAL", priority=1)
    )
    with pytest.raises(ValidationError):
        parse_agent_message(request.to_json())  # a hub->agent message is not something an agent sends


def test_command_create_targets() -> None:
    with pytest.raises(ValidationError):
        CommandCreate(content="x")
    with pytest.raises(ValidationError):
        CommandCreate(content="x", broadcast=True, target_agents=["a"])
    with pytest.raises(ValidationError):
        CommandCreate(content="x", target_agents=["a", "a"])
    assert (
        CommandCreate.model_validate({"content": "x", "targetAgents": ["a"], "type": "PLAN"}).type == "PLAN"
    )


def test_event_batch_frame_equals_the_model_serialisation() -> None:
    from shared.protocol import event_batch_frame

    events = [
        TerminalStream(
            payload=TerminalStreamPayload(
                command_id="c",
                agent_id="a",
                agent_name="n",
                agent_type=AgentType.SHELL,
                stream_type=StreamType.STDOUT,
                content=f'line "{n}"\n\u00e9',
                sequence=n,
                emitted_at=1,
            ),
            position=f"1-{n}",
        )
        for n in range(3)
    ]
    frame = event_batch_frame([e.to_json() for e in events])
    parsed = parse_hub_to_dashboard(frame)
    assert isinstance(parsed, EventBatch)
    assert parsed.payload.events == events
    assert (
        frame
        == EventBatch(
            id=parsed.id, timestamp=parsed.timestamp, payload=EventBatchPayload(events=events)
        ).to_json()
    )


def test_stream_frame_adds_the_position_to_the_stored_event() -> None:
    from shared.protocol import stream_frame, stream_json

    event = TerminalStream(
        payload=TerminalStreamPayload(
            command_id="c",
            agent_id="a",
            agent_name="n",
            agent_type=AgentType.SHELL,
            stream_type=StreamType.STDOUT,
            content='{"position": "nope"}',
            sequence=0,
            emitted_at=1,
        ),
        position="9-9",
    )
    stored = stream_json(event)
    assert '"position":"9-9"' not in stored
    relayed = parse_hub_to_dashboard(stream_frame(stored.encode(), "12-3"))
    assert relayed == event.model_copy(update={"position": "12-3"})


@pytest.mark.parametrize(
    "content",
    [
        "",
        "plain",
        'q"uote\\ back',
        "tab\tnl\n\r\x00\x1b[31mred\x1b[0m",
        "\u00e9\u4e2d\U0001f600 \u2028",
        "</script>",
    ],
)
@pytest.mark.parametrize("ansi", [False, True])
def test_terminal_stream_encoder_equals_the_model_serialisation(content: str, ansi: bool) -> None:
    from shared.protocol import TerminalStreamEncoder, parse_stream_event, stream_json

    output = TerminalOutputPayload(
        command_id="cmd-1", agent_id="a.1", stream_type=StreamType.STDERR, content=content,
        ansi_codes=ansi, sequence=42,
    )  # fmt: skip
    encoder = TerminalStreamEncoder(agent_id="a.1", agent_name='n "é"', agent_type=AgentType.CODEX)
    data = encoder.encode(output, emitted_at=7)
    event = parse_stream_event(data)
    assert isinstance(event, TerminalStream)
    expected = TerminalStream(
        id=event.id,
        timestamp=event.timestamp,
        payload=TerminalStreamPayload(
            command_id="cmd-1", agent_id="a.1", agent_name='n "é"', agent_type=AgentType.CODEX,
            stream_type=StreamType.STDERR, content=content, ansi_codes=ansi, sequence=42, emitted_at=7,
        ),
    )  # fmt: skip
    assert data == stream_json(expected)
    assert event == expected


def test_to_id_keeps_only_what_an_id_may_hold() -> None:
    from shared.protocol import to_id

    assert to_id("toolu_01:a.b-c") == "toolu_01:a.b-c"
    assert to_id("résumé 🙂/x") == "r-sum----x"
    assert to_id("") == "id"
    assert len(to_id("x" * 300)) == 128


def test_new_id_is_a_version_4_uuid() -> None:
    import uuid

    from shared.protocol import new_id

    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in list(ids)[:50]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_agent_batch_frame_parses_to_the_messages_in_order() -> None:
    from shared.protocol import AgentBatch, agent_batch_frame

    messages = [
        TerminalOutput(
            payload=TerminalOutputPayload(
                command_id="c", agent_id="a", stream_type=StreamType.STDOUT, content=f"{n}\n", sequence=n
            )
        )
        for n in range(3)
    ]
    parsed = parse_agent_message(agent_batch_frame([m.to_json() for m in messages]))
    assert isinstance(parsed, AgentBatch)
    assert parsed.payload.messages == messages
    nested = agent_batch_frame([agent_batch_frame([messages[0].to_json()])])
    with pytest.raises(ValidationError):
        parse_agent_message(nested)  # no batch inside a batch


@pytest.mark.parametrize(
    ("parent", "content", "error", "counts"),
    [
        (None, None, None, (None, None, None, 0)),
        (
            "tool-1",
            {"text": 'q"uote\\ \x1b[31m\u00e9\U0001f600', "n": [1, 2.5, None, True]},
            None,
            (1, 2, 3, 4),
        ),
        ("m.1:x-y", "plain", 'it "broke"\n', (0, 2**60, -5, 2**53 - 1)),
    ],
)
def test_trace_event_json_equals_the_model_serialisation(
    parent: str | None, content: object, error: str | None, counts: tuple[int | None, ...]
) -> None:
    from shared.enums import TraceType
    from shared.model import MAX_INT
    from shared.protocol import TraceEvent, TraceEventPayload, parse_agent_message, trace_event_json

    started, completed, duration, tokens = counts
    data = trace_event_json(
        command_id="cmd-1", agent_id="a.1", trace_id="t_1", parent_id=parent, type=TraceType.TOOL_CALL,
        name="n \"é\"" + "x" * 600, content=content, started_at=started, completed_at=completed,
        duration_ms=duration, tokens_used=tokens or 0, error=error,
    )  # fmt: skip
    message = parse_agent_message(data)
    assert isinstance(message, TraceEvent)

    def clamp(value: int | None) -> int | None:
        return None if value is None else min(max(0, value), MAX_INT)

    expected = TraceEvent(
        id=message.id,
        timestamp=message.timestamp,
        payload=TraceEventPayload(
            command_id="cmd-1", agent_id="a.1", trace_id="t_1", parent_id=parent, type=TraceType.TOOL_CALL,
            name=("n \"é\"" + "x" * 600)[:500], content=content, started_at=clamp(started),
            completed_at=clamp(completed), duration_ms=clamp(duration), tokens_used=clamp(tokens or 0) or 0,
            error=error,
        ),
    )  # fmt: skip
    assert data == expected.to_json()
    assert message == expected


@pytest.mark.parametrize(
    "content", [None, "text", {"input": {"cmd": 'ls "a b"', "n": [1, 2.5, None]}, "é": "\U0001f600\x1b[0m"}]
)
def test_trace_update_json_equals_the_model_serialisation(content: object) -> None:
    from shared.api import TraceEventRecord
    from shared.enums import TraceType
    from shared.protocol import (
        TraceEventPayload,
        TraceUpdate,
        parse_stream_event,
        stream_json,
        trace_update_json,
    )

    trace = TraceEventPayload(
        command_id="cmd-1", agent_id="a.1", trace_id="t_1", parent_id="p:1", type=TraceType.TOOL_CALL,
        name='run "x"', content=content, started_at=5, completed_at=9, duration_ms=4, tokens_used=7,
        error="boom\n",
    )  # fmt: skip
    data = trace_update_json(trace)
    event = parse_stream_event(data)
    assert isinstance(event, TraceUpdate)
    expected = TraceUpdate(
        id=event.id, timestamp=event.timestamp, payload=TraceEventRecord.model_validate(trace.model_dump())
    )
    assert data == stream_json(expected)
    assert event == expected
