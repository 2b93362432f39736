"""Messages on their way to the hub.

Unsent ones wait here while the hub is away: the first 1000 in memory, the rest spilled to a file
in the agent's state dir, read back in order. The last sent ones are kept too and sent again after
a reconnect, because a message written to a socket that then dropped may never have arrived; the
hub drops the duplicates (by output sequence, by status).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from pathlib import Path

from pydantic import BaseModel

#: Unsent messages kept in memory before the rest go to disk.
MEMORY_LIMIT = 1000
#: Sent messages kept for replay after a reconnect.
REPLAY_WINDOW = 1000


class Outbox:
    def __init__(self, spill_path: Path | None = None, memory_limit: int = MEMORY_LIMIT) -> None:
        self._unsent: deque[str] = deque()
        self._sent: deque[str] = deque(maxlen=REPLAY_WINDOW)
        self._ready = asyncio.Event()
        self._limit = memory_limit
        self._spill_path = spill_path
        self._spilled = 0
        self._read_offset = 0
        self.spilled_total = 0

    def put(self, message: BaseModel) -> None:
        self.put_frame(message.model_dump_json(by_alias=True))

    def put_frame(self, frame: str) -> None:
        if self._spill_path is not None and (self._spilled or len(self._unsent) >= self._limit):
            # Once spilling, everything goes to the file until it is drained, to keep the order.
            with open(self._spill_path, "a", encoding="utf-8") as fh:
                # Serialised JSON holds no raw newline: one frame per line.
                fh.write(frame + "\n")
            self._spilled += 1
            self.spilled_total += 1
        else:
            self._unsent.append(frame)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._unsent) + self._spilled

    def _refill(self) -> None:
        assert self._spill_path is not None
        with open(self._spill_path, encoding="utf-8") as fh:
            fh.seek(self._read_offset)
            while len(self._unsent) < self._limit and self._spilled:
                line = fh.readline()
                if not line:
                    self._spilled = 0
                    break
                self._unsent.append(line.rstrip("\n"))
                self._spilled -= 1
            self._read_offset = fh.tell()
        if not self._spilled:
            os.truncate(self._spill_path, 0)
            self._read_offset = 0

    async def next(self) -> str:
        while not self._unsent:
            if self._spilled:
                self._refill()
                continue
            self._ready.clear()
            await self._ready.wait()
        return self._unsent[0]

    def head(self, max_count: int, max_bytes: int) -> list[str]:
        """The unsent frames at the front that are in memory now (at least one once next() returned),
        up to a count and a size, without taking them."""
        frames: list[str] = []
        size = 0
        for frame in self._unsent:
            if frames and (len(frames) >= max_count or size + len(frame) > max_bytes):
                break
            frames.append(frame)
            size += len(frame)
        return frames

    def sent(self, count: int = 1) -> None:
        """The first ``count`` frames were written to the socket."""
        for _ in range(count):
            self._sent.append(self._unsent.popleft())

    def rewind(self) -> None:
        """After a reconnect: send the recent ones again, then the rest, in order."""
        self._unsent.extendleft(reversed(self._sent))
        self._sent.clear()
        if self._unsent or self._spilled:
            self._ready.set()
