"""Redis stops answering while an agent streams (SIGSTOP: a stalled server, not a dead one).

The hub hands the lines to its TUI and holds them for Redis up to its limit (20,000 events); past
that it stops reading the agent's socket, so the agent's sends wait in TCP instead of piling up in
the hub. When Redis answers again, every line reaches the TUI and the store, once and in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.events import MAX_UNFLUSHED
from shared.protocol import AgentBatch, AgentBatchPayload, AgentToHub
from tests.harness import Dashboard, HubProcess, async_wait_until, timeout, wait_until
from tests.reliability.helpers import figure, output_message, take_command
from tests.reliability.test_faults import child
from tests.server.test_bad_input import open_agent

pytestmark = pytest.mark.reliability

#: Half again what the hub holds for Redis, in AGENT_BATCH frames of BATCH lines.
LINES = MAX_UNFLUSHED * 3 // 2
BATCH = 500


def unread_bytes(local_port: int, peer_port: int) -> int:
    """What the kernel holds for the hub on its end of our agent's TCP connection and the hub has
    not read (``rx_queue`` of /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == peer_port:
            return int(fields[4].split(":")[1], 16)
    raise AssertionError("the connection is not in /proc/net/tcp")


def batch(command_id: str, agent_id: str, first: int) -> str:
    lines: list[AgentToHub] = [
        output_message(command_id, agent_id, n, f"line {n}\n")
        for n in range(first, min(first + BATCH, LINES))
    ]
    return AgentBatch(payload=AgentBatchPayload(messages=lines)).to_json()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the socket's queue from /proc/net/tcp")
async def test_a_stalled_redis_pauses_the_agent_and_loses_nothing(tmp_path: Path) -> None:
    # The TUI client here (the websockets library's defaults) reads the 30,000-line burst slower than
    # the hub sends it; deflated, the backlog sits in the sockets' buffers, not in the hub's queue for
    # the client, which past 10,000 events drops a client as not reading (tests/reliability/
    # test_slow_client.py). This test is about the stalled Redis, so the client negotiates deflate,
    # as it did when deflate was the hub's default.
    hub = HubProcess(tmp_path / "hub", workers=2, env_overrides={"ONSEMBL_WS_COMPRESSION_LEVEL": "1"}).start()
    tui = await Dashboard(hub).connect()
    ws, agent_id = await open_agent(hub, "stall")
    server = child(hub, "redis-server")
    sender: asyncio.Task[None] | None = None
    try:
        command_id = await take_command(hub, ws, agent_id)
        # The first line while Redis answers: the hub learns the command (a Redis read).
        await ws.send(batch(command_id, agent_id, 0))
        await tui.wait_for(lambda m: m.type == "TERMINAL_STREAM" and m.payload.sequence == BATCH - 1, 20)
        server.suspend()

        async def send_rest() -> None:
            for first in range(BATCH, LINES, BATCH):
                await ws.send(batch(command_id, agent_id, first))

        sender = asyncio.create_task(send_rest())
        sockname = ws.transport.get_extra_info("sockname")
        hub_port = int(hub.url.rsplit(":", 1)[1])
        # Past its limit the hub stops reading: what the agent sent stays in the kernel, unread, for
        # as long as Redis is away (a hub that read on would empty it within milliseconds).
        await async_wait_until(
            lambda: (
                len(tui.output_of(command_id)) >= MAX_UNFLUSHED and unread_bytes(hub_port, sockname[1]) > 0
            ),
            30,
            "the hub to stop reading the agent's socket",
        )
        unread = []
        for _ in range(20):
            await asyncio.sleep(timeout(0.05))
            unread.append(unread_bytes(hub_port, sockname[1]))
        figure("bytes the hub left unread while Redis was stopped", min(unread))
        assert min(unread) > 0, unread
        held = len(tui.output_of(command_id))
        figure("lines at the TUI while Redis was stopped", held)
        assert held < LINES
        server.resume()

        await async_wait_until(lambda: sender.done(), 30, "the agent's sends to go through")
        await tui.wait_for(lambda m: m.type == "TERMINAL_STREAM" and m.payload.sequence == LINES - 1, 60)
        assert [p.sequence for p in tui.output_of(command_id)] == list(range(LINES))
        with hub.client() as client:
            wait_until(
                lambda: client.get(f"/commands/{command_id}/output", params={"after": LINES - 2}).json()[
                    "items"
                ],
                60,
                "the store to hold the last line",
            )
            total = client.get(f"/commands/{command_id}/output", params={"limit": 1}).json()["total"]
        assert total == LINES
    finally:
        if server.status() == "stopped":
            server.resume()
        if sender is not None:
            sender.cancel()
        await ws.close()
        await tui.close()
        hub.stop()
        hub.shutdown_redis()
