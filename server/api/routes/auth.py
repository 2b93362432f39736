from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from server.api.deps import HubDep, errors
from server.auth import login
from shared.api import MagicLinkRequest, MagicLinkSent, RefreshRequest, TokenPair, VerifyRequest

router = APIRouter(prefix="/auth", tags=["auth"], responses=errors(400, 401, 422))
#: Sign-in is throttled per address and per client (server/auth/throttle.py).
_THROTTLED = errors(429)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/magic-link", response_model=MagicLinkSent, status_code=202, responses=_THROTTLED)
async def magic_link(body: MagicLinkRequest, hub: HubDep, request: Request) -> MagicLinkSent:
    expires = await login.request_link(hub, body.email, str(request.base_url), _client(request))
    return MagicLinkSent(sent=True, expires_in=expires)


@router.post("/verify", response_model=TokenPair, responses=_THROTTLED)
async def verify(body: VerifyRequest, hub: HubDep, request: Request) -> TokenPair:
    return await login.verify(
        hub, email=body.email, code=body.code, token=body.token, client=_client(request)
    )


@router.get("/verify", response_model=TokenPair, responses=_THROTTLED)
async def verify_link(
    token: Annotated[str, Query(min_length=16, max_length=200)], hub: HubDep, request: Request
) -> TokenPair:
    """The magic link itself: opening it signs in. (The token's bounds are VerifyRequest's, checked
    here as a query parameter: a malformed link is a 422, not a validation error inside the route.)"""
    return await login.verify(hub, email=None, code=None, token=token, client=_client(request))


@router.post("/refresh", response_model=TokenPair)
async def refresh(body: RefreshRequest, hub: HubDep) -> TokenPair:
    return await login.refresh(hub, body.refresh_token)
