"""Fake `gemini` (Gemini CLI) headless mode: `gemini -p PROMPT --output-format stream-json --yolo`.
One process per command; no stdin streaming. See tests/fakes/README.md.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from typing import Any

from .common import (
    CRASH_EXIT,
    CRASH_STDERR,
    SLOW_DEFAULT_SECONDS,
    SLOW_INTERVAL,
    Opt,
    Runtime,
    SessionStore,
    UsageError,
    approx_tokens,
    bad_report_text,
    begin_turn,
    excerpt,
    filler_texts,
    log_invocation,
    now_iso,
    parse_argv,
    parse_scenario,
    rand_token,
    report_text,
    stdin_kind,
    turn_phrase,
    warn_unknown,
)

VERSION = "0.9.0"
DEFAULT_MODEL = "gemini-2.5-pro"

EXIT_GENERAL = 1
EXIT_INPUT = 42
EXIT_TURN_LIMIT = 53
EXIT_UNTRUSTED = 55

#: tools that need approval: denied in headless mode unless yolo (auto_edit approves the edit tools)
SHELL_TOOLS = ("run_shell_command",)
EDIT_TOOLS = ("replace", "write_file")

OPTIONS = [
    Opt(("-p", "--prompt"), "value", "prompt"),
    Opt(("-i", "--prompt-interactive"), "value", "prompt_interactive"),
    Opt(("-o", "--output-format"), "value", "output_format", ("text", "json", "stream-json")),
    Opt(("-y", "--yolo"), "flag", "yolo"),
    Opt(("--approval-mode",), "value", "approval_mode", ("default", "auto_edit", "yolo")),
    Opt(("-r", "--resume"), "value", "resume"),
    Opt(("--skip-trust",), "flag", "skip_trust"),
    Opt(("-m", "--model"), "value", "model"),
    Opt(("-s", "--sandbox"), "flag", "sandbox"),
    Opt(("-d", "--debug"), "flag", "debug"),
    Opt(("--include-directories",), "multi", "include_directories"),
    Opt(("--allowed-tools",), "multi", "allowed_tools"),
    Opt(("--allowed-mcp-server-names",), "multi", "allowed_mcp_server_names"),
    Opt(("-e", "--extensions"), "multi", "extensions"),
    Opt(("--screen-reader",), "flag", "screen_reader"),
    Opt(("-v", "--version"), "flag", "version"),
    Opt(("-h", "--help"), "flag", "help"),
]

USAGE = """Usage: gemini [options] [query..]

Gemini CLI (fake, for tests) - Launch an interactive CLI, use -p/--prompt for non-interactive mode

Options:
  -p, --prompt          Prompt. Appended to input on stdin (if any).            [string]
  -o, --output-format   The format of the CLI output.
                                           [string] [choices: "text", "json", "stream-json"]
  -y, --yolo            Automatically accept all actions (aka YOLO mode)       [boolean]
      --approval-mode   Set the approval mode   [string] [choices: "default", "auto_edit", "yolo"]
  -r, --resume          Resume a previous session ("latest" or a session id)    [string]
      --skip-trust      Trust the current workspace for this session           [boolean]
  -m, --model           Model                                                   [string]
  -v, --version         Show version number                                    [boolean]
  -h, --help            Show help                                              [boolean]
