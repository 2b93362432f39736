"""Fake `claude` (Claude Code) in print mode: `claude -p PROMPT --output-format stream-json --verbose`,
and the long-lived `--input-format stream-json` mode that reads user turns and control requests
from stdin. See tests/fakes/README.md for what is modelled and where it comes from.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections import deque
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
    is_uuid,
    log_invocation,
    parse_argv,
    parse_scenario,
    rand_token,
    report_text,
    stdin_kind,
    turn_phrase,
    warn_unknown,
)

VERSION = "2.1.0"
DEFAULT_MODEL = "claude-sonnet-4-5-20250929"
SUBAGENT_MODEL = "claude-haiku-4-5-20251001"
MODEL_ALIASES = {"sonnet": DEFAULT_MODEL, "opus": "claude-opus-4-5-20251101", "haiku": SUBAGENT_MODEL}
#: USD per million tokens: input, output, cache write, cache read
PRICES = {
    DEFAULT_MODEL: (3.0, 15.0, 3.75, 0.30),
    "claude-opus-4-5-20251101": (5.0, 25.0, 6.25, 0.50),
    SUBAGENT_MODEL: (1.0, 5.0, 1.25, 0.10),
}
TOOLS = [
    "Task",
    "Bash",
    "Glob",
    "Grep",
    "ExitPlanMode",
    "Read",
    "Edit",
    "Write",
    "NotebookEdit",
    "WebFetch",
    "TodoWrite",
    "WebSearch",
    "BashOutput",
    "KillShell",
    "SlashCommand",
]
PERMISSION_MODES = ("acceptEdits", "bypassPermissions", "default", "dontAsk", "plan")

OPTIONS = [
    Opt(("-p", "--print"), "flag", "print"),
    Opt(("--output-format",), "value", "output_format", ("text", "json", "stream-json")),
    Opt(("--input-format",), "value", "input_format", ("text", "stream-json")),
    Opt(("--verbose",), "flag", "verbose"),
    Opt(("-r", "--resume"), "value", "resume"),
    Opt(("-c", "--continue"), "flag", "continue"),
    Opt(("--session-id",), "value", "session_id"),
    Opt(("--fork-session",), "flag", "fork_session"),
    Opt(("--no-session-persistence",), "flag", "no_session_persistence"),
    Opt(("--max-turns",), "value", "max_turns"),
    Opt(("--max-budget-usd",), "value", "max_budget_usd"),
    Opt(("--permission-mode",), "value", "permission_mode", PERMISSION_MODES),
    Opt(("--dangerously-skip-permissions",), "flag", "skip_permissions"),
    # commander.js variadic options: `--allowedTools Bash Read "prompt"` swallows the prompt too,
    # as the real CLI does; use `--allowedTools=Bash,Read`, or put the prompt first, or `--`.
    Opt(("--allowedTools", "--allowed-tools"), "variadic", "allowed_tools"),
    Opt(("--disallowedTools", "--disallowed-tools"), "variadic", "disallowed_tools"),
    Opt(("--permission-prompt-tool",), "value", "permission_prompt_tool"),
    Opt(("--include-partial-messages",), "flag", "partial"),
    Opt(("--include-hook-events",), "flag", "hook_events"),
    Opt(("--replay-user-messages",), "flag", "replay_user"),
    Opt(("--model",), "value", "model"),
    Opt(("--fallback-model",), "value", "fallback_model"),
    Opt(("--system-prompt",), "value", "system_prompt"),
    Opt(("--append-system-prompt",), "value", "append_system_prompt"),
    Opt(("--add-dir",), "variadic", "add_dir"),
    Opt(("--mcp-config",), "variadic", "mcp_config"),
    Opt(("--strict-mcp-config",), "flag", "strict_mcp_config"),
    Opt(("--settings",), "value", "settings"),
    Opt(("--setting-sources",), "value", "setting_sources"),
    Opt(("-d", "--debug"), "flag", "debug"),
    Opt(("-v", "--version"), "flag", "version"),
    Opt(("-h", "--help"), "flag", "help"),
]

USAGE = """Usage: claude [options] [command] [prompt]

Claude Code (fake, for tests) - starts an interactive session by default, use -p/--print for
non-interactive output

Options:
  -p, --print                      Print response and exit (useful for pipes)
  --output-format <format>         "text", "json" or "stream-json" (only works with --print)
  --input-format <format>          "text" or "stream-json" (only works with --print)
  --verbose                        Override verbose mode setting from config
  -r, --resume <sessionId>         Resume a conversation
  --session-id <uuid>              Use a specific session ID for the conversation
  --max-turns <n>                  Maximum number of agentic turns in non-interactive mode
  --max-budget-usd <amount>        Maximum dollar amount to spend on API calls
  --permission-mode <mode>         acceptEdits, bypassPermissions, default, dontAsk, plan
  --allowedTools <tools...>        Tool names to allow
  --permission-prompt-tool <tool>  MCP tool (or "stdio") to handle permission prompts
  --include-partial-messages       Include partial message chunks as they arrive
  -v, --version                    Output the version number
  -h, --help                       Display help for command
