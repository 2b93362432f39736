"""Shared machinery of the fake agent CLIs: argv parsing, scenarios, session state, the invocation
log, paced JSON-lines output, the tool child process, signals and the canned texts.

Standard library only: the fakes run under whatever ``python3`` is on PATH.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import stat
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_DELAY = 0.02
SLOW_INTERVAL = 0.2
SLOW_DEFAULT_SECONDS = 60


# ---- small helpers ---------------------------------------------------------------------------------


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else default
    except ValueError:
        return default


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rand_token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(random.choices(alphabet, k=n))


def approx_tokens(text: str) -> int:
    """About four characters a token, never zero."""
    return max(1, (len(text) + 3) // 4)


def excerpt(text: str, limit: int = 80) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def uuid7() -> str:
    """A UUIDv7 (time-ordered), the shape of Codex thread ids."""
    ms = int(time.time() * 1000)
    rand = random.getrandbits(74)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, TypeError):
        return False
    return True


# ---- argv ------------------------------------------------------------------------------------------


class UsageError(Exception):
    """A command-line usage error (unknown option, missing value, bad choice)."""


@dataclass(frozen=True)
class Opt:
    names: tuple[str, ...]
    #: flag: no value; value: one value (last wins); multi: repeatable, one value each time;
    #: variadic: commander.js style `<values...>`, takes every following non-option argument.
    kind: str
    dest: str
    choices: tuple[str, ...] | None = None


def parse_argv(argv: list[str], options: list[Opt]) -> tuple[dict[str, Any], list[str]]:
    by_name = {name: opt for opt in options for name in opt.names}
    values: dict[str, Any] = {}
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positionals.extend(argv[i + 1 :])
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            i += 1
            continue
        if arg.startswith("--") and "=" in arg:
            name, _, inline = arg.partition("=")
            has_inline = True
        else:
            name, inline, has_inline = arg, "", False
        opt = by_name.get(name)
        if opt is None:
            raise UsageError(f"unknown option '{name}'")
        if opt.kind == "flag":
            if has_inline:
                raise UsageError(f"option '{name}' does not take a value")
            values[opt.dest] = True
        elif opt.kind in ("value", "multi"):
            if has_inline:
                value = inline
            else:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"option '{name}' argument missing")
                value = argv[i]
            if opt.choices is not None and value not in opt.choices:
                allowed = ", ".join(opt.choices)
                raise UsageError(
                    f"option '{name}' argument '{value}' is invalid. Allowed choices are {allowed}."
                )
            if opt.kind == "value":
                values[opt.dest] = value
            else:
                values.setdefault(opt.dest, []).append(value)
        elif opt.kind == "variadic":
            collected = values.setdefault(opt.dest, [])
            if has_inline:
                collected.append(inline)
            else:
                start = len(collected)
                while i + 1 < len(argv) and not (argv[i + 1].startswith("-") and argv[i + 1] != "-"):
                    i += 1
                    collected.append(argv[i])
                if len(collected) == start:
                    raise UsageError(f"option '{name}' argument missing")
        else:  # pragma: no cover - a programming error in an option table
            raise AssertionError(opt.kind)
        i += 1
    return values, positionals


# ---- scenarios -------------------------------------------------------------------------------------

SCENARIOS = (
    "plain",
    "tools",
    "subagent",
    "max_turns",
    "error",
    "crash",
    "slow",
    "lines",
    "unknown_event",
    "permission",
    "report",
    "bad_report",
)

_SCENARIO_RE = re.compile(r"scenario:([a-z_]+)(?::(\d+))?")
_TOKENS_RE = re.compile(r"(?<![\w-])tokens:(\d+)")


@dataclass
class Scenario:
    name: str = "plain"
    #: the number after the name: lines:N (line count), slow:N (seconds), max_turns:N (turn limit)
    arg: int | None = None
    #: tokens:N: about N output tokens in total, spread over several messages
    tokens: int | None = None
    unknown: str | None = None


def parse_scenario(prompt: str) -> Scenario:
    scenario = Scenario()
    match = _SCENARIO_RE.search(prompt)
    if match:
        name, arg = match.group(1), match.group(2)
        if name in SCENARIOS:
            scenario.name = name
            scenario.arg = int(arg) if arg is not None else None
        else:
            scenario.unknown = name
    tokens = _TOKENS_RE.search(prompt)
    if tokens:
        scenario.tokens = int(tokens.group(1))
    if scenario.name == "lines" and scenario.arg is None:
        scenario.arg = 10
    return scenario


# ---- state: sessions / threads --------------------------------------------------------------------

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def state_root() -> str:
    root = os.environ.get("FAKE_CLI_STATE_DIR") or os.path.join(
        tempfile.gettempdir(), f"fake-agent-cli-state-{os.getuid()}"
    )
    os.makedirs(root, exist_ok=True)
    return root


class SessionStore:
    """One JSON file per session id under $FAKE_CLI_STATE_DIR/<cli>/."""

    def __init__(self, cli: str) -> None:
        self.dir = os.path.join(state_root(), cli)
        os.makedirs(self.dir, exist_ok=True)

    def _path(self, session_id: str) -> str | None:
        if not _ID_RE.match(session_id or ""):
            return None
        return os.path.join(self.dir, session_id + ".json")

    def load(self, session_id: str, cwd: str | None = None) -> dict[str, Any] | None:
        """The session, or None; with `cwd`, only a session created in that directory (Claude Code
        and Gemini CLI keep sessions per project directory)."""
        path = self._path(session_id)
        if path is None or not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            session: dict[str, Any] = json.load(fh)
        if cwd is not None and session.get("cwd") != os.path.realpath(cwd):
            return None
        return session

    def exists(self, session_id: str) -> bool:
        path = self._path(session_id)
        return path is not None and os.path.exists(path)

    def save(self, session: dict[str, Any]) -> None:
        path = self._path(session["id"])
        assert path is not None, session["id"]
        session["updated"] = time.time()
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(session, fh)
        os.replace(tmp, path)

    def latest(self, cwd: str | None = None) -> dict[str, Any] | None:
        best: dict[str, Any] | None = None
        for name in os.listdir(self.dir):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8") as fh:
                    session = json.load(fh)
            except (OSError, ValueError):
                continue
            if cwd is not None and session.get("cwd") != os.path.realpath(cwd):
                continue
            if best is None or session.get("updated", 0) > best.get("updated", 0):
                best = session
        return best

    @staticmethod
    def new(session_id: str, cwd: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": session_id,
            "cwd": os.path.realpath(cwd),
            "turns": 0,
            "created": time.time(),
            "prompts": [],
            **extra,
        }


def warn_unknown(rt: Runtime, scenario: Scenario) -> None:
    if scenario.unknown:
        rt.err(f"fake {rt.cli}: unknown scenario '{scenario.unknown}', answering as scenario:plain")


def begin_turn(session: dict[str, Any], prompt: str) -> int:
    turns = int(session.get("turns", 0)) + 1
    session["turns"] = turns
    session.setdefault("prompts", []).append(excerpt(prompt, 200))
    del session["prompts"][:-20]
    return turns


def turn_phrase(turn: int, session_id: str) -> str:
    return f"This is turn {turn} of session {session_id}."


# ---- the invocation log ----------------------------------------------------------------------------


def stdin_kind() -> str:
    try:
        st = os.fstat(0)
    except OSError:
        return "closed"
    if os.isatty(0):
        return "tty"
    if stat.S_ISCHR(st.st_mode):
        try:
            if st.st_rdev == os.stat(os.devnull).st_rdev:
                return "devnull"
        except OSError:
            pass
        return "char"
    if stat.S_ISFIFO(st.st_mode):
        return "pipe"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISSOCK(st.st_mode):
        return "socket"
    return "other"


_LOGGED_ENV_VALUES = ("GEMINI_CLI_TRUST_WORKSPACE", "CI", "NO_COLOR", "TERM")
_LOGGED_ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "GEMINI_", "GOOGLE_", "OPENAI_", "CODEX_")


def log_invocation(cli: str, argv: list[str], **extra: Any) -> None:
    """Append one JSON line to $FAKE_CLI_LOG: argv, the kind of stdin, cwd, process group.
    Environment: the values of a few harmless variables, and only the NAMES of credential-like ones."""
    path = os.environ.get("FAKE_CLI_LOG")
    if not path:
        return
    record = {
        "cli": cli,
        "argv": argv,
        "stdin": stdin_kind(),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "pgid": os.getpgrp(),
        "sid": os.getsid(0),
        "time": time.time(),
        "env": {k: os.environ[k] for k in _LOGGED_ENV_VALUES if k in os.environ},
        "env_names": sorted(k for k in os.environ if k.startswith(_LOGGED_ENV_PREFIXES)),
        **extra,
    }
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)


# ---- the running process: paced output, child, signals, exit --------------------------------------


class Runtime:
    """Output and lifecycle of one fake CLI process.

    emit() writes one compact JSON object per line and flushes. A signal handler that wants the
    process gone calls request_exit(): if a line is being written, the exit happens right after it,
    so a cancelled run never leaves half a JSON line behind (the real CLIs do not either)."""

    def __init__(self, cli: str) -> None:
        self.cli = cli
        self.delay = env_float("FAKE_CLI_DELAY", DEFAULT_DELAY)
        self.child: subprocess.Popen[bytes] | None = None
        self.checkpoint: Callable[[], None] = lambda: None
        self._writing = False
        self._pending_exit: int | None = None
        self._lock = threading.RLock()

    # output
    def emit(self, obj: dict[str, Any]) -> None:
        self.write_raw(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")

    def write_raw(self, text: str, stream: Any = None) -> None:
        stream = stream or sys.stdout
        with self._lock:
            self._writing = True
            try:
                stream.buffer.write(text.encode("utf-8"))
                stream.buffer.flush()
            except BrokenPipeError:
                self._writing = False
                self.exit(1)
            finally:
                self._writing = False
        if self._pending_exit is not None:
            self.exit(self._pending_exit)

    def err(self, line: str) -> None:
        self.write_raw(line.rstrip("\n") + "\n", sys.stderr)

    # pacing
    def pause(self, seconds: float | None = None) -> None:
        """Sleep between events (FAKE_CLI_DELAY by default), polling the checkpoint meanwhile."""
        seconds = self.delay if seconds is None else seconds
        deadline = time.monotonic() + seconds
        while True:
            self.checkpoint()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(0.02, remaining))

    # the tool's child process
    def spawn_child(self) -> subprocess.Popen[bytes]:
        """`sleep 300` in OUR process group, as a tool run by the CLI would be; its pid goes to
        $FAKE_CLI_CHILD_PID_FILE."""
        if self.child is not None and self.child.poll() is None:
            return self.child
        sleep = shutil.which("sleep")
        cmd = [sleep, "300"] if sleep else [sys.executable, "-c", "import time; time.sleep(300)"]
        self.child = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        pid_file = os.environ.get("FAKE_CLI_CHILD_PID_FILE")
        if pid_file:
            tmp = f"{pid_file}.{os.getpid()}.tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{self.child.pid}\n")
            os.replace(tmp, pid_file)
        return self.child

    def kill_child(self) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        try:
            child.terminate()
            child.wait(timeout=1)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        except OSError:
            pass

    # exit
    def request_exit(self, code: int) -> None:
        if self._writing:
            self._pending_exit = code
        else:
            self.exit(code)

    def exit(self, code: int) -> None:
        self.kill_child()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


# ---- canned texts ------------------------------------------------------------------------------------

_FILLER = (
    "Reviewing module {k}: reading its imports, call sites and tests, and noting anything that "
    "looks inconsistent with the rest of the code base. "
)


def filler_texts(tokens: int, parts: int = 5) -> list[tuple[str, int]]:
    """tokens:N split into `parts` texts of about 4*share characters; returns (text, share)."""
    parts = max(1, min(parts, tokens))
    base, extra = divmod(tokens, parts)
    chunks: list[tuple[str, int]] = []
    for k in range(parts):
        share = base + (1 if k < extra else 0)
        want = share * 4
        text = ""
        n = 0
        while len(text) < want:
            text += _FILLER.format(k=k * 100 + n)
            n += 1
        chunks.append((text[:want], share))
    return chunks


def report_dict(cli: str) -> dict[str, Any]:
    return {
        "title": f"Investigation: checkout latency regression ({cli})",
        "summary": (
            "p95 latency of POST /checkout rose from 120 ms to 840 ms after release 2.3. The cause is an "
            "N+1 query introduced in the order listing, made worse by a missing index."
        ),
        "sections": [
            {
                "title": "Scope",
                "content": "The checkout service and its database access layer, releases 2.2 to 2.3.",
            },
            {
                "title": "Method",
                "content": "Read the diff between the releases, ran the query log and profiled one request.",
            },
            {
                "title": "Results",
                "content": "One SELECT per order line; 41 queries for a typical cart instead of 2.",
            },
        ],
        "findings": [
            {
                "title": "N+1 query in order listing",
                "severity": "HIGH",
                "description": "list_orders() loads each order's lines in a loop, not in one joined query.",
                "evidence": [
                    "server/orders.py:88 calls load_lines(order.id) inside the loop",
                    "query log: 41 SELECTs per request",
                ],
            },
            {
                "title": "Missing index on order_lines.order_id",
                "severity": "MEDIUM",
                "description": "Each per-order query is a sequential scan of order_lines.",
                "evidence": ["EXPLAIN shows Seq Scan on order_lines (rows=182000)"],
            },
            {
                "title": "Debug logging left on in production",
                "severity": "LOW",
                "description": "Every query is logged at DEBUG level, adding about 5 ms a request.",
                "evidence": ['config/production.toml: log_level = "debug"'],
            },
        ],
        "recommendations": [
            "Load order lines with one joined query (selectinload).",
            "Add an index on order_lines.order_id.",
            "Set the production log level to INFO.",
        ],
    }


def report_text(cli: str, phrase: str) -> str:
    body = json.dumps(report_dict(cli), indent=2)
    return (
        "I traced the regression to the order listing. " + phrase + "\n\n"
        "Here is the investigation report:\n\n```json\n" + body + "\n```"
    )


def bad_report_text(cli: str, phrase: str) -> str:
    return (
        "I tried to write up the investigation. " + phrase + "\n\n"
        "```json\n"
        "{\n"
        f'  "title": "Investigation: broken report ({cli})",\n'
        '  "summary": "This block is not valid JSON,\n'
        '  "findings": [\n'
        '    {"title": "unterminated", "severity": "HIGH", "evidence": ["a", "b",]},\n'
        "  ]\n"
        "```"
    )


CRASH_STDERR = {
    "claude": [
        "file:///usr/local/lib/node_modules/@anthropic-ai/claude-code/cli.js:4821",
        "      throw new TypeError(\"Cannot read properties of undefined (reading 'content')\");",
        "            ^",
        "",
        "TypeError: Cannot read properties of undefined (reading 'content')",
        "    at normalizeMessage (file:///usr/local/lib/node_modules/@anthropic-ai/claude-code/cli.js:4821:13)",
        "    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
        "",
        "Node.js v22.11.0",
    ],
    "gemini": [
        "file:///usr/local/lib/node_modules/@google/gemini-cli/dist/src/nonInteractiveCli.js:212",
        "TypeError: Cannot read properties of undefined (reading 'parts')",
        "    at runNonInteractive (file:///usr/local/lib/node_modules/@google/gemini-cli/dist/src/nonInteractiveCli.js:212:41)",
        "",
        "Node.js v22.11.0",
    ],
    "codex": [
        "thread 'main' panicked at codex-rs/exec/src/event_processor_with_jsonl_output.rs:214:51:",
        "called `Option::unwrap()` on a `None` value",
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
    ],
}
CRASH_EXIT = 3
