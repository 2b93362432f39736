"""Claude Code: ``claude -p --input-format stream-json --output-format stream-json --verbose``.

The prompt goes to stdin as a stream-json user turn, and stdin stays open: an interrupt is a
``control_request`` there, and so is the answer to a ``can_use_tool`` permission request (with
``--permission-prompt-tool stdio``). After the ``result`` event the wrapper closes stdin and the
process ends. The next command continues the conversation with ``--resume <session_id>``.

Trace tree: each assistant message is a RESPONSE node (under the Task tool use that started it,
for subagents); each tool use a TOOL_CALL node under its message; each tool result a RESPONSE node
under its tool use.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from shared.enums import AgentType, CompletionStatus, EndReason, StreamType, TraceType
from wrapper.adapters.base import (
    Adapter,
    Invocation,
    JsonLinesParser,
    Outcome,
    Reporter,
    StreamParser,
    now_ms,
)

DIM, RESET = "\x1b[2m", "\x1b[0m"
_ERROR_SUBTYPES = {
    "error_max_turns": "reached the maximum number of turns",
    "error_during_execution": "failed during execution",
    "error_max_budget_usd": "reached the maximum budget",
}


_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens")


def _usage_total(usage: dict[str, Any] | None) -> int:
    if not isinstance(usage, dict):
        return 0
    total = 0
    for key in _USAGE_KEYS:  # a loop, not a generator: once per model turn
        value = usage.get(key)
        if isinstance(value, int | float):
            total += int(value)
    return total


def _preview(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ClaudeParser(JsonLinesParser):
    def __init__(self, reporter: Reporter) -> None:
        super().__init__(reporter)
        #: message id -> its tokens (a message arrives once per content block, with the same usage)
        self._message_tokens: dict[str, int] = {}
        self._tokens_total = 0
        self._tool_started: dict[str, int] = {}
        self._tool_names: dict[str, str] = {}
        self._tool_parent: dict[str, str | None] = {}

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "system":
            self._system(event)
        elif kind == "assistant":
            self._assistant(event)
        elif kind == "user":
            self._tool_results(event)
        elif kind == "result":
            self._result(event)
        elif kind == "control_request":
            request = event.get("request") or {}
            if request.get("subtype") == "can_use_tool":
                self.reporter.needs_input(
                    str(event.get("request_id", "")), str(request.get("tool_name", "?")), request.get("input")
                )
            else:
                self.unknown(event)
        elif kind in ("stream_event", "rate_limit_event", "control_response", "keep_alive"):
            return
        else:
            self.unknown(event)

    def _system(self, event: dict[str, Any]) -> None:
        subtype = event.get("subtype")
        if subtype == "init":
            if event.get("session_id"):
                self.reporter.session(str(event["session_id"]))
            if event.get("claude_code_version"):
                self.reporter.version(f"claude {event['claude_code_version']}")
            return
        if subtype in ("task_started", "task_notification", "task_progress", "api_retry", "compact_boundary"):
            self.reporter.trace(
                str(event.get("uuid") or f"system-{now_ms()}"),
                TraceType.RESPONSE,
                f"system: {subtype}",
                parent_id=event.get("parent_tool_use_id"),
                content=event,
                started_at=now_ms(),
            )

    def _assistant(self, event: dict[str, Any]) -> None:
        message = event.get("message") or {}
        message_id = str(message.get("id") or event.get("uuid") or f"msg-{now_ms()}")
        parent = event.get("parent_tool_use_id")
        tokens = _usage_total(message.get("usage"))
        # A running total: a message seen again (one event per content block) replaces its count.
        self._tokens_total += tokens - self._message_tokens.get(message_id, 0)
        self._message_tokens[message_id] = tokens
        self.reporter.tokens(self._tokens_total)
        at = now_ms()
        texts = []
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and block.get("text"):
                texts.append(block["text"])
                if parent is None:
                    self.reporter.output(StreamType.STDOUT, block["text"].rstrip("\n") + "\n")
            elif block.get("type") == "tool_use":
                tool_id = str(block.get("id") or f"tool-{at}")
                name = str(block.get("name") or "tool")
                self._tool_started[tool_id] = at
                self._tool_names[tool_id] = name
                self._tool_parent[tool_id] = message_id
                self.reporter.trace(
                    tool_id,
                    TraceType.TOOL_CALL,
                    name,
                    parent_id=message_id,
                    content=block.get("input"),
                    started_at=at,
                )
                indent = "  " if parent else ""
                self.reporter.output(
                    StreamType.STDOUT, f"{DIM}{indent}→ {name} {_preview(block.get('input'))}{RESET}\n"
                )
        self.reporter.trace(
            message_id,
            TraceType.RESPONSE,
            str(message.get("model") or "assistant"),
            parent_id=parent,
            content={"text": "\n".join(texts)} if texts else None,
            started_at=at,
            tokens_used=tokens,
        )

    def _tool_results(self, event: dict[str, Any]) -> None:
        content = (event.get("message") or {}).get("content")
        if not isinstance(content, list):
            return
        at = now_ms()
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            tool_id = str(block.get("tool_use_id") or "")
            started = self._tool_started.get(tool_id)
            error = _preview(block.get("content"), 500) if block.get("is_error") else None
            # The call gets its end; its result hangs under it.
            self.reporter.trace(
                tool_id,
                TraceType.TOOL_CALL,
                self._tool_names.get(tool_id, "tool"),
                parent_id=self._tool_parent.get(tool_id),
                started_at=started,
                completed_at=at,
                duration_ms=at - started if started else None,
                error=error,
            )
            self.reporter.trace(
                f"{tool_id}:result",
                TraceType.RESPONSE,
                "result",
                parent_id=tool_id,
                content=block.get("content"),
                started_at=at,
                completed_at=at,
                error=error,
            )

    def _result(self, event: dict[str, Any]) -> None:
        if event.get("session_id"):
            self.reporter.session(str(event["session_id"]))
        total = _usage_total(event.get("usage"))
        if total:
            self.reporter.tokens(total)
        if isinstance(event.get("total_cost_usd"), int | float):
            self.reporter.cost(float(event["total_cost_usd"]))
        if isinstance(event.get("result"), str):
            self.reporter.answer(event["result"])
        subtype = str(event.get("subtype") or "")
        denials = event.get("permission_denials") or []
        if subtype == "success" and not event.get("is_error"):
            self.final = Outcome(CompletionStatus.COMPLETED, EndReason.FINISHED)
        elif str(event.get("terminal_reason") or "").startswith("aborted"):
            self.final = Outcome(CompletionStatus.CANCELLED, EndReason.INTERRUPTED, "interrupted")
        elif subtype == "error_max_budget_usd":
            self.final = Outcome(
                CompletionStatus.CANCELLED, EndReason.TOKEN_BUDGET, "reached --max-budget-usd"
            )
        else:
            detail = _ERROR_SUBTYPES.get(subtype, subtype or "error")
            errors = event.get("errors")
            if errors:
                detail += ": " + _preview(errors, 400)
            elif isinstance(event.get("error"), str):
                detail += ": " + event["error"]
            if subtype == "error_max_turns" and event.get("num_turns"):
                detail += f" ({event['num_turns']})"
            self.final = Outcome(CompletionStatus.FAILED, EndReason.ERROR, detail)
        if denials:
            names = ", ".join(str(d.get("tool_name", "?")) for d in denials if isinstance(d, dict))
            self.reporter.output(StreamType.STDERR, f"permission denied for: {names}\n")
            if self.final.status is CompletionStatus.COMPLETED:
                self.final = Outcome(
                    CompletionStatus.COMPLETED, EndReason.FINISHED, f"permission denied for: {names}"
                )
        self.reporter.turn_finished()

    def finish(self, exit_code: int, stderr_tail: list[str], cancelled: EndReason | None) -> Outcome:
        # SIGTERM in print mode exits 143 with no result; the wrapper knows when it asked for that.
        return super().finish(exit_code, stderr_tail, cancelled)


class ClaudeAdapter(Adapter):
    agent_type = AgentType.CLAUDE
    program = "claude"

    def invocation(self, prompt: str, session_id: str | None) -> Invocation:
        argv = [
            self.program,
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ]
        if session_id:
            argv += ["--resume", session_id]
        approvals = {"--permission-prompt-tool", "--dangerously-skip-permissions"}
        if not approvals & set(self.extra_args) and "bypassPermissions" not in self.extra_args:
            # Tool approvals come to the hub, where a user can allow or deny them.
            argv += ["--permission-prompt-tool", "stdio"]
        argv += self.extra_args
        turn = {"type": "user", "message": {"role": "user", "content": prompt}}
        return Invocation(argv=argv, stdin=json.dumps(turn) + "\n", keep_stdin_open=True)

    def parser(self, reporter: Reporter) -> StreamParser:
        return ClaudeParser(reporter)

    def interrupt_line(self) -> str | None:
        request = {
            "type": "control_request",
            "request_id": uuid.uuid4().hex,
            "request": {"subtype": "interrupt"},
        }
        return json.dumps(request) + "\n"

    def permission_reply(
        self, request_id: str, allow: bool, message: str, tool_input: Any = None
    ) -> str | None:
        decision: dict[str, Any] = (
            {"behavior": "allow", "updatedInput": tool_input if isinstance(tool_input, dict) else {}}
            if allow
            else {"behavior": "deny", "message": message or "denied by the user"}
        )
        reply = {
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": decision},
        }
        return json.dumps(reply) + "\n"
