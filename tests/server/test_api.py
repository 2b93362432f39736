"""The REST API around commands: sign-in, presets, constraint profiles, reports, audit, agent control,
broadcast and the emergency stop."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import connect

from shared.api import Finding, ReportContent, ReportSection
from shared.enums import AgentType, ReportStatus
from shared.protocol import (
    AgentConnect,
    AgentConnectPayload,
    CommandAck,
    CommandAckPayload,
    CommandComplete,
    CommandCompletePayload,
    InvestigationReport,
    InvestigationReportPayload,
    TraceEvent,
    TraceEventPayload,
    parse_hub_to_agent,
)
from tests.harness import AgentProcess, HubProcess, start_agent, wait_command, wait_until


def finished(client, command_id: str, seconds: float = 30) -> dict:  # type: ignore[no-untyped-def]
    return wait_command(client, command_id, seconds)


def test_magic_link_code_login_and_rotating_refresh(hub: HubProcess) -> None:
    email = f"user-{uuid.uuid4().hex[:6]}@example.com"
    api = httpx.Client(base_url=hub.url + "/v1")
    assert api.post("/auth/magic-link", json={"email": email}).status_code == 202
    # No SMTP: the code and the link are in the hub's log.
    found = wait_until(
        lambda: re.search(
            rf"sign-in code for {re.escape(email)}: (\d{{6}}) \(magic link: \S+token=\*\*\*",
            hub.log_tail(400),
        ),
        10,
        "the code in the log",
    )
    code = found.group(1)
    assert (
        api.post(
            "/auth/verify", json={"email": email, "code": "000000" if code != "000000" else "111111"}
        ).status_code
        == 401
    )
    pair = api.post("/auth/verify", json={"email": email, "code": code}).json()
    assert pair["email"] == email and pair["expiresIn"] == 900
    assert api.post("/auth/verify", json={"email": email, "code": code}).status_code == 401  # one use
    authed = {"Authorization": f"Bearer {pair['accessToken']}"}
    assert api.get("/agents", headers=authed).status_code == 200
    # Rotation: the new pair works, the old refresh token does not, and reusing it ends the family.
    second = api.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]}).json()
    assert second["refreshToken"] != pair["refreshToken"]
    reuse = api.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
    assert reuse.status_code == 401 and reuse.json()["error"] == "AUTH_FAILED"
    assert api.post("/auth/refresh", json={"refreshToken": second["refreshToken"]}).status_code == 401
    # Tokens never reach the log.
    assert pair["accessToken"] not in hub.log_tail(2000) and pair["refreshToken"] not in hub.log_tail(2000)


def test_presets_crud_and_usage(hub: HubProcess) -> None:
    agent = start_agent(hub, "api-presets")
    try:
        with hub.client() as client:
            name = f"greet-{uuid.uuid4().hex[:6]}"
            created = client.post(
                "/presets", json={"name": name, "content": "echo {{greeting}} {{ name }}", "type": "NATURAL"}
            )
            assert created.status_code == 201, created.text
            preset = created.json()
            assert preset["variables"] == ["greeting", "name"]
            assert client.post("/presets", json={"name": name, "content": "x"}).status_code == 409
            updated = client.put(
                f"/presets/{preset['id']}", json={"name": name, "content": "echo {{x}}", "priority": 70}
            )
            assert updated.json()["variables"] == ["x"] and updated.json()["priority"] == 70
            assert any(p["id"] == preset["id"] for p in client.get("/presets").json()["items"])
            command = client.post(
                "/commands",
                json={"content": "echo hi", "targetAgents": [agent.agent_id], "presetId": preset["id"]},
            ).json()
            assert command["presetId"] == preset["id"]
            assert client.get(f"/presets/{preset['id']}").json()["usageCount"] == 1
            assert client.delete(f"/presets/{preset['id']}").status_code == 204
            assert client.get(f"/presets/{preset['id']}").status_code == 404
            finished(client, command["id"])
            # A command naming a preset that is gone is refused whole: nothing recorded or queued.
            gone = client.post(
                "/commands",
                json={"content": f"echo {name}", "targetAgents": [agent.agent_id], "presetId": preset["id"]},
            )
            assert gone.status_code == 404 and gone.json()["error"] == "NOT_FOUND", gone.text
            assert client.get("/commands", params={"q": name}).json()["total"] == 0
            assert client.get(f"/agents/{agent.agent_id}/queue").json()["items"] == []
    finally:
        agent.stop()


def test_default_constraint_profile_fills_limits(hub: HubProcess) -> None:
    agent = start_agent(hub, "api-constraints")
    try:
        with hub.client() as client:
            profile = client.post(
                "/constraints",
                json={
                    "name": f"quick-{uuid.uuid4().hex[:6]}",
                    "timeLimitMs": 1500,
                    "tokenBudget": 1000,
                    "isDefault": True,
                },
            )
            assert profile.status_code == 201
            command = client.post(
                "/commands", json={"content": "sleep 30", "targetAgents": [agent.agent_id]}
            ).json()
            assert command["executionConstraints"] == {"timeLimitMs": 1500, "tokenBudget": 1000}
            ended = finished(client, command["id"])
            assert ended["executions"][0]["endReason"] == "TIME_LIMIT"
            # Given limits win over the profile's.
            explicit = client.post(
                "/commands",
                json={
                    "content": "true",
                    "targetAgents": [agent.agent_id],
                    "executionConstraints": {"timeLimitMs": 60000},
                },
            ).json()
            assert explicit["executionConstraints"]["timeLimitMs"] == 60000
            finished(client, explicit["id"])
            # Leave no default behind for the other tests of this hub; the hub's cached default goes.
            client.post("/constraints", json={"name": f"none-{uuid.uuid4().hex[:6]}", "isDefault": True})
            after = client.post("/commands", json={"content": "true", "targetAgents": [agent.agent_id]})
            assert after.json()["executionConstraints"] == {"timeLimitMs": None, "tokenBudget": None}
            finished(client, after.json()["id"])
    finally:
        agent.stop()


async def test_trace_and_report_from_an_agent_are_stored_and_exported(
    hub: HubProcess, tmp_path: Path
) -> None:
    agent_id, token = hub.agent_token("api-reports")
    async with connect(
        hub.ws_url + "/ws/agent", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send(
            AgentConnect(
                payload=AgentConnectPayload(agent_id=agent_id, agent_type=AgentType.CLAUDE)
            ).to_json()
        )
        await ws.recv()
        with hub.client() as client:
            command = client.post(
                "/commands",
                json={
                    "content": "look into the login bug",
                    "type": "INVESTIGATE",
                    "targetAgents": [agent_id],
                },
            ).json()
        request = None
        while request is None:
            message = parse_hub_to_agent(await asyncio.wait_for(ws.recv(), 20))
            if message.type == "COMMAND_REQUEST":
                request = message
        assert request.payload.type == "INVESTIGATE"
        cid = command["id"]
        await ws.send(
            CommandAck(
                payload=CommandAckPayload(command_id=cid, agent_id=agent_id, status="EXECUTING")
            ).to_json()
        )
        await ws.send(
            TraceEvent(
                payload=TraceEventPayload(
                    command_id=cid,
                    agent_id=agent_id,
                    trace_id="t1",
                    type="LLM_PROMPT",
                    name="turn 1",
                    tokens_used=120,
                )
            ).to_json()
        )
        await ws.send(
            TraceEvent(
                payload=TraceEventPayload(
                    command_id=cid,
                    agent_id=agent_id,
                    trace_id="t2",
                    parent_id="t1",
                    type="TOOL_CALL",
                    name="Read",
                    content={"file": "a.py"},
                    duration_ms=5,
                )
            ).to_json()
        )
        content = ReportContent(
            sections=[ReportSection(title="Context", content="The login form.")],
            findings=[Finding(title="Token not refreshed", severity="HIGH", evidence=["auth.py:42"])],
            recommendations=["Refresh before expiry"],
        )
        await ws.send(
            InvestigationReport(
                payload=InvestigationReportPayload(
                    command_id=cid,
                    agent_id=agent_id,
                    report_id=f"r-{cid}",
                    status=ReportStatus.COMPLETE,
                    title="Login bug",
                    summary="Expired tokens.",
                    content=content,
                )
            ).to_json()
        )
        await ws.send(
            CommandComplete(
                payload=CommandCompletePayload(
                    command_id=cid, agent_id=agent_id, status="COMPLETED", tokens_used=120
                )
            ).to_json()
        )
        with hub.client() as client:
            traces = wait_until(
                lambda: len(t := client.get(f"/commands/{cid}/traces").json()) == 2 and t, 15, "traces"
            )
            assert {(t["traceId"], t["parentId"]) for t in traces} == {("t1", None), ("t2", "t1")}
            # Paged when asked: one at a time, in the order they came.
            pages = [
                client.get(f"/commands/{cid}/traces", params={"limit": 1, "offset": n}).json()
                for n in (0, 1, 2)
            ]
            assert [[t["traceId"] for t in page] for page in pages] == [
                [traces[0]["traceId"]],
                [traces[1]["traceId"]],
                [],
            ]
            assert client.get(f"/commands/{cid}/traces", params={"limit": 101}).status_code == 422
            reports = wait_until(
                lambda: client.get("/reports", params={"commandId": cid}).json()["items"], 15, "report"
            )
            report_id = reports[0]["id"]
            markdown = client.get(f"/reports/{report_id}/export", params={"format": "markdown"})
            assert markdown.headers["content-type"].startswith("text/markdown")
            assert "# Login bug" in markdown.text and "[HIGH] Token not refreshed" in markdown.text
            exported = client.get(f"/reports/{report_id}/export", params={"format": "json"}).json()
            assert exported["content"]["findings"][0]["evidence"] == ["auth.py:42"]
            done = finished(client, cid)
            assert done["executions"][0]["tokensUsed"] == 120
            assert client.get(f"/reports/{report_id}/export", params={"format": "pdf"}).status_code == 422


def test_pause_holds_the_queue_and_resume_releases_it(hub: HubProcess, tmp_path: Path) -> None:
    agent = start_agent(hub, "api-pause")
    marker = tmp_path / "ran"
    try:
        with hub.client() as client:
            assert client.post(f"/agents/{agent.agent_id}/pause").json()["delivered"] is True
            assert client.get(f"/agents/{agent.agent_id}").json()["activity"] == "PAUSED"
            command = client.post(
                "/commands", json={"content": f"touch {marker}", "targetAgents": [agent.agent_id]}
            ).json()
            wait_until(
                lambda: client.get(f"/agents/{agent.agent_id}/queue").json()["items"], 10, "it to be queued"
            )
            assert client.get(f"/agents/{agent.agent_id}/queue").json()["paused"] is True
            assert not marker.exists()
            client.post(f"/agents/{agent.agent_id}/resume")
            assert finished(client, command["id"])["status"] == "COMPLETED"
            assert marker.exists()
            actions = [
                a["action"]
                for a in client.get("/audit-logs", params={"agentId": agent.agent_id}).json()["items"]
            ]
            assert "agent.pause" in actions and "agent.resume" in actions
    finally:
        agent.stop()


def command_processes(agents: list[AgentProcess]) -> list[psutil.Process]:
    """Every process the agents' commands run (each wrapper's descendants)."""
    tree: list[psutil.Process] = []
    for agent in agents:
        with contextlib.suppress(psutil.Error):
            tree += psutil.Process(agent.process.pid).children(recursive=True)
    return tree


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_broadcast_and_emergency_stop(hub: HubProcess, tmp_path: Path) -> None:
    agents = [start_agent(hub, f"api-fleet-{n}") for n in range(3)]
    try:
        with hub.client() as client:
            online = {a["id"] for a in client.get("/agents").json() if a["status"] == "ONLINE"}
            command = client.post("/commands", json={"content": "echo $PPID", "broadcast": True}).json()
            assert {e["agentId"] for e in command["executions"]} == online
            assert finished(client, command["id"])["status"] == "COMPLETED"
            # Long commands on every agent, each a shell with children that ignore SIGINT (background
            # jobs), plus queued ones behind them.
            loop = "sleep 60 & sleep 60 & while true; do sleep 0.2; done"
            running = client.post("/commands", json={"content": loop, "broadcast": True}).json()
            queued = client.post("/commands", json={"content": "sleep 60", "broadcast": True}).json()
            wait_until(
                lambda: all(
                    e["status"] == "EXECUTING"
                    for e in client.get(f"/commands/{running['id']}").json()["executions"]
                ),
                20,
                "all running",
            )
            processes = wait_until(
                lambda: tree if len(tree := command_processes(agents)) >= 3 * len(agents) else None,
                20,
                "each command's shell and its two sleeps",
            )
            result = client.post("/emergency-stop").json()
            assert result["cancelledRunning"] == len(online)
            assert result["clearedQueued"] == len(online)
            # The answer comes once every interrupted command has ended, its processes with it.
            assert result["unsettled"] == 0, result
            assert [p.pid for p in processes if alive(p)] == []
            stopped = client.get(f"/commands/{running['id']}").json()
            assert {e["status"] for e in stopped["executions"]} == {"CANCELLED"}, stopped
            for cmd in (running, queued):
                ended = finished(client, cmd["id"], 30)
                assert ended["status"] == "CANCELLED"
                assert {e["endReason"] for e in ended["executions"]} == {"EMERGENCY_STOP"}
            audit = client.get("/audit-logs", params={"action": "emergency_stop"}).json()["items"]
            assert audit and audit[0]["details"]["cancelledRunning"] == len(online)
    finally:
        for agent in agents:
            agent.stop()


async def test_a_trace_node_keeps_its_input_when_its_end_arrives(hub: HubProcess) -> None:
    """A tool call comes twice (started with its input, then ended without it): the stored node
    has both, in one batch or across batches."""
    agent_id, token = hub.agent_token("api-trace-merge")
    async with connect(
        hub.ws_url + "/ws/agent", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send(
            AgentConnect(
                payload=AgentConnectPayload(agent_id=agent_id, agent_type=AgentType.CLAUDE)
            ).to_json()
        )
        await ws.recv()
        with hub.client() as client:
            command = client.post("/commands", json={"content": "x", "targetAgents": [agent_id]}).json()
        while parse_hub_to_agent(await asyncio.wait_for(ws.recv(), 20)).type != "COMMAND_REQUEST":
            pass
        cid = command["id"]
        start = TraceEventPayload(
            command_id=cid, agent_id=agent_id, trace_id="call-1", type="TOOL_CALL", name="Read",
            content={"file": "a.py"}, started_at=1000,
        )  # fmt: skip
        end = TraceEventPayload(
            command_id=cid, agent_id=agent_id, trace_id="call-1", type="TOOL_CALL", name="Read",
            started_at=1000, completed_at=1500, duration_ms=500,
        )  # fmt: skip
        await ws.send(TraceEvent(payload=start).to_json())
        await ws.send(TraceEvent(payload=end).to_json())
        await ws.send(
            CommandComplete(
                payload=CommandCompletePayload(command_id=cid, agent_id=agent_id, status="COMPLETED")
            ).to_json()
        )
        with hub.client() as client:
            node = wait_until(
                lambda: (t := client.get(f"/commands/{cid}/traces").json()) and t[0]["completedAt"] and t[0],
                15,
                "the node's end",
            )
    assert node["content"] == {"file": "a.py"} and node["durationMs"] == 500 and node["startedAt"] == 1000


def test_the_agents_list_pages_when_asked(hub: HubProcess) -> None:
    for name in ("page-a", "page-b", "page-c"):
        hub.agent_token(name)
    with hub.client() as client:
        everyone = [a["name"] for a in client.get("/agents").json()]
        assert {"page-a", "page-b", "page-c"} <= set(everyone)
        start = everyone.index("page-a")
        page = client.get("/agents", params={"limit": 2, "offset": start}).json()
        assert [a["name"] for a in page] == everyone[start : start + 2]
        assert client.get("/agents", params={"offset": len(everyone)}).json() == []
        assert client.get("/agents", params={"limit": 101}).status_code == 422
        assert client.get("/agents", params={"limit": 0}).status_code == 422
