"""JWTs: HS256 only, with exp, iat, aud, iss and sub required. Three kinds, never interchangeable:
``access`` (a user, 15 min), ``agent`` (one agent, bound by ``sub`` = its id), and refresh tokens,
which are opaque random strings stored hashed (see server.auth.login)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum

import jwt

from shared.config import Settings

ALGORITHM = "HS256"
_REQUIRED = ["exp", "iat", "aud", "iss", "sub", "typ"]


class TokenKind(StrEnum):
    ACCESS = "access"
    AGENT = "agent"


class TokenError(Exception):
    """The token is missing, malformed, expired, or not for this use. The message is safe to show."""


class WrongKind(TokenError):
    """A valid token of another kind: an agent's token on the REST API, a user's on an agent socket."""


@dataclass(frozen=True)
class Principal:
    kind: TokenKind
    subject: str  # the user's email, or the agent's id
    name: str  # the agent's name, or the email
    jti: str
    expires_at: int = 0  # the token's exp (seconds since the epoch)
    issued_at: int = 0  # its iat


def mint(
    settings: Settings, kind: TokenKind, subject: str, *, name: str = "", ttl_s: int | None = None
) -> str:
    now = int(time.time())
    if ttl_s is None:
        ttl_s = settings.access_token_ttl_s if kind is TokenKind.ACCESS else settings.agent_token_ttl_s
    claims = {
        "sub": subject,
        "typ": kind.value,
        "name": name or subject,
        "iat": now,
        "nbf": now - 5,
        "exp": now + ttl_s,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.secret(), algorithm=ALGORITHM)


def verify(settings: Settings, token: str, expected: TokenKind) -> Principal:
    if not token:
        raise TokenError("no token")
    try:
        claims = jwt.decode(
            token,
            settings.secret(),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": _REQUIRED},
            leeway=5,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {type(exc).__name__}") from exc
    if claims.get("typ") != expected.value:
        raise WrongKind(
            f"a {claims.get('typ')!s} token cannot be used here; a {expected.value} token is needed"
        )
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise TokenError("invalid token: bad subject")
    return Principal(
        kind=expected,
        subject=subject,
        name=str(claims.get("name", subject)),
        jti=str(claims.get("jti", "")),
        expires_at=int(claims["exp"]),
        issued_at=int(claims["iat"]),
    )
