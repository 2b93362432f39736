"""``onsembl up``: the demo agents are the agent CLIs found on PATH, then ``shell`` agents; a hub that
dies is started again."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from server.auth.tokens import TokenKind, mint
from server.up import HubSupervisor
from shared.config import Settings
from tests.harness import BIN, free_port, timeout, wait_until

FAKES = Path(__file__).resolve().parents[1] / "fakes" / "bin"


@dataclass
class Up:
    process: subprocess.Popen[str]
    url: str
    data: Path

    def online(self, agents: int) -> list[dict[str, Any]] | None:
        """The ONLINE agents once there are ``agents`` of them (None before, or while the hub is away)."""
        if not (self.data / "jwt-secret").exists():
            return None
        token = mint(Settings(data_dir=self.data), TokenKind.ACCESS, "up-test@example.com")
        try:
            body = httpx.get(self.url + "/v1/agents", headers={"Authorization": f"Bearer {token}"}).json()
        except httpx.HTTPError:
            return None
        ready = [a for a in body if a["status"] == "ONLINE"]
        return ready if len(ready) == agents else None

    def hub_pid(self) -> int | None:
        """The hub process's pid (None between two hubs)."""
        # Only the hub gets --port-file (an agent's command line has --server in it).
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if "--port-file" in child.cmdline():
                    return child.pid
            except psutil.Error:
                continue
        return None


def _as_in_a_terminal() -> None:
    """In the child: SIGHUP as a terminal's shell leaves it. The tests may run under nohup (SIGHUP
    ignored, and inherited so), where the hub and up rightly leave it ignored."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@contextmanager
def running_up(tmp_path: Path, path: str, agents: int, stop: signal.Signals = signal.SIGINT) -> Iterator[Up]:
    """``onsembl up --headless``, stopped at the end (Ctrl-C, or ``stop`` sent to its process group as
    a terminal sends it), exit 0; its output in the assertion."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    env.update(ONSEMBL_DATA_DIR=str(tmp_path / "data"), PATH=path, FAKE_CLI_STATE_DIR=str(tmp_path / "fake"))
    process = subprocess.Popen(
        [str(BIN / "onsembl"), "up", "--headless", "--port", str(port), "--agents", str(agents)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_as_in_a_terminal,
    )
    try:
        yield Up(process, f"http://127.0.0.1:{port}", tmp_path / "data")
    finally:
        os.killpg(process.pid, stop)
        process.wait(timeout(30))
        assert process.returncode == 0, process.stdout.read() if process.stdout else ""


def run_up(tmp_path: Path, path: str, agents: int) -> list[tuple[str, str]]:
    """Start ``onsembl up --headless``, wait for its agents, stop it; (name, type) of the agents."""
    with running_up(tmp_path, path, agents) as up:
        found = wait_until(lambda: up.online(agents), 60, "the demo agents online")
        return sorted((a["name"], a["agentType"]) for a in found)


def test_up_uses_the_agent_clis_on_path_first(tmp_path: Path) -> None:
    # The fake claude, gemini and codex (tests/fakes) are on PATH: two agents are the first two.
    agents = run_up(tmp_path, f"{FAKES}{os.pathsep}{os.environ['PATH']}", 2)
    assert agents == [("claude", "CLAUDE"), ("gemini", "GEMINI")]


def test_up_falls_back_to_shell_agents(tmp_path: Path) -> None:
    # No agent CLI on PATH (npm puts them in /usr/local/bin or a home directory).
    agents = run_up(tmp_path, "/usr/bin:/bin", 2)
    assert agents == [("demo-1", "SHELL"), ("demo-2", "SHELL")]


def test_up_starts_a_hub_that_died_again(tmp_path: Path) -> None:
    with running_up(tmp_path, "/usr/bin:/bin", 1) as up:
        wait_until(lambda: up.online(1), 60, "the demo agent online")
        first = psutil.Process(up.hub_pid())
        first.kill()  # as a crash or the OOM killer would
        first.wait(timeout(10))
        # Started again on the same port: the agent reconnects to it by itself.
        wait_until(
            lambda: up.hub_pid() not in (None, first.pid) and up.online(1),
            60,
            "a new hub with the agent back",
        )
    output = up.process.stdout.read() if up.process.stdout else ""
    assert "the hub was killed by SIGKILL; starting it again" in output
    # The new hub adopted the embedded redis-server the killed one left, and stopped it.
    assert not leftover_redis(up.data)


def test_a_closed_terminal_stops_the_hub_and_its_redis(tmp_path: Path) -> None:
    # Closing the terminal sends SIGHUP to its foreground process group: up, the hub, the agents.
    with running_up(tmp_path, "/usr/bin:/bin", 1, stop=signal.SIGHUP) as up:
        wait_until(lambda: up.online(1), 60, "the demo agent online")
        hub = psutil.Process(up.hub_pid())
        assert leftover_redis(up.data)
    hub.wait(timeout(20))
    assert not leftover_redis(up.data)
    output = up.process.stdout.read() if up.process.stdout else ""
    assert "Traceback" not in output, output


def test_closing_the_terminal_of_up_with_its_tui_stops_everything(tmp_path: Path) -> None:
    """``onsembl up`` with its TUI on a real pseudo-terminal, under a shell; the terminal window
    closes: SIGHUP to its foreground process group, as tmux sends it, then the pty goes. Nothing may
    be left running, and nothing may wait for the gone terminal."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    env.update(ONSEMBL_DATA_DIR=str(tmp_path / "data"), PATH="/usr/bin:/bin", TERM="xterm-256color")
    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))

    def own_terminal() -> None:  # the child leads a new session whose terminal is the pty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        _as_in_a_terminal()

    # Under a shell, as in a terminal window: the shell leads the session, up is in its foreground.
    process = subprocess.Popen(
        ["bash", "-c", f"{BIN / 'onsembl'} up --port {port} --agents 1; echo up exited $?"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=own_terminal,
    )
    os.close(slave)
    screen = bytearray()
    reader = threading.Thread(target=_drain, args=(master, screen), daemon=True)
    reader.start()
    up = Up(process, f"http://127.0.0.1:{port}", tmp_path / "data")  # type: ignore[arg-type]
    running: list[psutil.Process] = []
    try:
        wait_until(lambda: up.online(1), 60, "the demo agent online")
        wait_until(lambda: b"demo-1" in screen, 30, "the TUI showing the agent")
        running = psutil.Process(process.pid).children(recursive=True)
        assert {"up", "server", "shell"} <= {part for p in running for part in _cmdline(p)}
        assert leftover_redis(up.data)
        os.killpg(process.pid, signal.SIGHUP)
        process.wait(timeout(30))
        _, alive = psutil.wait_procs(running, timeout(30))
        assert not alive, [_cmdline(p) for p in alive]
    finally:
        os.close(master)
        for pid in [p.pid for p in running] + leftover_redis(up.data):  # left only by a failure
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    assert not leftover_redis(up.data)
    assert b"Traceback" not in screen


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # gone meanwhile (a short-lived helper), or a zombie
        return []


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        into += chunk


def leftover_redis(data: Path) -> list[int]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(data) in part for part in process.info["cmdline"] or []) and "redis-server" in str(
            process.info["cmdline"]
        ):
            found.append(process.pid)
    return found


def sleeper(say: list[str]) -> HubSupervisor:
    """A supervisor of a stand-in hub (a process that sleeps), watching it."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)", "--port", "0"]
    supervisor = HubSupervisor(argv, dict(os.environ), subprocess.DEVNULL, say.append)
    supervisor.watch(8700)
    return supervisor


