"""The event stream: every change the TUIs see and the store records goes through one Redis stream.

Hubs append to it (output, statuses, traces) and RQ jobs do too (dispatch, time limits). Every hub
reads it to relay events to its own TUI clients, and a consumer group writes it to the database, so
two hubs on one Redis serve as one, and a hub that dies loses nothing that reached Redis.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel

from server import keys
from server.queue.scripts import FIELD_SEPARATOR, PUBLISH_EVENTS
from shared.protocol import StreamEnvelope, stream_json

log = logging.getLogger(__name__)

#: Events written by one Lua call at most.
PUBLISH_BATCH = 500
#: A Lua call stops taking events once they hold this many characters (the call is one argument,
#: and Redis refuses arguments over 512 MB; events are up to 1 MiB).
PUBLISH_MAX_CHARS = 16 * 1024 * 1024
#: Unflushed events a hub holds before publishers wait for Redis.
MAX_UNFLUSHED = 20_000
#: The stream keeps this many events at least, however large they are.
MIN_STREAM_EVENTS = 100
#: Entries of the publisher's book of what it keeps in the stream, at most: past it, the two oldest
#: merge (an idle hub makes a call an event, and the count allows 200,000 of them).
BOOK_ENTRIES = 1024


def encode(event: BaseModel) -> str:
    if isinstance(event, StreamEnvelope):
        return stream_json(event)
    return event.model_dump_json(by_alias=True)


@dataclass(slots=True)
class _Item:
    dedupe_key: str
    sequence: int
    data: str
    local_tag: str


@dataclass
class EventPublisher:
    """Appends events to the stream in batches: whatever piles up while one Redis call is in flight
    goes in the next, so a busy hub makes one round trip per batch, not per line, and an idle one adds
    no delay."""

    redis: aioredis.Redis
    maxlen: int
    #: About how many characters of events the stream keeps (0: no bound but ``maxlen``).
    max_chars: int = 0
    _pending: list[_Item] = field(default_factory=list)
    #: What this hub's calls put in the stream that it still keeps, oldest first: (events,
    #: characters) per call. The byte bound is reckoned on it.
    _kept: deque[tuple[int, int]] = field(default_factory=deque)
    _kept_events: int = 0
    _kept_chars: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _room: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    published: int = 0
    failures: int = 0

    @property
    def pending(self) -> int:
        """Events queued here that Redis has not taken yet."""
        return len(self._pending)

    @property
    def has_room(self) -> bool:
        """Whether an event may be queued now without ``wait_for_room``."""
        return len(self._pending) < MAX_UNFLUSHED

    def start(self) -> None:
        self._room.set()
        self._script = self.redis.register_script(PUBLISH_EVENTS)
        self._task = asyncio.create_task(self._run(), name="event-publisher")

    async def stop(self) -> None:
        if self._task is None:
            return
        # Flush what is left, then stop.
        for _ in range(100):
            if not self._pending:
                break
            self._wake.set()
            await asyncio.sleep(0.01)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def publish(self, event: BaseModel, *, dedupe_key: str = "", sequence: int = 0) -> None:
        self.publish_json(encode(event), dedupe_key=dedupe_key, sequence=sequence)
        await self.wait_for_room()

    def publish_json(
        self, data: str, *, dedupe_key: str = "", sequence: int = 0, local_tag: str = ""
    ) -> None:
        """Queue an event already serialised as ``encode`` does; then ``await wait_for_room()``.
        ``local_tag``: the hub has handed the event to its own TUIs already (``Hub.deliver_local``)."""
        self._pending.append(_Item(dedupe_key, sequence, data, local_tag))
        self._wake.set()

    async def wait_for_room(self) -> None:
        if not self.has_room:
            self._room.clear()
            await self._room.wait()

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:PUBLISH_BATCH]
                size = 0
                for count, item in enumerate(batch, 1):
                    size += len(item.data)
                    if size >= PUBLISH_MAX_CHARS:
                        del batch[count:]  # the rest goes in the next call
                        break
                fields: list[str] = []
                for item in batch:
                    fields.extend((item.dedupe_key, str(item.sequence), item.data, item.local_tag))
                fields.append("")  # every field is followed by the separator
                args: list[int | str] = [self._stream_limit(len(batch), size), FIELD_SEPARATOR.join(fields)]
                while True:
                    try:
                        await self._script(keys=[keys.EVENTS_STREAM], args=args)
                        break
                    except (redis.RedisError, OSError) as exc:
                        # Redis is away: keep the events and try the call again; they are
                        # published in order once it is back.
                        self.failures += 1
                        log.warning("event stream unavailable (%s); retrying in %.2fs", exc, backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 2.0)
                backoff = 0.05
                del self._pending[: len(batch)]
                self.published += len(batch)
            self._room.set()

    def _stream_limit(self, events: int, chars: int) -> int:
        """Book a call's events as kept in the stream, and say how long the stream is to be after it:
        ``maxlen``; or, once the events this hub keeps there hold more than ``max_chars``
        characters, as many of the newest as fit in that (at least ``MIN_STREAM_EVENTS``). A flood
        of large output lines thus costs Redis about ``max_chars``, and the stream is never cut on
        account of events it does not hold (a hub starts with an empty book: what the stream held
        before is bounded by the count)."""
        kept = self._kept
        kept.append((events, chars))
        self._kept_events += events
        self._kept_chars += chars
        if len(kept) > BOOK_ENTRIES:
            first_events, first_chars = kept.popleft()
            second_events, second_chars = kept.popleft()
            kept.appendleft((first_events + second_events, first_chars + second_chars))
        # Calls past the count are trimmed by it anyway.
        while len(kept) > 1 and self._kept_events - kept[0][0] >= self.maxlen:
            self._forget_oldest()
        if not self.max_chars or self._kept_chars <= self.max_chars:
            return self.maxlen
        while len(kept) > 1 and self._kept_chars - kept[0][1] >= self.max_chars:
            self._forget_oldest()
        # The oldest call booked straddles the bound: of its events, the share that fits is kept.
        oldest_events, oldest_chars = kept[0]
        over = self._kept_chars - self.max_chars
        cut = math.ceil(oldest_events * over / oldest_chars) if over > 0 and oldest_chars else 0
        return max(MIN_STREAM_EVENTS, min(self.maxlen, self._kept_events - cut))

    def _forget_oldest(self) -> None:
        events, chars = self._kept.popleft()
        self._kept_events -= events
        self._kept_chars -= chars


def publish_sync(client: redis.Redis, events: Sequence[BaseModel], maxlen: int) -> None:
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd(keys.EVENTS_STREAM, {"m": encode(event)}, maxlen=maxlen, approximate=True)
    pipe.execute()
