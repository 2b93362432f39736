"""TOKEN_REFRESH: an agent whose token has less than a third of its lifetime left gets a new one of
the same lifetime over its socket; the wrapper connects with it from then on and keeps it in its
state dir for a restart. Real hub, raw sockets and a real wrapper process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import jwt
from websockets.asyncio.client import ClientConnection, connect

from server.auth.tokens import TokenKind, verify
from shared.api import HealthMetrics
from shared.enums import AgentType, StreamType
from shared.protocol import (
    AgentConnect,
    AgentConnectPayload,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    TerminalOutput,
    TerminalOutputPayload,
)
from tests.harness import HubProcess, start_agent, timeout, wait_until

DAY = 24 * 3600


def aged_token(hub: HubProcess, name: str, lifetime_s: int, age_s: int) -> tuple[str, str]:
    """An agent token of ``lifetime_s`` minted ``age_s`` ago (``mint`` dates tokens now)."""
    agent_id, _ = hub.agent_token(name)
    settings = hub.settings
    issued = int(time.time()) - age_s
    claims = {
        "sub": agent_id,
        "typ": "agent",
        "name": name,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_s,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "jti": uuid.uuid4().hex,
    }
    return agent_id, jwt.encode(claims, settings.secret(), algorithm="HS256")


async def connected(hub: HubProcess, agent_id: str, token: str) -> ClientConnection:
    ws = await connect(hub.ws_url + "/ws/agent", additional_headers={"Authorization": f"Bearer {token}"})
    await ws.send(
        AgentConnect(payload=AgentConnectPayload(agent_id=agent_id, agent_type=AgentType.SHELL)).to_json()
    )
    first = json.loads(await ws.recv())
    assert first["type"] == "SERVER_HEARTBEAT", first
    return ws


async def answers_to_a_heartbeat(ws: ClientConnection, agent_id: str) -> list[dict[str, Any]]:
    """What the hub sends after a heartbeat, up to its answer to a frame sent after the heartbeat (an
    output line for no command: an ERROR), which it handles in order."""
    beat = AgentHeartbeatPayload(agent_id=agent_id, health_metrics=HealthMetrics())
    await ws.send(AgentHeartbeat(payload=beat).to_json())
    stray = TerminalOutputPayload(
        command_id="no-command", agent_id=agent_id, stream_type=StreamType.STDOUT, content="x", sequence=0
    )
    await ws.send(TerminalOutput(payload=stray).to_json())
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout(10)):
        while not got or got[-1]["type"] != "ERROR":
            got.append(json.loads(await ws.recv()))
    return got


async def test_a_token_running_low_is_renewed_over_the_socket(hub: HubProcess) -> None:
    # A day long and half gone: not yet.
    agent_id, fresh = aged_token(hub, "renew-fresh", DAY, DAY // 2)
    ws = await connected(hub, agent_id, fresh)
    try:
        assert [m["type"] for m in await answers_to_a_heartbeat(ws, agent_id)] == ["ERROR"]
    finally:
        await ws.close()

    # Three days long, two and a half of them gone: a new one, three days long again.
    agent_id, low = aged_token(hub, "renew-low", 3 * DAY, 5 * DAY // 2)
    ws = await connected(hub, agent_id, low)
    try:
        answers = await answers_to_a_heartbeat(ws, agent_id)
        assert [m["type"] for m in answers] == ["TOKEN_REFRESH", "ERROR"]
        payload = answers[0]["payload"]
        assert payload["expiresIn"] == 3 * DAY
        principal = verify(hub.settings, payload["accessToken"], TokenKind.AGENT)
        assert principal.subject == agent_id and principal.name == "renew-low"
        assert abs(principal.expires_at - (time.time() + 3 * DAY)) < 60
        # Once renewed, the next heartbeat sends none.
        assert [m["type"] for m in await answers_to_a_heartbeat(ws, agent_id)] == ["ERROR"]
    finally:
        await ws.close()
    # The new token is the agent's: the hub takes it.
    again = await connected(hub, agent_id, payload["accessToken"])
    await again.close()
    with hub.client() as client:
        entries = client.get("/audit-logs", params={"agentId": agent_id}).json()["items"]
    actions = [e["action"] for e in entries]
    assert "agent.token_renewed" in actions


def test_the_wrapper_keeps_the_renewed_token_for_its_next_start(hub: HubProcess) -> None:
    agent_id, low = aged_token(hub, "renew-wrapper", 3 * DAY, 5 * DAY // 2)
    agent = start_agent(hub, "renew-wrapper", token=low)
    saved_at = hub.data_dir / "agents" / "renew-wrapper" / "token"
    try:
        saved = wait_until(lambda: saved_at.exists() and saved_at.read_text(), 20, "the renewed token")
        assert saved_at.stat().st_mode & 0o777 == 0o600
        assert verify(hub.settings, saved, TokenKind.AGENT).subject == agent_id
    finally:
        agent.stop()
    # Started again with the first token: it takes the renewed one, which lasts longer.
    agent = start_agent(hub, "renew-wrapper", token=low)
    try:
        wait_until(lambda: "using the token the hub renewed" in agent.log_tail(), 10, "the renewed token")
    finally:
        agent.stop()
