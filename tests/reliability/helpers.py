"""What the reliability tests share: their figures, a simulated agent that runs one command end to end
(so the hub has real records to serve), and raw socket helpers (tests/server/test_bad_input.py's)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.api import Finding, HealthMetrics, ReportContent, ReportSection
from shared.enums import AckStatus, CompletionStatus, ReportStatus, Severity, StreamType, TraceType
from shared.protocol import (
    AgentHeartbeat,
    AgentHeartbeatPayload,
    CommandAck,
    CommandAckPayload,
    CommandComplete,
    CommandCompletePayload,
    DashboardConnect,
    InvestigationReport,
    InvestigationReportPayload,
    TerminalOutput,
    TerminalOutputPayload,
    TraceEvent,
    TraceEventPayload,
)
from tests.harness import HubProcess, timeout
from tests.server.test_bad_input import closed_with, heartbeat_works, next_of_type, open_agent

__all__ = [
    "closed_with",
    "figure",
    "heartbeat_works",
    "keep_beating",
    "next_of_type",
    "open_agent",
    "open_dashboard",
    "output_message",
    "run_one_command",
    "take_command",
]


def output_message(command_id: str, agent_id: str, sequence: int, content: str) -> TerminalOutput:
    """A TERMINAL_OUTPUT (stdout)."""
    return TerminalOutput(
        payload=TerminalOutputPayload(
            command_id=command_id,
            agent_id=agent_id,
            stream_type=StreamType.STDOUT,
            content=content,
            sequence=sequence,
        )
    )


def output_frame(command_id: str, agent_id: str, sequence: int, content: str) -> str:
    """A TERMINAL_OUTPUT frame (stdout)."""
    return output_message(command_id, agent_id, sequence, content).to_json()


def figure(name: str, value: Any, unit: str = "") -> None:
    """One measured figure per line, ``name: value [unit]`` (shown with ``-s``, or ``-rA`` in CI)."""
    print(f"{name}: {value}{f' {unit}' if unit else ''}", flush=True)


async def open_dashboard(
    hub: HubProcess, token: str | None = None, **options: Any
) -> tuple[ClientConnection, dict[str, Any]]:
    """A raw dashboard socket past DASHBOARD_READY (returned with it)."""
    ws = await connect(
        hub.ws_url + "/ws/dashboard",
        additional_headers={"Authorization": f"Bearer {token or hub.user_token()}"},
        max_size=None,
        **options,
    )
    await ws.send(DashboardConnect().to_json())
    ready = await next_of_type(ws, "DASHBOARD_READY", 10)
    return ws, ready


def keep_beating(ws: ClientConnection, agent_id: str, interval: float = 1.0) -> asyncio.Task[None]:
    """Heartbeats every ``interval`` seconds, as a real agent sends them (the hub closes an agent's socket
    after three missed ones): a task of the running loop; cancel it when done."""

    async def beat() -> None:
        frame = AgentHeartbeat(
            payload=AgentHeartbeatPayload(agent_id=agent_id, health_metrics=HealthMetrics())
        ).to_json()
        while True:
            try:
                await ws.send(frame)
            except ConnectionClosed:
                return
            await asyncio.sleep(interval)

    return asyncio.create_task(beat(), name=f"heartbeats-{agent_id}")


async def _next_request(ws: ClientConnection, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout(seconds)
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        if message["type"] == "COMMAND_REQUEST":
            payload: dict[str, Any] = message["payload"]
            return payload


async def take_command(hub: HubProcess, ws: ClientConnection, agent_id: str, content: str = "seed") -> str:
    """Submit a command to the agent of ``ws`` over REST; as that agent, take it and start it."""
    with hub.client() as client:
        response = client.post("/commands", json={"content": content, "targetAgents": [agent_id]})
        assert response.status_code == 201, response.text
        command_id: str = response.json()["id"]
    request = await _next_request(ws, 20)
    assert request["commandId"] == command_id
    await ws.send(
        CommandAck(
            payload=CommandAckPayload(command_id=command_id, agent_id=agent_id, status=AckStatus.EXECUTING)
        ).to_json()
    )
    return command_id


async def run_one_command(hub: HubProcess, name: str, lines: int = 20) -> dict[str, str]:
    """A simulated agent takes one command, streams output, a trace and a report, and completes it;
    then disconnects. The hub then has an agent, a command with executions and output, traces, a
    report and audit entries to serve. Returns the ids."""
    ws, agent_id = await open_agent(hub, name)
    try:
        command_id = await take_command(hub, ws, agent_id)
        for sequence in range(lines):
            await ws.send(output_frame(command_id, agent_id, sequence, f"seed line {sequence}\n"))
        await ws.send(
            TraceEvent(
                payload=TraceEventPayload(
                    command_id=command_id,
                    agent_id=agent_id,
                    trace_id="trace-1",
                    type=TraceType.TOOL_CALL,
                    name="Read",
                    content={"file": "README.md"},
                    duration_ms=12,
                )
            ).to_json()
        )
        report_id = f"report-{command_id}"
        await ws.send(
            InvestigationReport(
                payload=InvestigationReportPayload(
                    command_id=command_id,
                    agent_id=agent_id,
                    report_id=report_id,
                    status=ReportStatus.COMPLETE,
                    title="Seed report",
                    summary="what the seed found",
                    content=ReportContent(
                        sections=[ReportSection(title="Scope", content="everything")],
                        findings=[Finding(title="a finding", severity=Severity.LOW, evidence=["x"])],
                        recommendations=["none"],
                    ),
                )
            ).to_json()
        )
        await ws.send(
            CommandComplete(
                payload=CommandCompletePayload(
                    command_id=command_id,
                    agent_id=agent_id,
                    status=CompletionStatus.COMPLETED,
                    output_lines=lines,
                )
            ).to_json()
        )
        with hub.client() as client:
            deadline = time.monotonic() + timeout(20)
            while client.get(f"/commands/{command_id}").json()["status"] != "COMPLETED":
                assert time.monotonic() < deadline, "the seed command did not complete"
                await asyncio.sleep(0.05)
            while client.get(f"/reports/{report_id}").status_code != 200:
                assert time.monotonic() < deadline, "the seed report was not stored"
                await asyncio.sleep(0.05)
    finally:
        try:
            await ws.close()
        except ConnectionClosed:
            pass
    return {"agent_id": agent_id, "command_id": command_id, "report_id": report_id}
