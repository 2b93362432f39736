"""A command's process: its own process group, output read line by line, and a cancel that
escalates SIGINT -> SIGTERM -> SIGKILL to the whole group so nothing is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Sequence

from shared.enums import StreamType

LineSink = Callable[[StreamType, str], Awaitable[None]]

#: Seconds between the steps of a cancel.
ESCALATION_S = (2.0, 3.0)
#: Longest line kept whole; longer ones are split (the protocol limits message size).
MAX_LINE = 64 * 1024


class CommandProcess:
    def __init__(self, argv: Sequence[str], cwd: str | None, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self, sink: LineSink) -> int:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
            limit=MAX_LINE,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        await asyncio.gather(
            _pump(self.proc.stdout, StreamType.STDOUT, sink),
            _pump(self.proc.stderr, StreamType.STDERR, sink),
        )
        return await self.proc.wait()

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def cancel(self) -> None:
        """Interrupt, then terminate, then kill the process group, until it is gone."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGINT, ESCALATION_S[0]), (signal.SIGTERM, ESCALATION_S[1])):
            if self.proc.returncode is not None:
                break
            self._signal_group(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), wait)
        # The leader may be gone while children in its group live on: always sweep the group.
        self._signal_group(signal.SIGKILL)


async def _pump(stream: asyncio.StreamReader, kind: StreamType, sink: LineSink) -> None:
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            # A line longer than the buffer: take what is there.
            line = await stream.read(MAX_LINE)
        except asyncio.LimitOverrunError:
            line = await stream.read(MAX_LINE)
        if not line:
            return
        await sink(kind, line.decode(errors="replace"))
