"""Hypothesis against both WebSockets of a live hub: every message type, mutated (valid shapes with
invalid values, wrong types, missing and unknown fields, another message's type), random JSON, text
that is not JSON, deep nesting (10,000 levels), strings just under and over the size limits.

For every frame the shared models refuse, the hub answers ERROR INVALID_MESSAGE (or closes 1009 when
the frame is over the size limit) and the connection stays usable: a probe sent after it (a PING on
the dashboard socket, a TERMINAL_OUTPUT for an unknown command on the agent socket, answered with its
own ERROR naming it) is answered. Frames the models accept get their usual answer, never
INTERNAL_ERROR. Meanwhile another agent and another dashboard (which parses every frame it gets with
the shared models) are unaffected, and the hub process never dies.

Also: AGENT_CONNECT fuzzed on fresh connections (what it says about the agent reaches every TUI),
output in frames of just under 1 MiB relayed whole to a TUI, and NUL characters through a hub on
PostgreSQL (when ONSEMBL_TEST_POSTGRES_URL is set).

The hub runs with rate limits far above what the fuzzing sends (tests/reliability/test_floods.py
checks the limits). ONSEMBL_FUZZ_EXAMPLES sets the examples per strategy (default 400, about a
minute for the module).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.api import ChangeSet, CommandCreate, FileChange, HealthMetrics, ReportContent, ReportSection
from shared.enums import (
    AckStatus,
    AgentType,
    CompletionStatus,
    ControlAction,
    ErrorCode,
    ReportStatus,
    StreamType,
    TraceType,
)
from shared.protocol import (
    MAX_AGENT_MESSAGE_BYTES,
    MAX_DASHBOARD_MESSAGE_BYTES,
    AgentBatch,
    AgentBatchPayload,
    AgentConnect,
    AgentConnectPayload,
    AgentControlRequest,
    AgentControlRequestPayload,
    AgentError,
    AgentErrorPayload,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    CommandAck,
    CommandAckPayload,
    CommandCancelRequest,
    CommandCancelRequestPayload,
    CommandComplete,
    CommandCompletePayload,
    CommandSubmit,
    DashboardConnect,
    EmergencyStop,
    Error,
    ErrorPayload,
    InputResponseRequest,
    InputResponseRequestPayload,
    InvestigationReport,
    InvestigationReportPayload,
    MessageType,
    NeedsInput,
    NeedsInputPayload,
    Ping,
    QueueReorderMessage,
    QueueReorderPayload,
    TerminalOutput,
    TerminalOutputPayload,
    TraceEvent,
    TraceEventPayload,
    parse_agent_message,
    parse_dashboard_message,
    parse_hub_to_dashboard,
)
from tests.harness import Dashboard, HubProcess, timeout, wait_until
from tests.reliability.helpers import (
    closed_with,
    figure,
    heartbeat_works,
    keep_beating,
    next_of_type,
    open_agent,
    open_dashboard,
    output_frame,
    take_command,
)
from tui.client.stream import CONNECT_OPTIONS

pytestmark = pytest.mark.reliability

#: Hypothesis examples per strategy and socket.
EXAMPLES = int(os.environ.get("ONSEMBL_FUZZ_EXAMPLES", "400"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(
        tmp_path_factory.mktemp("fuzz-hub"),
        env_overrides={"ONSEMBL_AGENT_RATE_LIMIT": "1000000", "ONSEMBL_DASHBOARD_RATE_LIMIT": "1000000"},
        workers=2,
    ).start()
    yield hub
    hub.stop()
    hub.shutdown_redis()


# ---- valid messages, one of each type ---------------------------------------------------------------


def agent_samples(agent_id: str) -> list[dict[str, Any]]:
    command = "cmd-1"
    heartbeat = AgentHeartbeat(
        payload=AgentHeartbeatPayload(
            agent_id=agent_id, health_metrics=HealthMetrics(cpu_percent=1.0, memory_bytes=10, tokens_used=3)
        )
    )
    output = TerminalOutput(
        payload=TerminalOutputPayload(
            command_id=command, agent_id=agent_id, stream_type=StreamType.STDOUT, content="hi\n", sequence=0
        )
    )
    messages: list[Any] = [
        AgentConnect(
            payload=AgentConnectPayload(
                agent_id=agent_id,
                agent_type=AgentType.SHELL,
                version="1",
                capabilities={"streaming": True, "models": ["a"]},
                active_commands=[command],
            )
        ),
        heartbeat,
        CommandAck(payload=CommandAckPayload(command_id=command, agent_id=agent_id, status=AckStatus.QUEUED)),
        output,
        TraceEvent(
            payload=TraceEventPayload(
                command_id=command,
                agent_id=agent_id,
                trace_id="t1",
                type=TraceType.LLM_PROMPT,
                name="prompt",
                content={"text": "x", "tokens": [1, 2]},
                started_at=1,
                completed_at=2,
                duration_ms=1,
            )
        ),
        CommandComplete(
            payload=CommandCompletePayload(
                command_id=command,
                agent_id=agent_id,
                status=CompletionStatus.COMPLETED,
                execution_time=5,
                cost_usd=0.5,
                exit_code=0,
                changes=ChangeSet(files=[FileChange(path="a.py", added=1)], added=1, patch="+x"),
            )
        ),
        InvestigationReport(
            payload=InvestigationReportPayload(
                command_id=command,
                agent_id=agent_id,
                report_id="r1",
                status=ReportStatus.DRAFT,
                title="t",
                content=ReportContent(sections=[ReportSection(title="s", content="c")]),
            )
        ),
        AgentError(
            payload=AgentErrorPayload(agent_id=agent_id, error_type="crash", message="m", details={"k": [1]})
        ),
        NeedsInput(
            payload=NeedsInputPayload(
                command_id=command,
                agent_id=agent_id,
                request_id="q1",
                tool_name="Bash",
                tool_input={"c": "ls"},
            )
        ),
        AgentBatch(payload=AgentBatchPayload(messages=[heartbeat, output])),
        Error(payload=ErrorPayload(code=ErrorCode.INVALID_MESSAGE, message="m", request_id="x")),
    ]
    return [json.loads(m.to_json()) for m in messages]


def dashboard_samples() -> list[dict[str, Any]]:
    messages: list[Any] = [
        DashboardConnect(),
        CommandSubmit(payload=CommandCreate(content="echo hi", target_agents=["ghost-agent"], priority=5)),
        CommandCancelRequest(payload=CommandCancelRequestPayload(command_id="ghost-command", reason="r")),
        AgentControlRequest(
            payload=AgentControlRequestPayload(agent_id="ghost-agent", action=ControlAction.PAUSE)
        ),
        QueueReorderMessage(payload=QueueReorderPayload(agent_id="ghost-agent", order=["c1", "c2"])),
        EmergencyStop(),
        InputResponseRequest(
            payload=InputResponseRequestPayload(command_id="ghost-command", request_id="q1", allow=True)
        ),
        Ping(),
    ]
    return [json.loads(m.to_json()) for m in messages]


# ---- strategies -------------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: json.dumps writes them as NaN and Infinity
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
HOSTILE = st.one_of(
    SCALARS,
    st.integers(min_value=2**53, max_value=2**80),
    st.integers(min_value=-(2**80), max_value=-1),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -0.0, 0.5, 1.0]),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\u202e",
            "\ufeff",
            "🙂",
            "../../etc/passwd",
            "'; DROP TABLE agents; --",
            "null",
            "0",
        ]
    ),
    st.sampled_from([t.value for t in MessageType]),
    st.text(min_size=200, max_size=2000),
    JSON_VALUES,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


@st.composite
def mutated(draw: st.DrawFn, samples: list[dict[str, Any]]) -> str:
    """A valid message with one to three things changed: a value replaced by a hostile one, a field
    removed, an unknown field added, or the message's type swapped."""
    document = copy.deepcopy(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(document) if p]
        operation = draw(st.sampled_from(["replace", "replace", "delete", "add", "retype"]))
        if operation == "retype":
            document["type"] = draw(st.sampled_from([t.value for t in MessageType]))
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(document, path)
        if operation == "replace":
            parent[path[-1]] = draw(HOSTILE)
        elif operation == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=12))] = draw(HOSTILE)
            elif isinstance(target, list):
                target.append(draw(HOSTILE))
            else:
                parent[path[-1]] = draw(HOSTILE)
    return json.dumps(document)


