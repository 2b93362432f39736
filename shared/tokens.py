"""Reading a token's claims without verifying it: a client does, to learn which agent or user a token
is for and when it ends; the hub checks the signature. (By hand: PyJWT pulls in ``cryptography``,
8 MB of an idle wrapper's memory, to verify nothing here.)"""

from __future__ import annotations

import base64
import binascii
import json


def token_claims(token: str) -> dict[str, object]:
    """A JWT's claims, unverified. ValueError when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("the token is not a JWT: it does not have three dot-separated parts")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"the token is not a JWT: its claims do not decode ({exc})") from exc
    if not isinstance(claims, dict):
        raise ValueError("the token is not a JWT: its claims are not an object")
    return claims