"""


def _msg_id() -> str:
    return "msg_01" + rand_token(22)


def _tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_01" + rand_token(22), "name": name, "input": tool_input}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _block_tokens(block: dict[str, Any]) -> int:
    if block.get("type") == "text":
        return approx_tokens(block["text"])
    if block.get("type") == "tool_use":
        return approx_tokens(json.dumps(block["input"])) + 10
    return approx_tokens(json.dumps(block))


def _tool_allowed(tool: str, rules: list[str]) -> bool:
    for entry in rules:
        for rule in entry.replace(",", " ").split():
            if rule == tool or rule.startswith(tool + "("):
                return True
    return False


def _user_text(message: dict[str, Any]) -> str:
    content = (message.get("message") or {}).get("content", "")
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "\n".join(parts)


class EndTurn(Exception):
    """Ends the current turn early with an error result."""

    def __init__(
        self, subtype: str, errors: list[str], terminal_reason: str | None = None, interrupted: bool = False
    ) -> None:
        super().__init__(subtype)
        self.subtype = subtype
        self.errors = errors
        self.terminal_reason = terminal_reason
        self.interrupted = interrupted


class Inbox:
    """stdin in stream-json mode (and for --permission-prompt-tool stdio): a reader thread queues
    the lines; the main thread handles them at its checkpoints."""

    def __init__(self, proc: ClaudeProcess) -> None:
        self.proc = proc
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.users: deque[dict[str, Any]] = deque()
        self.responses: dict[str, dict[str, Any]] = {}
        self.eof = False
        threading.Thread(target=self._read, name="stdin", daemon=True).start()

    def _read(self) -> None:
        stream = sys.stdin.buffer
        while True:
            try:
                line = stream.readline()
            except (OSError, ValueError):
                line = b""
            if not line:
                self.queue.put(None)
                return
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"type": "__invalid__", "raw": line.decode("utf-8", "replace")}
            if not isinstance(obj, dict):
                obj = {"type": "__invalid__", "raw": line.decode("utf-8", "replace")}
            self.queue.put(obj)

    def poll(self, timeout: float = 0.0) -> None:
        try:
            item = self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(item)
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return

    def _handle(self, obj: dict[str, Any] | None) -> None:
        if obj is None:
            self.eof = True
            return
        kind = obj.get("type")
        if kind == "control_request":
            self.proc.on_control_request(obj)
        elif kind == "control_response":
            response = obj.get("response") or {}
            self.responses[str(response.get("request_id"))] = response
        elif kind == "user":
            self.users.append(obj)
        elif kind == "__invalid__":
            self.proc.rt.err(f"Error parsing streaming input line: {obj['raw'][:200]}")

    def next_user(self) -> dict[str, Any] | None:
        while not self.users:
            if self.eof:
                return None
            self.poll(timeout=0.05)
            self.proc.checkpoint()
        return self.users.popleft()

    def wait_response(self, request_id: str) -> dict[str, Any] | None:
        while request_id not in self.responses:
            if self.eof:
                return None
            self.proc.checkpoint()
            time.sleep(0.01)
        return self.responses.pop(request_id)


class ClaudeProcess:
    """State of one `claude` process: options, the session, cumulative cost, stdin."""

    def __init__(
        self, rt: Runtime, opts: dict[str, Any], store: SessionStore, session: dict[str, Any]
    ) -> None:
        self.rt = rt
        self.opts = opts
        self.store = store
        self.session = session
        self.persist = not opts.get("no_session_persistence")
        self.model = MODEL_ALIASES.get(opts.get("model") or "", opts.get("model") or DEFAULT_MODEL)
        self.stream = opts.get("output_format") == "stream-json"
        self.partial = self.stream and bool(opts.get("partial"))
        self.max_turns: int | None = int(opts["max_turns"]) if "max_turns" in opts else None
        self.budget: float | None = float(opts["max_budget_usd"]) if "max_budget_usd" in opts else None
        self.permission_mode = (
            "bypassPermissions" if opts.get("skip_permissions") else opts.get("permission_mode", "default")
        )
        self.allowed = list(opts.get("allowed_tools", []))
        self.disallowed = list(opts.get("disallowed_tools", []))
        self.total_cost = 0.0
        self.turn: Turn | None = None
        self.sigint_pending = False
        self.interrupt_requested = False
        self.inbox: Inbox | None = None
        rt.checkpoint = self.checkpoint

    # output
    def out(self, obj: dict[str, Any]) -> None:
        if self.stream or obj.get("type") in ("control_request", "control_response"):
            self.rt.emit(obj)

    def save_session(self) -> None:
        if self.persist:
            self.store.save(self.session)

    # signals and stdin
    def on_sigint(self, signum: int, frame: Any) -> None:
        # Reported: Ctrl-C/SIGINT does not stop a stream-json run until its tool loop ends.
        self.sigint_pending = True

    def checkpoint(self) -> None:
        if self.inbox is not None:
            self.inbox.poll()
        if self.sigint_pending and (self.turn is None or not self.turn.in_tool_loop):
            self.rt.request_exit(130)
        if self.interrupt_requested and self.turn is not None:
            self.interrupt_requested = False
            raise EndTurn(
                "error_during_execution", ["Request interrupted by user"], "aborted_by_user", interrupted=True
            )

    def on_control_request(self, obj: dict[str, Any]) -> None:
        request_id = str(obj.get("request_id", ""))
        request = obj.get("request") or {}
        subtype = request.get("subtype")
        response: dict[str, Any] = {}
        if subtype == "interrupt":
            if self.turn is not None:
                self.interrupt_requested = True
        elif subtype == "initialize":
            response = {
                "commands": [],
                "output_style": "default",
                "available_output_styles": ["default"],
                "models": [{"value": "default", "displayName": "Default", "description": DEFAULT_MODEL}],
                "account": {},
            }
        elif subtype == "set_permission_mode":
            self.permission_mode = request.get("mode", self.permission_mode)
        elif subtype == "set_model":
            self.model = MODEL_ALIASES.get(request.get("model") or "", request.get("model") or DEFAULT_MODEL)
        elif subtype not in ("set_max_thinking_tokens", "mcp_status"):
            self.out(
                {
                    "type": "control_response",
                    "response": {
                        "subtype": "error",
                        "request_id": request_id,
                        "error": f"Unsupported control request subtype: {subtype}",
                    },
                }
            )
            return
        body: dict[str, Any] = {"subtype": "success", "request_id": request_id}
        if response:
            body["response"] = response
        self.out({"type": "control_response", "response": body})

    # permissions
    def decide_permission(self, tool: str, tool_input: dict[str, Any], tool_use_id: str) -> tuple[bool, str]:
        """(allowed, message for a denial)."""
        if _tool_allowed(tool, self.disallowed):
            return False, f"Permission to use {tool} has been denied."
        if self.permission_mode == "bypassPermissions" or _tool_allowed(tool, self.allowed):
            return True, ""
        if self.permission_mode != "dontAsk" and self.opts.get("permission_prompt_tool") == "stdio":
            assert self.inbox is not None
            request_id = str(uuid.uuid4())
            self.out(
                {
                    "type": "control_request",
                    "request_id": request_id,
                    "request": {
                        "subtype": "can_use_tool",
                        "tool_name": tool,
                        "input": tool_input,
                        "tool_use_id": tool_use_id,
                        "permission_suggestions": [
                            {
                                "type": "addRules",
                                "rules": [{"toolName": tool, "ruleContent": tool_input.get("command", "")}],
                                "behavior": "allow",
                                "destination": "localSettings",
                            }
                        ],
                    },
                }
            )
            response = self.inbox.wait_response(request_id)
            if response is None:
                return False, "Permission prompt failed: stdin was closed"
            if response.get("subtype") == "error":
                return False, str(response.get("error") or "Permission prompt failed")
            decision = response.get("response") or {}
            if decision.get("behavior") == "allow":
                return True, ""
            return False, str(
                decision.get("message") or "The user doesn't want to proceed with this tool use."
            )
        return False, f"Claude requested permissions to use {tool}, but you haven't granted it yet."

    # events outside a turn
    def emit_hooks(self) -> None:
        if not self.opts.get("hook_events"):
            return
        hook = {
            "hook_id": str(uuid.uuid4()),
            "hook_name": "SessionStart:startup",
            "hook_event": "SessionStart",
        }
        base = {"type": "system", "session_id": self.session["id"]}
        self.out({**base, "subtype": "hook_started", **hook, "uuid": str(uuid.uuid4())})
        self.rt.pause()
        self.out(
            {
                **base,
                "subtype": "hook_response",
                **hook,
                "output": "",
                "stdout": "",
                "stderr": "",
                "exit_code": 0,
                "outcome": "success",
                "uuid": str(uuid.uuid4()),
            }
        )
        self.rt.pause()

    def emit_init(self) -> None:
        self.out(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.session["id"],
                "tools": TOOLS,
                "mcp_servers": [],
                "model": self.model,
                "permissionMode": self.permission_mode,
                "slash_commands": ["compact", "context", "cost", "init", "review", "security-review"],
                "apiKeySource": "none",
                "claude_code_version": VERSION,
                "output_style": "default",
                "agents": ["general-purpose", "Explore", "Plan"],
                "skills": [],
                "plugins": [],
                "uuid": str(uuid.uuid4()),
                "fast_mode_state": "off",
            }
        )
        self.rt.pause()

    # modes
    def run_print(self, prompt: str) -> None:
        self.emit_hooks()
        self.emit_init()
        result = Turn(self, prompt).run()
        if not self.stream:
            if self.opts.get("output_format") == "json":
                self.rt.emit(result)
            else:
                text = (
                    result.get("result") if not result["is_error"] else "; ".join(result.get("errors") or [])
                )
                self.rt.write_raw((text or result["subtype"]) + "\n")
        self.rt.exit(1 if result["is_error"] else 0)

    def run_stream(self, first_prompt: str | None) -> None:
        assert self.inbox is not None
        self.emit_hooks()
        pending = [first_prompt] if first_prompt else []
        while True:
            if pending:
                prompt = pending.pop(0)
            else:
                message = self.inbox.next_user()
                if message is None:
                    break
                prompt = _user_text(message)
                if self.opts.get("replay_user"):
                    self.out(
                        {
                            **message,
                            "session_id": self.session["id"],
                            "uuid": str(uuid.uuid4()),
                            "isReplay": True,
                        }
                    )
            self.emit_init()
            Turn(self, prompt).run()
        self.rt.exit(0)


class Turn:
    """One prompt: the scenario's events, then the result."""

    def __init__(self, proc: ClaudeProcess, prompt: str) -> None:
        self.proc = proc
        self.rt = proc.rt
        self.prompt = prompt
        self.scenario = parse_scenario(prompt)
        warn_unknown(self.rt, self.scenario)
        self.session_id = proc.session["id"]
        self.turn_no = begin_turn(proc.session, prompt)
        proc.save_session()
        self.phrase = turn_phrase(self.turn_no, self.session_id)
        self.t0 = time.monotonic()
        self.num_turns = 0
        self.requests = 0
        self.usage = {
            "input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
        }
        self.model_usage: dict[str, dict[str, Any]] = {}
        self.denials: list[dict[str, Any]] = []
        self.last_text = ""
        self.in_tool_loop = False

    # -- event builders ------------------------------------------------------------------------------

    def _envelope(self, kind: str, parent: str | None = None) -> dict[str, Any]:
        return {
            "type": kind,
            "parent_tool_use_id": parent,
            "session_id": self.session_id,
            "uuid": str(uuid.uuid4()),
        }

    def system(self, subtype: str, **fields: Any) -> None:
        self.proc.out(
            {
                "type": "system",
                "subtype": subtype,
                **fields,
                "session_id": self.session_id,
                "uuid": str(uuid.uuid4()),
            }
        )
        self.rt.pause()

    def assistant(
        self,
        blocks: list[dict[str, Any]],
        *,
        parent: str | None = None,
        model: str | None = None,
        counts_as_turn: bool = True,
        output_tokens: int | None = None,
        gap: float | None = None,
    ) -> None:
        """One API message. Like the real CLI, a message with several content blocks is printed as
        one `assistant` line per block, all with the same message id and the same usage."""
        model = model or self.proc.model
        if parent is None and counts_as_turn:
            if self.proc.max_turns is not None and self.num_turns >= self.proc.max_turns:
                raise EndTurn("error_max_turns", [f"Reached maximum number of turns ({self.proc.max_turns})"])
            self.num_turns += 1
        out_tokens = output_tokens if output_tokens is not None else sum(_block_tokens(b) for b in blocks)
        cache_write = 1850 if self.requests == 0 else 90 + 10 * len(blocks)
        usage = {
            "input_tokens": 4,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": 14200 + 380 * self.requests,
            "cache_creation": {"ephemeral_5m_input_tokens": cache_write, "ephemeral_1h_input_tokens": 0},
            "output_tokens": out_tokens,
            "service_tier": "standard",
        }
        self.requests += 1
        stop_reason = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
        message: dict[str, Any] = {
            "id": _msg_id(),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

        def frame(block: dict[str, Any]) -> None:
            self.proc.out({**self._envelope("assistant", parent), "message": {**message, "content": [block]}})

        if self.proc.partial:
            self._stream_events(message, blocks, parent, frame)
        else:
            for block in blocks:
                frame(block)
                self.rt.pause(gap)
        self._account(model, usage)
        texts = [b["text"] for b in blocks if b.get("type") == "text"]
        if parent is None and texts:
            self.last_text = texts[-1]
        if self.proc.budget is not None and self.proc.total_cost >= self.proc.budget:
            raise EndTurn("error_max_budget_usd", [f"Reached maximum budget (${self.proc.budget})"])

    def _stream_events(
        self, message: dict[str, Any], blocks: list[dict[str, Any]], parent: str | None, frame: Any
    ) -> None:
        """--include-partial-messages: the Messages API stream events, with each block's complete
        `assistant` line right after its content_block_stop."""

        def event(ev: dict[str, Any]) -> None:
            self.proc.out({**self._envelope("stream_event", parent), "event": ev})

        start_usage = {**message["usage"], "output_tokens": 1}
        event(
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
            }
        )
        for index, block in enumerate(blocks):
            kind = block.get("type")
            if kind == "text":
                event(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                text = block["text"]
                step = max(1, len(text) // 3 + 1)
                for start in range(0, len(text), step):
                    event(
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": text[start : start + step]},
                        }
                    )
                    self.rt.pause()
            elif kind == "tool_use":
                event(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    }
                )
                event(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    }
                )
                self.rt.pause()
            else:
                event({"type": "content_block_start", "index": index, "content_block": block})
            event({"type": "content_block_stop", "index": index})
            frame(block)
            self.rt.pause()
        event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            }
        )
        event({"type": "message_stop"})

    def _account(self, model: str, usage: dict[str, Any]) -> None:
        price_in, price_out, price_write, price_read = PRICES.get(model, PRICES[DEFAULT_MODEL])
        cost = (
            usage["input_tokens"] * price_in
            + usage["output_tokens"] * price_out
            + usage["cache_creation_input_tokens"] * price_write
            + usage["cache_read_input_tokens"] * price_read
        ) / 1_000_000
        self.proc.total_cost += cost
        for key in self.usage:
            self.usage[key] += usage[key]
        per_model = self.model_usage.setdefault(
            model,
            {
                "inputTokens": 0,
                "outputTokens": 0,
                "cacheReadInputTokens": 0,
                "cacheCreationInputTokens": 0,
                "webSearchRequests": 0,
                "costUSD": 0.0,
                "contextWindow": 200000,
                "maxOutputTokens": 64000,
            },
        )
        per_model["inputTokens"] += usage["input_tokens"]
        per_model["outputTokens"] += usage["output_tokens"]
        per_model["cacheReadInputTokens"] += usage["cache_read_input_tokens"]
        per_model["cacheCreationInputTokens"] += usage["cache_creation_input_tokens"]
        per_model["costUSD"] += cost

    def tool_result(
        self,
        tool_use_id: str,
        content: Any,
        *,
        is_error: bool = False,
        parent: str | None = None,
        tool_use_result: Any = None,
        gap: float | None = None,
    ) -> None:
        event = {
            **self._envelope("user", parent),
            "message": {
                "role": "user",
                "content": [
                    {
                        "tool_use_id": tool_use_id,
                        "type": "tool_result",
                        "content": content,
                        "is_error": is_error,
                    }
                ],
            },
        }
        if tool_use_result is not None:
            event["tool_use_result"] = tool_use_result
        self.proc.out(event)
        self.rt.pause(gap)

    def run_tool(self) -> None:
        """A tool that runs a child process in our process group while it works."""
        self.rt.spawn_child()
        self.rt.pause()
        self.rt.kill_child()

    def result(
        self, subtype: str = "success", errors: list[str] | None = None, terminal_reason: str | None = None
    ) -> dict[str, Any]:
        duration = int((time.monotonic() - self.t0) * 1000)
        event: dict[str, Any] = {
            "type": "result",
            "subtype": subtype,
            "is_error": subtype != "success",
            "duration_ms": duration,
            "duration_api_ms": int(duration * 0.85),
            "num_turns": self.num_turns,
        }
        if subtype == "success":
            event["result"] = self.last_text
        event.update(
            {
                "session_id": self.session_id,
                "total_cost_usd": round(self.proc.total_cost, 8),
                "usage": {
                    **self.usage,
                    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                    "service_tier": "standard",
                },
                "modelUsage": self.model_usage,
                "permission_denials": self.denials,
                "uuid": str(uuid.uuid4()),
            }
        )
        if subtype != "success":
            event["errors"] = errors or []
        if terminal_reason:
            event["terminal_reason"] = terminal_reason
        return event

    # -- the turn ------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.proc.turn = self
        try:
            if self.scenario.tokens and self.scenario.name != "lines":
                self.filler(self.scenario.tokens)
            getattr(self, "sc_" + self.scenario.name)()
            result = self.result()
        except EndTurn as end:
            self.rt.kill_child()
            self.in_tool_loop = False
            self.proc.turn = None
            if end.interrupted:
                self.proc.out(
                    {
                        **self._envelope("user"),
                        "message": {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "[Request interrupted by user for tool use]"}
                            ],
                        },
                    }
                )
            result = self.result(end.subtype, end.errors, end.terminal_reason)
        finally:
            self.in_tool_loop = False
            self.proc.turn = None
            self.rt.kill_child()
        self.proc.out(result)
        return result

    def filler(self, tokens: int) -> None:
        """tokens:N: about N output tokens over several messages, before the scenario proper."""
        for text, share in filler_texts(tokens):
            self.assistant([_text(text)], counts_as_turn=False, output_tokens=share)

    # -- scenarios -----------------------------------------------------------------------------------

    def sc_plain(self) -> None:
        self.assistant(
            [
                _text(
                    f"Hello from fake Claude Code. You asked: \u201c{excerpt(self.prompt)}\u201d"
                    f"\n\n{self.phrase}"
                )
            ]
        )

    def sc_tools(self) -> None:
        readme = os.path.join(os.getcwd(), "README.md")
        self.in_tool_loop = True
        bash = _tool_use("Bash", {"command": "ls -la", "description": "List files in the project root"})
        self.assistant([_text("I'll start by looking at the project layout."), bash])
        self.run_tool()
        listing = (
            "total 24\ndrwxr-xr-x 5 dev dev 4096 Jan  5 10:00 .\n"
            "-rw-r--r-- 1 dev dev  312 Jan  5 10:00 README.md\n"
            "drwxr-xr-x 3 dev dev 4096 Jan  5 10:00 src\ndrwxr-xr-x 2 dev dev 4096 Jan  5 10:00 tests"
        )
        self.tool_result(
            bash["id"],
            listing,
            tool_use_result={"stdout": listing, "stderr": "", "interrupted": False, "isImage": False},
        )
        read = _tool_use("Read", {"file_path": readme})
        self.assistant([read])
        content = "# Demo project\n\nA small service used by the tests.\n"
        numbered = "\n".join(f"{n:>6}\u2192{line}" for n, line in enumerate(content.splitlines(), 1))
        self.tool_result(
            read["id"],
            numbered,
            tool_use_result={
                "type": "text",
                "file": {
                    "filePath": readme,
                    "content": content,
                    "numLines": 3,
                    "startLine": 1,
                    "totalLines": 3,
                },
            },
        )
        edit = _tool_use(
            "Edit",
            {"file_path": readme, "old_string": "# Demo project", "new_string": "# Demo project (edited)"},
        )
        self.assistant([edit])
        self.tool_result(
            edit["id"],
            f"The file {readme} has been updated. Here's the result of running `cat -n` on a snippet of the "
            "edited file:\n     1\u2192# Demo project (edited)",
            tool_use_result={
                "filePath": readme,
                "oldString": "# Demo project",
                "newString": "# Demo project (edited)",
                "structuredPatch": [],
                "userModified": False,
                "replaceAll": False,
            },
        )
        self.in_tool_loop = False
        self.assistant([_text(f"I listed the project, read README.md and updated its title. {self.phrase}")])

    def sc_subagent(self) -> None:
        cwd = os.getcwd()
        self.in_tool_loop = True
        prompt = "Find where the configuration is loaded and report the file and function."
        task = _tool_use(
            "Task",
            {"description": "Find the config loader", "prompt": prompt, "subagent_type": "general-purpose"},
        )
        self.assistant([_text("I'll delegate the search to a subagent."), task])
        task_id = rand_token(9, "abcdefghijklmnopqrstuvwxyz0123456789")
        t0 = time.monotonic()
        self.system(
            "task_started",
            task_id=task_id,
            tool_use_id=task["id"],
            description="Find the config loader",
            task_type="local_agent",
            subagent_type="general-purpose",
            prompt=prompt,
        )
        self.proc.out(
            {**self._envelope("user", task["id"]), "message": {"role": "user", "content": [_text(prompt)]}}
        )
        self.rt.pause()
        grep = _tool_use("Grep", {"pattern": "def load_config", "path": cwd, "output_mode": "content"})
        self.assistant([grep], parent=task["id"], model=SUBAGENT_MODEL)
        self.tool_result(
            grep["id"],
            "shared/config.py:42:def load_config(path: str | None = None) -> Settings:",
            parent=task["id"],
        )
        sub_tokens = self.usage["output_tokens"]
        self.system(
            "task_progress",
            task_id=task_id,
            tool_use_id=task["id"],
            description="Searching for the config loader",
            usage={"total_tokens": 15800, "tool_uses": 1, "duration_ms": int((time.monotonic() - t0) * 1000)},
            last_tool_name="Grep",
        )
        found = "The configuration is loaded by load_config() in shared/config.py (line 42)."
        self.assistant([_text(found)], parent=task["id"], model=SUBAGENT_MODEL)
        duration = int((time.monotonic() - t0) * 1000)
        self.system(
            "task_notification",
            task_id=task_id,
            tool_use_id=task["id"],
            status="completed",
            summary=found,
            output_file="",
            usage={"total_tokens": 16200 + sub_tokens, "tool_uses": 1, "duration_ms": duration},
        )
        self.tool_result(
            task["id"],
            [_text(found)],
            tool_use_result={
                "status": "completed",
                "prompt": prompt,
                "agentId": task_id,
                "content": [_text(found)],
                "totalDurationMs": duration,
                "totalTokens": 16200,
                "totalToolUseCount": 1,
            },
        )
        self.in_tool_loop = False
        self.assistant([_text(f"The subagent found it: {found} {self.phrase}")])

    def sc_max_turns(self) -> None:
        limit = self.proc.max_turns if self.proc.max_turns is not None else (self.scenario.arg or 3)
        self.in_tool_loop = True
        step = 0
        while True:
            if self.num_turns >= limit:
                raise EndTurn("error_max_turns", [f"Reached maximum number of turns ({limit})"])
            step += 1
            bash = _tool_use(
                "Bash", {"command": f"ls src/module_{step}", "description": f"Look at module {step}"}
            )
            self.assistant([bash])
            self.tool_result(bash["id"], f"__init__.py\nmodule_{step}.py")

    def sc_error(self) -> None:
        for attempt, delay in ((1, 500), (2, 1000)):
            self.system(
                "api_retry",
                attempt=attempt,
                max_retries=10,
                retry_delay_ms=delay,
                error_status=529,
                error="overloaded_error",
            )
        raise EndTurn(
            "error_during_execution",
            ['API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'],
        )

    def sc_crash(self) -> None:
        self.assistant([_text("Let me look into that.")])
        for line in CRASH_STDERR["claude"]:
            self.rt.err(line)
        self.rt.exit(CRASH_EXIT)

    def sc_slow(self) -> None:
        deadline = time.monotonic() + (self.scenario.arg or SLOW_DEFAULT_SECONDS)
        self.in_tool_loop = True
        self.rt.spawn_child()
        step = 0
        while time.monotonic() < deadline:
            step += 1
            bash = _tool_use(
                "Bash", {"command": f"sleep 0.2 && echo step {step}", "description": f"Wait for step {step}"}
            )
            self.assistant([bash], counts_as_turn=False, gap=SLOW_INTERVAL)
            self.tool_result(
                bash["id"],
                f"step {step}",
                gap=SLOW_INTERVAL,
                tool_use_result={
                    "stdout": f"step {step}",
                    "stderr": "",
                    "interrupted": False,
                    "isImage": False,
                },
            )
        self.rt.kill_child()
        self.in_tool_loop = False
        self.assistant([_text(f"Finished all {step} steps. {self.phrase}")])

    def sc_lines(self) -> None:
        total = self.scenario.arg or 0
        per_line = max(1, (self.scenario.tokens or 0) // max(1, total))
        for k in range(1, total + 1):
            self.assistant(
                [_text(f"line {k} of {total}")],
                counts_as_turn=False,
                gap=0,
                output_tokens=per_line if self.scenario.tokens else None,
            )
        self.assistant([_text(f"Printed {total} lines. {self.phrase}")])

    def sc_unknown_event(self) -> None:
        self.proc.out(
            {
                "type": "brand_new_thing",
                "session_id": self.session_id,
                "uuid": str(uuid.uuid4()),
                "payload": {"note": "an event type from a future Claude Code version", "level": 3},
            }
        )
        self.rt.pause()
        self.system("brand_new_subtype", data={"note": "a system subtype from a future version"})
        self.assistant(
            [{"type": "brand_new_block", "data": {"x": 1}}, _text(f"Still answering normally. {self.phrase}")]
        )

    def sc_permission(self) -> None:
        command = {"command": "rm -rf build/", "description": "Remove the build directory"}
        bash = _tool_use("Bash", command)
        self.in_tool_loop = True
        self.assistant([_text("I'll remove the build directory."), bash])
        allowed, message = self.proc.decide_permission("Bash", command, bash["id"])
        if allowed:
            self.run_tool()
            self.tool_result(
                bash["id"],
                "",
                tool_use_result={"stdout": "", "stderr": "", "interrupted": False, "isImage": False},
            )
            text = "Removed the build directory."
        else:
            self.denials.append({"tool_name": "Bash", "tool_use_id": bash["id"], "tool_input": command})
            self.tool_result(bash["id"], message, is_error=True)
            text = "I wasn't allowed to run `rm -rf build/`, so the build directory is still there."
        self.in_tool_loop = False
        self.assistant([_text(f"{text} {self.phrase}")])

    def sc_report(self) -> None:
        self.in_tool_loop = True
        grep = _tool_use("Grep", {"pattern": "load_lines", "path": os.getcwd(), "output_mode": "content"})
        self.assistant([_text("I'll look for the query pattern first."), grep])
        self.tool_result(grep["id"], "server/orders.py:88:        lines = load_lines(order.id)")
        self.in_tool_loop = False
        self.assistant([_text(report_text("claude", self.phrase))])

    def sc_bad_report(self) -> None:
        self.assistant([_text(bad_report_text("claude", self.phrase))])


# ---- entry point ----------------------------------------------------------------------------------


def _fail(rt: Runtime, message: str, code: int = 1) -> None:
    rt.err(message)
    rt.exit(code)


def main(argv: list[str]) -> None:
    rt = Runtime("claude")
    input_format = "text"
    for i, arg in enumerate(argv):
        if arg == "--input-format" and i + 1 < len(argv):
            input_format = argv[i + 1]
        elif arg.startswith("--input-format="):
            input_format = arg.split("=", 1)[1]
    log_invocation("claude", argv, input_format=input_format)
    try:
        opts, positionals = parse_argv(argv, OPTIONS)
        if "max_turns" in opts and not opts["max_turns"].isdigit():
            raise UsageError(f"option '--max-turns <turns>' argument '{opts['max_turns']}' is invalid.")
        if "max_budget_usd" in opts:
            try:
                if float(opts["max_budget_usd"]) <= 0:
                    raise ValueError
            except ValueError:
                raise UsageError(
                    f"option '--max-budget-usd <amount>' argument '{opts['max_budget_usd']}' is invalid."
                ) from None
    except UsageError as exc:
        _fail(rt, f"error: {exc}", 2)
    if opts.get("version"):
        rt.write_raw(f"{VERSION} (Claude Code)\n")
        rt.exit(0)
    if opts.get("help"):
        rt.write_raw(USAGE)
        rt.exit(0)

    printing = bool(opts.get("print"))
    output_format = opts.get("output_format", "text")
    stream_input = opts.get("input_format") == "stream-json"
    if printing and output_format == "stream-json" and not opts.get("verbose"):
        _fail(rt, "Error: When using --print, --output-format=stream-json requires --verbose")
    if stream_input and output_format != "stream-json":
        _fail(rt, "Error: --input-format=stream-json requires output-format=stream-json.")
    if not printing and not stream_input:
        _fail(
            rt,
            "Error: this fake claude only supports non-interactive use "
            "(-p/--print or --input-format stream-json).",
        )
    tool = opts.get("permission_prompt_tool")
    if tool is not None and tool != "stdio":
        _fail(
            rt,
            f"Error: MCP tool {tool} (passed via --permission-prompt-tool) not found. "
            "Available MCP tools: none",
        )
    if "session_id" in opts:
        if not is_uuid(opts["session_id"]):
            _fail(rt, "Error: Invalid session ID. Must be a valid UUID.")
        if (opts.get("resume") or opts.get("continue")) and not opts.get("fork_session"):
            _fail(
                rt,
                "Error: --session-id can only be used with --continue or --resume "
                "if --fork-session is also specified.",
            )

    store = SessionStore("claude")
    cwd = os.getcwd()
    if opts.get("resume") or opts.get("continue"):
        if opts.get("resume"):
            session = store.load(opts["resume"], cwd)
            if session is None:
                _fail(rt, f"No conversation found with session ID: {opts['resume']}")
        else:
            session = store.latest(cwd)
            if session is None:
                _fail(rt, "No conversation found to continue")
        assert session is not None
        if opts.get("fork_session"):
            session = {
                **session,
                "id": opts.get("session_id") or str(uuid.uuid4()),
                "forked_from": session["id"],
            }
    else:
        session_id = opts.get("session_id") or str(uuid.uuid4())
        if store.exists(session_id):
            _fail(rt, f"Error: Session ID {session_id} is already in use.")
        session = SessionStore.new(session_id, cwd, model=opts.get("model") or DEFAULT_MODEL)

    proc = ClaudeProcess(rt, opts, store, session)
    signal.signal(signal.SIGINT, proc.on_sigint)
    # In print mode SIGTERM aborts the turn, kills the tool's children and exits 143.
    signal.signal(signal.SIGTERM, lambda signum, frame: rt.request_exit(143))

    prompt = " ".join(positionals)
    if stream_input:
        proc.inbox = Inbox(proc)
        proc.run_stream(prompt or None)
    if not prompt and stdin_kind() not in ("tty", "closed"):
        prompt = sys.stdin.read().strip()
    if not prompt:
        _fail(
            rt,
            "Error: Input must be provided either through stdin or as a prompt argument when using --print",
        )
    if tool == "stdio":
        proc.inbox = Inbox(proc)
    proc.run_print(prompt)
