"""Prometheus metrics of one hub process, served as text at ``/metrics``.

Counters count what this process did (lines it took in, statuses its store wrote, requests it
answered); Prometheus sums them over the hub processes. Gauges that describe shared state (queue
depths, read from Redis) are the same on every hub: use ``max`` over the hubs for those, not ``sum``.

Each hub has its own registry (not prometheus_client's global one), so several hubs in one process
(the tests) do not collide.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import keys

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from server.hub import Hub

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets (seconds): the output path's target is 50 ms at p99, dispatch 15 ms at p50.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Counted for every agent message as plain integers, exposed as counters when scraped
        # (_HubCollector): a prometheus Counter takes a lock per increment, which was 9 % of the
        # agent sockets' handling at 5,000 lines/s.
        self.output_lines = 0
        self.agent_messages: dict[str, int] = defaultdict(int)
        self.errors_sent = Counter(
            "onsembl_errors_sent",
            "ERROR messages sent, by socket kind and code (INVALID_MESSAGE, RATE_LIMIT, ...).",
            ["socket", "code"],
            registry=r,
        )
        self.connections_refused = Counter(
            "onsembl_connections_refused",
            "Socket handshakes refused, by socket kind and reason (authentication, origin, limit).",
            ["socket", "reason"],
            registry=r,
        )
        self.slow_clients_dropped = Counter(
            "onsembl_slow_clients_dropped",
            "Sockets closed for not reading what the hub sends.",
            ["socket"],
            registry=r,
        )
        self.command_status = Counter(
            "onsembl_command_status_changes",
            "Command status changes written to the database by this hub's store (terminal ones are the "
            "commands' outcomes).",
            ["status"],
            registry=r,
        )
        self.events_relayed = Counter(
            "onsembl_events_relayed", "Stream events handed to this hub's TUI clients.", registry=r
        )
        self.relay_latency = Histogram(
            "onsembl_relay_latency_seconds",
            "From an event's append to the stream to its hand-over to this hub's TUI sockets.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_duration = Histogram(
            "onsembl_http_request_duration_seconds",
            "REST request time, by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.live = Gauge(
            "onsembl_hub_up", "1 while this hub serves (0 between start and ready).", registry=r
        )

    def agent_message(self, message_type: str) -> None:
        self.agent_messages[message_type] += 1

    def attach(self, hub: Hub) -> None:
        self.registry.register(_HubCollector(hub))
        self.live.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HubCollector(Collector):
    """Gauges read when scraped: sockets held by this hub, and the queue state in Redis."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Metric]:
        hub = self.hub
        yield CounterMetricFamily(
            "onsembl_output_lines",
            "Lines of agent output taken in by this hub.",
            value=hub.metrics.output_lines,
        )
        by_type = CounterMetricFamily(
            "onsembl_agent_messages", "Messages received from agents, by type.", labels=["type"]
        )
        for message_type, count in sorted(hub.metrics.agent_messages.items()):
            by_type.add_metric([message_type], count)
        yield by_type
        yield GaugeMetricFamily(
            "onsembl_agents_connected", "Agent sockets held by this hub.", value=len(hub.agent_sockets)
        )
        yield GaugeMetricFamily(
            "onsembl_dashboards_connected",
            "TUI (dashboard) sockets held by this hub.",
            value=len(hub.dashboards),
        )
        yield GaugeMetricFamily(
            "onsembl_publish_backlog",
            "Events this hub holds that Redis has not taken yet (grows while Redis is away).",
            value=hub.publisher.pending,
        )
        queue = GaugeMetricFamily(
            "onsembl_commands",
            "Unfinished command executions across all hubs, by state (shared: take max over hubs).",
            labels=["state"],
        )
        try:
            unfinished, running, online = _queue_counts(hub)
        except Exception as exc:  # a scrape must answer even while Redis is away
            log.warning("metrics: queue state unavailable (%s)", exc)
        else:
            queue.add_metric(["running"], running)
            queue.add_metric(["waiting"], max(0, unfinished - running))
            yield queue
            yield GaugeMetricFamily(
                "onsembl_agents_online", "Agents online on any hub (shared: take max).", value=online
            )


def _queue_counts(hub: Hub) -> tuple[int, int, int]:
    """(unfinished executions, running ones, online agents) from Redis, in one round trip after the
    key scan."""
    conn = hub.redis_sync
    sets = list(conn.scan_iter(match=keys.PREFIX + "agent-executions:*", count=1000))
    pipe = conn.pipeline(transaction=False)
    for key in sets:
        pipe.scard(key)
    pipe.zcard(keys.SUPERVISED)
    pipe.zcard(keys.ONLINE_AGENTS)
    results = pipe.execute()
    return sum(int(n) for n in results[:-2]), int(results[-2]), int(results[-1])


def route_template(scope: Scope) -> str:
    """The matched route's path template with the router prefix it was included under ("/v1/agents/
    {agent_id}"); FastAPI may give the template without the prefix, so the prefix is taken from the
    request path's leading segments (prefixes hold no parameters)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    path_segments = scope["path"].rstrip("/").split("/")
    template_segments = template.rstrip("/").split("/")
    extra = len(path_segments) - len(template_segments)
    if extra > 0 and not template.startswith("/".join(path_segments[: extra + 1]) + "/"):
        return "/".join(path_segments[: extra + 1]) + template
    return template


class HttpMetricsMiddleware:
    """Times REST requests by route template (not raw path: ids would make a series each)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], HubMetrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                template = route_template(scope)
                metrics.http_duration.labels(scope["method"], template, str(status)).observe(
                    time.perf_counter() - started
                )
