"""Auth against a live hub: forged and misused tokens on both sockets and on REST (header and query
string), a rotated refresh token used again, tokens of one kind where another is needed, an agent's
token speaking for another agent, and foreign Origins with an allow-list. Target: accepted 0 (and the
real tokens and the allowed Origin accepted, so the test can tell). Then no token, nor anything shaped
like a JWT, in the hub's log or the wrapper's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from shared.config import Settings
from shared.enums import AgentType
from shared.protocol import AgentConnect, AgentConnectPayload, DashboardConnect
from tests.harness import HubProcess, start_agent, timeout
from tests.reliability.helpers import closed_with, figure, heartbeat_works, open_agent

pytestmark = pytest.mark.reliability

ALLOWED_ORIGIN = "https://tui.example"
FOREIGN_ORIGINS = [
    "https://evil.example",
    "https://tui.example.evil.example",
    "http://tui.example",
    "https://tui.example:8443",
    "HTTPS://TUI.EXAMPLE",
    "null",
    "https://tui.example/",
]
#: Anything shaped like a JWT: two base64url JSON objects (header and claims), signed or not.
JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}")


@pytest.fixture(scope="module")
def auth_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(
        tmp_path_factory.mktemp("auth-hub"),
        env_overrides={"ONSEMBL_ALLOWED_ORIGINS": json.dumps([ALLOWED_ORIGIN])},
        workers=2,
    ).start()
    assert hub.settings.allowed_origins == [ALLOWED_ORIGIN]
    yield hub
    hub.stop()
    hub.shutdown_redis()


# ---- forging ---------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(settings: Settings, kind: str, subject: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": subject,
        "typ": kind,
        "name": subject,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "jti": "forged",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs256_raw(payload: dict[str, Any], key: bytes) -> str:
    """HS256 by hand: PyJWT refuses to use a PEM public key as an HMAC secret (the confusion attack)."""
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(payload).encode())
    return signing_input + "." + _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def forged_tokens(settings: Settings, kind: str, subject: str, genuine: str) -> dict[str, str]:
    """Tokens the hub must refuse, for a ``kind`` (access or agent) token of ``subject``."""
    secret = settings.secret()
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = claims(settings, kind, subject)
    header, payload, signature = genuine.split(".")
    tampered = dict(jwt.decode(genuine, options={"verify_signature": False}), sub="someone-else")
    now = int(time.time())
    return {
        "alg none": jwt.encode(good, key="", algorithm="none"),
        "alg none, capitalised": _b64(b'{"alg":"None","typ":"JWT"}')
        + "."
        + _b64(json.dumps(good).encode())
        + ".",
        "RS256 with its own key": jwt.encode(good, private_pem, algorithm="RS256"),
        "HS256 keyed with a public key PEM": hs256_raw(good, public_pem),
        "HS512 with the hub's secret": jwt.encode(good, secret, algorithm="HS512"),
        "expired": jwt.encode(claims(settings, kind, subject, exp=now - 120), secret, algorithm="HS256"),
        "not valid yet": jwt.encode(
            claims(settings, kind, subject, nbf=now + 600), secret, algorithm="HS256"
        ),
        "wrong audience": jwt.encode(
            claims(settings, kind, subject, aud="someone-else"), secret, algorithm="HS256"
        ),
        "wrong issuer": jwt.encode(
            claims(settings, kind, subject, iss="someone-else"), secret, algorithm="HS256"
        ),
        "no exp": jwt.encode(claims(settings, kind, subject, exp=None), secret, algorithm="HS256"),
        "no typ": jwt.encode(claims(settings, kind, subject, typ=None), secret, algorithm="HS256"),
        "another secret": jwt.encode(
            good, "another-secret-that-is-long-enough-0123456789abc", algorithm="HS256"
        ),
        "signature stripped": f"{header}.{payload}.",
        "claims changed, signature kept": f"{header}.{_b64(json.dumps(tampered).encode())}.{signature}",
        "garbage": "not-a-token",
    }


# ---- trying a token ------------------------------------------------------------------------------


async def socket_accepts(
    hub: HubProcess,
    path: str,
    token: str | None,
    hello: str,
    *,
    query: bool = False,
    origin: str | None = None,
) -> bool:
    """Whether the hub let this connection in (SERVER_HEARTBEAT or DASHBOARD_READY). A refusal must be
    ERROR AUTH_FAILED and close 1008."""
    url = hub.ws_url + path
    headers: dict[str, str] = {}
    if token is not None and query:
        url += "?token=" + token
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if origin is not None:
        headers["Origin"] = origin
    try:
        ws = await connect(url, additional_headers=headers, open_timeout=timeout(10))
    except InvalidStatus:
        return False  # refused at the handshake: not accepted either
    try:
        try:
            await ws.send(hello)
        except ConnectionClosed:
            pass  # the hub may refuse before the first message: its ERROR is still there to read
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
        except ConnectionClosed:
            first = None
        if first is not None and first["type"] in ("SERVER_HEARTBEAT", "DASHBOARD_READY"):
            return True
        code, _ = await closed_with(ws)
        assert first is not None and first["type"] == "ERROR", (path, first)
        assert first["payload"]["code"] == "AUTH_FAILED" and first["payload"]["recoverable"] is False, first
        assert code == 1008, (path, code)
        return False
    finally:
        await ws.close()


def rest_accepts(hub: HubProcess, token: str, *, query: bool = False) -> bool:
    if query:
        response = httpx.get(hub.url + "/v1/agents", params={"token": token}, timeout=timeout(10))
    else:
        response = httpx.get(
            hub.url + "/v1/agents", headers={"Authorization": f"Bearer {token}"}, timeout=timeout(10)
        )
    if response.status_code in (401, 403):  # 403: a valid token of another kind
        assert response.json()["error"] == "AUTH_FAILED"
        return False
    return True


def _hello(agent_id: str) -> str:
    return AgentConnect(payload=AgentConnectPayload(agent_id=agent_id, agent_type=AgentType.SHELL)).to_json()


# ---- the tests -------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_no_forged_or_misused_token_is_accepted_and_none_is_logged(auth_hub: HubProcess) -> None:
    hub = auth_hub
    settings = hub.settings
    used: set[str] = set()
    wrapper = start_agent(hub, "auth-wrapper")  # a real wrapper, so there is a wrapper log to scan
    try:
        agent_id, agent_token = hub.agent_token("auth-agent")
        other_id, other_token = hub.agent_token("auth-other")
        user_token = hub.user_token("auth@example.com")
        used |= {agent_token, other_token, user_token}
        dashboard_hello = DashboardConnect().to_json()

        # The genuine tokens are let in: the checks below can tell acceptance from refusal.
        assert await socket_accepts(hub, "/ws/agent", agent_token, _hello(agent_id))
        assert await socket_accepts(hub, "/ws/agent", agent_token, _hello(agent_id), query=True)
        assert await socket_accepts(hub, "/ws/dashboard", user_token, dashboard_hello)
        assert await socket_accepts(hub, "/ws/dashboard", user_token, dashboard_hello, query=True)
        assert rest_accepts(hub, user_token)

        attempts: dict[str, int] = {}
        accepted: list[str] = []

        async def attempt(group: str, label: str, ok: bool) -> None:
            attempts[group] = attempts.get(group, 0) + 1
            if ok:
                accepted.append(f"{group}: {label}")

        # Forged tokens, on every surface, in the header and in the query string.
        agent_forgeries = forged_tokens(settings, "agent", agent_id, agent_token)
        user_forgeries = forged_tokens(settings, "access", "auth@example.com", user_token)
        used |= set(agent_forgeries.values()) | set(user_forgeries.values())
        for label, token in agent_forgeries.items():
            for query in (False, True):
                await attempt(
                    "forged",
                    f"agent socket {label}",
                    await socket_accepts(hub, "/ws/agent", token, _hello(agent_id), query=query),
                )
        for label, token in user_forgeries.items():
            for query in (False, True):
                await attempt(
                    "forged",
                    f"dashboard socket {label}",
                    await socket_accepts(hub, "/ws/dashboard", token, dashboard_hello, query=query),
                )
                await attempt("forged", f"REST {label}", rest_accepts(hub, token, query=query))

        # A refresh token used twice: refused, and so is the whole family after it.
        access, first_refresh = await asyncio.to_thread(sign_in, hub, "refresh@example.com")
        async with httpx.AsyncClient(base_url=hub.url + "/v1", timeout=timeout(10)) as client:
            rotated = await client.post("/auth/refresh", json={"refreshToken": first_refresh})
            assert rotated.status_code == 200, rotated.text
            second_refresh = rotated.json()["refreshToken"]
            used |= {access, first_refresh, second_refresh, rotated.json()["accessToken"]}
            reused = await client.post("/auth/refresh", json={"refreshToken": first_refresh})
            await attempt("refresh reuse", "the rotated refresh token again", reused.status_code != 401)
            after = await client.post("/auth/refresh", json={"refreshToken": second_refresh})
            await attempt(
                "refresh reuse", "the family's newer refresh token after the reuse", after.status_code != 401
            )

        # One kind of token where another is needed.
        cross = {
            "user token on the agent socket": socket_accepts(hub, "/ws/agent", user_token, _hello(agent_id)),
            "agent token on the dashboard socket": socket_accepts(
                hub, "/ws/dashboard", agent_token, dashboard_hello
            ),
            "refresh token on the dashboard socket": socket_accepts(
                hub, "/ws/dashboard", second_refresh, dashboard_hello
            ),
            "refresh token on the agent socket": socket_accepts(
                hub, "/ws/agent", second_refresh, _hello(agent_id)
            ),
        }
        for label, check in cross.items():
            await attempt("wrong kind", label, await check)
        await attempt("wrong kind", "agent token on REST", rest_accepts(hub, agent_token))
        await attempt("wrong kind", "refresh token on REST", rest_accepts(hub, second_refresh))

        # An agent's token speaking for another agent: at the connect, by path, and in a message.
        await attempt(
            "impersonation",
            "AGENT_CONNECT as another agent",
            await socket_accepts(hub, "/ws/agent", agent_token, _hello(other_id)),
        )
        await attempt(
            "impersonation",
            "/ws/agent/{other id}",
            await socket_accepts(hub, f"/ws/agent/{other_id}", agent_token, _hello(agent_id)),
        )
        ws, _ = await open_agent(hub, "auth-agent")
        other_ws, _ = await open_agent(hub, "auth-other")
        try:
            await ws.send(
                json.dumps(
                    {
                        "type": "AGENT_HEARTBEAT",
                        "id": "spoof",
                        "timestamp": 1,
                        "payload": {"agentId": other_id, "healthMetrics": {"cpuPercent": 77.0}},
                    }
                )
            )
            reply = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
            assert reply["type"] == "ERROR" and reply["payload"]["code"] == "AUTH_FAILED", reply
            await heartbeat_works(ws, agent_id, hub)  # after which the spoof has surely been handled
            with hub.client() as client:
                spoofed = client.get(f"/agents/{other_id}").json()["health"]["cpuPercent"] == 77.0
            await attempt("impersonation", "a heartbeat for another agent", spoofed)
        finally:
            await ws.close()
            await other_ws.close()

        for group, count in attempts.items():
            figure(f"auth {group} accepted", f"{sum(a.startswith(group + ':') for a in accepted)} of {count}")
        assert accepted == []
    finally:
        wrapper.stop()

    # Not one of them in a log line, and nothing shaped like a JWT either.
    logs = [hub.log_path, *sorted(hub.data_dir.glob("agent-*.log"))]
    assert wrapper.log_path in logs
    leaks = []
    lines = 0
    for path in logs:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            lines += 1
            if JWT_SHAPED.search(line) or any(token in line for token in used if len(token) >= 16):
                leaks.append(f"{path.name}:{number}: {line[:300]}")
    figure(
        "auth tokens in log lines", f"{len(leaks)} (of {lines} lines in {len(logs)} logs, {len(used)} tokens)"
    )
    assert leaks == []


def sign_in(hub: HubProcess, email: str) -> tuple[str, str]:
    """Sign in with the one-time code the hub logs when it has no SMTP: (access token, refresh token)."""
    with httpx.Client(base_url=hub.url + "/v1", timeout=timeout(10)) as client:
        assert client.post("/auth/magic-link", json={"email": email}).status_code == 202
        code = hub.sign_in_code(email)
        pair = client.post("/auth/verify", json={"email": email, "code": code})
        assert pair.status_code == 200, pair.text
        body = pair.json()
        return body["accessToken"], body["refreshToken"]


async def test_foreign_origins_are_refused_on_both_sockets(auth_hub: HubProcess) -> None:
    hub = auth_hub
    agent_id, agent_token = hub.agent_token("origin-agent")
    user_token = hub.user_token()
    sockets = {
        "agent": ("/ws/agent", agent_token, _hello(agent_id)),
        "dashboard": ("/ws/dashboard", user_token, DashboardConnect().to_json()),
    }
    accepted = []
    for name, (path, token, hello) in sockets.items():
        for origin in FOREIGN_ORIGINS:
            if await socket_accepts(hub, path, token, hello, origin=origin):
                accepted.append(f"{name} {origin}")
    allowed = [
        name
        for name, (path, token, hello) in sockets.items()
        if await socket_accepts(hub, path, token, hello, origin=ALLOWED_ORIGIN)
    ]
    # Clients that are not browsers send no Origin: the wrapper and the TUI.
    no_origin = [
        name
        for name, (path, token, hello) in sockets.items()
        if await socket_accepts(hub, path, token, hello)
    ]
    figure("origin foreign accepted", f"{len(accepted)} of {len(FOREIGN_ORIGINS) * len(sockets)}")
    figure("origin allowed accepted", f"{len(allowed)} of {len(sockets)}")
    figure("origin none (not a browser) accepted", f"{len(no_origin)} of {len(sockets)}")
    assert accepted == []
    assert allowed == list(sockets)
    assert no_origin == list(sockets)
