"""``onsembl-tui --serve``: the same TUI in a browser, through textual-serve (real processes)."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
from websockets.asyncio.client import connect

from tests.harness import BIN, HubProcess, free_port, start_agent, timeout, wait_until


def test_serve_refuses_a_public_address_without_being_told(hub: HubProcess) -> None:
    result = subprocess.run(
        [str(BIN / "onsembl-tui"), "--serve", "--serve-host", "0.0.0.0", "--server", hub.url],
        env={"ONSEMBL_TOKEN": hub.user_token(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=timeout(30),
    )
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr


async def test_a_browser_gets_the_tui_with_the_hubs_agents(hub: HubProcess) -> None:
    agent = start_agent(hub, "browser-agent")
    port = free_port()
    server = start_serving(hub, port)
    try:
        page = wait_until(lambda: _get(f"http://127.0.0.1:{port}/"), 30, "the page to be served")
        assert page.status_code == 200
        assert f"ws://127.0.0.1:{port}/ws" in page.text  # the page's terminal connects there
        # What the page's script does: open the socket with its size; the app's screen comes back.
        async with connect(f"ws://127.0.0.1:{port}/ws?width=120&height=40") as ws:
            screen = ""
            deadline = time.monotonic() + timeout(30)
            while "browser-agent" not in screen:
                left = deadline - time.monotonic()
                assert left > 0, f"the agent never showed in the served TUI: {screen[-500:]!r}"
                try:
                    frame = await asyncio.wait_for(ws.recv(), min(left, 1))
                except TimeoutError:
                    continue
                screen += frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    finally:
        server.terminate()
        assert server.wait(timeout(15)) == 0
        agent.stop()


def start_serving(hub: HubProcess, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "onsembl-tui"), "--serve", "--serve-port", str(port), "--server", hub.url],
        env={"ONSEMBL_TOKEN": hub.user_token(), "PATH": "/usr/bin:/bin", "HOME": str(hub.data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
