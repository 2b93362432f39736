from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server import __version__, services
from server.api.deps import HubDep, UserDep
from shared.api import ComponentHealth, EmergencyStopResult, ErrorBody, Health

router = APIRouter(tags=["system"])


@router.post("/emergency-stop", response_model=EmergencyStopResult)
async def emergency_stop(hub: HubDep, user: UserDep) -> EmergencyStopResult:
    return await services.emergency_stop(hub, user.subject, "emergency stop (REST)")


health_router = APIRouter(tags=["system"])


@health_router.get(
    "/health", response_model=Health, responses={503: {"model": Health}, 500: {"model": ErrorBody}}
)
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
