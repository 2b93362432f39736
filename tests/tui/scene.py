"""A realistic, repeatable hub state for snapshot tests: four agents of four kinds speaking the real
protocol to a live hub (scripted, so every run shows the same thing), with commands running, queued,
finished and failed, output with colours and stderr, a trace tree, a report, recorded changes, an
approval request and a preset.

The agents run on their own event loop in a thread, so that the snapshot fixture can run the app on
its own loop; they stay connected until :meth:`Scene.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from shared.api import ChangeSet, FileChange, Finding, HealthMetrics, ReportContent, ReportSection
from shared.enums import AckStatus, AgentType, CompletionStatus, ReportStatus, Severity, StreamType, TraceType
from shared.protocol import (
    AgentConnect,
    AgentConnectPayload,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    CommandAck,
    CommandAckPayload,
    CommandComplete,
    CommandCompletePayload,
    CommandRequest,
    InvestigationReport,
    InvestigationReportPayload,
    NeedsInput,
    NeedsInputPayload,
    TerminalOutput,
    TerminalOutputPayload,
    TraceEvent,
    TraceEventPayload,
    parse_hub_to_agent,
)
from tests.harness import HubProcess, timeout, wait_until

#: 2026-11-25 09:00:00 UTC: every time the agents report is fixed.
T0 = 1795597200000

PATCH = """diff --git a/auth/session.py b/auth/session.py
index 3b18e51..a9c2f04 100644
--- a/auth/session.py
+++ b/auth/session.py
@@ -12,7 +12,9 @@ class SessionStore:
     def refresh(self, token: str) -> Session:
-        session = self._sessions[token]
+        session = self._sessions.get(token)
+        if session is None:
+            raise ExpiredSession(token)
         session.touch()
         return session
diff --git a/tests/test_session.py b/tests/test_session.py
index 1111111..2222222 100644
--- a/tests/test_session.py
+++ b/tests/test_session.py
@@ -40,3 +40,8 @@ def test_refresh_rotates():
     assert store.refresh(old).token != old
+
+
+def test_refresh_of_unknown_token_is_refused():
+    with pytest.raises(ExpiredSession):
+        store.refresh("nope")
"""

CHANGES = ChangeSet(
    files=[
        FileChange(path="auth/session.py", status="modified", added=3, removed=1),
        FileChange(path="tests/test_session.py", status="modified", added=5, removed=0),
    ],
    added=8,
    removed=1,
    patch=PATCH,
)


@dataclass
class Script:
    """What an agent does with a command whose text starts with ``key``."""

    key: str
    lines: list[tuple[StreamType, str]] = field(default_factory=list)
    traces: list[TraceEventPayload] = field(default_factory=list)
    report: InvestigationReportPayload | None = None
    needs_input: NeedsInputPayload | None = None
    #: None: keeps running.
    end: CompletionStatus | None = CompletionStatus.COMPLETED
    error: str | None = None
    tokens: int = 0
    cost: float = 0.0
    changes: ChangeSet | None = None


@dataclass
class ScriptedAgent:
    name: str
    agent_type: AgentType
    health: HealthMetrics
    scripts: list[Script]
    agent_id: str = ""
    token: str = ""
    ws: ClientConnection | None = None
    clock: int = T0
    handled: list[str] = field(default_factory=list)

    def tick(self, ms: int = 700) -> int:
        self.clock += ms
        return self.clock

    async def run(self, ws_url: str) -> None:
        async with connect(
            ws_url + "/ws/agent",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
        ) as ws:
            self.ws = ws
            await ws.send(
                AgentConnect(
                    payload=AgentConnectPayload(
                        agent_id=self.agent_id,
                        agent_type=self.agent_type,
                        version="1.4.2",
                        host_machine="buildbox-01",
                    )
                ).to_json()
            )
            beating = asyncio.create_task(self.heartbeat(ws))
            try:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for frame in ws:
                        message = parse_hub_to_agent(frame)
                        if isinstance(message, CommandRequest):
                            await self.handle(ws, message)
            finally:
                beating.cancel()

    async def heartbeat(self, ws: ClientConnection) -> None:
        """Often enough for the test hub's short heartbeat interval; the same figures every time."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                payload = AgentHeartbeatPayload(agent_id=self.agent_id, health_metrics=self.health)
                await ws.send(AgentHeartbeat(payload=payload).to_json())
                await asyncio.sleep(1.0)

    async def handle(self, ws: ClientConnection, request: CommandRequest) -> None:
        command_id = request.payload.command_id
        if command_id in self.handled:
            return
        self.handled.append(command_id)
        script = next((s for s in self.scripts if request.payload.content.startswith(s.key)), None)
        if script is None:
            return

        async def send(message: Any) -> None:
            await ws.send(message.to_json())

        ids = {"command_id": command_id, "agent_id": self.agent_id}
        await send(CommandAck(payload=CommandAckPayload(status=AckStatus.EXECUTING, **ids)))
        for sequence, (stream, text) in enumerate(script.lines):
            await send(
                TerminalOutput(
                    timestamp=self.tick(),
                    payload=TerminalOutputPayload(
                        stream_type=stream,
                        content=text + "\n",
                        ansi_codes="\x1b[" in text,
                        sequence=sequence,
                        **ids,
                    ),
                )
            )
        for trace in script.traces:
            await send(TraceEvent(payload=trace.model_copy(update=ids)))
        if script.report is not None:
            await send(InvestigationReport(payload=script.report.model_copy(update=ids)))
        if script.needs_input is not None:
            await send(NeedsInput(payload=script.needs_input.model_copy(update=ids)))
        if script.end is not None:
            await send(
                CommandComplete(
                    payload=CommandCompletePayload(
                        status=script.end,
                        error=script.error,
                        execution_time=42_000,
                        tokens_used=script.tokens,
                        cost_usd=script.cost,
                        output_lines=len(script.lines),
                        changes=script.changes,
                        exit_code=2 if script.end is CompletionStatus.FAILED else 0,
                        **ids,
                    )
                )
            )


