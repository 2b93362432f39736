"""An agent's frames are handled in the order they came, whether the transport hands them to the
session as they are parsed (``ws_direct_receive``, the default) or through ASGI's ``receive()``:
output lines, one at once or in batches, a line whose command the hub must first look up, a frame the
protocol refuses and one that speaks for another agent in between."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from shared.api import HealthMetrics
from shared.enums import AgentType, CompletionStatus
from shared.protocol import (
    AgentBatch,
    AgentBatchPayload,
    AgentConnect,
    AgentConnectPayload,
    AgentHeartbeat,
    AgentHeartbeatPayload,
    AgentToHub,
    CommandComplete,
    CommandCompletePayload,
    TerminalOutput,
)
from tests.harness import Dashboard, HubProcess, timeout, wait_command, wait_until
from tests.reliability.helpers import output_message, take_command
from tests.server.test_bad_input import closed_with, open_agent

LINES = 300


@pytest.fixture(scope="module", params=[True, False], ids=["direct", "asgi"])
def receive_hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    direct = "true" if request.param else "false"
    process = HubProcess(
        tmp_path_factory.mktemp("hub"), env_overrides={"ONSEMBL_WS_DIRECT_RECEIVE": direct}, workers=2
    ).start()
    yield process
    process.stop()
    process.shutdown_redis()


async def test_frames_are_handled_in_order_and_bad_ones_are_answered(receive_hub: HubProcess) -> None:
    hub = receive_hub
    tui = await Dashboard(hub).connect()
    ws, agent_id = await open_agent(hub, "receive-order")
    try:
        cid = await take_command(hub, ws, agent_id)

        def line(seq: int) -> TerminalOutput:
            return output_message(cid, agent_id, seq, f"line {seq}\n")

        heartbeat = AgentHeartbeat(
            payload=AgentHeartbeatPayload(agent_id=agent_id, health_metrics=HealthMetrics(uptime_seconds=1.0))
        )
        # The first lines come at once: the hub looks the command up (awaits) while the rest arrive,
        # and they must wait behind it.
        for seq in range(0, 20):
            await ws.send(line(seq).to_json())
        await ws.send("{not json")
        # A heartbeat (handled with awaits) inside a batch of lines.
        batch: list[AgentToHub] = [line(seq) for seq in range(20, 120)]
        batch.insert(50, heartbeat)
        await ws.send(AgentBatch(payload=AgentBatchPayload(messages=batch)).to_json())
        foreign = line(999).model_copy(deep=True)
        foreign.payload.agent_id = "someone-else"
        await ws.send(foreign.to_json())
        for start in range(120, LINES, 30):
            lines: list[AgentToHub] = [line(s) for s in range(start, start + 30)]
            await ws.send(AgentBatch(payload=AgentBatchPayload(messages=lines)).to_json())
        await ws.send(
            CommandComplete(
                payload=CommandCompletePayload(
                    command_id=cid, agent_id=agent_id, status=CompletionStatus.COMPLETED, output_lines=LINES
                )
            ).to_json()
        )
        errors: list[str] = []
        async with asyncio.timeout(timeout(10)):
            while len(errors) < 2:
                message = json.loads(await ws.recv())
                if message["type"] == "ERROR":
                    errors.append(message["payload"]["code"])
        assert errors == ["INVALID_MESSAGE", "AUTH_FAILED"]

        await tui.wait_for(
            lambda m: (
                m.type == "TERMINAL_STREAM"
                and m.payload.command_id == cid
                and m.payload.sequence == LINES - 1
            ),
            20,
        )
        assert [p.sequence for p in tui.output_of(cid)] == list(range(LINES))
        with hub.client() as client:
            assert wait_command(client, cid)["status"] == "COMPLETED"
            stored = wait_until(
                lambda: (
                    (page := client.get(f"/commands/{cid}/output", params={"limit": 1000}).json())
                    and len(page["items"]) == LINES
                    and page
                ),
                20,
                "every line stored",
            )
        assert [item["sequence"] for item in stored["items"]] == list(range(LINES))
    finally:
        await ws.close()
        await tui.close()


async def test_frames_sent_before_the_hub_is_ready_are_taken_in_order(receive_hub: HubProcess) -> None:
    """Frames right behind AGENT_CONNECT arrive while the hub still sets the agent up: they wait
    (on the direct path, in uvicorn's queue until the session takes over) and are answered in order."""
    hub = receive_hub
    agent_id, token = hub.agent_token("receive-early")
    heartbeat = AgentHeartbeat(
        payload=AgentHeartbeatPayload(agent_id="someone-else", health_metrics=HealthMetrics())
    )
    async with connect(
        hub.ws_url + "/ws/agent", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        await ws.send(
            AgentConnect(payload=AgentConnectPayload(agent_id=agent_id, agent_type=AgentType.SHELL)).to_json()
        )
        await ws.send("[]")
        await ws.send(heartbeat.to_json())
        await ws.send(AgentBatch(payload=AgentBatchPayload(messages=[heartbeat])).to_json())
        answers: list[str] = []
        async with asyncio.timeout(timeout(10)):
            while len(answers) < 4:
                message = json.loads(await ws.recv())
                answers.append(message["payload"].get("code", message["type"]))
        assert answers == ["SERVER_HEARTBEAT", "INVALID_MESSAGE", "AUTH_FAILED", "AUTH_FAILED"]


async def test_a_text_frame_that_is_not_utf8_closes_1007_and_a_binary_one_is_answered(
    receive_hub: HubProcess,
) -> None:
    ws, _ = await open_agent(receive_hub, "receive-bytes")
    try:
        await ws.send(b"\xff\xfe{}")  # binary: answered, the socket stays
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
        assert message["type"] == "ERROR" and message["payload"]["code"] == "INVALID_MESSAGE"
        assert "UTF-8" in message["payload"]["message"]
        await ws.send(b"\xff\xfe{}", text=True)  # text that is not UTF-8: a protocol error (RFC 6455)
        code, _ = await closed_with(ws)
        assert code == 1007
    finally:
        await ws.close()
