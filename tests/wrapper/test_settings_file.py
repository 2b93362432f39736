"""The clients read the hub's URL and a token from the settings file every command reads
(ONSEMBL_CONFIG), after their flags, the environment and (the wrapper) the agent's own file."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import pytest

from tui.cli import resolve as tui_resolve
from wrapper.cli import build_parser
from wrapper.cli import resolve as wrapper_resolve


def agent_args(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    args.args = []  # what main() puts there: the words after "--"
    return args


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("ONSEMBL_SERVER_URL", "ONSEMBL_TOKEN", "ONSEMBL_AGENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.toml"
    path.write_text('server_url = "http://hub.example:8700"\ntoken = "token-from-the-file"\nport = 8701\n')
    monkeypatch.setenv("ONSEMBL_CONFIG", str(path))
    return path


def test_the_wrapper_falls_back_to_the_settings_file(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = wrapper_resolve(agent_args("shell", "--name", "w"))
    assert (config["server"], config["token"]) == ("http://hub.example:8700", "token-from-the-file")
    # A flag and the environment come first.
    monkeypatch.setenv("ONSEMBL_TOKEN", "token-from-env")
    config = wrapper_resolve(agent_args("shell", "--server", "http://flag:1"))
    assert (config["server"], config["token"]) == ("http://flag:1", "token-from-env")


async def test_the_tui_falls_back_to_the_settings_file(settings_file: Path, tmp_path: Path) -> None:
    server, tokens = tui_resolve(None, None, tmp_path / "no-credentials.json")
    assert server == "http://hub.example:8700"
    assert tokens is not None and await tokens.token() == "token-from-the-file"
    server, _ = tui_resolve("http://flag:1", None, tmp_path / "no-credentials.json")
    assert server == "http://flag:1"


def test_the_tui_takes_no_agent_token_from_the_file(settings_file: Path, tmp_path: Path) -> None:
    """The file serves the wrapper too: an agent's token in it is not the TUI's."""
    claims = base64.urlsafe_b64encode(json.dumps({"typ": "agent", "sub": "a-1"}).encode()).decode()
    settings_file.write_text(f'server_url = "http://hub.example:8700"\ntoken = "h.{claims}.s"\n')
    server, tokens = tui_resolve(None, None, tmp_path / "no-credentials.json")
    assert server == "http://hub.example:8700" and tokens is None  # the TUI then asks for a login


def test_a_broken_settings_file_is_a_clear_error(
    settings_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_file.write_text("server_url = [unclosed\n")
    # The configuration's exit code (2): a service manager does not restart what cannot start.
    with pytest.raises(SystemExit) as exited:
        wrapper_resolve(agent_args("shell"))
    assert exited.value.code == 2
    assert "cannot read the settings file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tui_resolve(None, None, tmp_path / "no-credentials.json")
    # Not read when the flags say it all.
    server, tokens = tui_resolve("http://flag:1", "a-token", tmp_path / "no-credentials.json")
    assert server == "http://flag:1" and tokens is not None
    config = wrapper_resolve(agent_args("shell", "--server", "http://flag:1", "--token", "t"))
    assert config["server"] == "http://flag:1"
