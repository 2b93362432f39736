"""Bad input gets its documented answer, and the hub keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.auth.tokens import TokenKind, mint
from shared.enums import AgentType
from shared.protocol import (
    AgentConnect,
    AgentConnectPayload,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    DashboardConnect,
    HealthMetrics,
    Ping,
)
from tests.harness import HubProcess, start_agent, timeout


async def open_agent(hub: HubProcess, name: str) -> tuple[ClientConnection, str]:
    agent_id, token = hub.agent_token(name)
    ws = await connect(
        hub.ws_url + "/ws/agent", additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
    )
    await ws.send(
        AgentConnect(payload=AgentConnectPayload(agent_id=agent_id, agent_type=AgentType.SHELL)).to_json()
    )
    first = json.loads(await ws.recv())
    assert first["type"] == "SERVER_HEARTBEAT", first
    return ws, agent_id


async def next_of_type(ws: ClientConnection, kind: str, seconds: float = 5) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout(seconds)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind} message")
        message = json.loads(await asyncio.wait_for(ws.recv(), left))
        if message["type"] == kind:
            return message


async def closed_with(ws: ClientConnection) -> tuple[int | None, list[dict]]:  # type: ignore[type-arg]
    messages = []
    try:
        async with asyncio.timeout(timeout(10)):
            async for frame in ws:
                messages.append(json.loads(frame))
    except ConnectionClosed:
        pass
    return ws.close_code, messages


async def heartbeat_works(ws: ClientConnection, agent_id: str, hub: HubProcess) -> None:
    await ws.send(
        AgentHeartbeat(
            payload=AgentHeartbeatPayload(agent_id=agent_id, health_metrics=HealthMetrics(cpu_percent=1.5))
        ).to_json()
    )
    with hub.client() as client:
        for _ in range(100):
            if client.get(f"/agents/{agent_id}").json()["health"]["cpuPercent"] == 1.5:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the connection no longer works")


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        ("{not json", "malformed JSON"),
        (json.dumps({"type": "LAUNCH_MISSILES", "id": "x", "timestamp": 1, "payload": {}}), "unknown type"),
        (
            json.dumps({"type": "TERMINAL_OUTPUT", "id": "x", "timestamp": 1, "payload": {"content": "hi"}}),
            "missing fields",
        ),
        (json.dumps({"type": "COMMAND_ACK", "id": "x", "timestamp": "soon", "payload": {}}), "wrong types"),
        ("[1, 2, 3]", "not an object"),
    ],
)
async def test_invalid_agent_messages_get_invalid_message_and_keep_the_connection(
    hub: HubProcess, frame: str, what: str
) -> None:
    ws, agent_id = await open_agent(hub, "bad-input-agent")
    try:
        await ws.send(frame)
        reply = await next_of_type(ws, "ERROR")
        assert reply["payload"]["code"] == "INVALID_MESSAGE", what
        assert reply["payload"]["recoverable"] is True
        if what == "missing fields":
            locations = {d["loc"] for d in reply["payload"]["details"]}
            assert any("commandId" in loc for loc in locations), locations
        await heartbeat_works(ws, agent_id, hub)
    finally:
        await ws.close()


async def test_output_for_a_command_the_agent_does_not_have_is_refused(hub: HubProcess) -> None:
    ws, agent_id = await open_agent(hub, "bad-input-unknown-command")
    try:
        await ws.send(
            json.dumps(
                {
                    "type": "TERMINAL_OUTPUT",
                    "id": "m1",
                    "timestamp": 1,
                    "payload": {
                        "commandId": "no-such-command",
                        "agentId": agent_id,
                        "streamType": "STDOUT",
                        "content": "x",
                        "sequence": 0,
                    },
                }
            )
        )
        reply = await next_of_type(ws, "ERROR")
        assert reply["payload"]["code"] == "INVALID_MESSAGE"
        assert "no-such-command" in reply["payload"]["message"]
        await heartbeat_works(ws, agent_id, hub)
    finally:
        await ws.close()


async def test_oversize_agent_message_closes_1009(hub: HubProcess) -> None:
    ws, _ = await open_agent(hub, "bad-input-oversize")
    other, other_id = await open_agent(hub, "bad-input-bystander")
    try:
        await ws.send("x" * (1024 * 1024 + 1))
        code, _ = await closed_with(ws)
        assert code == 1009
        await heartbeat_works(other, other_id, hub)
    finally:
        await other.close()


async def test_flood_gets_rate_limit_and_others_are_served(hub: HubProcess) -> None:
    ws, agent_id = await open_agent(hub, "bad-input-flood")
    other, other_id = await open_agent(hub, "bad-input-calm")
    try:
        frame = AgentHeartbeat(
            payload=AgentHeartbeatPayload(agent_id=agent_id, health_metrics=HealthMetrics())
        ).to_json()
        for _ in range(1000):  # 10x the per-second limit, at once
            await ws.send(frame)
        reply = await next_of_type(ws, "ERROR", 20)
        assert reply["payload"]["code"] == "RATE_LIMIT"
        await heartbeat_works(other, other_id, hub)
        await asyncio.sleep(1.1)  # the bucket refills: the flooder is served again
        await heartbeat_works(ws, agent_id, hub)
    finally:
        await ws.close()
        await other.close()


async def _refused(
    hub: HubProcess, path: str, token: str, hello: str | None = None
) -> tuple[int | None, list[dict]]:  # type: ignore[type-arg]
    ws = await connect(hub.ws_url + path, additional_headers={"Authorization": f"Bearer {token}"})
    if hello is not None:
        try:
            await ws.send(hello)
        except ConnectionClosed:
            pass  # the hub may close before our first message
    return await closed_with(ws)


async def test_bad_tokens_close_1008_with_auth_failed(hub: HubProcess) -> None:
    settings = hub.settings
    agent_id, agent_token = hub.agent_token("bad-input-auth")
    other_id, _ = hub.agent_token("bad-input-auth-other")
    user_token = hub.user_token()
    expired = mint(settings, TokenKind.AGENT, agent_id, name="x", ttl_s=-60)
    hello = AgentConnect(payload=AgentConnectPayload(agent_id=agent_id, agent_type=AgentType.SHELL)).to_json()
    cases = {
        "garbage": ("/ws/agent", "not-a-token", hello),
        "expired": ("/ws/agent", expired, hello),
        "user token as agent": ("/ws/agent", user_token, hello),
        "agent token on dashboard": ("/ws/dashboard", agent_token, DashboardConnect().to_json()),
        "another agent's id": (
            "/ws/agent",
            agent_token,
            AgentConnect(
                payload=AgentConnectPayload(agent_id=other_id, agent_type=AgentType.SHELL)
            ).to_json(),
        ),
        "path id mismatch": (f"/ws/agent/{other_id}", agent_token, hello),
    }
    for label, (path, token, first) in cases.items():
        code, messages = await _refused(hub, path, token, first)
        assert code == 1008, label
        assert (
            messages and messages[0]["type"] == "ERROR" and messages[0]["payload"]["code"] == "AUTH_FAILED"
        ), label
    # REST: 401 with the error body for a missing or bad token; 403 for an agent's (valid, but not a
    # user's).
    async with httpx.AsyncClient(base_url=hub.url) as client:
        for headers, status in (
            ({}, 401),
            ({"Authorization": "Bearer nope"}, 401),
            ({"Authorization": f"Bearer {agent_token}"}, 403),
        ):
            response = await client.get("/v1/agents", headers=headers)
            assert response.status_code == status
            assert response.json()["error"] == "AUTH_FAILED"


async def test_dashboard_bad_messages_and_oversize(hub: HubProcess) -> None:
    ws = await connect(
        hub.ws_url + "/ws/dashboard", additional_headers={"Authorization": f"Bearer {hub.user_token()}"}
    )
    try:
        await ws.send(DashboardConnect().to_json())
        await next_of_type(ws, "DASHBOARD_READY")
        await ws.send('{"type": "COMMAND_SUBMIT", "id": "r1", "timestamp": 1, "payload": {"content": ""}}')
        error = await next_of_type(ws, "ERROR")
        assert error["payload"]["code"] == "INVALID_MESSAGE"
        await ws.send(
            json.dumps(
                {
                    "type": "COMMAND_SUBMIT",
                    "id": "r2",
                    "timestamp": 1,
                    "payload": {"content": "hi", "targetAgents": ["ghost"]},
                }
            )
        )
        error = await next_of_type(ws, "ERROR")
        assert error["payload"]["code"] == "NOT_FOUND" and error["payload"]["requestId"] == "r2"
        await ws.send(Ping().to_json())
        await next_of_type(ws, "PONG")
        await ws.send("y" * (512 * 1024 + 1))
        code, _ = await closed_with(ws)
        assert code == 1009
    finally:
        await ws.close()


def test_rest_bad_input(hub: HubProcess) -> None:
    agent = start_agent(hub, "bad-input-rest")
    try:
        with hub.client() as client:
            cases = [
                ({"content": "x"}, 422),  # no target
                ({"content": "x", "targetAgents": [agent.agent_id], "broadcast": True}, 422),
                ({"content": "x", "targetAgents": [agent.agent_id], "priority": 101}, 422),
                ({"content": "x", "targetAgents": [agent.agent_id], "priority": "5"}, 422),
                ({"content": "x", "targetAgents": [agent.agent_id], "type": "natural"}, 422),
                ({"content": "x", "targetAgents": [agent.agent_id], "surprise": 1}, 422),
                ({"content": "x", "targetAgents": ["ghost"]}, 404),
            ]
            for body, status in cases:
                response = client.post("/commands", json=body)
                assert response.status_code == status, (body, response.text)
                assert {"error", "message", "details"} <= response.json().keys()
            assert (
                client.post(
                    "/commands", content=b"{nope", headers={"content-type": "application/json"}
                ).status_code
                == 422
            )
            assert client.get("/agents/ghost").status_code == 404
            assert client.get("/commands", params={"limit": 101}).status_code == 422
            assert client.post("/agents/ghost/pause").status_code == 404
            # Still serving.
            ok = client.post("/commands", json={"content": "true", "targetAgents": [agent.agent_id]})
            assert ok.status_code == 201
        assert httpx.get(hub.url + "/health").json()["status"] == "ok"
    finally:
        agent.stop()
