"""Codex CLI: ``codex exec --json --skip-git-repo-check <prompt>``; the next command continues the
thread with ``codex exec --json resume <thread_id> <prompt>``. ``turn.completed`` usage is a running
total for the thread, so the command's tokens are its growth during this command."""

from __future__ import annotations

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


def _usage(usage: Any) -> int:
    if not isinstance(usage, dict):
        return 0
    return int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)


class CodexParser(JsonLinesParser):
    def __init__(self, reporter: Reporter, thread_tokens_before: int) -> None:
        super().__init__(reporter)
        self._before = thread_tokens_before
        self.thread_tokens = thread_tokens_before
        self._turn = 0
        self._started: dict[str, int] = {}
        self._answer: list[str] = []

    def handle(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type") or "")
        if kind == "thread.started":
            if event.get("thread_id"):
                self.reporter.session(str(event["thread_id"]))
        elif kind == "turn.started":
            self._turn += 1
            self.reporter.trace(f"turn-{self._turn}", TraceType.LLM_PROMPT, "codex turn", started_at=now_ms())
        elif kind == "turn.completed":
            total = _usage(event.get("usage"))
            if total:
                # A running total for the thread: replace, never add.
                self.thread_tokens = total
                self.reporter.tokens(max(0, total - self._before))
            self.reporter.trace(
                f"turn-{self._turn}",
                TraceType.LLM_PROMPT,
                "codex turn",
                completed_at=now_ms(),
                tokens_used=max(0, total - self._before),
            )
            if self._answer:
                self.reporter.answer("\n".join(self._answer))
            self.final = Outcome(CompletionStatus.COMPLETED, EndReason.FINISHED)
            self.reporter.turn_finished()
        elif kind == "turn.failed":
            error = event.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            self.final = Outcome(CompletionStatus.FAILED, EndReason.ERROR, str(message or "turn failed"))
            self.reporter.turn_finished()
        elif kind in ("item.started", "item.updated", "item.completed"):
            self._item(kind, event.get("item") or {})
        elif kind == "error":
            self.reporter.output(StreamType.STDERR, f"error: {event.get('message', '')}\n")
        else:
            self.unknown(event)

    def _item(self, kind: str, item: dict[str, Any]) -> None:
        item_id = str(item.get("id") or f"item-{now_ms()}")
        item_type = str(item.get("type") or "item")
        parent = f"turn-{self._turn}" if self._turn else None
        at = now_ms()
        if kind == "item.started":
            self._started[item_id] = at
        started = self._started.get(item_id, at)
        done = kind == "item.completed"
        if done:
            self.estimate(str(item.get("text") or item.get("aggregated_output") or ""))
        if item_type == "agent_message":
            if done and item.get("text"):
                self._answer.append(str(item["text"]))
                self.reporter.output(StreamType.STDOUT, str(item["text"]).rstrip("\n") + "\n")
            trace_type, name = TraceType.RESPONSE, "agent message"
        elif item_type == "reasoning":
            trace_type, name = TraceType.RESPONSE, "reasoning"
        elif item_type == "command_execution":
            trace_type, name = TraceType.TOOL_CALL, f"$ {item.get('command', '')}"
            if kind == "item.started":
                self.reporter.output(StreamType.STDOUT, f"{DIM}$ {item.get('command', '')}{RESET}\n")
        elif item_type == "file_change":
            trace_type, name = TraceType.TOOL_CALL, "file change"
        elif item_type == "mcp_tool_call":
            trace_type, name = TraceType.TOOL_CALL, f"{item.get('server', '')}.{item.get('tool', '')}"
        elif item_type == "web_search":
            trace_type, name = TraceType.TOOL_CALL, f"web search: {item.get('query', '')}"
        elif item_type == "todo_list":
            trace_type, name = TraceType.RESPONSE, "todo list"
        elif item_type == "error":
            self.reporter.output(StreamType.STDERR, f"error: {item.get('message', '')}\n")
            trace_type, name = TraceType.RESPONSE, "error"
        else:
            self.unknown({"type": kind, "item": item})
            return
        status = item.get("status")
        failed = status in ("failed", "declined") or item_type == "error"
        error = (
            (str(item.get("error") or item.get("message") or status) if failed else None) if done else None
        )
        self.reporter.trace(
            item_id,
            trace_type,
            name,
            parent_id=parent,
            content=item,
            started_at=started,
            completed_at=at if done else None,
            duration_ms=at - started if done else None,
            error=error,
        )


class CodexAdapter(Adapter):
    agent_type = AgentType.CODEX
    program = "codex"

    def __init__(self, extra_args: list[str] | None = None) -> None:
        super().__init__(extra_args)
        #: Thread totals seen so far, per thread: turn.completed reports the thread's running total.
        self.thread_tokens: dict[str, int] = {}
        self._last_parser: CodexParser | None = None
        self._session: str | None = None

    def invocation(self, prompt: str, session_id: str | None) -> Invocation:
        self._session = session_id
        argv = [self.program, "exec", "--json"]
        if "--skip-git-repo-check" not in self.extra_args:
            argv.append("--skip-git-repo-check")
        argv += self.extra_args
        if session_id:
            argv += ["resume", session_id]
        argv.append(prompt)
        return Invocation(argv=argv)

    def parser(self, reporter: Reporter) -> StreamParser:
        self._last_parser = CodexParser(reporter, self.thread_tokens.get(self._session or "", 0))
        return self._last_parser

    def remember(self, session_id: str | None) -> None:
        if session_id and self._last_parser is not None:
            self.thread_tokens[session_id] = self._last_parser.thread_tokens
