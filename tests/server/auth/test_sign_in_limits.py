"""Sign-in against a real hub: the throttles that keep a six-digit code from being guessed (429 with
Retry-After, counted in Redis per address and per client), the status for a valid token of the wrong
kind (403), and the health check under /v1 too."""

from __future__ import annotations

import uuid

import httpx

from server.auth import throttle
from tests.harness import HubProcess


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


def test_an_address_gets_a_few_codes_in_a_window_then_429(hub: HubProcess) -> None:
    email = new_email()
    with httpx.Client(base_url=hub.url + "/v1") as api:
        for _ in range(throttle.LINKS_PER_EMAIL.limit):
            assert api.post("/auth/magic-link", json={"email": email}).status_code == 202
        refused = api.post("/auth/magic-link", json={"email": email.upper()})  # the same address
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "RATE_LIMIT" and "sign-in codes for this address" in body["message"]
        retry_after = int(refused.headers["Retry-After"])
        assert 0 < retry_after <= throttle.LINKS_PER_EMAIL.window_s
        assert body["details"] == {"retryAfterS": retry_after}
        # Another address is not held up by it.
        assert api.post("/auth/magic-link", json={"email": new_email()}).status_code == 202


def test_guessing_a_code_is_stopped_before_the_right_one_comes(hub: HubProcess) -> None:
    email = new_email()
    with httpx.Client(base_url=hub.url + "/v1") as api:
        assert api.post("/auth/magic-link", json={"email": email}).status_code == 202
        code = hub.sign_in_code(email)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(throttle.VERIFY_PER_EMAIL.limit):
            assert api.post("/auth/verify", json={"email": email, "code": wrong}).status_code == 401
        # The limit is reached: even the right code waits for the window now.
        held = api.post("/auth/verify", json={"email": email, "code": code})
        assert held.status_code == 429 and held.json()["error"] == "RATE_LIMIT"
        assert int(held.headers["Retry-After"]) > 0


def test_an_agents_token_on_the_rest_api_is_403_and_health_answers_under_v1(hub: HubProcess) -> None:
    _, agent_token = hub.agent_token("rest-403")
    with httpx.Client(base_url=hub.url) as api:
        response = api.get("/v1/agents", headers={"Authorization": f"Bearer {agent_token}"})
        assert response.status_code == 403
        assert response.json()["error"] == "AUTH_FAILED" and "agent token" in response.json()["message"]
        assert api.get("/v1/agents", headers={"Authorization": "Bearer nope"}).status_code == 401
        for path in ("/health", "/v1/health"):
            health = api.get(path)
            assert health.status_code == 200 and health.json()["status"] in ("ok", "degraded"), path
