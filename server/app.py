"""The FastAPI application. The lifespan owns the hub's connections (Redis, database, tasks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server import __version__
from server.api.routes import agents, audit, auth, commands, constraints, presets, reports, system
from server.errors import ServiceError
from server.hub import Hub
from server.maintenance import run_maintenance
from server.metrics import HttpMetricsMiddleware, HubMetrics
from server.request_context import RequestIdMiddleware
from server.ws import agent as agent_ws
from server.ws import dashboard as dashboard_ws
from shared.config import Settings

log = logging.getLogger(__name__)

_HTTP_ERRORS = {
    400: "BAD_REQUEST",
    401: "AUTH_FAILED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    422: "INVALID_MESSAGE",
    429: "RATE_LIMIT",
}


def _error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message, "details": details}, status_code=status, headers=headers
    )


def create_app(settings: Settings | None = None, *, embedded_workers: int = 0) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_hub = Hub(settings, embedded_workers=embedded_workers)
        await the_hub.start()
        app.state.hub = the_hub
        maintenance = asyncio.create_task(run_maintenance(the_hub), name="maintenance")
        try:
            yield
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            await the_hub.stop()

    app = FastAPI(
        title="Onsembl hub",
        version=__version__,
        description="Control center for AI coding agents: REST API. WebSockets: /ws/agent and /ws/dashboard.",
        lifespan=lifespan,
    )

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.code.value, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "loc": ".".join(str(p) for p in e.get("loc", ())),
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()[:20]
        ]
        return _error(422, "INVALID_MESSAGE", "the request does not match the API", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _error(exc.status_code, _HTTP_ERRORS.get(exc.status_code, "HTTP_ERROR"), str(exc.detail))
        # Starlette's own headers go out too: Allow on a 405 (RFC 9110), WWW-Authenticate on a 401.
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow names the methods of the first route whose path matched; a path served
            # by several routes (GET and POST /v1/commands) supports all of theirs.
            allowed = _allowed_methods(app, request.url.path)
            if allowed:
                response.headers["Allow"] = allowed
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "INTERNAL_ERROR", "the hub failed to handle the request")

    for module in (auth, agents, commands, presets, reports, audit, constraints, system):
        app.include_router(module.router, prefix="/v1")
    app.include_router(system.health_router)
    app.include_router(agent_ws.router)
    app.include_router(dashboard_ws.router)
    app.add_middleware(HttpMetricsMiddleware, metrics=lambda: _hub_metrics(app))
    app.add_middleware(RequestIdMiddleware)
    return app


def _allowed_methods(app: FastAPI, path: str) -> str:
    """The methods the OpenAPI document gives for ``path`` (``GET, POST``), or "" when it has none."""
    table: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(pattern), ", ".join(sorted(m.upper() for m in operations))))
        app.state.allowed_methods = table
    return next((methods for pattern, methods in table if pattern.fullmatch(path)), "")


def _hub_metrics(app: FastAPI) -> HubMetrics | None:
    hub: Hub | None = getattr(app.state, "hub", None)
    return hub.metrics if hub is not None else None
