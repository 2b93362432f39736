"""Fake `codex` (Codex CLI) exec mode: `codex exec --json [--sandbox MODE] [--skip-git-repo-check] PROMPT`
and `codex exec --json resume THREAD_ID PROMPT`. See tests/fakes/README.md.
"""

from __future__ import annotations

import os
import signal
import sys
import time
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
    parse_argv,
    parse_scenario,
    report_text,
    stdin_kind,
    turn_phrase,
    uuid7,
    warn_unknown,
)

VERSION = "0.50.0"
DEFAULT_MODEL = "gpt-5-codex"
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")

OPTIONS = [
    Opt(("--json", "--experimental-json"), "flag", "json"),
    Opt(("-s", "--sandbox"), "value", "sandbox", SANDBOXES),
    Opt(("--skip-git-repo-check",), "flag", "skip_git_repo_check"),
    Opt(("--full-auto",), "flag", "full_auto"),
    Opt(("--dangerously-bypass-approvals-and-sandbox", "--yolo"), "flag", "bypass"),
    Opt(("-m", "--model"), "value", "model"),
    Opt(("-c", "--config"), "multi", "config"),
    Opt(("-C", "--cd"), "value", "cd"),
    Opt(("-p", "--profile"), "value", "profile"),
    Opt(("-o", "--output-last-message"), "value", "output_last_message"),
    Opt(("--output-schema",), "value", "output_schema"),
    Opt(("--color",), "value", "color", ("always", "never", "auto")),
    Opt(("-i", "--image"), "multi", "image"),
    Opt(("--oss",), "flag", "oss"),
    Opt(("--last",), "flag", "last"),
    Opt(("-V", "--version"), "flag", "version"),
    Opt(("-h", "--help"), "flag", "help"),
]

USAGE = """Run Codex non-interactively (fake, for tests)

Usage: codex exec [OPTIONS] [PROMPT]
       codex exec [OPTIONS] resume [SESSION_ID] [PROMPT]

Options:
      --json                     Print events to stdout as JSONL
  -s, --sandbox <SANDBOX_MODE>   [possible values: read-only, workspace-write, danger-full-access]
      --skip-git-repo-check      Allow running Codex outside a Git repository
  -m, --model <MODEL>            Model the agent should use
  -C, --cd <DIR>                 Tell the agent to use the specified directory as its working root
  -o, --output-last-message <FILE>  Specifies file where the last message from the agent should be written
  -V, --version                  Print version
"""


def _usage_error(rt: Runtime, message: str) -> None:
    rt.err(f"error: {message}\n\nUsage: codex exec [OPTIONS] [PROMPT]\n\nFor more information, try '--help'.")
    rt.exit(2)


def _in_git_repo(path: str) -> bool:
    path = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(path, ".git")):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