def random_frames() -> st.SearchStrategy[str]:
    envelope = st.fixed_dictionaries(
        {"type": st.sampled_from([t.value for t in MessageType]), "payload": JSON_VALUES},
        optional={"id": HOSTILE, "timestamp": HOSTILE},
    )
    return st.one_of(
        JSON_VALUES.map(json.dumps),
        envelope.map(json.dumps),
        st.text(max_size=200),  # mostly not JSON at all
        st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
    )


def nested(depth: int, kind: str = "list") -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


def envelope(kind: str, payload: str) -> str:
    """A frame around a payload given as raw JSON text (which may be anything)."""
    return '{"type":"' + kind + '","id":"f","timestamp":1,"payload":' + payload + "}"


def explicit_frames(agent_id: str) -> list[str]:
    """Deep nesting (whole frames, and inside the free-form fields), and numbers JSON has no place for
    (Infinity, NaN, 1e400) where the models take floats."""
    agent = '"agentId":"' + agent_id + '"'
    frames = [
        envelope("AGENT_HEARTBEAT", "{" + agent + ',"healthMetrics":{"cpuPercent":' + number + "}}")
        for number in ("Infinity", "-Infinity", "NaN", "1e400", "1e308")
    ]
    for depth in (10_000, 1000, 250, 199, 150):
        for kind in ("list", "dict"):
            deep = nested(depth, kind)
            frames.append(deep)
            frames.append(
                envelope(
                    "AGENT_ERROR", "{" + agent + ',"errorType":"x","message":"m","details":' + deep + "}"
                )
            )
            frames.append(envelope("AGENT_HEARTBEAT", "{" + agent + ',"healthMetrics":' + deep + "}"))
            frames.append(envelope("PING", deep))
    return frames


