"""Runs the commands the hub sends, one at a time, through the agent's adapter, and reports them:
COMMAND_ACK, TERMINAL_OUTPUT (coalesced so a chatty CLI stays under the hub's message rate),
TRACE_EVENT, INVESTIGATION_REPORT, COMMAND_COMPLETE.

A request the executor already has (the hub sends again until it hears an ACK) is acknowledged
again, never run twice. The time limit and the token budget are enforced here as well as by the
hub, and the completion says which one ended the command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from shared.enums import AckStatus, CommandType, CompletionStatus, EndReason, StreamType, TraceType
from shared.model import bounded_json
from shared.protocol import (
    CommandAck,
    CommandAckPayload,
    CommandComplete,
    CommandCompletePayload,
    CommandRequestPayload,
    TerminalOutput,
    TerminalOutputPayload,
    to_id,
    trace_event_json,
)
from wrapper.adapters.base import Adapter, Outcome, StreamParser
from wrapper.changes import changes_since, snapshot_async
from wrapper.health import HealthSampler
from wrapper.outbox import Outbox
from wrapper.process import CommandProcess
from wrapper.prompts import build_prompt
from wrapper.report import report_message
from wrapper.state import AgentState

log = logging.getLogger("onsembl.agent")

#: Output is sent at most this often per command (the hub allows 100 messages/s per agent).
FLUSH_INTERVAL_S = 0.02
#: A chunk is sent early when it grows past this.
MAX_CHUNK_CHARS = 256 * 1024
#: Finished commands remembered, so a repeated request is answered, not run again.
REMEMBER = 500
#: Most commands named in AGENT_CONNECT's activeCommands (the protocol's limit).
MAX_ACTIVE_COMMANDS = 100
ANSI_ESCAPE = "\x1b["


@dataclass
class OutputChunker:
    command_id: str
    agent_id: str
    outbox: Outbox
    sequence: int = 0
    _stream: StreamType | None = None
    _parts: list[str] = field(default_factory=list)
    _size: int = 0
    _last_flush: float = 0.0
    _timer: asyncio.TimerHandle | None = None

    def add(self, stream: StreamType, text: str) -> None:
        if self._stream is not None and stream is not self._stream:
            self.flush()
        self._stream = stream
        self._parts.append(text)
        self._size += len(text)
        now = time.monotonic()
        if self._size >= MAX_CHUNK_CHARS or now - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parts or self._stream is None:
            return
        content = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._last_flush = time.monotonic()
        self.outbox.put(
            TerminalOutput(
                payload=TerminalOutputPayload(
                    command_id=self.command_id,
                    agent_id=self.agent_id,
                    stream_type=self._stream,
                    content=bounded_json(content),
                    ansi_codes=ANSI_ESCAPE in content,
                    sequence=self.sequence,
                )
            )
        )
        self.sequence += 1


class CommandRun:
    """One command on this agent: the adapter's Reporter, and the limits."""

    def __init__(self, executor: Executor, request: CommandRequestPayload) -> None:
        self.executor = executor
        self.request = request
        self.command_id = request.command_id
        self.agent_id = executor.agent_id
        self.chunker = OutputChunker(self.command_id, self.agent_id, executor.outbox)
        self.process: CommandProcess | None = None
        self.parser: StreamParser | None = None
        self.cancel_reason: EndReason | None = None
        self.cancel_message = ""
        self.tokens_used = 0
        self.cost_usd = 0.0
        self.final_answer = ""
        self.session_id: str | None = None
        self.pending_input: dict[str, Any] = {}
        self._cancel_task: asyncio.Task[None] | None = None
        self._halt_task: asyncio.Task[None] | None = None

    # ---- Reporter --------------------------------------------------------------------------------

    def output(self, stream: StreamType, text: str) -> None:
        self.chunker.add(stream, text)

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
    ) -> None:
        # Serialised directly (see trace_event_json): a model turn each, the wrapper's hottest path.
        self.executor.outbox.put_frame(
            trace_event_json(
                command_id=self.command_id,
                agent_id=self.agent_id,
                trace_id=to_id(trace_id),
                parent_id=to_id(parent_id) if parent_id else None,
                type=type,
                name=name,
                content=bounded_json(content),
                started_at=started_at,
                completed_at=completed_at,
                duration_ms=duration_ms,
                tokens_used=tokens_used,
                error=error,
            )
        )

    def tokens(self, total: int) -> None:
        self.tokens_used = max(0, total)
        budget = self.request.execution_constraints.token_budget
        if budget is not None and self.tokens_used > budget and self.cancel_reason is None:
            self.cancel(
                EndReason.TOKEN_BUDGET, f"token budget of {budget} exceeded ({self.tokens_used} tokens)"
            )

    def cost(self, usd: float) -> None:
        self.cost_usd = max(0.0, usd)

    def session(self, session_id: str) -> None:
        self.session_id = session_id

    def version(self, version: str) -> None:
        self.executor.cli_version = version

    def answer(self, text: str) -> None:
        self.final_answer = text

    def turn_finished(self) -> None:
        if self.process is not None:
            self.process.close_stdin()

    def needs_input(self, request_id: str, tool_name: str, tool_input: Any, can_answer: bool = True) -> None:
        if can_answer:
            self.pending_input[to_id(request_id)] = (request_id, tool_input)
        self.executor.on_needs_input(self, request_id, tool_name, tool_input, can_answer)

    # ---- control --------------------------------------------------------------------------------

    def cancel(self, reason: EndReason, message: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.cancel_message = message
        if self.process is None:
            return
        if reason is EndReason.EMERGENCY_STOP:
            # No interrupt, no escalation: every process of the command goes now (also when a gentler
            # cancel is under way).
            self._halt_task = asyncio.create_task(self.process.halt(), name=f"halt-{self.command_id}")
        elif self._cancel_task is None:
            self._cancel_task = asyncio.create_task(
                self.process.cancel(self.executor.adapter.interrupt_line()), name=f"cancel-{self.command_id}"
            )

    async def answer_permission(self, request_id: str, allow: bool, message: str) -> bool:
        if self.process is None or request_id not in self.pending_input:
            return False
        original_id, tool_input = self.pending_input.pop(request_id)
        line = self.executor.adapter.permission_reply(original_id, allow, message, tool_input)
        return line is not None and await self.process.write(line)

    # ---- the run --------------------------------------------------------------------------------

    async def execute(self) -> CommandComplete:
        executor = self.executor
        request = self.request
        started = time.monotonic()
        prompt = build_prompt(request.type, request.content)
        session = executor.state.session_id
        invocation = executor.adapter.invocation(prompt, session)
        self.parser = executor.adapter.parser(self)
        self.process = CommandProcess(
            invocation, cwd=executor.workdir, state=executor.state, command_id=self.command_id
        )
        limit_ms = request.execution_constraints.time_limit_ms
        before = (
            await snapshot_async(executor.workdir) if executor.record_changes and executor.workdir else None
        )
        exit_code: int | None = None
        outcome: Outcome
        parser = self.parser
        run = asyncio.create_task(
            self.process.run(parser.feed, lambda line: self.chunker.add(StreamType.STDERR, line)),
            name=f"process-{self.command_id}",
        )
        try:
            done, _ = await asyncio.wait({run}, timeout=limit_ms / 1000 if limit_ms else None)
            if not done:
                self.cancel(EndReason.TIME_LIMIT, f"time limit of {limit_ms} ms reached")
            exit_code = await run
            outcome = parser.finish(exit_code, list(self.process.stderr_tail), self.cancel_reason)
        except OSError as exc:
            outcome = Outcome(
                CompletionStatus.FAILED, EndReason.ERROR, f"could not start {invocation.argv[0]}: {exc}"
            )
            self.chunker.add(StreamType.STDERR, outcome.error + "\n" if outcome.error else "\n")
        if self._cancel_task is not None:
            await self._cancel_task
        if outcome.status is CompletionStatus.CANCELLED and self.cancel_message:
            outcome.error = self.cancel_message
        self.chunker.flush()
        if self.session_id and self.session_id != session:
            executor.state.set_session(self.session_id)
        remember = getattr(executor.adapter, "remember", None)
        if callable(remember):
            remember(self.session_id)
        if request.type is CommandType.INVESTIGATE and (
            self.final_answer or outcome.status is CompletionStatus.COMPLETED
        ):
            executor.outbox.put(report_message(self.command_id, self.agent_id, self.final_answer))
        changes = await changes_since(executor.workdir, before) if before and executor.workdir else None
        elapsed = int((time.monotonic() - started) * 1000)
        executor.health.record(elapsed, self.tokens_used, self.cost_usd)
        return CommandComplete(
            payload=CommandCompletePayload(
                command_id=self.command_id,
                agent_id=self.agent_id,
                status=outcome.status,
                error=outcome.error,
                execution_time=elapsed,
                tokens_used=self.tokens_used,
                cost_usd=self.cost_usd,
                reason=outcome.reason,
                exit_code=exit_code,
                output_lines=self.chunker.sequence,
                changes=changes,
            )
        )


class RequestQueue(asyncio.Queue[CommandRequestPayload]):
    """A queue whose waiting requests can be looked at and withdrawn."""

    _queue: deque[CommandRequestPayload]  # asyncio.Queue's store, which typeshed leaves out

    def waiting(self) -> list[CommandRequestPayload]:
        return list(self._queue)

    def withdraw(self, request: CommandRequestPayload) -> None:
        self._queue.remove(request)


class Executor:
    def __init__(
        self, adapter: Adapter, state: AgentState, workdir: str | None = None, record_changes: bool = True
    ) -> None:
        self.adapter = adapter
        self.state = state
        self.workdir = workdir
        #: Record each command's changes to the working tree (when it is a git repository).
        self.record_changes = record_changes
        self.agent_id = ""
        self.cli_version = ""
        self.outbox: Outbox
        self.health: HealthSampler
        self.running: dict[str, CommandRun] = {}
        self.finished: OrderedDict[str, CommandComplete] = OrderedDict()
        self._queue = RequestQueue()
        self._worker: asyncio.Task[None] | None = None
        self.input_listeners: list[Any] = []

    def bind(self, agent_id: str, outbox: Outbox, health: HealthSampler) -> None:
        self.agent_id = agent_id
        self.outbox = outbox
        self.health = health

    def active_commands(self) -> list[str]:
        """What AGENT_CONNECT names as this agent's: the hub settles (FAILED, AGENT_RESTARTED) any
        command it believes runs here that is not named. So: the running ones, the ones waiting
        here, then the most recently finished, whose COMMAND_COMPLETE may still wait in the outbox
        (naming a finished one is harmless: the hub waits for its result, which the outbox replays).
        At most MAX_ACTIVE_COMMANDS."""
        named = dict.fromkeys(self.running)
        named.update(dict.fromkeys(r.command_id for r in self._queue.waiting()))
        for command_id in reversed(self.finished):
            if len(named) >= MAX_ACTIVE_COMMANDS:
                break
            named[command_id] = None
        return list(named)[:MAX_ACTIVE_COMMANDS]

    def new_session(self) -> None:
        """The next command starts a fresh conversation."""
        self.state.set_session(None)

    def on_needs_input(
        self, run: CommandRun, request_id: str, tool_name: str, tool_input: Any, can_answer: bool
    ) -> None:
        for listener in self.input_listeners:
            listener(run.command_id, request_id, tool_name, tool_input, can_answer)

    def _ack(self, command_id: str, status: AckStatus) -> None:
        self.outbox.put(
            CommandAck(
                payload=CommandAckPayload(command_id=command_id, agent_id=self.agent_id, status=status)
            )
        )

    def submit(self, request: CommandRequestPayload) -> None:
        command_id = request.command_id
        if command_id in self.finished:
            # We finished it while the hub was not listening: say so again.
            self.outbox.put(self.finished[command_id])
            return
        if command_id in self.running:
            self._ack(command_id, AckStatus.EXECUTING)
            return
        if any(r.command_id == command_id for r in self._queue.waiting()):
            self._ack(command_id, AckStatus.QUEUED)
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="executor")
        self._ack(command_id, AckStatus.RECEIVED)
        self._queue.put_nowait(request)

    async def _work(self) -> None:
        while True:
            request = await self._queue.get()
            run = CommandRun(self, request)
            self.running[request.command_id] = run
            self._ack(request.command_id, AckStatus.EXECUTING)
            try:
                complete = await run.execute()
            except Exception as exc:
                log.exception("command %s failed in the wrapper", request.command_id)
                complete = CommandComplete(
                    payload=CommandCompletePayload(
                        command_id=request.command_id,
                        agent_id=self.agent_id,
                        status=CompletionStatus.FAILED,
                        error=f"the wrapper failed: {exc}",
                        reason=EndReason.ERROR,
                    )
                )
            finally:
                self.running.pop(request.command_id, None)
            self.finished[request.command_id] = complete
            while len(self.finished) > REMEMBER:
                self.finished.popitem(last=False)
            self.outbox.put(complete)
            log.info(
                "command %s %s in %d ms",
                request.command_id,
                complete.payload.status.value.lower(),
                complete.payload.execution_time,
            )

    def cancel(self, command_id: str, reason: EndReason, message: str) -> None:
        run = self.running.get(command_id)
        if run is not None:
            run.cancel(reason, message)
            return
        # Still waiting here: drop it and report it cancelled.
        for request in [r for r in self._queue.waiting() if r.command_id == command_id]:
            self._queue.withdraw(request)
            complete = CommandComplete(
                payload=CommandCompletePayload(
                    command_id=command_id,
                    agent_id=self.agent_id,
                    status=CompletionStatus.CANCELLED,
                    error=message or None,
                    reason=reason,
                )
            )
            self.finished[command_id] = complete
            self.outbox.put(complete)

    def cancel_all_running(self, message: str) -> None:
        for command_id in list(self.running):
            self.cancel(command_id, EndReason.AGENT_STOPPED, message)

    async def answer_input(self, command_id: str, request_id: str, allow: bool, message: str) -> bool:
        run = self.running.get(command_id)
        return run is not None and await run.answer_permission(request_id, allow, message)

    async def shutdown(self) -> None:
        for run in list(self.running.values()):
            run.cancel(EndReason.AGENT_STOPPED, "the agent wrapper is stopping")
            if run._cancel_task is not None:
                await run._cancel_task
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
