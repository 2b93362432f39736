"""Sign-in throttles: fixed windows counted in Redis, so that every hub on one Redis counts together.

A six-digit code is guessable only by many tries: each code takes five (``login.MAX_CODE_ATTEMPTS``),
and these windows bound how many codes an address can be sent and how many tries a client or an
address gets, whatever the number of codes. Past a limit the answer is 429 RATE_LIMIT with
Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from server import keys
from server.errors import ServiceError
from shared.enums import ErrorCode


@dataclass(frozen=True)
class Throttle:
    name: str
    limit: int
    window_s: int
    what: str  # for the message: "sign-in codes for this address"


#: Codes sent to one address, and requests for them from one client.
LINKS_PER_EMAIL = Throttle("link-email", 5, 900, "sign-in codes for this address")
LINKS_PER_CLIENT = Throttle("link-client", 30, 900, "sign-in requests from this client")
#: Tries of a code or a link, per address and per client.
VERIFY_PER_EMAIL = Throttle("verify-email", 10, 900, "sign-in attempts for this address")
VERIFY_PER_CLIENT = Throttle("verify-client", 60, 900, "sign-in attempts from this client")


def key(throttle: Throttle, subject: str) -> str:
    return f"{keys.PREFIX}throttle:{throttle.name}:{subject}"


async def count(redis: aioredis.Redis, throttle: Throttle, subject: str) -> None:
    """Count one use of ``throttle`` by ``subject``; raise 429 past its limit in the window."""
    name = key(throttle, subject)
    pipe = redis.pipeline(transaction=True)
    pipe.set(name, 0, ex=throttle.window_s, nx=True)  # the window starts with its first use
    pipe.incr(name)
    pipe.ttl(name)
    _, used, ttl = await pipe.execute()
    if int(used) > throttle.limit:
        retry_after = max(1, int(ttl))
        raise ServiceError(
            ErrorCode.RATE_LIMIT,
            f"too many {throttle.what}: at most {throttle.limit} in {throttle.window_s // 60} minutes; "
            f"try again in {retry_after} s",
            429,
            {"retryAfterS": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
