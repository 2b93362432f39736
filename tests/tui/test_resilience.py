"""The TUI across a lost hub: a banner while it is away, retries, and the streams resume where they
stopped, with no line lost or shown twice."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.harness import HubProcess, start_agent, wait_command
from tests.tui.conftest import make_app, wait_for
from tui.client.stream import LinkState, retry_delay
from tui.widgets.link_banner import LinkBanner

LINES = 300


def test_retry_schedule_is_half_a_second_growing_to_five() -> None:
    delays = [retry_delay(n) for n in range(1, 10)]
    assert delays[:3] == [0.5, 0.75, 1.125]
    assert max(delays) == 5.0 and delays == sorted(delays)


async def test_hub_killed_and_restarted_banner_then_no_lost_lines(
    fresh_hub: HubProcess, tmp_path: Path
) -> None:
    hub = fresh_hub.start()
    agent = start_agent(hub, "streamer")
    app = make_app(hub)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(lambda: app.link_status.state is LinkState.CONNECTED, 15, "connected")
            with hub.client() as client:
                command = client.post(
                    "/commands",
                    json={
                        "content": f"for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.03; done",
                        "targetAgents": [agent.agent_id],
                    },
                ).json()
            command_id = command["id"]

            def received() -> list[str]:
                text = "".join(e.content for e in app.hub.output if e.command_id == command_id)
                return text.split()

            await wait_for(lambda: len(received()) >= 20, 20, "the first lines")
            hub.stop(signal.SIGKILL)
            banner = app.screen.query_one(LinkBanner)
            await wait_for(lambda: banner.has_class("-visible"), 10, "the banner")
            assert "lost" in str(banner.render())
            hub.start()
            await wait_for(lambda: app.link_status.state is LinkState.CONNECTED, 30, "reconnected")
            await pilot.pause()
            assert not banner.has_class("-visible")
            with hub.client() as client:
                assert wait_command(client, command_id, 60)["status"] == "COMPLETED"
            expected = [f"line-{n}" for n in range(1, LINES + 1)]
            await wait_for(lambda: len(received()) >= LINES, 20, "every line")
            assert received() == expected  # none lost, none twice, in order
            sequences = [e.sequence for e in app.hub.output if e.command_id == command_id]
            assert sequences == sorted(set(sequences))
    finally:
        agent.stop()
