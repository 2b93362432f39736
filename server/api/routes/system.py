from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from server import __version__, services
from server.api.deps import HubDep, UserDep, errors
from server.metrics import CONTENT_TYPE
from shared.api import ComponentHealth, EmergencyStopResult, ErrorBody, Health

router = APIRouter(tags=["system"], responses=errors(401, 403))


@router.post("/emergency-stop", response_model=EmergencyStopResult)
async def emergency_stop(hub: HubDep, user: UserDep) -> EmergencyStopResult:
    return await services.emergency_stop(hub, user.subject, "emergency stop (REST)")


health_router = APIRouter(tags=["system"], responses=errors(401))


_HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {503: {"model": Health}, 500: {"model": ErrorBody}}


# At the root for load balancers and probes, and under /v1 with the rest of the API (the SPEC's list).
@health_router.get("/health", response_model=Health, responses=_HEALTH_RESPONSES)
@health_router.get("/v1/health", response_model=Health, responses=_HEALTH_RESPONSES)
async def health(hub: HubDep) -> JSONResponse:
    checks = await hub.health()
    parts = {name: ComponentHealth(ok=ok, detail=detail) for name, (ok, detail) in checks.items()}
    ok = parts["redis"].ok and parts["database"].ok
    body = Health(
        status="ok" if ok and parts["workers"].ok else ("degraded" if ok else "down"),
        version=__version__,
        hub_id=hub.hub_id,
        redis=parts["redis"],
        database=parts["database"],
        workers=parts["workers"],
        store_backlog=await hub.store.backlog(),
    )
    return JSONResponse(body.wire(), status_code=200 if ok else 503)


@health_router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
        401: {"model": ErrorBody},
    },
)
async def metrics(hub: HubDep, request: Request) -> Response:
    """The hub's Prometheus metrics (text format 0.0.4)."""
    expected = hub.settings.metrics_token
    if expected:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return JSONResponse(
                {"error": "AUTH_FAILED", "message": "/metrics needs the metrics token", "details": None},
                status_code=401,
            )
    # Reading the queue state is a few Redis calls on the sync client: off the event loop.
    body = await asyncio.to_thread(hub.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
