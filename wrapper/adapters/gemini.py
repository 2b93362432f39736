"""Gemini CLI: ``gemini -p <prompt> --output-format stream-json --yolo``, stdin from /dev/null.

One process per command; ``--resume <session_id>`` continues the conversation. SIGINT and SIGTERM
end it with exit code 0 and no ``result`` event, so a cancel is recorded by the wrapper itself.
"""

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
    crashed,
    now_ms,
)

DIM, RESET = "\x1b[2m", "\x1b[0m"
#: Documented exit codes.
EXIT_CODES = {
    1: "general error",
    41: "authentication failed",
    42: "invalid input",
    44: "sandbox error",
    52: "configuration error",
    53: "reached the turn limit",
    54: "fatal tool error",
    55: "the folder is not trusted (pass --skip-trust or set GEMINI_CLI_TRUST_WORKSPACE=true)",
    130: "cancelled",
}


class GeminiParser(JsonLinesParser):
    def __init__(self, reporter: Reporter) -> None:
        super().__init__(reporter)
        self._turn = 0
        self._turn_id: str | None = None
        self._text: list[str] = []
        self._tools: dict[str, tuple[str, int]] = {}

    def _current_turn(self) -> str:
        if self._turn_id is None:
            self._turn += 1
            self._turn_id = f"turn-{self._turn}"
            self.reporter.trace(self._turn_id, TraceType.RESPONSE, "gemini", started_at=now_ms())
        return self._turn_id

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "init":
            if event.get("session_id"):
                self.reporter.session(str(event["session_id"]))
            if event.get("model"):
                self.reporter.version(f"gemini ({event['model']})")
        elif kind == "message":
            if event.get("role") == "assistant":
                text = str(event.get("content") or "")
                self._current_turn()
                self._text.append(text)
                self.estimate(text)
                self.reporter.output(
                    StreamType.STDOUT, text if event.get("delta") else text.rstrip("\n") + "\n"
                )
        elif kind == "tool_use":
            tool_id = str(event.get("tool_id") or f"tool-{now_ms()}")
            name = str(event.get("tool_name") or "tool")
            at = now_ms()
            self._tools[tool_id] = (name, at)
            self.reporter.trace(
                tool_id,
                TraceType.TOOL_CALL,
                name,
                parent_id=self._current_turn(),
                content=event.get("parameters"),
                started_at=at,
            )
            self.reporter.output(StreamType.STDOUT, f"{DIM}→ {name}{RESET}\n")
            # A tool call closes the model's turn; what follows is a new one.
            self._turn_id = None
        elif kind == "tool_result":
            self._tool_result(event)
        elif kind == "error":
            self.reporter.output(
                StreamType.STDERR, f"{event.get('severity', 'error')}: {event.get('message', '')}\n"
            )
        elif kind == "result":
            self._result(event)
        else:
            self.unknown(event)

    def _tool_result(self, event: dict[str, Any]) -> None:
        tool_id = str(event.get("tool_id") or "")
        name, started = self._tools.get(tool_id, ("tool", now_ms()))
        at = now_ms()
        failure = event.get("error") if event.get("status") == "error" else None
        error = str(failure.get("message") if isinstance(failure, dict) else failure) if failure else None
        self.reporter.trace(
            tool_id,
            TraceType.TOOL_CALL,
            name,
            started_at=started,
            completed_at=at,
            duration_ms=at - started,
            error=error,
            parent_id=f"turn-{self._turn}" if self._turn else None,
        )
        self.reporter.trace(
            f"{tool_id}:result",
            TraceType.RESPONSE,
            "result",
            parent_id=tool_id,
            content=event.get("output"),
            started_at=at,
            completed_at=at,
            error=error,
        )
        if error and "denied by policy" in error.lower():
            self.reporter.needs_input(tool_id, name, {"denied": error}, can_answer=False)

    def _result(self, event: dict[str, Any]) -> None:
        stats = event.get("stats") or {}
        if isinstance(stats.get("total_tokens"), int):
            self.reporter.tokens(int(stats["total_tokens"]))
        if self._text:
            self.reporter.answer("".join(self._text))
        if event.get("status") == "success":
            self.final = Outcome(CompletionStatus.COMPLETED, EndReason.FINISHED)
        else:
            failure = event.get("error")
            message = failure.get("message") if isinstance(failure, dict) else failure
            if message and "cancel" in str(message).lower():
                self.final = Outcome(CompletionStatus.CANCELLED, EndReason.INTERRUPTED, str(message))
            else:
                self.final = Outcome(
                    CompletionStatus.FAILED, EndReason.ERROR, str(message or "gemini reported an error")
                )
        self.reporter.turn_finished()

    def finish(self, exit_code: int, stderr_tail: list[str], cancelled: EndReason | None) -> Outcome:
        if cancelled is None and self.final is None and exit_code in EXIT_CODES and exit_code != 0:
            outcome = crashed(exit_code, stderr_tail)
            outcome.error = f"{EXIT_CODES[exit_code]} ({outcome.error})"
            return outcome
        return super().finish(exit_code, stderr_tail, cancelled)


class GeminiAdapter(Adapter):
    agent_type = AgentType.GEMINI
    program = "gemini"

    def invocation(self, prompt: str, session_id: str | None) -> Invocation:
        argv = [self.program]
        if session_id:
            argv += ["--resume", session_id]
        argv += ["-p", prompt, "--output-format", "stream-json"]
        if not {"--yolo", "--approval-mode"} & set(self.extra_args):
            argv.append("--yolo")
        argv += self.extra_args
        return Invocation(argv=argv, env={"GEMINI_CLI_TRUST_WORKSPACE": "true"})

    def parser(self, reporter: Reporter) -> StreamParser:
        return GeminiParser(reporter)