def trace(
    trace_id: str,
    parent: str | None,
    kind: TraceType,
    name: str,
    content: Any,
    start: int,
    ms: int,
    tokens: int = 0,
    error: str | None = None,
) -> TraceEventPayload:
    return TraceEventPayload(
        command_id="x",
        agent_id="x",
        trace_id=trace_id,
        parent_id=parent,
        type=kind,
        name=name,
        content=content,
        started_at=T0 + start,
        completed_at=T0 + start + ms,
        duration_ms=ms,
        tokens_used=tokens,
        error=error,
    )


INVESTIGATION = Script(
    key="Find why the login test is flaky",
    lines=[
        (StreamType.STDOUT, "\x1b[1mReading\x1b[0m auth/session.py and tests/test_session.py"),
        (StreamType.STDOUT, "Running \x1b[36mpytest tests/test_session.py -x\x1b[0m"),
        (StreamType.STDOUT, "\x1b[31mFAILED\x1b[0m tests/test_session.py::test_refresh_rotates - KeyError"),
        (StreamType.STDERR, "warning: 1 test used a real clock"),
        (StreamType.STDOUT, "The refresh path reads a token that expiry already removed."),
        (StreamType.STDOUT, "\x1b[32mReport written.\x1b[0m"),
    ],
    traces=[
        trace(
            "t1",
            None,
            TraceType.LLM_PROMPT,
            "claude-sonnet-4",
            {"prompt": "Find why the login test is flaky"},
            0,
            9100,
            5200,
        ),
        trace("t2", "t1", TraceType.TOOL_CALL, "Read", {"file_path": "auth/session.py"}, 900, 40),
        trace("t3", "t2", TraceType.RESPONSE, "Read result", {"lines": 120}, 940, 1),
        trace(
            "t4",
            "t1",
            TraceType.TOOL_CALL,
            "Bash",
            {"command": "pytest tests/test_session.py -x"},
            1500,
            5200,
        ),
        trace(
            "t5", "t4", TraceType.RESPONSE, "Bash result", {"exit_code": 1}, 6700, 1, error="exit status 1"
        ),
        trace(
            "t6",
            "t1",
            TraceType.RESPONSE,
            "answer",
            {"text": "The refresh path races expiry."},
            8000,
            1100,
            900,
        ),
    ],
    report=InvestigationReportPayload(
        command_id="x",
        agent_id="x",
        report_id="report-login-flaky",
        status=ReportStatus.COMPLETE,
        title="Flaky login test: refresh races session expiry",
        summary="test_refresh_rotates fails when expiry removes the session between lookup and touch.",
        content=ReportContent(
            sections=[
                ReportSection(title="Reproduction", content="Run the test 50 times with a real clock.")
            ],
            findings=[
                Finding(
                    title="KeyError on expired session",
                    severity=Severity.HIGH,
                    description="refresh() indexes the dict directly.",
                    evidence=["auth/session.py:14"],
                )
            ],
            recommendations=["Use .get() and raise ExpiredSession", "Freeze the clock in the test"],
        ),
    ),
    tokens=6100,
    cost=0.42,
    changes=CHANGES,
)

REFACTOR = Script(
    key="Refactor the session store",
    lines=[
        (StreamType.STDOUT, "Planning the refactor: 3 files"),
        (StreamType.STDOUT, "\x1b[33mEditing\x1b[0m auth/session.py"),
    ],
    traces=[
        trace("r1", None, TraceType.LLM_PROMPT, "claude-sonnet-4", {"prompt": "Refactor"}, 20000, 3000, 1800)
    ],
    end=None,
)
QUEUED = [Script(key="Add tests for refresh rotation"), Script(key="Update the changelog")]

REVIEW = Script(
    key="Review the auth module",
    lines=[
        (StreamType.STDOUT, "Reviewing 14 files in auth/"),
        (StreamType.STDOUT, "Wants to run the test suite"),
    ],
    needs_input=NeedsInputPayload(
        command_id="x",
        agent_id="x",
        request_id="perm-1",
        tool_name="run_shell_command",
        tool_input={"command": "pytest -q auth/"},
        can_answer=False,
    ),
    end=None,
)

