"""Dependencies of the REST routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.auth.tokens import Principal, TokenError, TokenKind, WrongKind, verify
from server.errors import ServiceError
from server.hub import Hub
from shared.api import ErrorBody
from shared.enums import ErrorCode
from shared.model import MAX_INT

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
    except WrongKind as exc:
        # Authenticated, but as something the REST API does not serve: an agent.
        raise ServiceError(ErrorCode.AUTH_FAILED, str(exc), 403) from exc
    except TokenError as exc:
        raise ServiceError(ErrorCode.AUTH_FAILED, str(exc), 401) from exc


UserDep = Annotated[Principal, Depends(current_user)]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=MAX_INT)]
#: For the lists that a client usually takes whole (the fleet, a command's trace tree): paged when
#: asked, like the others, and whole without a limit.
OptionalLimit = Annotated[int | None, Query(ge=1, le=100)]


_STATUS_TEXT = {
    400: "Bad input (the body is valid JSON of the right shape, but says something impossible)",
    401: "Missing, expired or wrong bearer token",
    404: "Not found",
    403: "A valid token of the wrong kind (an agent's token on the REST API)",
    409: "Conflict with the current state",
    422: "The request does not match the API",
    429: "Too many requests of this kind; Retry-After says when to try again",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route declares in the OpenAPI document: ``{error, message, details}``.
    (FastAPI's own 422 schema, ``{detail: [...]}``, is not what the hub sends: see server.app.)"""
    return {status: {"model": ErrorBody, "description": _STATUS_TEXT[status]} for status in statuses}