"""

UNTRUSTED_MESSAGE = (
    "Gemini CLI is not running in a trusted directory. To proceed, either use `--skip-trust`, set the "
    "`GEMINI_CLI_TRUST_WORKSPACE=true` environment variable, or trust this directory in interactive mode."
)


class GeminiRun:
    """One headless run: the events of a scenario and the final result with stats."""

    def __init__(self, rt: Runtime, opts: dict[str, Any], session: dict[str, Any], prompt: str) -> None:
        self.rt = rt
        self.opts = opts
        self.session = session
        self.prompt = prompt
        self.scenario = parse_scenario(prompt)
        warn_unknown(self.rt, self.scenario)
        self.model = opts.get("model") or DEFAULT_MODEL
        self.format = opts.get("output_format", "text")
        self.approval = "yolo" if opts.get("yolo") else opts.get("approval_mode", "default")
        self.turn_no = begin_turn(session, prompt)
        self.phrase = turn_phrase(self.turn_no, session["id"])
        self.t0 = time.monotonic()
        self.requests = 0
        self.tokens = {"input_tokens": 0, "output_tokens": 0, "cached": 0}
        self.tool_calls = 0
        self.tool_failures = 0
        self.response: list[str] = []

    # -- event builders ------------------------------------------------------------------------------

    def ev(self, kind: str, gap: float | None = None, **fields: Any) -> None:
        if self.format == "stream-json":
            self.rt.emit({"type": kind, "timestamp": now_iso(), **fields})
        self.rt.pause(gap)

    def _request(self, output_tokens: int) -> None:
        """Account one model request."""
        prompt_tokens = 8200 + 350 * self.requests
        self.tokens["input_tokens"] += prompt_tokens
        self.tokens["cached"] += int(prompt_tokens * 0.6) if self.requests else 0
        self.tokens["output_tokens"] += output_tokens
        self.requests += 1

    def say(
        self, text: str, *, output_tokens: int | None = None, chunks: int = 3, gap: float | None = None
    ) -> None:
        """One model response streamed as assistant message chunks (delta: true)."""
        self._request(output_tokens if output_tokens is not None else approx_tokens(text))
        step = max(1, len(text) // chunks + 1)
        for start in range(0, len(text), step):
            piece = text[start : start + step]
            self.response.append(piece)
            if self.format == "text":
                self.rt.write_raw(piece)
            self.ev("message", gap=gap, role="assistant", content=piece, delta=True)

    def approved(self, tool: str) -> bool:
        if tool in SHELL_TOOLS:
            return self.approval == "yolo"
        if tool in EDIT_TOOLS:
            return self.approval in ("yolo", "auto_edit")
        return True

    def tool(
        self,
        name: str,
        parameters: dict[str, Any],
        output: str,
        *,
        child: bool = False,
        check: bool = True,
        gap: float | None = None,
    ) -> bool:
        """A tool call and its result; False if the policy denied it."""
        self._request(approx_tokens(json.dumps(parameters)) + 8)
        tool_id = f"{name}-{int(time.time() * 1000)}-{rand_token(12, '0123456789abcdef')}"
        self.tool_calls += 1
        self.ev("tool_use", gap=gap, tool_name=name, tool_id=tool_id, parameters=parameters)
        if check and not self.approved(name):
            self.tool_failures += 1
            message = (
                f'Tool "{name}" was denied by policy: it needs approval, '
                "which non-interactive mode cannot ask for."
            )
            self.ev(
                "tool_result",
                gap=gap,
                tool_id=tool_id,
                status="error",
                error={"type": "policy_violation", "message": message},
            )
            return False
        if child:
            self.rt.spawn_child()
            self.rt.pause()
            self.rt.kill_child()
        self.ev("tool_result", gap=gap, tool_id=tool_id, status="success", output=output)
        return True

    def stats(self) -> dict[str, Any]:
        per_model = {
            "total_tokens": self.tokens["input_tokens"] + self.tokens["output_tokens"],
            "input_tokens": self.tokens["input_tokens"],
            "output_tokens": self.tokens["output_tokens"],
            "cached": self.tokens["cached"],
            "input": self.tokens["input_tokens"] - self.tokens["cached"],
        }
        return {
            **per_model,
            "duration_ms": int((time.monotonic() - self.t0) * 1000),
            "tool_calls": self.tool_calls,
            "models": {self.model: dict(per_model)},
        }

    def finish(self, status: str = "success", error: dict[str, Any] | None = None, code: int = 0) -> None:
        stats = self.stats()
        if self.format == "stream-json":
            event: dict[str, Any] = {"type": "result", "timestamp": now_iso(), "status": status}
            if error is not None:
                event["error"] = error
            event["stats"] = stats
            self.rt.emit(event)
        elif self.format == "json":
            body: dict[str, Any] = {"session_id": self.session["id"], "response": "".join(self.response)}
            body["stats"] = {
                "models": {
                    self.model: {
                        "api": {
                            "totalRequests": self.requests,
                            "totalErrors": 1 if error else 0,
                            "totalLatencyMs": stats["duration_ms"],
                        },
                        "tokens": {
                            "prompt": stats["input_tokens"],
                            "candidates": stats["output_tokens"],
                            "total": stats["total_tokens"],
                            "cached": stats["cached"],
                            "thoughts": 0,
                            "tool": 0,
                        },
                    }
                },
                "tools": {
                    "totalCalls": self.tool_calls,
                    "totalSuccess": self.tool_calls - self.tool_failures,
                    "totalFail": self.tool_failures,
                },
                "files": {"totalLinesAdded": 0, "totalLinesRemoved": 0},
            }
            if error is not None:
                body["error"] = {**error, "code": code}
            self.rt.write_raw(json.dumps(body, indent=2) + "\n")
        else:
            if self.response:
                self.rt.write_raw("\n")
            if error is not None:
                self.rt.err(error["message"])
        self.rt.exit(code)

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> None:
        self.ev("init", session_id=self.session["id"], model=self.model)
        self.ev("message", role="user", content=self.prompt)
        if self.scenario.tokens and self.scenario.name != "lines":
            for text, share in filler_texts(self.scenario.tokens):
                self.say(text, output_tokens=share)
        getattr(self, "sc_" + self.scenario.name, self.sc_plain)()
        self.finish()

    # -- scenarios -----------------------------------------------------------------------------------

    def sc_plain(self) -> None:
        self.say(
            f"Hello from fake Gemini CLI. You asked: \u201c{excerpt(self.prompt)}\u201d\n\n{self.phrase}"
        )

    def sc_tools(self) -> None:
        readme = os.path.join(os.getcwd(), "README.md")
        self.say("I'll look at the project first.")
        listing = "README.md\nsrc/\ntests/\n"
        self.tool(
            "run_shell_command",
            {"command": "ls", "description": "List the project files."},
            listing,
            child=True,
        )
        self.tool(
            "read_file", {"file_path": readme}, "# Demo project\n\nA small service used by the tests.\n"
        )
        self.tool(
            "replace",
            {
                "file_path": readme,
                "old_string": "# Demo project",
                "new_string": "# Demo project (edited)",
                "instruction": "Mark the title as edited.",
            },
            f"Successfully modified file: {readme} (1 replacements).",
        )
        self.say(f"I listed the project, read README.md and updated its title. {self.phrase}")

    def sc_max_turns(self) -> None:
        for step in range(1, (self.scenario.arg or 3) + 1):
            self.tool(
                "list_directory",
                {"dir_path": os.path.join(os.getcwd(), f"src/module_{step}")},
                f"Directory listing for src/module_{step}:\n__init__.py\nmodule_{step}.py",
            )
        message = (
            "Reached max session turns for this session. Increase the number of turns by specifying "
            "maxSessionTurns in settings.json."
        )
        self.finish("error", {"type": "FatalTurnLimitedError", "message": message}, EXIT_TURN_LIMIT)

    def sc_error(self) -> None:
        self.ev(
            "error",
            severity="warning",
            message="Attempt 1 failed with status 429. Retrying with backoff... "
            "ApiError: Resource has been exhausted (e.g. check quota).",
        )
        message = (
            "[API Error: got status: 503 Service Unavailable. The model is overloaded. "
            "Please try again later.]"
        )
        self.finish("error", {"type": "ApiError", "message": message}, EXIT_GENERAL)

    def sc_crash(self) -> None:
        self.say("Let me look into that.")
        for line in CRASH_STDERR["gemini"]:
            self.rt.err(line)
        self.rt.exit(CRASH_EXIT)

    def sc_slow(self) -> None:
        deadline = time.monotonic() + (self.scenario.arg or SLOW_DEFAULT_SECONDS)
        self.rt.spawn_child()
        step = 0
        while time.monotonic() < deadline:
            step += 1
            self.tool(
                "run_shell_command",
                {"command": f"sleep 0.2 && echo step {step}"},
                f"step {step}\n",
                check=False,
                gap=SLOW_INTERVAL,
            )
        self.rt.kill_child()
        self.say(f"Finished all {step} steps. {self.phrase}")

    def sc_lines(self) -> None:
        total = self.scenario.arg or 0
        self._request(total * 6)
        for k in range(1, total + 1):
            piece = f"line {k} of {total}\n"
            self.response.append(piece)
            if self.format == "text":
                self.rt.write_raw(piece)
            self.ev("message", gap=0, role="assistant", content=piece, delta=True)
        self.say(f"Printed {total} lines. {self.phrase}")

    def sc_unknown_event(self) -> None:
        self.ev(
            "brand_new_thing", payload={"note": "an event type from a future Gemini CLI version", "level": 3}
        )
        self.say(f"Still answering normally. {self.phrase}")

    def sc_permission(self) -> None:
        self.say("I'll remove the build directory.")
        if self.tool(
            "run_shell_command",
            {"command": "rm -rf build/", "description": "Remove the build directory."},
            "",
        ):
            self.say(f"Removed the build directory. {self.phrase}")
        else:
            self.say(
                f"The policy denied `rm -rf build/`, so the build directory is still there. {self.phrase}"
            )

    def sc_report(self) -> None:
        self.tool(
            "search_file_content",
            {"pattern": "load_lines"},
            "server/orders.py:88:        lines = load_lines(order.id)",
        )
        self.say(report_text("gemini", self.phrase), chunks=6)

    def sc_bad_report(self) -> None:
        self.say(bad_report_text("gemini", self.phrase))


def main(argv: list[str]) -> None:
    rt = Runtime("gemini")
    log_invocation("gemini", argv)
    try:
        opts, positionals = parse_argv(argv, OPTIONS)
    except UsageError as exc:
        rt.err(USAGE)
        rt.err(str(exc))
        rt.exit(2)
    if opts.get("version"):
        rt.write_raw(VERSION + "\n")
        rt.exit(0)
    if opts.get("help"):
        rt.write_raw(USAGE)
        rt.exit(0)
    if opts.get("yolo") and "approval_mode" in opts:
        rt.err("Cannot use both --yolo (-y) and --approval-mode together. Use --approval-mode=yolo instead.")
        rt.exit(EXIT_GENERAL)
    if "prompt" in opts and positionals:
        rt.err("Cannot use both a positional prompt and the --prompt (-p) flag together")
        rt.exit(EXIT_GENERAL)
    if "prompt_interactive" in opts:
        rt.err("Error: this fake gemini has no interactive mode.")
        rt.exit(EXIT_GENERAL)

    # Cancel: SIGINT, SIGTERM and SIGHUP shut down gracefully, exit 0, no result event.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: rt.request_exit(0))

    if not opts.get("skip_trust") and os.environ.get("GEMINI_CLI_TRUST_WORKSPACE", "").lower() != "true":
        rt.err(UNTRUSTED_MESSAGE)
        rt.exit(EXIT_UNTRUSTED)

    prompt = opts.get("prompt") or " ".join(positionals)
    kind = stdin_kind()
    if kind == "tty" and not prompt:
        rt.err("Error: this fake gemini has no interactive mode; use -p/--prompt.")
        rt.exit(EXIT_GENERAL)
    if kind not in ("tty", "closed"):
        # As the real CLI: stdin is read to its end first and the -p text appended to it, so an open
        # pipe that is never closed makes the run hang here. Give it /dev/null.
        piped = sys.stdin.read()
        if piped.strip():
            prompt = f"{piped}\n\n{prompt}" if prompt else piped
    if not prompt.strip():
        rt.err(
            "No input provided via stdin. Input can be provided by piping data into gemini "
            "or using the --prompt option."
        )
        rt.exit(EXIT_INPUT)

    store = SessionStore("gemini")
    cwd = os.getcwd()
    if opts.get("resume"):
        wanted = opts["resume"]
        session = store.latest(cwd) if wanted == "latest" else store.load(wanted, cwd)
        if session is None:
            rt.err(
                f'Error resuming session: Invalid session identifier "{wanted}". '
                "Use --list-sessions to see available sessions."
            )
            rt.exit(EXIT_INPUT)
    else:
        session = SessionStore.new(str(uuid.uuid4()), cwd)
    assert session is not None
    run = GeminiRun(rt, opts, session, prompt)
    store.save(session)
    run.run()
