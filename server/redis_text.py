"""Typed views of redis-py replies. redis-py types them ``bytes | str`` (``str`` only with
``decode_responses``, which Onsembl never sets) and unions the shapes of every variant of a command;
these helpers say which shape the caller asked for and turn members into text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from redis.typing import StreamRangeResponse, XReadGroupResponse, XReadResponse, ZSetRangeResponse

#: A stream entry: its id and its fields.
StreamEntry = tuple[bytes, dict[bytes, bytes]]


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def as_texts(members: ZSetRangeResponse | Iterable[bytes | str]) -> list[str]:
    """Members of a SMEMBERS, or of a ZRANGE without scores, as text."""
    return [as_text(cast("bytes | str", m)) for m in members]


def text_hash(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in raw.items()}


def stream_entries(reply: StreamRangeResponse | None) -> list[StreamEntry]:
    """The entries of an XRANGE or XREVRANGE reply (only XREADGROUP and XAUTOCLAIM give None fields)."""
    return cast("list[StreamEntry]", reply or [])


def read_entries(reply: XReadResponse | XReadGroupResponse) -> list[StreamEntry]:
    """The entries of an XREAD or XREADGROUP reply on one stream (RESP2: ``[[stream, entries]]``)."""
    return cast("list[StreamEntry]", cast("list[list[Any]]", reply)[0][1]) if reply else []