# ---- driving the sockets ---------------------------------------------------------------------------


class Fuzzer:
    """Sends a frame on one socket, then a probe, and checks what came back before the probe's answer."""

    def __init__(
        self,
        runner: asyncio.Runner,
        ws: ClientConnection,
        probe: Callable[[int], str],
        is_probe_answer: Callable[[dict[str, Any], int], bool],
        parse: Callable[[str], Any],
        dashboard: bool,
    ) -> None:
        self.runner = runner
        self.ws = ws
        self.probe = probe
        self.is_probe_answer = is_probe_answer
        self.parse = parse
        self.dashboard = dashboard
        self.count = 0
        self.stats: Counter[str] = Counter()

    def send(self, frame: str) -> None:
        self.runner.run(self._exchange(frame))

    async def _exchange(self, frame: str) -> None:
        self.count += 1
        n = self.count
        try:
            parsed = self.parse(frame)
            valid = True
        except ValidationError:
            parsed, valid = None, False
        # A valid PING is answered like the probe: then the second PONG is the probe's.
        probe_answers = 2 if isinstance(parsed, Ping) else 1
        self.stats["frames"] += 1
        self.stats["valid" if valid else "invalid"] += 1
        try:
            await self.ws.send(frame)
            await self.ws.send(self.probe(n))
            answers = []
            async with asyncio.timeout(timeout(10)):
                while True:
                    raw = await self.ws.recv()
                    if self.dashboard:
                        # Everything the hub sends a dashboard must parse with the shared models.
                        try:
                            parse_hub_to_dashboard(raw)
                        except ValidationError as exc:
                            raise AssertionError(
                                f"unreadable frame from the hub after {frame[:300]!r}"
                            ) from exc
                    message = json.loads(raw)
                    if self.is_probe_answer(message, n):
                        probe_answers -= 1
                        if probe_answers == 0:
                            break
                        continue
                    answers.append(message)
        except ConnectionClosed as exc:
            self.stats["connections lost"] += 1
            raise AssertionError(f"the hub closed the connection after {frame[:300]!r}: {exc}") from exc
        except TimeoutError:
            raise AssertionError(f"no answer to the probe after {frame[:300]!r}") from None
        errors = [m["payload"] for m in answers if m["type"] == "ERROR"]
        codes = [e["code"] for e in errors]
        self.stats["internal errors"] += codes.count("INTERNAL_ERROR")
        assert "INTERNAL_ERROR" not in codes, (frame[:500], errors)
        if not valid:
            assert "INVALID_MESSAGE" in codes, (frame[:500], answers)
            self.stats["answered INVALID_MESSAGE"] += 1
            assert all(e["recoverable"] for e in errors if e["code"] == "INVALID_MESSAGE"), errors


