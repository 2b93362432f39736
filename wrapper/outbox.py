"""Messages on their way to the hub. Unsent ones wait here while the hub is away; the last sent ones
are kept too and sent again after a reconnect, because a message written to a socket that then
dropped may never have arrived. The hub drops the duplicates (by output sequence, by status)."""

from __future__ import annotations

import asyncio
from collections import deque

from pydantic import BaseModel

#: Sent messages kept for replay after a reconnect.
REPLAY_WINDOW = 1000


class Outbox:
    def __init__(self) -> None:
        self._unsent: deque[str] = deque()
        self._sent: deque[str] = deque(maxlen=REPLAY_WINDOW)
        self._ready = asyncio.Event()

    def put(self, message: BaseModel) -> None:
        self._unsent.append(message.model_dump_json(by_alias=True))
        self._ready.set()

    def __len__(self) -> int:
        return len(self._unsent)

    async def next(self) -> str:
        while not self._unsent:
            self._ready.clear()
            await self._ready.wait()
        return self._unsent[0]

    def sent(self) -> None:
        """The head was written to the socket."""
        self._sent.append(self._unsent.popleft())

    def rewind(self) -> None:
        """After a reconnect: send the recent ones again, then the rest, in order."""
        self._unsent.extendleft(reversed(self._sent))
        self._sent.clear()
        if self._unsent:
            self._ready.set()

    def forget_sent(self) -> None:
        """The hub has everything sent so far (it answered after it): no need to replay it."""
        self._sent.clear()
