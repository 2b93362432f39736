"""``onsembl-agent KIND --name NAME --server URL --token TOKEN [--workdir DIR] [-- ARGS...]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from shared.enums import AgentType

KINDS = {"shell": AgentType.SHELL}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onsembl-agent",
        description="Wrap an agent CLI and connect it to an Onsembl hub.",
        epilog=(
            "Example: onsembl-agent shell --name box1 --server http://127.0.0.1:8700 --token $T -- bash -c"
        ),
    )
    parser.add_argument("kind", choices=sorted(KINDS), help="which agent CLI to run")
    parser.add_argument("--name", help="the agent's name (informational; the token fixes the agent)")
    parser.add_argument(
        "--server", default=os.environ.get("ONSEMBL_SERVER_URL"), help="hub base URL (ONSEMBL_SERVER_URL)"
    )
    parser.add_argument(
        "--token", default=os.environ.get("ONSEMBL_TOKEN"), help="agent token (ONSEMBL_TOKEN)"
    )
    parser.add_argument("--workdir", default=None, help="working directory of the commands")
    parser.add_argument(
        "--heartbeat", type=float, default=float(os.environ.get("ONSEMBL_HEARTBEAT_INTERVAL_S", "30"))
    )
    parser.add_argument("--log-level", default=os.environ.get("ONSEMBL_LOG_LEVEL", "INFO"), type=str.upper)
    return parser


async def _run(args: argparse.Namespace, program: list[str]) -> int:
    from wrapper.client import AgentClient
    from wrapper.executor import Executor, ShellAdapter

    executor = Executor(ShellAdapter(program), workdir=args.workdir)
    try:
        client = AgentClient(
            server=args.server,
            token=args.token,
            agent_type=KINDS[args.kind],
            executor=executor,
            heartbeat_s=args.heartbeat,
        )
    except ValueError as exc:
        print(f"onsembl-agent: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    try:
        return await client.run_forever()
    except asyncio.CancelledError:
        return 0
    finally:
        with contextlib.suppress(Exception):
            await executor.shutdown()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" belongs to the wrapped program, not to us.
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.args = extra
    from shared.logs import setup_logging

    setup_logging(args.log_level)
    if not args.server or not args.token:
        print(
            "onsembl-agent: give --server and --token (or ONSEMBL_SERVER_URL and ONSEMBL_TOKEN)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    program = list(args.args)
    if args.kind == "shell" and not program:
        program = ["bash", "-lc"]
    if args.name:
        logging.getLogger("onsembl.agent").info("agent %s starting", args.name)
    raise SystemExit(asyncio.run(_run(args, program)))
