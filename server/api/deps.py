"""Dependencies of the REST routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.auth.tokens import Principal, TokenError, TokenKind, verify
from server.errors import ServiceError
from server.hub import Hub
from shared.enums import ErrorCode

_bearer = HTTPBearer(auto_error=False)


# Both dependencies are ``async`` although they do not wait: FastAPI runs a plain ``def`` dependency
# in its thread pool, two thread hops on every request.
async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


async def current_user(
    hub: HubDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise ServiceError(ErrorCode.AUTH_FAILED, "missing bearer token", 401)
    try:
        return verify(hub.settings, credentials.credentials, TokenKind.ACCESS)
    except TokenError as exc:
        raise ServiceError(ErrorCode.AUTH_FAILED, str(exc), 401) from exc


UserDep = Annotated[Principal, Depends(current_user)]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0)]
