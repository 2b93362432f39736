"""/metrics: Prometheus text that counts what really happened (lines, statuses, refusals, requests)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.harness import HubProcess, start_agent, timeout, wait_until
from tests.server.test_bad_input import next_of_type, open_agent

METRICS_TOKEN = "metrics-test-token-0123456789"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(
        tmp_path_factory.mktemp("hub"), env_overrides={"ONSEMBL_METRICS_TOKEN": METRICS_TOKEN}
    ).start()
    yield process
    process.stop()
    process.shutdown_redis()


def scrape(hub: HubProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) -> value."""
    response = httpx.get(
        hub.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=timeout(10)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_metrics_token(hub: HubProcess) -> None:
    assert httpx.get(hub.url + "/metrics").status_code == 401
    wrong = httpx.get(hub.url + "/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "AUTH_FAILED"
    # A user's access token is not the metrics token either.
    user = httpx.get(hub.url + "/metrics", headers={"Authorization": f"Bearer {hub.user_token()}"})
    assert user.status_code == 401


def test_a_command_shows_in_lines_statuses_sockets_and_request_times(hub: HubProcess) -> None:
    before = scrape(hub)
    agent = start_agent(hub, "metrics-agent")
    try:
        with hub.client() as client:
            response = client.post(
                "/commands",
                json={"content": "for i in 1 2 3 4 5; do echo m-$i; done", "targetAgents": [agent.agent_id]},
            )
            assert response.status_code == 201, response.text
            command_id = response.json()["id"]
            wait_until(
                lambda: client.get(f"/commands/{command_id}").json()["status"] == "COMPLETED",
                30,
                "the command to complete",
            )

        def counted() -> dict | None:  # type: ignore[type-arg]
            samples = scrape(hub)
            completed = value(samples, "onsembl_command_status_changes_total", status="COMPLETED")
            return (
                samples
                if completed >= value(before, "onsembl_command_status_changes_total", status="COMPLETED") + 1
                else None
            )

        after = wait_until(counted, 15, "the completed status counted by the store")
        assert value(after, "onsembl_output_lines_total") - value(before, "onsembl_output_lines_total") >= 5
        assert value(after, "onsembl_agent_messages_total", type="TERMINAL_OUTPUT") >= 1
        assert value(after, "onsembl_agent_messages_total", type="COMMAND_COMPLETE") >= 1
        assert value(after, "onsembl_agents_connected") == 1
        assert value(after, "onsembl_agents_online") >= 1
        assert value(after, "onsembl_commands", state="running") == 0
        posted = value(
            after,
            "onsembl_http_request_duration_seconds_count",
            method="POST",
            route="/v1/commands",
            status="201",
        )
        assert posted >= 1
        # By route template, not by raw path: one series for every command id.
        assert (
            value(
                after,
                "onsembl_http_request_duration_seconds_count",
                method="GET",
                route="/v1/commands/{command_id}",
                status="200",
            )
            >= 1
        )
        assert value(after, "onsembl_relay_latency_seconds_count") > value(
            before, "onsembl_relay_latency_seconds_count"
        )
        assert value(after, "onsembl_hub_up") == 1
    finally:
        agent.stop()


async def test_refusals_and_invalid_messages_are_counted(hub: HubProcess) -> None:
    before = scrape(hub)
    bad = await connect(hub.ws_url + "/ws/agent", additional_headers={"Authorization": "Bearer not-a-token"})
    reply = json.loads(await bad.recv())
    assert reply["payload"]["code"] == "AUTH_FAILED"
    await bad.close()
    ws, _ = await open_agent(hub, "metrics-bad-input")
    try:
        await ws.send("{not json")
        assert (await next_of_type(ws, "ERROR"))["payload"]["code"] == "INVALID_MESSAGE"
    finally:
        await ws.close()
    after = scrape(hub)
    refused = "onsembl_connections_refused_total"
    assert value(after, refused, socket="agent", reason="authentication") == (
        value(before, refused, socket="agent", reason="authentication") + 1
    )
    errors = "onsembl_errors_sent_total"
    assert value(after, errors, socket="agent", code="INVALID_MESSAGE") == (
        value(before, errors, socket="agent", code="INVALID_MESSAGE") + 1
    )


def hub_log_entries(hub: HubProcess) -> list[dict]:  # type: ignore[type-arg]
    entries = []
    for line in hub.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def test_requests_and_agent_sockets_log_their_ids_as_json(hub: HubProcess) -> None:
    """The hub's log is JSON (not a terminal); a request's lines carry its id, which the response
    returns; an agent socket's lines carry the agent's id; the sign-in link's token is not written."""
    response = httpx.post(
        hub.url + "/v1/auth/magic-link",
        json={"email": "log-check@example.com"},
        headers={"X-Request-ID": "req-log-check-1"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == "req-log-check-1"
    generated = httpx.get(hub.url + "/health", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 16

    agent = start_agent(hub, "log-agent")
    agent.stop()

    def logged() -> tuple[dict, dict] | None:  # type: ignore[type-arg]
        entries = hub_log_entries(hub)
        sign_in = [e for e in entries if "sign-in code for log-check@example.com" in e["message"]]
        connected = [e for e in entries if e["message"].startswith("agent log-agent (")]
        return (sign_in[0], connected[0]) if sign_in and connected else None

    sign_in, connected = wait_until(logged, 10, "the sign-in and connect lines in the hub log")
    assert sign_in["request_id"] == "req-log-check-1"
    assert "token=***" in sign_in["message"]
    assert connected["agent_id"] == agent.agent_id and connected["agent"] == "log-agent"
    assert "request_id" not in connected
