"""deploy/systemd/onsembl-agent@.service as systemd runs it. There is no systemd here: the test reads
the unit and starts its ExecStart with the environment it gives (Environment=, EnvironmentFile=,
LoadCredential=, StateDirectory=, specifiers resolved under a scratch root), so what is checked is
the unit's wiring with the wrapper: the TOML and env files of docs/operations.md start an agent, and
after a reboot (the wrapper killed, started again on the same state dir) the agent is ONLINE with its
id and its next command continues the CLI's session. And the exit codes the unit does not restart
on are the wrapper's."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import BIN, FAKES, HubProcess, timeout, wait_command, wait_until
from wrapper.cli import EXIT_CONFIG
from wrapper.client import EXIT_AUTH

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "onsembl-agent@.service"
INSTANCE = "svc-1"


def unit_settings() -> dict[str, list[str]]:
    """``Section.Key`` -> the values, in order (comments and blank lines left out)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


@dataclass
class EmulatedUnit:
    """onsembl-agent@INSTANCE under a scratch root: /etc, /var/lib (%S) and the credentials dir
    (%d) are directories of ``root``; /opt/onsembl/bin is this venv's bin."""

    root: Path
    instance: str = INSTANCE
    settings: dict[str, list[str]] = field(default_factory=unit_settings)
    process: subprocess.Popen[bytes] | None = None

    @property
    def credentials(self) -> Path:
        return self.root / "run" / "credentials" / f"onsembl-agent@{self.instance}.service"

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.instance}.log"

    def path(self, text: str) -> str:
        text = (
            text.replace("%i", self.instance)
            .replace("%S", str(self.root / "var" / "lib"))
            .replace("%d", str(self.credentials))
        )
        text = text.replace("/etc/onsembl/", f"{self.root}/etc/onsembl/")
        return text.replace("/opt/onsembl/bin/", f"{BIN}/")

    def one(self, key: str) -> str:
        values = self.settings[f"Service.{key}"]
        assert len(values) == 1, (key, values)
        return values[0]

    def environment(self) -> dict[str, str]:
        env = {"HOME": str(self.root / "home"), "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"}
        for assignment in self.settings.get("Service.Environment", []):
            key, _, value = assignment.partition("=")
            env[key] = self.path(value)
        for file in self.settings.get("Service.EnvironmentFile", []):
            for line in Path(self.path(file.lstrip("-"))).read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    key, _, value = line.partition("=")
                    env[key.strip()] = value.strip()
        return env

    def start(self) -> None:
        # What systemd does before ExecStart: the state dir, and a copy of each credential.
        (self.root / "var" / "lib" / self.path(self.one("StateDirectory"))).mkdir(parents=True, exist_ok=True)
        self.credentials.mkdir(parents=True, exist_ok=True)
        for credential in self.settings.get("Service.LoadCredential", []):
            name, _, source = credential.partition(":")
            shutil.copy(self.path(source), self.credentials / name)
        env = self.environment()
        argv = [
            re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), self.path(word))
            for word in self.one("ExecStart").split()
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, env=env, cwd=env["HOME"], stdout=log, stderr=log)

    def crash(self) -> None:
        """What a reboot does to it: SIGKILL, and the in-memory credentials gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        shutil.rmtree(self.credentials)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout(15))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def install(root: Path, toml: str, kind: str, extra_env: str = "") -> None:
    """The two files docs/operations.md has the user write for an agent."""
    agents = root / "etc" / "onsembl" / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    (agents / f"{INSTANCE}.toml").write_text(toml)
    (agents / f"{INSTANCE}.env").write_text(f"ONSEMBL_AGENT_KIND={kind}\n{extra_env}")
    (root / "home").mkdir(exist_ok=True)


def test_the_unit_does_not_restart_on_the_wrappers_config_and_auth_exit_codes() -> None:
    settings = unit_settings()
    assert settings["Service.Restart"] == ["on-failure"]
    assert set(settings["Service.RestartPreventExitStatus"][0].split()) == {str(EXIT_CONFIG), str(EXIT_AUTH)}
    assert settings["Service.KillMode"] == ["mixed"]


def test_a_bad_token_in_the_toml_file_exits_with_the_config_code(tmp_path: Path) -> None:
    install(tmp_path, 'server = "http://127.0.0.1:9"\ntoken = "not-a-token"\nname = "svc-1"\n', "shell")
    unit = EmulatedUnit(tmp_path)
    unit.start()
    assert unit.process is not None
    assert unit.process.wait(timeout(30)) == EXIT_CONFIG, unit.log_path.read_text()


def test_after_a_reboot_the_agent_is_back_with_its_id_and_its_session(
    hub: HubProcess, tmp_path: Path
) -> None:
    agent_id, token = hub.agent_token(INSTANCE)
    workdir = tmp_path / "project"
    workdir.mkdir()
    cli_log = tmp_path / "cli.log"
    install(
        tmp_path,
        f'server = "{hub.url}"\ntoken = "{token}"\nname = "{INSTANCE}"\nworkdir = "{workdir}"\n',
        "claude",
        # The CLI's own environment goes in the env file too (here: the fake claude first on PATH;
        # its sessions, as the real one's in ~/.claude, survive the reboot).
        f"PATH={FAKES}:/usr/local/bin:/usr/bin:/bin\nFAKE_CLI_STATE_DIR={tmp_path}/home/.fake-cli\n"
        f"FAKE_CLI_LOG={cli_log}\nFAKE_CLI_DELAY=0\nONSEMBL_HEARTBEAT_INTERVAL_S=1\n",
    )
    unit = EmulatedUnit(tmp_path)

    def online(client: object) -> bool:
        return bool(client.get(f"/agents/{agent_id}").json()["status"] == "ONLINE")  # type: ignore[attr-defined]

    def run(content: str) -> dict[str, object]:
        with hub.client() as client:
            wait_until(lambda: online(client), 20, "the agent online")
            response = client.post("/commands", json={"content": content, "targetAgents": [agent_id]})
            assert response.status_code == 201, response.text
            done = wait_command(client, response.json()["id"], 30)
        assert done["status"] == "COMPLETED", (done, unit.log_path.read_text()[-2000:])
        return done

    try:
        unit.start()
        run("remember the number 7 scenario:plain")
        state = json.loads((tmp_path / "var" / "lib" / "onsembl-agent" / INSTANCE / "state.json").read_text())
        assert state["session_id"]
        unit.crash()
        with hub.client() as client:
            wait_until(lambda: not online(client), 30, "the hub to see the agent gone")
        unit.start()
        second = run("what was it scenario:plain")
        with hub.client() as client:
            body = client.get(f"/commands/{second['id']}/output", params={"limit": 100}).json()
        text = "".join(item["content"] for item in body["items"])
        assert f"turn 2 of session {state['session_id']}" in text, text
        calls = [json.loads(line)["argv"] for line in cli_log.read_text().splitlines()]
        prompts = [argv for argv in calls if argv != ["--version"]]
        assert "--resume" in prompts[-1] and state["session_id"] in prompts[-1], prompts[-1]
    finally:
        unit.stop()


@pytest.fixture(autouse=True)
def _no_agent_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper must find everything in the unit's files, none in this process's environment."""
    for key in list(os.environ):
        if key.startswith("ONSEMBL_"):
            monkeypatch.delenv(key)