def _agent_probe(agent_id: str) -> Callable[[int], str]:
    def probe(n: int) -> str:
        return output_frame(f"probe-{n}", agent_id, 0, "p")

    return probe


def _agent_probe_answer(message: dict[str, Any], n: int) -> bool:
    details = message.get("payload", {}).get("details")
    return (
        message["type"] == "ERROR" and isinstance(details, dict) and details.get("commandId") == f"probe-{n}"
    )


def _dashboard_probe(n: int) -> str:
    return Ping(id=f"probe-{n}").to_json()


def _dashboard_probe_answer(message: dict[str, Any], n: int) -> bool:
    return bool(message["type"] == "PONG")


def _dashboard_parse(frame: str) -> Any:
    message = parse_dashboard_message(frame)
    # Valid requests with effects on everyone are not sent (they would stop or load the bystanders).
    if isinstance(message, EmergencyStop) or (
        isinstance(message, CommandSubmit) and message.payload.broadcast
    ):
        raise _Skip
    return message


class _Skip(Exception):
    pass


# ---- the tests -------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_fuzzed_messages_get_invalid_message_and_nobody_is_hurt(fuzz_hub: HubProcess) -> None:
    hub = fuzz_hub
    with asyncio.Runner() as runner:
        agent_ws, agent_id = runner.run(open_agent(hub, "fuzz-agent"))
        dash_ws, _ = runner.run(open_dashboard(hub))
        bystander_ws, bystander_id = runner.run(open_agent(hub, "fuzz-bystander"))
        bystander = runner.run(Dashboard(hub).connect())

        async def beat() -> list[asyncio.Task[None]]:
            return [keep_beating(agent_ws, agent_id), keep_beating(bystander_ws, bystander_id)]

        beats = runner.run(beat())
        agent = Fuzzer(
            runner,
            agent_ws,
            _agent_probe(agent_id),
            _agent_probe_answer,
            parse_agent_message,
            dashboard=False,
        )
        dashboard = Fuzzer(
            runner, dash_ws, _dashboard_probe, _dashboard_probe_answer, _dashboard_parse, dashboard=True
        )
        skipped = Counter[str]()

        def send_dashboard(frame: str) -> None:
            try:
                _dashboard_parse(frame)
            except _Skip:
                skipped["dashboard"] += 1
                return
            except ValidationError:
                pass
            dashboard.send(frame)

        @FUZZ_SETTINGS
        @given(st.one_of(mutated(agent_samples(agent_id)), random_frames()))
        def fuzz_agent(frame: str) -> None:
            agent.send(frame)

        @FUZZ_SETTINGS
        @given(st.one_of(mutated(dashboard_samples()), random_frames()))
        def fuzz_dashboard(frame: str) -> None:
            send_dashboard(frame)

        try:
            for frame in explicit_frames(agent_id):
                agent.send(frame)
                send_dashboard(frame)
            fuzz_agent()
            fuzz_dashboard()

            for task in beats:  # heartbeat_works sends its own
                task.cancel()
            # The fuzzed connections still work for real traffic, and so do everyone else's.
            runner.run(heartbeat_works(agent_ws, agent_id, hub))
            runner.run(heartbeat_works(bystander_ws, bystander_id, hub))
            runner.run(bystander.send(Ping(id="bystander-ping")))
            runner.run(bystander.wait_for(lambda m: m.type == "PONG", 10))
            assert bystander.error is None, (
                f"the bystander dashboard could not read a frame: {bystander.error}"
            )
            assert httpx.get(hub.url + "/health", timeout=timeout(10)).json()["status"] == "ok"
            assert hub.process is not None and hub.process.poll() is None
        finally:
            for name, fuzzer in (("agent", agent), ("dashboard", dashboard)):
                s = fuzzer.stats
                figure(
                    f"ws fuzz {name} frames", f"{s['frames']} ({s['invalid']} invalid, {s['valid']} valid)"
                )
                figure(
                    f"ws fuzz {name} invalid frames answered INVALID_MESSAGE", s["answered INVALID_MESSAGE"]
                )
                figure(f"ws fuzz {name} internal errors", s["internal errors"])
                figure(f"ws fuzz {name} connections lost", s["connections lost"])
            figure(
                "ws fuzz valid dashboard frames not sent (emergency stop, broadcast)", skipped["dashboard"]
            )
            figure("ws fuzz bystander dashboard unreadable frames", 0 if bystander.error is None else 1)
            figure("ws fuzz hub alive", hub.process is not None and hub.process.poll() is None)
            for task in beats:
                task.cancel()
            for ws in (agent_ws, dash_ws, bystander_ws):
                runner.run(ws.close())
            runner.run(bystander.close())
    assert agent.stats["invalid"] == agent.stats["answered INVALID_MESSAGE"]
    assert dashboard.stats["invalid"] == dashboard.stats["answered INVALID_MESSAGE"]