class CodexRun:
    """One `codex exec` turn: thread.started, turn.started, items, turn.completed or turn.failed."""

    def __init__(
        self, rt: Runtime, opts: dict[str, Any], thread: dict[str, Any], prompt: str, sandbox: str
    ) -> None:
        self.rt = rt
        self.opts = opts
        self.thread = thread
        self.prompt = prompt
        self.sandbox = sandbox
        self.scenario = parse_scenario(prompt)
        warn_unknown(self.rt, self.scenario)
        self.json = bool(opts.get("json"))
        self.turn_no = begin_turn(thread, prompt)
        self.phrase = turn_phrase(self.turn_no, thread["id"])
        self.items = 0
        self.requests = 0
        self.last_message = ""
        usage = thread.setdefault("usage", {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0})
        self.usage = dict(usage)

    # -- event builders ------------------------------------------------------------------------------

    def ev(self, kind: str, gap: float | None = None, **fields: Any) -> None:
        event = {"type": kind, **fields}
        if self.json:
            self.rt.emit(event)
        else:
            self._human(event)
        self.rt.pause(gap)

    def _human(self, event: dict[str, Any]) -> None:
        """Without --json: progress on stderr, the final message on stdout (at the end)."""
        item = event.get("item") or {}
        if event["type"] == "item.completed":
            kind = item.get("type")
            if kind == "reasoning":
                self.rt.err(f"thinking\n{item['text']}")
            elif kind == "agent_message":
                self.rt.err(f"codex\n{item['text']}")
            elif kind == "command_execution":
                self.rt.err(f"exec\n{item['command']}\n{item.get('aggregated_output', '')}")
            elif kind == "file_change":
                self.rt.err("file update\n" + "\n".join(f"{c['kind']} {c['path']}" for c in item["changes"]))
        elif event["type"] == "turn.completed":
            self.rt.err(f"tokens used\n{event['usage']['input_tokens'] + event['usage']['output_tokens']}")
        elif event["type"] in ("turn.failed", "error"):
            self.rt.err("ERROR: " + str((event.get("error") or {}).get("message") or event.get("message")))

    def _item_id(self) -> str:
        item_id = f"item_{self.items}"
        self.items += 1
        return item_id

    def _request(self, output_tokens: int) -> None:
        """Account one model request in the thread's running total."""
        prompt_tokens = 4100 + 600 * self.requests
        self.usage["input_tokens"] += prompt_tokens
        self.usage["cached_input_tokens"] += int(prompt_tokens * 0.75) if self.requests else 0
        self.usage["output_tokens"] += output_tokens
        self.requests += 1

    def reasoning(self, text: str) -> None:
        self._request(approx_tokens(text))
        self.ev("item.completed", item={"id": self._item_id(), "type": "reasoning", "text": text})

    def message(self, text: str, *, output_tokens: int | None = None, gap: float | None = None) -> None:
        self._request(output_tokens if output_tokens is not None else approx_tokens(text))
        self.last_message = text
        self.ev(
            "item.completed", gap=gap, item={"id": self._item_id(), "type": "agent_message", "text": text}
        )

    def command(
        self, command: str, output: str, *, exit_code: int = 0, child: bool = False, gap: float | None = None
    ) -> None:
        self._request(approx_tokens(command) + 12)
        item = {
            "id": self._item_id(),
            "type": "command_execution",
            "command": command,
            "aggregated_output": "",
            "exit_code": None,
            "status": "in_progress",
        }
        self.ev("item.started", gap=gap, item=item)
        if child:
            self.rt.spawn_child()
            self.rt.pause()
            self.rt.kill_child()
        status = "completed" if exit_code == 0 else "failed"
        self.ev(
            "item.completed",
            gap=gap,
            item={**item, "aggregated_output": output, "exit_code": exit_code, "status": status},
        )

    def file_change(self, changes: list[dict[str, str]]) -> None:
        self._request(60)
        item = {"id": self._item_id(), "type": "file_change", "changes": changes, "status": "in_progress"}
        self.ev("item.started", item=item)
        status = "failed" if self.sandbox == "read-only" else "completed"
        self.ev("item.completed", item={**item, "status": status})

    def _save(self) -> None:
        self.thread["usage"] = self.usage
        SessionStore("codex").save(self.thread)

    def fail(self, message: str, code: int = 1) -> None:
        self._save()
        self.ev("turn.failed", gap=0, error={"message": message})
        self.rt.exit(code)

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> None:
        self.ev("thread.started", thread_id=self.thread["id"])
        self.ev("turn.started")
        if self.scenario.tokens and self.scenario.name != "lines":
            for text, share in filler_texts(self.scenario.tokens):
                self.message(text, output_tokens=share)
        getattr(self, "sc_" + self.scenario.name, self.sc_plain)()
        self._save()
        self.ev("turn.completed", gap=0, usage=dict(self.usage))
        if self.opts.get("output_last_message"):
            with open(self.opts["output_last_message"], "w", encoding="utf-8") as fh:
                fh.write(self.last_message)
        if not self.json:
            self.rt.write_raw(self.last_message + "\n")
        self.rt.exit(0)

    # -- scenarios -----------------------------------------------------------------------------------

    def sc_plain(self) -> None:
        self.reasoning("**Answering the question**")
        self.message(
            f"Hello from fake Codex CLI. You asked: \u201c{excerpt(self.prompt)}\u201d\n\n{self.phrase}"
        )

    def sc_tools(self) -> None:
        readme = os.path.join(os.getcwd(), "README.md")
        todo: dict[str, Any] = {
            "id": self._item_id(),
            "type": "todo_list",
            "items": [
                {"text": "Inspect the project", "completed": False},
                {"text": "Update the README title", "completed": False},
            ],
        }
        self.ev("item.started", item=todo)
        self.reasoning("**Inspecting the project layout**")
        self.command(
            "bash -lc 'ls -la'",
            "total 24\n-rw-r--r-- 1 dev dev 312 Jan  5 10:00 README.md\n"
            "drwxr-xr-x 3 dev dev 4096 Jan  5 10:00 src\n",
            child=True,
        )
        todo["items"][0]["completed"] = True
        self.ev("item.updated", item=todo)
        self.command(
            "bash -lc 'sed -n 1,20p README.md'", "# Demo project\n\nA small service used by the tests.\n"
        )
        self.file_change([{"path": readme, "kind": "update"}])
        todo["items"][1]["completed"] = True
        self.ev("item.completed", item=todo)
        self.message(f"I listed the project, read README.md and updated its title. {self.phrase}")

    def sc_max_turns(self) -> None:
        for step in range(1, (self.scenario.arg or 3) + 1):
            self.command(f"bash -lc 'ls src/module_{step}'", f"__init__.py\nmodule_{step}.py\n")
        self.fail("Reached the maximum number of turns for this task.")

    def sc_error(self) -> None:
        cause = "stream disconnected before completion: error sending request for url (https://api.openai.com/v1/responses)"
        for attempt in (1, 2):
            self.ev("error", message=f"Reconnecting... {attempt}/5 ({cause})")
        self.fail(cause)

    def sc_crash(self) -> None:
        self.reasoning("**Looking into it**")
        for line in CRASH_STDERR["codex"]:
            self.rt.err(line)
        self.rt.exit(CRASH_EXIT)

    def sc_slow(self) -> None:
        deadline = time.monotonic() + (self.scenario.arg or SLOW_DEFAULT_SECONDS)
        self.rt.spawn_child()
        step = 0
        while time.monotonic() < deadline:
            step += 1
            self.command(f"bash -lc 'sleep 0.2 && echo step {step}'", f"step {step}\n", gap=SLOW_INTERVAL)
        self.rt.kill_child()
        self.message(f"Finished all {step} steps. {self.phrase}")

    def sc_lines(self) -> None:
        total = self.scenario.arg or 0
        for k in range(1, total + 1):
            self.message(f"line {k} of {total}", gap=0)
        self.message(f"Printed {total} lines. {self.phrase}")

    def sc_unknown_event(self) -> None:
        self.ev("brand_new_thing", payload={"note": "an event type from a future Codex version", "level": 3})
        self.ev("item.completed", item={"id": self._item_id(), "type": "brand_new_item", "data": {"x": 1}})
        self.sc_plain()

    def sc_permission(self) -> None:
        self.reasoning("**Removing the build directory**")
        if self.sandbox == "read-only":
            self.command(
                "bash -lc 'rm -rf build/'", "rm: cannot remove 'build/': Read-only file system\n", exit_code=1
            )
            self.message(f"The read-only sandbox blocked `rm -rf build/`. {self.phrase}")
        else:
            self.command("bash -lc 'rm -rf build/'", "")
            self.message(f"Removed the build directory. {self.phrase}")

    def sc_report(self) -> None:
        self.command(
            "bash -lc 'rg -n load_lines'", "server/orders.py:88:        lines = load_lines(order.id)\n"
        )
        self.message(report_text("codex", self.phrase))

    def sc_bad_report(self) -> None:
        self.message(bad_report_text("codex", self.phrase))


