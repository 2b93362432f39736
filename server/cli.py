"""``onsembl``: one command for the whole system (hub, workers, tokens, database, agents, TUI)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings.exceptions import SettingsError

from shared.config import Settings


def _settings(**overrides: object) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        print("onsembl: invalid settings:", file=sys.stderr)
        for e in exc.errors(include_url=False):
            field = ".".join(str(p) for p in e["loc"]) or "settings"
            print(f"  ONSEMBL_{field.upper()}: {e['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
    except SettingsError as exc:  # e.g. a list variable that is not JSON
        print(f"onsembl: invalid settings: {exc}", file=sys.stderr)
        hint = "  (list settings take JSON in the environment: ONSEMBL_ALLOWED_EMAILS='[\"a@b.c\"]')"
        print(hint, file=sys.stderr)
        raise SystemExit(2) from None


# ---- server ---------------------------------------------------------------------------------------


def _tune_gc() -> None:
    """The hub allocates many short-lived objects per message: with the default thresholds the
    cyclic collector ran a full collection every second or two under load, each pausing the event
    loop (and every socket) for 150+ ms while it walked the startup heap (modules, pydantic
    schemas, SQLAlchemy). Once started, that heap is frozen out of collections, and young
    collections run less often."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _raise_open_files(needed: int) -> None:
    """Every socket is an open file: lift the soft limit on them to the hard one (often 1024 of up to
    a million), so the hub can hold ``max_connections`` sockets; say so when it still cannot."""
    import logging

    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        logging.getLogger("onsembl.server").warning(
            "the limit on open files is %d, under the %d that max_connections needs; "
            "raise it (ulimit -n) or lower ONSEMBL_MAX_CONNECTIONS",
            soft,
            needed,
        )


def serve(settings: Settings, *, workers: int, port_file: Path | None = None) -> None:
    import uvicorn

    from server.app import create_app
    from server.ws.transport import protocol_class
    from shared.logs import setup_logging
    from shared.protocol import MAX_AGENT_MESSAGE_BYTES

    setup_logging(settings.log_level)
    # The sockets, and some room for Redis, the database, logs and the worker pool's pipes.
    _raise_open_files(settings.max_connections + 256)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    port = sock.getsockname()[1]
    # The app's lifespan owns everything else: Redis, the database, the worker pool.
    app = create_app(settings, embedded_workers=workers)
    config = uvicorn.Config(
        app,
        log_config=None,
        ws=protocol_class(settings.ws_compression_level, direct_receive=settings.ws_direct_receive),
        ws_max_size=MAX_AGENT_MESSAGE_BYTES + 64 * 1024,
        # A TUI or agent that stops reading (or vanished without a FIN) is dropped within 30 s.
        ws_ping_interval=15,
        ws_ping_timeout=15,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        # uvicorn stops cleanly on SIGINT and SIGTERM; a closed terminal sends SIGHUP, whose default
        # kills the hub at once and leaves its embedded redis-server and worker pool behind. (Under
        # nohup it stays ignored.)
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, server.handle_exit, signal.SIGHUP, None
            )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.02)
        if server.started:
            _tune_gc()
            url = f"http://{settings.host}:{port}"
            if port_file is not None:
                tmp = port_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"port": port, "url": url, "pid": os.getpid()}))
                tmp.replace(port_file)
            print(f"onsembl hub listening on {url}", file=sys.stderr, flush=True)
        await task

    try:
        import uvloop  # installed with uvicorn[standard]
    except ImportError:  # pragma: no cover - a minimal install
        asyncio.run(main())
    else:
        uvloop.run(main())


def cmd_server(args: argparse.Namespace) -> None:
    settings = _settings(host=args.host, port=args.port, log_level=args.log_level)
    workers = settings.workers if args.workers is None else args.workers
    serve(settings, workers=workers, port_file=args.port_file)


def cmd_worker(args: argparse.Namespace) -> None:
    from server.worker import run
    from shared.logs import setup_logging

    settings = _settings(log_level=args.log_level)
    setup_logging(settings.log_level)
    run(settings, args.n, burst=args.burst)


# ---- tokens ---------------------------------------------------------------------------------------