FILL = "@FILL@"


def _padded(template: str, size: int, fill: str = "x") -> str:
    """``template`` with FILL replaced so that the frame is exactly ``size`` bytes of UTF-8."""
    base = len(template.replace(FILL, "").encode())
    count, rest = divmod(size - base, len(fill.encode()))
    frame = template.replace(FILL, fill * count + "y" * rest)
    assert len(frame.encode()) == size
    return frame


async def test_strings_at_the_size_limits(fuzz_hub: HubProcess) -> None:
    """A frame of exactly the limit is read and answered; one byte more closes 1009, counted in bytes
    (multi-byte characters), on both sockets; the bystanders go on."""
    hub = fuzz_hub
    bystander, bystander_id = await open_agent(hub, "size-bystander")
    try:
        ws, agent_id = await open_agent(hub, "size-agent")
        output = envelope(
            "TERMINAL_OUTPUT",
            '{"commandId":"ghost","agentId":"'
            + agent_id
            + '","streamType":"STDOUT","content":"'
            + FILL
            + '","sequence":0}',
        )
        await ws.send(_padded(output, MAX_AGENT_MESSAGE_BYTES))
        error = await next_of_type(ws, "ERROR", 10)
        assert error["payload"]["code"] == "INVALID_MESSAGE" and "ghost" in error["payload"]["message"]
        await heartbeat_works(ws, agent_id, hub)
        for fill in ("x", "é", "🙂"):
            await ws.send(_padded(output, MAX_AGENT_MESSAGE_BYTES + 1, fill))
            code, messages = await closed_with(ws)
            assert code == 1009, (fill, code)
            assert messages[-1]["payload"]["code"] == "INVALID_MESSAGE"
            ws, _ = await open_agent(hub, "size-agent")  # the same name: the same agent id
        await ws.close()
        figure("ws agent frame of exactly 1 MiB", "answered, connection kept")
        figure("ws agent frame of 1 MiB + 1 byte (ascii, 2-byte, 4-byte characters)", "closed 1009")

        dash, _ = await open_dashboard(hub)
        submit = envelope("COMMAND_SUBMIT", '{"content":"' + FILL + '","broadcast":true}')
        await dash.send(_padded(submit, MAX_DASHBOARD_MESSAGE_BYTES))
        error = await next_of_type(dash, "ERROR", 10)
        assert error["payload"]["code"] == "INVALID_MESSAGE"  # content is over 100,000 characters
        await dash.send(Ping().to_json())
        await next_of_type(dash, "PONG", 10)
        for fill in ("x", "é"):
            await dash.send(_padded(submit, MAX_DASHBOARD_MESSAGE_BYTES + 1, fill))
            code, _ = await closed_with(dash)
            assert code == 1009, (fill, code)
            dash, _ = await open_dashboard(hub)
        await dash.close()
        figure("ws dashboard frame of exactly 512 KiB", "answered, connection kept")
        figure("ws dashboard frame of 512 KiB + 1 byte", "closed 1009")
        await heartbeat_works(bystander, bystander_id, hub)
    finally:
        await bystander.close()