def main(argv: list[str]) -> None:
    rt = Runtime("codex")
    log_invocation("codex", argv)
    try:
        opts, positionals = parse_argv(argv, OPTIONS)
    except UsageError as exc:
        message = str(exc)
        if message.startswith("unknown option"):
            message = message.replace("unknown option", "unexpected argument", 1) + " found"
        _usage_error(rt, message)
    if opts.get("version"):
        rt.write_raw(f"codex-cli {VERSION}\n")
        rt.exit(0)
    if opts.get("help"):
        rt.write_raw(USAGE)
        rt.exit(0)
    if not positionals or positionals[0] not in ("exec", "e"):
        # Without a subcommand codex starts its TUI, which needs a terminal.
        rt.err("Error: stdin is not a terminal")
        rt.exit(1)

    # SIGINT interrupts the turn: no turn.completed or turn.failed follows, exit 130.
    # SIGTERM keeps its default action (the process dies; a child not in its group would live on).
    signal.signal(signal.SIGINT, lambda signum, frame: rt.request_exit(130))

    rest = positionals[1:]
    resume_id: str | None = None
    resuming = bool(rest) and rest[0] == "resume"
    if resuming:
        rest = rest[1:]
        if not opts.get("last"):
            if not rest:
                _usage_error(rt, "the following required arguments were not provided:\n  <SESSION_ID>")
            resume_id, rest = rest[0], rest[1:]
    if len(rest) > 1:
        _usage_error(rt, f"unexpected argument '{rest[1]}' found")
    prompt = rest[0] if rest else "-"

    if opts.get("cd"):
        try:
            os.chdir(opts["cd"])
        except OSError as exc:
            rt.err(f"Error: failed to change directory to {opts['cd']}: {exc}")
            rt.exit(1)
    cwd = os.getcwd()
    if not opts.get("skip_git_repo_check") and not _in_git_repo(cwd):
        rt.err("Not inside a trusted directory and --skip-git-repo-check was not specified.")
        rt.exit(1)

    if prompt == "-":
        if stdin_kind() == "tty":
            rt.err("No prompt provided. Either specify one as an argument or pipe the prompt into stdin.")
            rt.exit(1)
        rt.err("Reading prompt from stdin...")
        prompt = sys.stdin.read()
        if not prompt.strip():
            rt.err("No prompt provided via stdin.")
            rt.exit(1)

    sandbox = opts.get("sandbox") or (
        "danger-full-access"
        if opts.get("bypass")
        else "workspace-write"
        if opts.get("full_auto")
        else "read-only"
    )
    store = SessionStore("codex")
    if resuming:
        thread = store.latest(cwd) if resume_id is None else store.load(resume_id)
        if thread is None:
            rt.err(f"Error: thread/resume failed: no rollout found for thread id {resume_id or '(last)'}")
            rt.exit(1)
    else:
        thread = SessionStore.new(uuid7(), cwd)
    assert thread is not None

    run = CodexRun(rt, opts, thread, prompt, sandbox)
    if not run.json:
        rt.err(
            f"OpenAI Codex v{VERSION} (research preview)\n--------\nworkdir: {cwd}\nmodel: "
            f"{opts.get('model') or DEFAULT_MODEL}\nprovider: openai\napproval: never\nsandbox: {sandbox}\n"
            f"session id: {thread['id']}\n--------\nuser\n{prompt}"
        )
    store.save(thread)
    run.run()
