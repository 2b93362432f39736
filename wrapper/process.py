"""A command's process: its own process group, stdout and stderr read line by line, stdin kept for
the CLIs that take control messages there, and a cancel that escalates (the CLI's own interrupt,
then SIGINT, SIGTERM and SIGKILL to the whole group). Whatever is left in the group when the
command's process ends is killed: no orphans."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
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
#: Output read ahead of the adapter, at most: the CLI never waits on a full pipe while the wrapper
#: turns earlier lines into messages (the wrapper must not slow the agent down).
READ_AHEAD = 32 * 1024 * 1024
#: The pipes' kernel buffer (Linux; 64 KiB by default): room for a burst between two reads.
PIPE_BYTES = 1024 * 1024
#: Lines handled between two yields to the event loop, which then reads the pipes again.
LINES_PER_YIELD = 64
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
        stdout_read, stdout_write = _pipe()
        stderr_read, stderr_write = _pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.invocation.argv,
                stdin=asyncio.subprocess.PIPE
                if self.invocation.stdin is not None
                else asyncio.subprocess.DEVNULL,
                stdout=stdout_write,
                stderr=stderr_write,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            os.close(stdout_read)
            os.close(stderr_read)
            raise
        finally:
            os.close(stdout_write)
            os.close(stderr_write)
        stdout = await _reader(stdout_read)
        stderr = await _reader(stderr_read)
        self.started.set()
        if self.invocation.stdin is not None:
            await self.write(self.invocation.stdin)
            if not self.invocation.keep_stdin_open:
                self.close_stdin()

        def stderr_line(line: str) -> None:
            self.stderr_tail.append(line)
            on_stderr(line)

        pumps = asyncio.gather(_pump(stdout, on_stdout), _pump(stderr, stderr_line))
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


def _pipe() -> tuple[int, int]:
    """A pipe for the command's output, its buffer enlarged where the system allows."""
    read_end, write_end = os.pipe()
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        # Past /proc/sys/fs/pipe-max-size (1 MiB by default) the call fails: the pipe keeps 64 KiB.
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, set_size, PIPE_BYTES)
    return read_end, write_end


async def _reader(fd: int) -> asyncio.StreamReader:
    """An asyncio reader on ``fd`` that reads ahead up to READ_AHEAD bytes."""
    loop = asyncio.get_running_loop()
    # The transport stops reading at twice the limit; lines over MAX_LINE are cut below.
    reader = asyncio.StreamReader(limit=READ_AHEAD // 2, loop=loop)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", 0)
    )
    return reader


async def _pump(stream: asyncio.StreamReader, sink: LineSink) -> None:
    handled = 0
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):
            # A line longer than the read-ahead: take what is there.
            line = await stream.read(MAX_LINE)
        if not line:
            return
        for start in range(0, len(line), MAX_LINE):
            sink(line[start : start + MAX_LINE].decode(errors="replace"))
        handled += 1
        if handled % LINES_PER_YIELD == 0:
            # readline() returns at once while lines are buffered: let the loop read the pipes.
            await asyncio.sleep(0)