def test_the_supervisor_starts_an_exited_hub_again_on_its_port() -> None:
    said: list[str] = []
    supervisor = sleeper(said)
    first = supervisor.process
    try:
        first.kill()
        wait_until(lambda: supervisor.process is not first, 10, "a new process")
        assert supervisor.process.args[-2:] == ["--port", "8700"]  # type: ignore[index]
        assert said == ["onsembl up: the hub was killed by SIGKILL; starting it again"]
    finally:
        supervisor.stop()
    assert supervisor.process.poll() is not None


def test_a_hub_that_stopped_by_itself_is_not_started_again() -> None:
    # Exit 0: it was asked to stop (a closed terminal hangs it up as well as this launcher).
    said: list[str] = []
    argv = [sys.executable, "-c", "import time; time.sleep(0.3)", "--port", "0"]
    supervisor = HubSupervisor(argv, dict(os.environ), subprocess.DEVNULL, said.append)
    supervisor.watch(8700)
    try:
        assert supervisor.gave_up.wait(timeout(10))
        assert said == ["onsembl up: the hub stopped; not starting it again"]
    finally:
        supervisor.stop()


def test_a_hub_exiting_once_stopping_began_is_not_started_again() -> None:
    # Ctrl-C reaches the hub and the agents at once; up then stops the agents, which can take longer
    # than the hub takes to exit: that exit is no crash.
    said: list[str] = []
    supervisor = sleeper(said)
    first = supervisor.process
    supervisor.stopping()
    first.send_signal(signal.SIGINT)
    assert supervisor._watcher is not None
    supervisor._watcher.join(timeout(10))
    assert not supervisor._watcher.is_alive() and supervisor.process is first and said == []
    supervisor.stop()
