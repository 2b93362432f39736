"""A command's process: its own process group, stdout and stderr read line by line, stdin kept for
the CLIs that take control messages there, and a cancel that escalates (the CLI's own interrupt,
then SIGINT, SIGTERM and SIGKILL to the whole group). Whatever is left in the group when the
command's process ends is killed: no orphans."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable

from wrapper.adapters.base import Invocation

LineSink = Callable[[str], None]

#: Seconds to wait after each step of a cancel: the CLI's interrupt, SIGINT, SIGTERM.
ESCALATION_S = (3.0, 2.0, 3.0)
#: Longest line kept whole; longer ones are split (the protocol limits message size).
MAX_LINE = 64 * 1024
STDERR_TAIL = 20
#: After the process exits, how long its output may take to drain before the group is swept.
DRAIN_S = 1.0


class CommandProcess:
    def __init__(self, invocation: Invocation, cwd: str | None) -> None:
        self.invocation = invocation
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.started = asyncio.Event()

    @property
    def argv(self) -> list[str]:
        return self.invocation.argv

    async def run(self, on_stdout: LineSink, on_stderr: LineSink) -> int:
        env = dict(os.environ)
        env.update(self.invocation.env)
        self.proc = await asyncio.create_subprocess_exec(
            *self.invocation.argv,
            stdin=asyncio.subprocess.PIPE
            if self.invocation.stdin is not None
            else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.cwd,
            env=env,
            start_new_session=True,
            limit=MAX_LINE,
        )
        self.started.set()
        if self.invocation.stdin is not None:
            await self.write(self.invocation.stdin)
            if not self.invocation.keep_stdin_open:
                self.close_stdin()
        assert self.proc.stdout is not None and self.proc.stderr is not None

        def stderr_line(line: str) -> None:
            self.stderr_tail.append(line)
            on_stderr(line)

        pumps = asyncio.gather(_pump(self.proc.stdout, on_stdout), _pump(self.proc.stderr, stderr_line))
        code = await self.proc.wait()
        try:
            await asyncio.wait_for(asyncio.shield(pumps), DRAIN_S)
        except TimeoutError:
            pass
        # Children that outlived the command (or hold its pipes open) go with it.
        self._signal_group(signal.SIGKILL)
        await pumps
        return code

    async def write(self, text: str) -> bool:
        if self.proc is None or self.proc.stdin is None or self.proc.stdin.is_closing():
            return False
        try:
            self.proc.stdin.write(text.encode())
            await self.proc.stdin.drain()
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def close_stdin(self) -> None:
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def _exited_within(self, seconds: float) -> bool:
        assert self.proc is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), seconds)
            return True
        except TimeoutError:
            return False

    async def cancel(self, interrupt_line: str | None = None) -> None:
        """The CLI's own interrupt, then SIGINT, SIGTERM, and SIGKILL of the group, until it ends."""
        await self.started.wait()
        if self.proc is None or self.proc.returncode is not None:
            return
        if interrupt_line is not None and await self.write(interrupt_line):
            if await self._exited_within(ESCALATION_S[0]):
                return
        for sig, wait in ((signal.SIGINT, ESCALATION_S[1]), (signal.SIGTERM, ESCALATION_S[2])):
            self._signal_group(sig)
            if await self._exited_within(wait):
                return
        self._signal_group(signal.SIGKILL)


async def _pump(stream: asyncio.StreamReader, sink: LineSink) -> None:
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):
            # A line longer than the buffer: take what is there.
            line = await stream.read(MAX_LINE)
        if not line:
            return
        sink(line.decode(errors="replace"))
