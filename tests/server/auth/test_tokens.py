from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from server.auth.tokens import TokenError, TokenKind, mint, verify
from shared.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def _claims(settings: Settings, **changes: object) -> dict:  # type: ignore[type-arg]
    now = int(time.time())
    claims = {
        "sub": "a",
        "typ": "agent",
        "iat": now,
        "exp": now + 60,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_round_trip_and_kinds(settings: Settings) -> None:
    token = mint(settings, TokenKind.AGENT, "agent-1", name="box")
    principal = verify(settings, token, TokenKind.AGENT)
    assert (principal.subject, principal.name) == ("agent-1", "box")
    with pytest.raises(TokenError, match="cannot be used here"):
        verify(settings, token, TokenKind.ACCESS)


@pytest.mark.parametrize(
    "forge",
    [
        lambda s: jwt.encode(_claims(s), key="", algorithm="none"),
        lambda s: jwt.encode(_claims(s), s.secret(), algorithm="HS512"),
        lambda s: jwt.encode(_claims(s, exp=int(time.time()) - 120), s.secret(), algorithm="HS256"),
        lambda s: jwt.encode(_claims(s, aud="someone-else"), s.secret(), algorithm="HS256"),
        lambda s: jwt.encode(_claims(s, iss="someone-else"), s.secret(), algorithm="HS256"),
        lambda s: jwt.encode(_claims(s, exp=None), s.secret(), algorithm="HS256"),
        lambda s: jwt.encode(_claims(s, typ=None), s.secret(), algorithm="HS256"),
        lambda s: jwt.encode(_claims(s), "another-secret-that-is-long-enough-0123456789", algorithm="HS256"),
        lambda s: "not.a.token",
        lambda s: "",
    ],
    ids=[
        "alg-none",
        "other-alg",
        "expired",
        "audience",
        "issuer",
        "no-exp",
        "no-typ",
        "other-secret",
        "garbage",
        "empty",
    ],
)
def test_forged_tokens_are_refused(settings: Settings, forge) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TokenError):
        verify(settings, forge(settings), TokenKind.AGENT)