@pytest.mark.timeout(300)
def test_fuzzed_agent_connect_is_refused_or_served_and_dashboards_can_read_it(fuzz_hub: HubProcess) -> None:
    """AGENT_CONNECT is the first frame of a connection, so it gets its own run: each example on a new
    connection. Refused: ERROR INVALID_MESSAGE and close 1008. Accepted: SERVER_HEARTBEAT, and what it
    said about the agent (capabilities) reaches every dashboard in a form they can read."""
    hub = fuzz_hub
    agent_id, token = hub.agent_token("connect-fuzz")
    sample = agent_samples(agent_id)[0]
    assert sample["type"] == "AGENT_CONNECT"
    hello = '{"agentId":"' + agent_id + '","agentType":"SHELL","capabilities":'
    capabilities = [
        envelope("AGENT_CONNECT", hello + c + "}")
        for c in (
            '{"a":' + nested(198) + "}",
            '{"a":' + nested(64) + "}",
            '{"a":' + nested(62) + "}",
            '{"a":Infinity}',
            '{"a":' + nested(10_000, "dict") + "}",
        )
    ]
    stats: Counter[str] = Counter()

    async def connect_with(frame: str) -> None:
        try:
            parse_agent_message(frame)
            valid = True
        except ValidationError:
            valid = False
        ws = await connect(hub.ws_url + "/ws/agent", additional_headers={"Authorization": f"Bearer {token}"})
        await ws.send(frame)
        first = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
        stats["frames"] += 1
        if valid and first["type"] == "SERVER_HEARTBEAT":
            stats["accepted"] += 1
            await ws.close()
            return
        assert first["type"] == "ERROR", (frame[:300], first)
        code, _ = await closed_with(ws)
        assert code == 1008, (frame[:300], code)
        if valid:  # a valid message for another agent
            assert first["payload"]["code"] == "AUTH_FAILED", (frame[:300], first)
        else:
            assert first["payload"]["code"] == "INVALID_MESSAGE", (frame[:300], first)
            stats["refused INVALID_MESSAGE"] += 1

    with asyncio.Runner() as runner:
        watcher = runner.run(Dashboard(hub).connect())
        try:

            @settings(FUZZ_SETTINGS, max_examples=max(10, EXAMPLES // 3))
            @given(mutated([sample]))
            def fuzz(frame: str) -> None:
                runner.run(connect_with(frame))

            for frame in capabilities:
                runner.run(connect_with(frame))
            fuzz()
            runner.run(asyncio.sleep(0.5))
            assert watcher.error is None, f"a dashboard could not read a frame: {watcher.error}"
            late = runner.run(Dashboard(hub).connect())  # DASHBOARD_READY lists every agent
            runner.run(late.close())
        finally:
            runner.run(watcher.close())
            figure(
                "ws fuzz AGENT_CONNECT frames",
                f"{stats['frames']} ({stats['accepted']} accepted, "
                f"{stats['refused INVALID_MESSAGE']} refused INVALID_MESSAGE)",
            )
            figure("ws fuzz AGENT_CONNECT unreadable frames at dashboards", 0 if watcher.error is None else 1)


BIG_OUTPUTS = 24


async def test_output_just_under_the_limit_reaches_a_tui_whole(fuzz_hub: HubProcess) -> None:
    """An agent streams output in frames of just under 1 MiB as fast as it can; a dashboard with the
    TUI's connection options (which refuse frames over 16 MiB) gets every line and stays connected."""
    hub = fuzz_hub
    ws, agent_id = await open_agent(hub, "big-output")
    tui = await connect(
        hub.ws_url + "/ws/dashboard",
        additional_headers={"Authorization": f"Bearer {hub.user_token()}"},
        **CONNECT_OPTIONS,
    )
    try:
        await tui.send(DashboardConnect().to_json())
        await next_of_type(tui, "DASHBOARD_READY", 10)
        command_id = await take_command(hub, ws, agent_id)
        template = envelope(
            "TERMINAL_OUTPUT",
            '{"commandId":"' + command_id + '","agentId":"' + agent_id + '","streamType":"STDOUT",'
            '"content":"' + FILL + '","sequence":@SEQ@}',
        )
        for sequence in range(BIG_OUTPUTS):
            frame = template.replace("@SEQ@", str(sequence))
            await ws.send(_padded(frame, MAX_AGENT_MESSAGE_BYTES - 16))
        received: set[int] = set()
        largest = 0
        async with asyncio.timeout(timeout(60)):
            while len(received) < BIG_OUTPUTS:
                raw = await tui.recv()
                largest = max(largest, len(raw))
                message = parse_hub_to_dashboard(raw)
                events = message.payload.events if message.type == "EVENT_BATCH" else [message]  # type: ignore[union-attr]
                for event in events:
                    if event.type == "TERMINAL_STREAM" and event.payload.command_id == command_id:
                        received.add(event.payload.sequence)
        figure("ws output frames of 1 MiB - 16 bytes relayed to a TUI", f"{len(received)}/{BIG_OUTPUTS}")
        figure("ws largest frame the TUI got", f"{largest / 2**20:.1f}", "MiB")
        assert largest <= CONNECT_OPTIONS["max_size"]
    finally:
        await ws.close()
        await tui.close()


@pytest.mark.postgres
@pytest.mark.timeout(300)
async def test_nul_characters_are_stored_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    """PostgreSQL's text types cannot hold NUL (U+0000), which JSON strings can: an agent's output line
    with one, its host name, a trace, a preset named with one over REST. All are stored (NUL as U+FFFD)
    and the store goes on with what follows."""
    hub = HubProcess(tmp_path / "hub", env_overrides={"ONSEMBL_DATABASE_URL": postgres_database}, workers=2)
    await asyncio.to_thread(hub.start)
    try:
        agent_id, token = hub.agent_token("nul-agent")
        ws = await connect(hub.ws_url + "/ws/agent", additional_headers={"Authorization": f"Bearer {token}"})
        await ws.send(
            AgentConnect(
                payload=AgentConnectPayload(
                    agent_id=agent_id, agent_type=AgentType.SHELL, host_machine="box\x00", version="1\x00"
                )
            ).to_json()
        )
        await next_of_type(ws, "SERVER_HEARTBEAT", 10)
        beat = keep_beating(ws, agent_id)
        command_id = await take_command(hub, ws, agent_id)
        contents = ["before\n", "a\x00b\n", "after\n"]
        for sequence, content in enumerate(contents):
            await ws.send(output_frame(command_id, agent_id, sequence, content))
        await ws.send(
            TraceEvent(
                payload=TraceEventPayload(
                    command_id=command_id,
                    agent_id=agent_id,
                    trace_id="nul",
                    type=TraceType.TOOL_CALL,
                    name="Read\x00",
                    content={"path": "a\x00b"},
                    error="e\x00",
                )
            ).to_json()
        )
        with hub.client() as client:
            preset = client.post("/presets", json={"name": "nul\x00preset", "content": "echo \x00"})
            assert preset.status_code == 201, preset.text

            def stored() -> list[str]:
                body = client.get(f"/commands/{command_id}/output").json()
                return [item["content"] for item in body["items"]] if body["total"] == len(contents) else []

            lines = await asyncio.to_thread(wait_until, stored, 30, "the output stored")
            traces = await asyncio.to_thread(
                wait_until, lambda: client.get(f"/commands/{command_id}/traces").json(), 30, "the trace"
            )
            agent = client.get(f"/agents/{agent_id}").json()
        figure("postgres output lines with NUL stored", f"{len(lines)} of {len(contents)}")
        assert lines == [c.replace("\x00", "\ufffd") for c in contents]
        assert traces[0]["name"] == "Read\ufffd" and traces[0]["error"] == "e\ufffd"
        assert agent["hostMachine"] in ("box\x00", "box\ufffd")  # live (Redis) or stored
        beat.cancel()
        await ws.close()
    finally:
        await asyncio.to_thread(hub.stop)
        hub.shutdown_redis()
