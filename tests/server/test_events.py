"""The event publisher against a real Redis: events reach the stream in order with their local tags,
output the stream already has (by sequence) is dropped, and text with every kind of character comes
back as it went in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from server import events as server_events
from server import keys
from server.events import PUBLISH_BATCH, EventPublisher
from server.redis_embedded import EmbeddedRedis
from tests.harness import async_wait_until


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[aioredis.Redis]:
    server = EmbeddedRedis(tmp_path / "redis", tmp_path / "redis" / "r.sock")
    client = aioredis.Redis.from_url(server.ensure())
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


@pytest.fixture
async def publisher(client: aioredis.Redis) -> AsyncIterator[tuple[EventPublisher, aioredis.Redis]]:
    events = EventPublisher(client, maxlen=100_000)
    events.start()
    try:
        yield events, client
    finally:
        await events.stop()


async def stream(client: aioredis.Redis) -> list[tuple[str, str | None]]:
    entries = await client.xrange(keys.EVENTS_STREAM)
    return [
        (fields[b"m"].decode(), fields[b"l"].decode() if b"l" in fields else None) for _, fields in entries
    ]


async def test_events_reach_the_stream_in_order_and_replays_are_dropped(
    publisher: tuple[EventPublisher, aioredis.Redis],
) -> None:
    events, client = publisher
    # More than one Lua call's worth, with a status event (no key) in between.
    lines = [json.dumps({"n": n, "text": f"line {n}"}) for n in range(PUBLISH_BATCH + 20)]
    for n, data in enumerate(lines):
        events.publish_json(data, dedupe_key="onsembl:execution:e1", sequence=n, local_tag=f"hub-1:{n}")
        if n == 10:
            events.publish_json('{"status":"EXECUTING"}')
    await async_wait_until(lambda: events.published == len(lines) + 1 and not events.pending, 10, "publish")
    got = await stream(client)
    assert got[11] == ('{"status":"EXECUTING"}', None)
    del got[11]
    assert got == [(data, f"hub-1:{n}") for n, data in enumerate(lines)]

    # A replay of lines 5-9 and one new line: only the new one is appended.
    for n in range(5, 10):
        events.publish_json(lines[n], dedupe_key="onsembl:execution:e1", sequence=n)
    events.publish_json('{"n":"new"}', dedupe_key="onsembl:execution:e1", sequence=len(lines))
    await async_wait_until(lambda: not events.pending, 10, "publish")
    assert (await stream(client))[-1] == ('{"n":"new"}', None)
    assert await client.xlen(keys.EVENTS_STREAM) == len(lines) + 2
    assert await client.hget("onsembl:execution:e1", "last_seq") == str(len(lines)).encode()


async def test_any_text_comes_back_as_it_went_in(publisher: tuple[EventPublisher, aioredis.Redis]) -> None:
    events, client = publisher
    # JSON escapes control characters (the separator among them); the rest is carried as is.
    text = "tab\t nul\x00 sep\x1f bell\x07 é 漢字 🙂 \\ \" ' \r\n" + "x" * 70_000
    data = json.dumps({"content": text}, ensure_ascii=False)
    events.publish_json(data, dedupe_key="", sequence=0, local_tag="")
    events.publish_json("{}", dedupe_key="onsembl:execution:e2", sequence=0, local_tag="host.example-1:0")
    await async_wait_until(lambda: events.published == 2, 10, "publish")
    got = await stream(client)
    assert got == [(data, None), ("{}", "host.example-1:0")]
    assert json.loads(got[0][0])["content"] == text


async def test_a_call_stops_taking_events_at_its_size_cap(
    publisher: tuple[EventPublisher, aioredis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    events, client = publisher
    monkeypatch.setattr(server_events, "PUBLISH_MAX_CHARS", 100)
    lines = [json.dumps({"n": n, "pad": "x" * 40}) for n in range(10)]
    for n, data in enumerate(lines):
        events.publish_json(data, dedupe_key="onsembl:execution:e3", sequence=n)
    await async_wait_until(lambda: events.published == len(lines), 10, "publish")
    assert await stream(client) == [(data, None) for data in lines]


async def test_large_events_shorten_the_stream_to_its_byte_bound(client: aioredis.Redis) -> None:
    events = EventPublisher(client, maxlen=100_000, max_chars=2_000_000)
    events.start()
    try:
        # 1,000 lines of 10,000 characters: 200 fit the bound (the count would keep them all).
        for n in range(1000):
            events.publish_json(json.dumps({"n": n, "text": "x" * 10_000}))
        await async_wait_until(lambda: events.published == 1000 and not events.pending, 20, "publish")
        assert 190 <= await client.xlen(keys.EVENTS_STREAM) <= 260
        # 5,000 small ones: they fit beside what is left of the large ones, which are trimmed only
        # as far as the bound needs.
        for n in range(5000):
            events.publish_json(json.dumps({"n": n}))
        await async_wait_until(lambda: events.published == 6000 and not events.pending, 20, "publish")
        kept = await client.xrange(keys.EVENTS_STREAM)
        large = sum(len(fields[b"m"]) > 1000 for _, fields in kept)
        assert len(kept) - large == 5000 and 150 <= large <= 200, (len(kept), large)
    finally:
        await events.stop()


async def test_a_hub_that_starts_does_not_cut_what_the_stream_holds(client: aioredis.Redis) -> None:
    """The byte bound is reckoned on the events a hub published itself: a new hub (a restart) keeps
    the stream's older entries, the store's backlog among them, to the count."""
    for n in range(3000):
        await client.xadd(keys.EVENTS_STREAM, {"m": json.dumps({"old": n, "text": "y" * 1000})})
    events = EventPublisher(client, maxlen=100_000, max_chars=2_000_000)
    events.start()
    try:
        events.publish_json(json.dumps({"new": 1}))
        await async_wait_until(lambda: events.published == 1 and not events.pending, 20, "publish")
        assert await client.xlen(keys.EVENTS_STREAM) == 3001
    finally:
        await events.stop()


def test_the_book_of_kept_events_stays_small_and_still_bounds_the_stream() -> None:
    """One event a call (an idle hub) for long: the book merges its oldest entries, and the limit
    still keeps about the bound's worth of events."""
    publisher = EventPublisher(None, maxlen=100_000, max_chars=1_000_000)  # type: ignore[arg-type]
    limits = [publisher._stream_limit(1, 100) for _ in range(50_000)]
    assert len(publisher._kept) <= server_events.BOOK_ENTRIES
    assert limits[5_000] == 100_000  # 500,000 characters: under the bound, the count rules
    assert 9_900 <= limits[-1] <= 10_100  # 1,000,000 characters of 100 each
