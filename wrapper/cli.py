"""``onsembl-agent KIND --name NAME --server URL --token TOKEN [--workdir DIR] [-- ARGS...]``.

KIND is claude, gemini, codex or shell. Settings come from the flags, then the environment
(``ONSEMBL_SERVER_URL``, ``ONSEMBL_TOKEN``, ``ONSEMBL_AGENT_NAME``, ``ONSEMBL_WORKDIR``,
``ONSEMBL_AGENT_STATE_DIR``), then a TOML file (``--config`` or ``ONSEMBL_AGENT_CONFIG``) with the
same names in lower case: ``server``, ``token``, ``name``, ``workdir``, ``state_dir``, ``args``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from wrapper.adapters import ADAPTERS, Adapter

if TYPE_CHECKING:
    from wrapper.client import AgentClient

log = logging.getLogger("onsembl.agent")
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onsembl-agent",
        description="Wrap an agent CLI and connect it to an Onsembl hub.",
        epilog=(
            "Examples:\n"
            "  onsembl-agent claude --name reviewer --server http://hub:8700 --token $T -- --model sonnet\n"
            "  onsembl-agent shell --name box1 --server http://127.0.0.1:8700 --token $T -- bash -lc"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=sorted(ADAPTERS), help="which agent CLI to run")
    parser.add_argument("--name", help="the agent's name (informational: the token fixes the agent)")
    parser.add_argument("--server", help="hub base URL, http(s)://host:port (ONSEMBL_SERVER_URL)")
    parser.add_argument("--token", help="agent token from `onsembl token agent NAME` (ONSEMBL_TOKEN)")
    parser.add_argument("--workdir", help="working directory of the commands (default: the current one)")
    parser.add_argument(
        "--worktree",
        action="store_true",
        help="work in the agent's own git worktree and branch of the repository in --workdir",
    )
    parser.add_argument(
        "--state-dir", type=Path, help="where the agent keeps its session and unsent messages"
    )
    parser.add_argument("--config", type=Path, help="TOML file with the same settings (ONSEMBL_AGENT_CONFIG)")
    parser.add_argument("--heartbeat", type=float, help="seconds between heartbeats (default 30)")
    parser.add_argument("--log-level", type=str.upper, help="DEBUG, INFO, WARNING or ERROR")
    return parser


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Flags, then environment, then the agent's TOML file (``--config``), then the shared settings."""
    file: dict[str, Any] = {}
    config = args.config or (
        Path(os.environ["ONSEMBL_AGENT_CONFIG"]) if os.environ.get("ONSEMBL_AGENT_CONFIG") else None
    )
    if config is not None:
        try:
            file = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            # Exit 2, the configuration's code: a service manager does not restart what cannot start.
            print(f"onsembl-agent: cannot read {config}: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG) from exc
    env = {
        "server": os.environ.get("ONSEMBL_SERVER_URL"),
        "token": os.environ.get("ONSEMBL_TOKEN"),
        "name": os.environ.get("ONSEMBL_AGENT_NAME"),
        "workdir": os.environ.get("ONSEMBL_WORKDIR"),
        "state_dir": os.environ.get("ONSEMBL_AGENT_STATE_DIR"),
        "heartbeat": os.environ.get("ONSEMBL_HEARTBEAT_INTERVAL_S"),
        "log_level": os.environ.get("ONSEMBL_LOG_LEVEL"),
    }
    flags = {
        "server": args.server,
        "token": args.token,
        "name": args.name,
        "workdir": args.workdir,
        "state_dir": args.state_dir,
        "heartbeat": args.heartbeat,
        "log_level": args.log_level,
    }
    merged = {key: _first(flags.get(key), env.get(key), file.get(key)) for key in flags}
    if not merged["server"] or not merged["token"]:
        merged.update(_from_shared_settings(merged))
    env_worktree = os.environ.get("ONSEMBL_WORKTREE", "").strip().lower() in ("1", "true", "yes", "on")
    merged["worktree"] = bool(args.worktree or file.get("worktree") or env_worktree)
    merged["args"] = list(args.args) if args.args else [str(a) for a in file.get("args", [])]
    return merged


def _from_shared_settings(merged: dict[str, Any]) -> dict[str, Any]:
    """The hub's URL and token from the settings every command reads (ONSEMBL_CONFIG's TOML file, or
    the per-user config.toml), for what flags, environment and the agent's file left unset. Imported
    only then: pydantic-settings is memory the idle wrapper does not otherwise need."""
    from pydantic import ValidationError

    from shared.config import ClientSettings

    try:
        shared = ClientSettings()
    except (ValidationError, ValueError, OSError) as exc:
        print(f"onsembl-agent: cannot read the settings file: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from exc
    return {
        "server": merged["server"] or shared.server_url or None,
        "token": merged["token"] or shared.token_text() or None,
    }


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def cli_version(adapter: Adapter) -> str:
    """What ``<cli> --version`` says, for the agent's record."""
    program = shutil.which(adapter.program) if adapter.program else None
    if program is None:
        return ""
    try:
        done = subprocess.run(
            [program, "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (
        (done.stdout or done.stderr).strip().splitlines()[0][:200]
        if (done.stdout or done.stderr).strip()
        else ""
    )


def build_client(kind: str, config: dict[str, Any]) -> AgentClient | int:
    """The agent's client, or an exit code after saying what is wrong with the configuration."""
    from wrapper.client import AgentClient, agent_id_from_token
    from wrapper.executor import Executor
    from wrapper.outbox import Outbox
    from wrapper.state import AgentState

    try:
        agent_id = agent_id_from_token(config["token"])
    except ValueError as exc:
        print(f"onsembl-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    adapter = ADAPTERS[kind](config["args"] or None)
    if kind != "shell" and shutil.which(adapter.program) is None:
        print(
            f"onsembl-agent: `{adapter.program}` is not on PATH; install it or use another KIND",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    state_dir = Path(
        config["state_dir"]
        or Path(platformdirs.user_state_dir("onsembl", appauthor=False)) / "agents" / agent_id
    )
    state = AgentState(state_dir)
    workdir = str(Path(config["workdir"]).resolve()) if config["workdir"] else os.getcwd()
    if not Path(workdir).is_dir():
        print(f"onsembl-agent: --workdir {workdir} is not a directory", file=sys.stderr)
        return EXIT_CONFIG
    if config["worktree"]:
        from wrapper.changes import ensure_worktree

        branch = "onsembl/" + "".join(
            c if c.isalnum() or c in "-_" else "-" for c in (config["name"] or agent_id)
        )
        try:
            workdir = ensure_worktree(workdir, state_dir / "worktree", branch)
        except RuntimeError as exc:
            print(f"onsembl-agent: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    executor = Executor(adapter, state, workdir=workdir)
    version = cli_version(adapter) if kind != "shell" else ""
    client = AgentClient(
        server=config["server"],
        token=config["token"],
        agent_type=adapter.agent_type,
        executor=executor,
        version=f"onsembl-agent; {version}" if version else "onsembl-agent",
        heartbeat_s=float(config["heartbeat"] or 30),
        outbox=Outbox(spill_path=state_dir / "outbox.jsonl"),
        token_file=state_dir / "token",
    )
    return client


async def _run(client: AgentClient) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # A closed terminal (SIGHUP) stops the running command's process group too; under nohup it
        # stays ignored.
        if sig is not signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN:
            loop.add_signal_handler(sig, main.cancel)
    try:
        # Before the hub hears from this agent: what a previous run left running goes first.
        from wrapper.process import become_subreaper, end_left_over_groups

        if not become_subreaper():
            log.debug("not a subreaper: the commands' orphans go to init")

        await asyncio.to_thread(end_left_over_groups, client.executor.state)
        return await client.run_forever()
    except asyncio.CancelledError:
        return 0
    finally:
        with contextlib.suppress(Exception):
            await client.executor.shutdown()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" belongs to the wrapped program, not to us.
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.args = extra
    config = resolve(args)
    from shared.logs import setup_logging

    setup_logging(config["log_level"] or "INFO")
    if not config["server"] or not config["token"]:
        print(
            "onsembl-agent: give --server and --token (or ONSEMBL_SERVER_URL and ONSEMBL_TOKEN, or\n"
            "server_url and token in the settings file, ONSEMBL_CONFIG)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG)
    if config["name"]:
        log.info("agent %s (%s) starting", config["name"], args.kind)
    client = build_client(args.kind, config)
    if isinstance(client, int):
        raise SystemExit(client)
    raise SystemExit(asyncio.run(_run(client)))


if __name__ == "__main__":
    main()
