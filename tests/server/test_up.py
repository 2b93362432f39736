"""``onsembl up``: the demo agents are the agent CLIs found on PATH, then ``shell`` agents."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx

from server.auth.tokens import TokenKind, mint
from shared.config import Settings
from tests.harness import BIN, free_port, timeout, wait_until

FAKES = Path(__file__).resolve().parents[1] / "fakes" / "bin"


def run_up(tmp_path: Path, path: str, agents: int) -> list[tuple[str, str]]:
    """Start ``onsembl up --headless``, wait for its agents, stop it; (name, type) of the agents."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    env.update(ONSEMBL_DATA_DIR=str(tmp_path / "data"), PATH=path, FAKE_CLI_STATE_DIR=str(tmp_path / "fake"))
    up = subprocess.Popen(
        [str(BIN / "onsembl"), "up", "--headless", "--port", str(port), "--agents", str(agents)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        token = None

        def online() -> list[dict] | None:  # type: ignore[type-arg]
            nonlocal token
            if token is None:
                if not (tmp_path / "data" / "jwt-secret").exists():
                    return None
                token = mint(Settings(data_dir=tmp_path / "data"), TokenKind.ACCESS, "up-test@example.com")
            try:
                body = httpx.get(url + "/v1/agents", headers={"Authorization": f"Bearer {token}"}).json()
            except httpx.HTTPError:
                return None
            ready = [a for a in body if a["status"] == "ONLINE"]
            return ready if len(ready) == agents else None

        found = wait_until(online, 60, "the demo agents online")
        return sorted((a["name"], a["agentType"]) for a in found)
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(timeout(30))
        assert up.returncode == 0, up.stdout.read() if up.stdout else ""


def test_up_uses_the_agent_clis_on_path_first(tmp_path: Path) -> None:
    # The fake claude, gemini and codex (tests/fakes) are on PATH: two agents are the first two.
    agents = run_up(tmp_path, f"{FAKES}{os.pathsep}{os.environ['PATH']}", 2)
    assert agents == [("claude", "CLAUDE"), ("gemini", "GEMINI")]


def test_up_falls_back_to_shell_agents(tmp_path: Path) -> None:
    # No agent CLI on PATH (npm puts them in /usr/local/bin or a home directory).
    agents = run_up(tmp_path, "/usr/bin:/bin", 2)
    assert agents == [("demo-1", "SHELL"), ("demo-2", "SHELL")]
