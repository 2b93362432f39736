"""Runs the commands the hub sends, one at a time, and reports them: COMMAND_ACK, TERMINAL_OUTPUT
(coalesced so a chatty program stays under the hub's message rate), COMMAND_COMPLETE.

A request the executor already has (the hub sends again until it hears an ACK) is acknowledged
again, never run twice. The time limit is enforced here as well as by the hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from shared.enums import AckStatus, CompletionStatus, EndReason, StreamType
from shared.protocol import (
    CommandAck,
    CommandAckPayload,
    CommandComplete,
    CommandCompletePayload,
    CommandRequestPayload,
    TerminalOutput,
    TerminalOutputPayload,
)
from wrapper.health import HealthSampler
from wrapper.outbox import Outbox
from wrapper.process import CommandProcess

log = logging.getLogger("onsembl.agent")

#: Output is sent at most this often per command (the hub allows 100 messages/s per agent).
FLUSH_INTERVAL_S = 0.02
#: A chunk is sent early when it grows past this.
MAX_CHUNK_CHARS = 256 * 1024
#: Finished commands remembered, so a repeated request is answered, not run again.
REMEMBER = 500
ANSI_ESCAPE = "\x1b["


class Adapter(Protocol):
    def argv(self, request: CommandRequestPayload) -> list[str]: ...


@dataclass
class ShellAdapter:
    """``shell -- bash -lc``: each command's text becomes the last argument of the program."""

    program: list[str]

    def argv(self, request: CommandRequestPayload) -> list[str]:
        return [*self.program, request.content]


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

    async def add(self, stream: StreamType, text: str) -> None:
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
                    content=content,
                    ansi_codes=ANSI_ESCAPE in content,
                    sequence=self.sequence,
                )
            )
        )
        self.sequence += 1


@dataclass
class Running:
    request: CommandRequestPayload
    task: asyncio.Task[None]
    process: CommandProcess | None = None
    cancel_reason: EndReason | None = None
    cancel_message: str = ""


class RequestQueue(asyncio.Queue[CommandRequestPayload]):
    """A queue whose waiting requests can be looked at and withdrawn."""

    _queue: deque[CommandRequestPayload]  # asyncio.Queue's store, which typeshed leaves out

    def waiting(self) -> list[CommandRequestPayload]:
        return list(self._queue)

    def withdraw(self, request: CommandRequestPayload) -> None:
        self._queue.remove(request)


class Executor:
    def __init__(self, adapter: Adapter, workdir: str | None = None) -> None:
        self.adapter = adapter
        self.workdir = workdir
        self.agent_id = ""
        self.outbox: Outbox
        self.health: HealthSampler
        self.running: dict[str, Running] = {}
        self.finished: OrderedDict[str, CommandComplete] = OrderedDict()
        self._queue = RequestQueue()
        self._worker: asyncio.Task[None] | None = None
        self._cancels: set[asyncio.Task[None]] = set()

    def bind(self, agent_id: str, outbox: Outbox, health: HealthSampler) -> None:
        self.agent_id = agent_id
        self.outbox = outbox
        self.health = health

    def active_commands(self) -> list[str]:
        return list(self.running)

    def new_session(self) -> None:
        """A fresh conversation next time; the shell adapter has none to reset."""

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
            task = asyncio.create_task(self._run(request), name=f"command-{request.command_id}")
            self.running[request.command_id] = Running(request=request, task=task)
            try:
                await task
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("command %s failed in the wrapper", request.command_id)
            finally:
                self.running.pop(request.command_id, None)

    async def _run(self, request: CommandRequestPayload) -> None:
        command_id = request.command_id
        entry = self.running[command_id]
        self._ack(command_id, AckStatus.EXECUTING)
        started = time.monotonic()
        chunker = OutputChunker(command_id, self.agent_id, self.outbox)
        process = CommandProcess(self.adapter.argv(request), cwd=self.workdir, env=os.environ.copy())
        entry.process = process
        limit_ms = request.execution_constraints.time_limit_ms
        exit_code: int | None = None
        error: str | None = None
        run = asyncio.create_task(process.run(chunker.add))
        try:
            if limit_ms:
                done, _ = await asyncio.wait({run}, timeout=limit_ms / 1000)
                if not done:
                    entry.cancel_reason = entry.cancel_reason or EndReason.TIME_LIMIT
                    entry.cancel_message = entry.cancel_message or f"time limit of {limit_ms} ms reached"
                    await process.cancel()
            exit_code = await run
        except OSError as exc:
            error = f"could not start {process.argv[0]}: {exc}"
            chunker.outbox.put(
                TerminalOutput(
                    payload=TerminalOutputPayload(
                        command_id=command_id,
                        agent_id=self.agent_id,
                        stream_type=StreamType.STDERR,
                        content=error + "\n",
                        sequence=chunker.sequence,
                    )
                )
            )
            chunker.sequence += 1
        chunker.flush()
        elapsed = int((time.monotonic() - started) * 1000)
        if entry.cancel_reason is not None:
            status, reason = CompletionStatus.CANCELLED, entry.cancel_reason
            error = entry.cancel_message or None
        elif error is None and exit_code == 0:
            status, reason = CompletionStatus.COMPLETED, EndReason.FINISHED
        else:
            status, reason = CompletionStatus.FAILED, EndReason.ERROR
            error = error or f"exited with code {exit_code}"
        complete = CommandComplete(
            payload=CommandCompletePayload(
                command_id=command_id,
                agent_id=self.agent_id,
                status=status,
                error=error,
                execution_time=elapsed,
                reason=reason,
                exit_code=exit_code,
                output_lines=chunker.sequence,
            )
        )
        self.finished[command_id] = complete
        while len(self.finished) > REMEMBER:
            self.finished.popitem(last=False)
        self.health.record(elapsed)
        self.outbox.put(complete)
        log.info("command %s %s in %d ms", command_id, status.value.lower(), elapsed)

    def cancel(self, command_id: str, reason: EndReason, message: str) -> None:
        entry = self.running.get(command_id)
        if entry is not None:
            if entry.cancel_reason is None:
                entry.cancel_reason = reason
                entry.cancel_message = message
            if entry.process is not None:
                task = asyncio.create_task(entry.process.cancel(), name=f"cancel-{command_id}")
                self._cancels.add(task)
                task.add_done_callback(self._cancels.discard)
            return
        # Still waiting here: drop it and report it cancelled.
        waiting = [r for r in self._queue.waiting() if r.command_id == command_id]
        for request in waiting:
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

    async def shutdown(self) -> None:
        for entry in list(self.running.values()):
            if entry.process is not None:
                await entry.process.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
