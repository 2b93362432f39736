"""What every adapter provides, and what it reports to the executor.

An adapter turns a command into an invocation of its CLI, and the CLI's output into calls on a
:class:`Reporter`: text for the terminal, trace nodes, token and cost totals, the session id, the
final answer. At the end it says how the command ended (:class:`Outcome`), also when the CLI exited
without a final event or crashed.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic_core import from_json

from shared.enums import AgentType, CompletionStatus, EndReason, StreamType, TraceType


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Invocation:
    argv: list[str]
    #: Written to the CLI's stdin at start; None gives it /dev/null.
    stdin: str | None = None
    #: Keep stdin open after writing (Claude's stream-json input: control requests go there).
    keep_stdin_open: bool = False
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    status: CompletionStatus
    reason: EndReason
    error: str | None = None


class Reporter(Protocol):
    def output(self, stream: StreamType, text: str) -> None: ...

    def trace(
        self,
        trace_id: str,
        type: TraceType,
        name: str,
        *,
        parent_id: str | None = None,
        content: Any = None,
        started_at: int | None = None,
        completed_at: int | None = None,
        duration_ms: int | None = None,
        tokens_used: int = 0,
        error: str | None = None,
    ) -> None: ...

    def tokens(self, total: int) -> None:
        """The command's token count so far (a running total: it replaces the previous one)."""

    def cost(self, usd: float) -> None: ...

    def session(self, session_id: str) -> None: ...

    def version(self, version: str) -> None: ...

    def answer(self, text: str) -> None:
        """The final answer text (reports are extracted from it)."""

    def turn_finished(self) -> None:
        """The CLI reported the end of the turn (its process may still be open)."""

    def needs_input(
        self, request_id: str, tool_name: str, tool_input: Any, can_answer: bool = True
    ) -> None: ...


class StreamParser(ABC):
    """Reads one command's output, line by line."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.final: Outcome | None = None

    @abstractmethod
    def feed(self, line: str) -> None: ...

    def finish(self, exit_code: int, stderr_tail: list[str], cancelled: EndReason | None) -> Outcome:
        """How the command ended, given the exit code and whether the wrapper cancelled it."""
        if cancelled is not None:
            return Outcome(CompletionStatus.CANCELLED, cancelled, None)
        if self.final is not None:
            return self.final
        if exit_code == 0:
            return Outcome(CompletionStatus.COMPLETED, EndReason.FINISHED)
        return crashed(exit_code, stderr_tail)


def crashed(exit_code: int, stderr_tail: list[str]) -> Outcome:
    tail = "\n".join(line.rstrip() for line in stderr_tail[-10:] if line.strip())
    message = f"exited with code {exit_code}" + (f":\n{tail}" if tail else "")
    return Outcome(CompletionStatus.FAILED, EndReason.ERROR, message)


class JsonLinesParser(StreamParser):
    """A parser for CLIs that print one JSON event per line. Lines that are not JSON are shown as
    they are; events of a type the adapter does not know are kept as raw trace entries."""

    unknown_count = 0
    #: Tokens estimated from the text seen so far, for CLIs that report usage only at the end.
    estimated_tokens = 0

    def estimate(self, text: str) -> None:
        """Count about four characters a token as the text streams, so a token budget can end a
        command before the CLI's own totals arrive (they replace the estimate when they do)."""
        self.estimated_tokens += max(1, len(text) // 4)
        self.reporter.tokens(self.estimated_tokens)

    def feed(self, line: str) -> None:
        stripped = line.strip()
        if not stripped:
            return
        try:
            # pydantic's parser, at half the cost of json.loads: a JSON line per model turn.
            event = from_json(stripped)
        except ValueError:
            try:
                # What it refuses and json takes: a lone surrogate escape ("\ud800"), say.
                event = json.loads(stripped)
            except json.JSONDecodeError:
                self.reporter.output(StreamType.STDOUT, line if line.endswith("\n") else line + "\n")
                return
        if not isinstance(event, dict):
            self.unknown(event)
            return
        self.handle(event)

    @abstractmethod
    def handle(self, event: dict[str, Any]) -> None: ...

    def unknown(self, event: Any) -> None:
        self.unknown_count += 1
        kind = event.get("type", "?") if isinstance(event, dict) else type(event).__name__
        self.reporter.trace(
            f"raw-{self.unknown_count}",
            TraceType.RESPONSE,
            f"unknown event: {kind}",
            content=event,
            started_at=now_ms(),
        )


class Adapter(ABC):
    agent_type: AgentType
    #: The CLI's program name, looked up on PATH.
    program: str = ""

    def __init__(self, extra_args: list[str] | None = None) -> None:
        self.extra_args = list(extra_args or [])

    @abstractmethod
    def invocation(self, prompt: str, session_id: str | None) -> Invocation: ...

    @abstractmethod
    def parser(self, reporter: Reporter) -> StreamParser: ...

    def interrupt_line(self) -> str | None:
        """A line that asks the running CLI to stop its turn, written to its stdin; None if it has none."""
        return None

    def permission_reply(
        self, request_id: str, allow: bool, message: str, tool_input: Any = None
    ) -> str | None:
        """A line answering the CLI's permission request; None if the CLI cannot be asked."""
        return None
