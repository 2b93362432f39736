"""Request ids: every REST request gets one (the caller's ``X-Request-ID`` when it is sane, else a
new one), every log line written while serving it carries it, and the response returns it."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logs import log_context

HEADER = b"x-request-id"
#: What a caller-supplied id may look like; anything else (too long, odd characters) is replaced.
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER, b"")
        request_id = given.decode() if _SANE.fullmatch(given) else uuid.uuid4().hex[:16]

        async def add_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER, request_id.encode())]
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, add_header)
