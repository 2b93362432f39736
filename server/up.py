"""``onsembl up``: the hub, its workers and local demo agents on this machine, in one command.

The hub runs as a child process (its own lifespan starts the embedded Redis and the worker pool),
started again if it exits on its own; demo agents are ``shell`` wrappers with tokens minted from the
same settings. Ctrl-C stops all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
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


#: A hub that exits on its own is started again, unless it exited this often within a minute.
HUB_EXITS_PER_MINUTE = 5


def exit_text(code: int) -> str:
    """How a process ended, in words: ``subprocess`` gives -N for a signal."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class HubSupervisor:
    """The hub process, started again when it exits on its own (a crash, the OOM killer): the agents
    and the TUI reconnect by themselves, and the embedded Redis and the database keep the queue. A
    hub that keeps exiting is left down, and ``gave_up`` says so."""

    def __init__(self, argv: list[str], env: dict[str, str], output: Any, say: Callable[[str], None]) -> None:
        self.argv = argv
        self.env = env
        self.output = output
        self.say = say
        self.gave_up = threading.Event()
        self._stopping = threading.Event()
        #: Held while (re)starting and while stopping: a stop never misses a hub started meanwhile.
        self._lock = threading.Lock()
        self._exits: deque[float] = deque(maxlen=HUB_EXITS_PER_MINUTE)
        self.process = self._start()
        self._watcher: threading.Thread | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, env=self.env, stdout=self.output, stderr=self.output)

    def watch(self, port: int) -> None:
        """From now on (the hub is up on ``port``), start it again when it exits: on the same port,
        which the agents and the TUI know."""
        at = self.argv.index("--port") + 1
        self.argv = [*self.argv[:at], str(port), *self.argv[at + 1 :]]
        self._watcher = threading.Thread(target=self._watch, name="hub-supervisor", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while True:
            code = self.process.wait()
            if self._stopping.is_set():
                return
            if code == 0:
                # Asked to stop (a closed terminal hangs it up too): starting it again would race
                # this launcher's own stop, and could leave a new hub's Redis behind.
                self.say("onsembl up: the hub stopped; not starting it again")
                self.gave_up.set()
                return
            now = time.monotonic()
            self._exits.append(now)
            if len(self._exits) == HUB_EXITS_PER_MINUTE and now - self._exits[0] < 60:
                self.say(
                    f"onsembl up: the hub {exit_text(code)}, its {HUB_EXITS_PER_MINUTE}th exit within a "
                    "minute; leaving it down"
                )
                self.gave_up.set()
                return
            self.say(f"onsembl up: the hub {exit_text(code)}; starting it again")
            time.sleep(0.5)  # the old one's socket and port are released
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = self._start()

    def stopping(self) -> None:
        """No more restarts: everything is about to stop (Ctrl-C reaches the hub too, at once)."""
        with self._lock:
            self._stopping.set()

    def stop(self) -> None:
        self.stopping()  # after it, no new hub can start: self.process is the last one
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


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

    def say(text: str) -> None:
        # With the TUI on the terminal, into the log (written to the terminal, it would draw over it).
        if output is None:
            print(text, file=sys.stderr, flush=True)
        else:
            with contextlib.suppress(ValueError):  # closed: up is done
                output.write(text.encode() + b"\n")
                output.flush()

    hub_argv = [
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
    ]
    hub = HubSupervisor(hub_argv, env, output, say)

    def stop_all(*_: object) -> None:
        # The agents first (they would only reconnect), then the hub.
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        hub.stop()

    def on_sigterm(*_: object) -> None:
        # Unwind to the ``finally`` below, which stops the children. Stopping them here, inside the
        # handler, re-entered ``hub.wait()`` while the interrupted one held its lock: the inner wait
        # spun until its 15 s timeout although the hub had exited at once.
        raise SystemExit(0)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # not under nohup
            signal.signal(signal.SIGHUP, on_sigterm)  # the terminal closed: stop all as for SIGTERM
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if hub.process.poll() is not None:
                raise SystemExit(f"onsembl up: the hub {exit_text(hub.process.returncode)}")
            if time.monotonic() > deadline:
                raise SystemExit("onsembl up: the hub did not start within 60 s")
            time.sleep(0.1)
        started = json.loads(port_file.read_text())
        url = started["url"]
        hub.watch(int(started["port"]))
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
        while not hub.gave_up.wait(1.0):
            pass
        raise SystemExit(0 if hub.process.returncode == 0 else 1)
    except KeyboardInterrupt:
        pass
    finally:
        # First: the hub may be exiting already (Ctrl-C goes to the whole process group), and must not
        # be started again while the agents stop.
        hub.stopping()
        # A second Ctrl-C or SIGTERM must not cut the cleanup short (each child gets SIGKILL after 15 s).
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_IGN)
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
