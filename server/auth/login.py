"""Sign-in by magic link or one-time code, and rotating refresh tokens.

The code and the link token are sent by email (SMTP from settings) or, with no SMTP configured,
printed to the hub's log for the operator. Only their hashes are stored. A refresh token is used
once: refreshing returns a new pair, and presenting a used token again revokes its whole family
(someone else has a copy).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import smtplib
import uuid
from email.message import EmailMessage

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.auth import throttle
from server.auth.tokens import TokenKind, mint
from server.db.models import LoginCodeRow, RefreshTokenRow, UserRow
from server.errors import ServiceError
from server.hub import Hub
from shared.api import TokenPair
from shared.enums import ErrorCode
from shared.protocol import now_ms

log = logging.getLogger("onsembl.login")

MAX_CODE_ATTEMPTS = 5


def _hash(value: str, secret: str) -> str:
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def _auth_failed(message: str) -> ServiceError:
    return ServiceError(ErrorCode.AUTH_FAILED, message, 401)


async def request_link(hub: Hub, email: str, base_url: str, client: str) -> int:
    """Send a code and a link to ``email``; ``client`` is the requester's address, for the throttles."""
    settings = hub.settings
    email = email.strip().lower()
    await throttle.count(hub.redis, throttle.LINKS_PER_CLIENT, client)
    await throttle.count(hub.redis, throttle.LINKS_PER_EMAIL, email)
    if settings.allowed_emails and email not in {e.lower() for e in settings.allowed_emails}:
        # Say nothing about which addresses exist; just do not send.
        log.warning("sign-in requested for %s, which is not in allowed_emails", email)
        return settings.magic_link_ttl_s
    secret = settings.secret()
    code = f"{secrets.randbelow(1_000_000):06d}"
    token = secrets.token_urlsafe(32)
    async with hub.sessions() as session, session.begin():
        session.add(
            LoginCodeRow(
                id=uuid.uuid4().hex,
                email=email,
                code_hash=_hash(f"{email}:{code}", secret),
                token_hash=_hash(token, secret),
                expires_at=now_ms() + settings.magic_link_ttl_s * 1000,
            )
        )
    link = f"{(settings.public_url or base_url).rstrip('/')}/v1/auth/verify?token={token}"
    minutes = settings.magic_link_ttl_s // 60
    body = f"Your Onsembl sign-in code is {code}\n\nOr open: {link}\n\nIt expires in {minutes} minutes."
    if settings.smtp_host:
        await asyncio.to_thread(_send_mail, hub, email, body)
    else:
        # No SMTP: the operator reads the code from the hub's log.
        log.warning("sign-in code for %s: %s (magic link: %s)", email, code, link)
    await hub.audit(email, "auth.magic_link_requested")
    return settings.magic_link_ttl_s


def _send_mail(hub: Hub, to: str, body: str) -> None:
    s = hub.settings
    message = EmailMessage()
    message["From"] = s.smtp_from
    message["To"] = to
    message["Subject"] = "Your Onsembl sign-in code"
    message.set_content(body)
    with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=20) as smtp:
        if s.smtp_port != 25:
            smtp.starttls()
        if s.smtp_user:
            smtp.login(s.smtp_user, s.smtp_password.get_secret_value() if s.smtp_password else "")
        smtp.send_message(message)


async def verify(
    hub: Hub, *, email: str | None, code: str | None, token: str | None, client: str
) -> TokenPair:
    await throttle.count(hub.redis, throttle.VERIFY_PER_CLIENT, client)
    if not token and email:
        await throttle.count(hub.redis, throttle.VERIFY_PER_EMAIL, email.strip().lower())
    secret = hub.settings.secret()
    now = now_ms()
    async with hub.sessions() as session, session.begin():
        if token:
            row = (
                await session.execute(
                    select(LoginCodeRow).where(LoginCodeRow.token_hash == _hash(token, secret))
                )
            ).scalar_one_or_none()
        else:
            assert email and code
            email = email.strip().lower()
            rows = list(
                (
                    await session.execute(
                        select(LoginCodeRow)
                        .where(
                            LoginCodeRow.email == email,
                            LoginCodeRow.used_at.is_(None),
                            LoginCodeRow.expires_at > now,
                        )
                        .order_by(LoginCodeRow.expires_at.desc())
                    )
                ).scalars()
            )
            row = None
            expected = _hash(f"{email}:{code}", secret)
            for candidate in rows:
                if (
                    hmac.compare_digest(candidate.code_hash, expected)
                    and candidate.attempts < MAX_CODE_ATTEMPTS
                ):
                    row = candidate
                    break
                candidate.attempts += 1
        if row is None or row.used_at is not None or row.expires_at <= now:
            raise _auth_failed("the code or link is wrong, used or expired; request a new one")
        row.used_at = now
        user = await session.get(UserRow, row.email)
        if user is None:
            session.add(UserRow(email=row.email, created_at=now, last_login=now))
        else:
            user.last_login = now
        pair = await _issue(hub, session, row.email, family_id=uuid.uuid4().hex)
    await hub.audit(pair.email, "auth.login")
    return pair


async def _issue(hub: Hub, session: AsyncSession, email: str, family_id: str) -> TokenPair:
    s = hub.settings
    refresh = secrets.token_urlsafe(32)
    session.add(
        RefreshTokenRow(
            id=uuid.uuid4().hex,
            email=email,
            token_hash=_hash(refresh, s.secret()),
            family_id=family_id,
            created_at=now_ms(),
            expires_at=now_ms() + s.refresh_token_ttl_s * 1000,
        )
    )
    access = mint(s, TokenKind.ACCESS, email, name=email)
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=s.access_token_ttl_s, email=email)


async def refresh(hub: Hub, token: str) -> TokenPair:
    now = now_ms()
    async with hub.sessions() as session, session.begin():
        row = (
            await session.execute(
                select(RefreshTokenRow).where(
                    RefreshTokenRow.token_hash == _hash(token, hub.settings.secret())
                )
            )
        ).scalar_one_or_none()
        if row is None or row.expires_at <= now:
            raise _auth_failed("refresh token unknown or expired; sign in again")
        if row.revoked_at is not None:
            # Reuse of a rotated token: someone else holds a copy. End the whole family.
            await session.execute(
                update(RefreshTokenRow)
                .where(RefreshTokenRow.family_id == row.family_id, RefreshTokenRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            email = row.email
            reused = True
        else:
            row.revoked_at = now
            pair = await _issue(hub, session, row.email, row.family_id)
            reused = False
    if reused:
        await hub.audit(email, "auth.refresh_reused", note="refresh token family revoked")
        raise _auth_failed("refresh token was already used; all sessions from that sign-in are revoked")
    return pair
