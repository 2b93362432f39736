"""The real ``onsembl-tui`` binary in a real terminal (tmux), against a running hub and agent: what a
user types and what they see."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import BIN, AgentProcess, HubProcess, start_agent, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"
)


class Terminal:
    def __init__(self, session: str) -> None:
        self.session = session

    def keys(self, *keys: str, literal: bool = False) -> None:
        args = ["tmux", "send-keys", "-t", self.session]
        subprocess.run([*args, "-l", *keys] if literal else [*args, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True, text=True, check=True
        ).stdout

    def wait_for(self, text: str, seconds: float = 20) -> str:
        try:
            return str(wait_until(lambda: text in (screen := self.screen()) and screen, seconds, repr(text)))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the terminal shows:\n{self.screen()}") from None


@pytest.fixture
def terminal_agent(hub: HubProcess) -> Iterator[AgentProcess]:
    agent = start_agent(hub, "term-agent")
    yield agent
    agent.stop()


@pytest.fixture
def terminal(hub: HubProcess, terminal_agent: AgentProcess, tmp_path: Path) -> Iterator[Terminal]:
    session = f"onsembl-test-{uuid.uuid4().hex[:8]}"
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "ONSEMBL_TUI_BELL": "false",
        "TERM": "xterm-256color",
    }
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    command = (
        f"env {exports} {BIN / 'onsembl-tui'} --server {hub.url} --token {hub.user_token()}; "
        "echo TUI-EXIT:$?; sleep 60"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command],
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")},
    )
    try:
        yield Terminal(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_send_a_command_and_see_its_output_in_the_terminal(terminal: Terminal) -> None:
    screen = terminal.wait_for("term-agent")
    terminal.wait_for("1/1 online")
    assert "ONLINE" in screen or "ONLINE" in terminal.wait_for("ONLINE")
    terminal.keys("1")
    terminal.wait_for("→ term-agent")
    terminal.keys("i")
    terminal.wait_for("Verb")  # the footer shows the command bar's keys: the bar has the focus
    terminal.keys("echo hello-from-$((6*7))", literal=True)
    terminal.keys("Enter")
    screen = terminal.wait_for("hello-from-42")
    assert "term-agent" in screen.split("hello-from-42")[0].splitlines()[-1]  # the line names its agent
    terminal.keys("Escape")
    terminal.wait_for("Mark")  # back on the agents table (its keys in the footer)
    terminal.keys(":")
    terminal.wait_for("command mode")
    terminal.keys("queue term-agent", literal=True)
    terminal.keys("Enter")
    terminal.wait_for("Queue of term-agent")
    terminal.keys("Escape")
    terminal.wait_for("Mark")
    terminal.keys("C-q")
    terminal.wait_for("TUI-EXIT:0")