FIX = Script(
    key="Fix the flaky retry test",
    lines=[
        (StreamType.STDOUT, "thread started: 0199a1"),
        (StreamType.STDOUT, "Patched tests/test_session.py"),
        (StreamType.STDOUT, "\x1b[32m2 passed\x1b[0m in 0.31s"),
    ],
    tokens=2300,
    cost=0.08,
    changes=CHANGES,
)

LINT = Script(
    key="make lint",
    lines=[
        (StreamType.STDOUT, "ruff check ."),
        (StreamType.STDERR, "auth/session.py:3:1: F401 'os' imported but unused"),
        (StreamType.STDERR, "make: *** [lint] Error 1"),
    ],
    end=CompletionStatus.FAILED,
    error="exit code 2",
)


def agents() -> list[ScriptedAgent]:
    def health(cpu: float, mb: int, tokens: int, cost: float, done: int) -> HealthMetrics:
        return HealthMetrics(
            cpu_percent=cpu,
            memory_bytes=mb * 1024 * 1024,
            memory_percent=1.5,
            process_count=3,
            uptime_seconds=5400.0,
            commands_processed=done,
            average_response_ms=8200.0,
            tokens_used=tokens,
            cost_usd=cost,
        )

    return [
        ScriptedAgent(
            "claude-main",
            AgentType.CLAUDE,
            health(23.0, 312, 6100, 0.42, 1),
            [INVESTIGATION, REFACTOR, *QUEUED],
        ),
        ScriptedAgent("codex-fix", AgentType.CODEX, health(0.5, 148, 2300, 0.08, 1), [FIX]),
        ScriptedAgent("gemini-review", AgentType.GEMINI, health(8.0, 201, 0, 0.0, 0), [REVIEW]),
        ScriptedAgent("shell-ops", AgentType.SHELL, health(0.0, 12, 0, 0.0, 1), [LINT]),
    ]


class Scene:
    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.agents = agents()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="scene-agents", daemon=True)
        self.commands: dict[str, str] = {}

    def start(self) -> Scene:
        self.thread.start()
        for agent in self.agents:
            agent.agent_id, agent.token = self.hub.agent_token(agent.name)
            asyncio.run_coroutine_threadsafe(agent.run(self.hub.ws_url), self.loop)
        with self.hub.client() as client:
            wait_until(
                lambda: (
                    sum(a["status"] == "ONLINE" for a in client.get("/agents").json()) >= len(self.agents)
                ),
                20,
                "scene agents online",
            )
            by_name = {a.name: a for a in self.agents}

            def send(agent: str, text: str, kind: str = "NATURAL") -> str:
                body = {"content": text, "type": kind, "targetAgents": [by_name[agent].agent_id]}
                response = client.post("/commands", json=body)
                assert response.status_code == 201, response.text
                self.commands[text] = response.json()["id"]
                return self.commands[text]

            def status(command_id: str) -> str:
                return str(client.get(f"/commands/{command_id}").json()["status"])

            done = send("claude-main", INVESTIGATION.key, "INVESTIGATE")
            wait_until(lambda: status(done) == "COMPLETED", 20, "the investigation")
            running = send("claude-main", REFACTOR.key)
            wait_until(lambda: status(running) == "EXECUTING", 20, "the refactor running")
            for script in QUEUED:
                send("claude-main", script.key)
            fixed = send("codex-fix", FIX.key)
            failed = send("shell-ops", LINT.key)
            send("gemini-review", REVIEW.key, "REVIEW")
            wait_until(
                lambda: status(fixed) == "COMPLETED" and status(failed) == "FAILED", 20, "fix and lint"
            )
            wait_until(
                lambda: (
                    client.get(f"/agents/{by_name['gemini-review'].agent_id}").json()["activity"]
                    == "WAITING_INPUT"
                ),
                20,
                "the review waiting for input",
            )
            client.post(f"/agents/{by_name['shell-ops'].agent_id}/pause", json={"reason": "maintenance"})
            client.post(
                "/presets",
                json={
                    "name": "review-pr",
                    "description": "Review a pull request",
                    "type": "REVIEW",
                    "content": "Review PR {{number}} of {{repo}} for security issues",
                    "priority": 60,
                },
            )

            # The store has every line before a TUI asks for it: a TUI loads what came before it
            # connected from the store, and a line stored late would be missing from its pane.
            def stored(script: Script) -> bool:
                output = client.get(f"/commands/{self.commands[script.key]}/output").json()
                return bool(output["total"] == len(script.lines))

            for script in (INVESTIGATION, REFACTOR, FIX, LINT, REVIEW):
                wait_until(partial(stored, script), timeout(20), f"the output of {script.key!r} stored")
        return self

    def agent_id(self, name: str) -> str:
        return next(a.agent_id for a in self.agents if a.name == name)

    def close(self) -> None:
        async def close_all() -> None:
            for agent in self.agents:
                if agent.ws is not None:
                    await agent.ws.close()

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