async def _ensure_agent(settings: Settings, name: str, agent_type: str) -> str:
    from server.agents import ensure_agent
    from server.db.session import make_engine, make_sessionmaker, upgrade_async
    from shared.enums import AgentType

    await upgrade_async(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        row = await ensure_agent(make_sessionmaker(engine), name, AgentType(agent_type.upper()))
        return row.id
    finally:
        await engine.dispose()


def cmd_token(args: argparse.Namespace) -> None:
    from server.auth.tokens import TokenKind, mint

    settings = _settings()
    if args.kind == "agent":
        agent_id = asyncio.run(_ensure_agent(settings, args.subject, args.type))
        print(f"agent {args.subject} has id {agent_id}", file=sys.stderr)
        print(mint(settings, TokenKind.AGENT, agent_id, name=args.subject, ttl_s=args.ttl))
    else:
        print(
            mint(settings, TokenKind.ACCESS, args.subject.strip().lower(), name=args.subject, ttl_s=args.ttl)
        )


def cmd_db(args: argparse.Namespace) -> None:
    from server.db.session import upgrade

    settings = _settings()
    upgrade(settings.sqlalchemy_url, args.revision)
    print(f"database at revision {args.revision}", file=sys.stderr)


# ---- everything on one machine -------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> None:
    from server.up import run_up

    run_up(
        _settings(port=args.port, log_level=args.log_level), headless=args.headless, demo_agents=args.agents
    )


# ---- checks ---------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> None:
    from server.doctor import main as doctor

    sys.exit(doctor(as_json=args.json, host=args.host, port=args.port))


# ---- entry points ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onsembl", description="Onsembl: a control center for AI coding agents"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_log_level(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper, default=None
        )
        return p

    p = with_log_level(sub.add_parser("server", help="run the hub (with an embedded RQ worker pool)"))
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--workers", type=int, help="idle RQ workers the embedded pool keeps ready (0: no pool; default 16)"
    )
    p.add_argument("--port-file", type=Path, help="write {port, url, pid} here once listening")
    p.set_defaults(func=cmd_server)

    p = with_log_level(sub.add_parser("worker", help="run RQ workers for the hub's Redis"))
    p.add_argument(
        "-n", type=int, default=16, help="idle workers kept ready; more start as commands run (default 16)"
    )
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("token", help="mint a token")
    token_sub = p.add_subparsers(dest="kind", required=True)
    pa = token_sub.add_parser("agent", help="create or reuse agent NAME and print a token for it")
    pa.add_argument("subject", metavar="NAME")
    pa.add_argument("--type", default="shell", choices=["shell", "claude", "gemini", "codex"])
    pa.add_argument("--ttl", type=int, default=None, help="seconds (default from settings)")
    pu = token_sub.add_parser("user", help="print an access token for user EMAIL")
    pu.add_argument("subject", metavar="EMAIL")
    pu.add_argument("--ttl", type=int, default=None)
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("db", help="database migrations")
    db_sub = p.add_subparsers(dest="action", required=True)
    pu = db_sub.add_parser("upgrade", help="migrate the schema")
    pu.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_db)

    p = with_log_level(sub.add_parser("up", help="hub, workers and demo agents on this machine"))
    p.add_argument("--headless", action="store_true", help="run as a foreground service, no TUI")
    p.add_argument("--port", type=int)
    p.add_argument("--agents", type=int, default=2, help="local demo agents to start")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("doctor", help="check this machine and the settings; say how to fix what is wrong")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--host", help="the hub's host to check (default from settings)")
    p.add_argument("--port", type=int, help="the hub's port to check (default from settings)")
    p.set_defaults(func=cmd_doctor)

    sub.add_parser("agent", help="run an agent wrapper (same as onsembl-agent)", add_help=False)
    sub.add_parser("tui", help="open the terminal UI (same as onsembl-tui)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "agent":
        from wrapper.cli import main as agent_main

        agent_main(argv[1:])
        return
    if argv and argv[0] == "tui":
        from tui.cli import main as tui_main

        tui_main(argv[1:])
        return
    args = build_parser().parse_args(argv)
    args.func(args)


def server_main() -> None:
    main(["server", *sys.argv[1:]])


if __name__ == "__main__":
    main()
