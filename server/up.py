"""``onsembl up``: the hub, its workers and local demo agents on this machine, in one command.

The hub runs as a child process (its own lifespan starts the embedded Redis and the worker pool);
demo agents are ``shell`` wrappers with tokens minted from the same settings. Ctrl-C stops all.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from server.auth.tokens import TokenKind, mint
from shared.config import Settings

DEMO_USER = "you@localhost"


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _ensure_agent(settings: Settings, name: str, kind: str) -> str:
    from server.cli import _ensure_agent as ensure

    return asyncio.run(ensure(settings, name, kind))


#: Agent CLIs the demo uses when they are on PATH (each as one agent), before ``shell`` agents.
AGENT_CLIS = ("claude", "gemini", "codex")


def demo_agents_for(count: int) -> list[tuple[str, str]]:
    """(name, kind) of the demo agents: the agent CLIs found on PATH first, then ``shell`` agents."""
    found = [(cli, cli) for cli in AGENT_CLIS if shutil.which(cli)][:count]
    return found + [(f"demo-{n}", "shell") for n in range(1, count - len(found) + 1)]


def run_up(settings: Settings, *, headless: bool, demo_agents: int) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    port_file = settings.data_dir / "up.json"
    port_file.unlink(missing_ok=True)
    env = dict(os.environ, ONSEMBL_DATA_DIR=str(settings.data_dir))
    children: list[subprocess.Popen[bytes]] = []
    # With the TUI on this terminal, the hub's, workers' and agents' logs go to a file: written to
    # the terminal, they would draw over the TUI.
    log_path = settings.data_dir / "logs" / "up.log"
    output: Any = None
    if not headless:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        output = open(log_path, "ab")
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
        stdout=output,
        stderr=output,
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
        demo = demo_agents_for(demo_agents)
        for name, kind in demo:
            agent_id = _ensure_agent(settings, name, kind)
            token = mint(settings, TokenKind.AGENT, agent_id, name=name)
            program = ["--", "bash", "-lc"] if kind == "shell" else []
            argv = [_bin("onsembl-agent"), kind, "--name", name, "--server", url, "--workdir", os.getcwd()]
            argv += ["--log-level", "WARNING", *program]
            children.append(
                subprocess.Popen(argv, env=dict(env, ONSEMBL_TOKEN=token), stdout=output, stderr=output)
            )
        user_token = mint(settings, TokenKind.ACCESS, DEMO_USER, ttl_s=12 * 3600)
        _wait_agents_online(url, user_token, [name for name, _ in demo])
        names = ", ".join(name for name, _ in demo)
        print(
            f"\nOnsembl is up at {url} with the agents {names} (data in {settings.data_dir}).\n"
            f"  export ONSEMBL_SERVER_URL={url}\n"
            f"  export ONSEMBL_TOKEN=$(onsembl token user {DEMO_USER} | tail -n 1)\n"
            f'  curl -s -H "Authorization: Bearer $ONSEMBL_TOKEN" $ONSEMBL_SERVER_URL/v1/agents\n'
            "Ctrl-C stops everything.\n",
            file=sys.stderr,
            flush=True,
        )
        if not headless:
            print(f"Logs: {log_path}", file=sys.stderr, flush=True)
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
        if output is not None:
            output.close()


def _wait_agents_online(url: str, token: str, names: list[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                agents = client.get("/v1/agents").json()
                if {a["name"] for a in agents if a["status"] == "ONLINE"} >= set(names):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    print("onsembl up: the demo agents did not come online in time; see the log above", file=sys.stderr)
