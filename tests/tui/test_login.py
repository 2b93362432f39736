"""``onsembl-tui login``: one-time code from the hub's log, credentials in a 0600 file, the access
token refreshed silently (and the rotated pair written back)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

from tests.harness import BIN, HubProcess, timeout
from tests.tui.conftest import wait_for
from tui.app import OnsemblApp
from tui.cli import resolve
from tui.client import credentials as creds
from tui.client.auth import RefreshingTokenSource
from tui.client.stream import LinkState
from tui.config import TuiSettings

EMAIL = "login-test@example.com"


def login(hub: HubProcess, path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    process = subprocess.Popen(
        [str(BIN / "onsembl-tui"), "login", EMAIL, "--server", hub.url, "--credentials", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    code = hub.sign_in_code(EMAIL, 15)
    out, err = process.communicate(code + "\n", timeout=timeout(30))
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


async def test_login_then_the_tui_signs_in_and_refreshes(hub: HubProcess, tmp_path: Path) -> None:
    path = tmp_path / "config" / "credentials.json"
    result = login(hub, path)
    assert result.returncode == 0, result.stderr
    assert f"as {EMAIL}" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = creds.load(path)
    assert saved is not None and saved.refresh_token and saved.server_url == hub.url
    assert saved.access_token not in result.stdout + result.stderr  # never printed

    server, tokens = resolve(None, None, path)
    assert server == hub.url and isinstance(tokens, RefreshingTokenSource)
    # The access token is about to expire: the next use rotates the pair and writes it back.
    tokens.credentials.expires_at = time.time() + 10
    app = OnsemblApp(server_url=server, tokens=tokens, settings=TuiSettings(bell=False, history_file=None))
    async with app.run_test(size=(100, 30)):
        await wait_for(
            lambda: app.link_status.state is LinkState.CONNECTED, 15, "connected with the new token"
        )
        rotated = creds.load(path)
        assert rotated is not None
        assert rotated.refresh_token != saved.refresh_token
        assert rotated.access_token != saved.access_token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        agents = await app.api.agents()  # REST works with the rotated token too
        assert isinstance(agents, list)


def test_login_refuses_a_wrong_code(hub: HubProcess, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    result = subprocess.run(
        [str(BIN / "onsembl-tui"), "login", EMAIL, "--server", hub.url, "--code", "000000"],
        capture_output=True,
        text=True,
        env=dict(env, ONSEMBL_CREDENTIALS_FILE=str(tmp_path / "c.json")),
        timeout=timeout(30),
    )
    assert result.returncode == 1
    assert "code" in result.stderr.lower()
    assert not (tmp_path / "c.json").exists()


def test_no_credentials_says_how_to_sign_in(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    result = subprocess.run(
        [str(BIN / "onsembl-tui"), "--credentials", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout(30),
    )
    assert result.returncode == 2
    assert "onsembl-tui login" in result.stderr
