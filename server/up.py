"""``onsembl up``: the hub, its workers and local demo agents on this machine, in one command.

The hub runs as a child process (its own lifespan starts the embedded Redis and the worker pool);
demo agents are ``shell`` wrappers with tokens minted from the same settings. Ctrl-C stops all.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.auth.tokens import TokenKind, mint
from shared.config import Settings

DEMO_USER = "you@localhost"


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _ensure_agent(settings: Settings, name: str) -> str:
    from server.cli import _ensure_agent as ensure

    return asyncio.run(ensure(settings, name, "shell"))


def run_up(settings: Settings, *, headless: bool, demo_agents: int) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    port_file = settings.data_dir / "up.json"
    port_file.unlink(missing_ok=True)
    env = dict(os.environ, ONSEMBL_DATA_DIR=str(settings.data_dir))
    children: list[subprocess.Popen[bytes]] = []
    hub = subprocess.Popen(
        [
            _bin("onsembl"),
            "server",
            "--host",
            settings.host,
            "--port",
            str(settings.port),
            "--port-file",
            str(port_file),
            "--log-level",
            settings.log_level,
        ],
        env=env,
    )
    children.append(hub)

    def stop_all(*_: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()

    def on_sigterm(*_: object) -> None:
        # Unwind to the ``finally`` below, which stops the children. Stopping them here, inside the
        # handler, re-entered ``hub.wait()`` while the interrupted one held its lock: the inner wait
        # spun until its 15 s timeout although the hub had exited at once.
        raise SystemExit(0)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if hub.poll() is not None:
                raise SystemExit(f"onsembl up: the hub exited with {hub.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("onsembl up: the hub did not start within 60 s")
            time.sleep(0.1)
        url = json.loads(port_file.read_text())["url"]
        for n in range(1, demo_agents + 1):
            name = f"demo-{n}"
            agent_id = _ensure_agent(settings, name)
            token = mint(settings, TokenKind.AGENT, agent_id, name=name)
            children.append(
                subprocess.Popen(
                    [
                        _bin("onsembl-agent"),
                        "shell",
                        "--name",
                        name,
                        "--server",
                        url,
                        "--workdir",
                        os.getcwd(),
                        "--log-level",
                        "WARNING",
                        "--",
                        "bash",
                        "-lc",
                    ],
                    env=dict(env, ONSEMBL_TOKEN=token),
                )
            )
        user_token = mint(settings, TokenKind.ACCESS, DEMO_USER, ttl_s=12 * 3600)
        _wait_agents_online(url, user_token, demo_agents)
        print(
            f"\nOnsembl is up at {url} with {demo_agents} demo agents (data in {settings.data_dir}).\n"
            f"  export ONSEMBL_SERVER_URL={url}\n"
            f"  export ONSEMBL_TOKEN=$(onsembl token user {DEMO_USER} | tail -n 1)\n"
            f'  curl -s -H "Authorization: Bearer $ONSEMBL_TOKEN" $ONSEMBL_SERVER_URL/v1/agents\n'
            "Ctrl-C stops everything.\n",
            file=sys.stderr,
            flush=True,
        )
        if not headless:
            try:
                from tui.cli import launch
            except ImportError:
                print("(the terminal UI is not part of this build yet; running headless)", file=sys.stderr)
            else:
                launch(url, user_token)
                return
        hub.wait()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short (each child gets SIGKILL after 15 s).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all()


def _wait_agents_online(url: str, token: str, count: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                agents = client.get("/v1/agents").json()
                if (
                    sum(1 for a in agents if a["name"].startswith("demo-") and a["status"] == "ONLINE")
                    >= count
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    print("onsembl up: the demo agents did not come online in time; see the log above", file=sys.stderr)
