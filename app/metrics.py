"""Prometheus metrics: HTTP metrics of this process, pipeline metrics read at scrape time.

Pipeline numbers come from the database (api.metrics_snapshot) on every scrape, so they are
right whichever process did the work; HTTP metrics are per process, labelled by route
template (bounded cardinality).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.http import POOL

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpMetrics:
    """Request count and latency of one API process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.pushes = Counter(
            "ticketing_gmail_pushes_total",
            "Authenticated Gmail push notifications by outcome: sync_queued, no_sync_needed "
            "(already synced or not syncing), unknown_mailbox.",
            ["outcome"],
            registry=self.registry,
        )


HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)


def route_label(request: web.Request) -> str:
    """The route template (`/tickets/{ticket_id}`), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def http_metrics_middleware(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    metrics = request.app[HTTP_METRICS]
    route = route_label(request)
    metrics.requests.labels(request.method, route, str(response.status)).inc()
    metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)
    return response


class _PipelineSnapshot(Collector):
    """Gauges built from one api.metrics_snapshot() result."""

    def __init__(self, snapshot: dict) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.snapshot
        jobs = GaugeMetricFamily(
            "ticketing_jobs", "procrastinate jobs by task and status.", labels=["task", "status"]
        )
        for row in s["jobs"]:
            jobs.add_metric([row["task"], row["status"]], row["count"])
        yield jobs
        yield GaugeMetricFamily(
            "ticketing_dlq_size", "Failed jobs not yet replayed.", value=s["dlq_size"]
        )
        lag = GaugeMetricFamily(
            "ticketing_ingest_lag_seconds",
            "Age of the newest message of a mailbox not yet routed (0 when caught up).",
            labels=["mailbox_id"],
        )
        paused = GaugeMetricFamily(
            "ticketing_mailbox_paused",
            "1 while a mailbox's ingestion is paused.",
            labels=["mailbox_id"],
        )
        since_sync = GaugeMetricFamily(
            "ticketing_mailbox_seconds_since_last_sync",
            "Seconds since a sync step of the mailbox last succeeded.",
            labels=["mailbox_id"],
        )
        health = GaugeMetricFamily(
            "ticketing_mailbox_health",
            "1 for the mailbox's sync health: ok, blocked, stuck, idle, stalled or lagging "
            "(the reason is in GET /ops/mailboxes/sync).",
            labels=["mailbox_id", "health"],
        )
        for mailbox in s["mailboxes"]:
            lag.add_metric([mailbox["mailbox_id"]], mailbox["lag_seconds"])
            paused.add_metric([mailbox["mailbox_id"]], 1 if mailbox["paused"] else 0)
            since_sync.add_metric([mailbox["mailbox_id"]], mailbox["seconds_since_last_sync"])
            health.add_metric([mailbox["mailbox_id"], mailbox["health"]], 1)
        yield lag
        yield paused
        yield since_sync
        yield health
        yield GaugeMetricFamily(
            "ticketing_stuck_jobs",
            "Running jobs of dead workers not yet given back (each holds its mailbox's lock).",
            value=s["stuck_jobs"],
        )
        yield GaugeMetricFamily(
            "ticketing_workers_alive",
            "Worker processes with a recent heartbeat.",
            value=s["workers_alive"],
        )
        for name, key, label, doc in (
            ("ticketing_occurrences", "occurrences", "state", "Message occurrences by state."),
            (
                "ticketing_stitched_messages",
                "stitch_reasons",
                "reason",
                "Messages by stitch reason.",
            ),
            (
                "ticketing_routing_decisions",
                "routing_outcomes",
                "outcome",
                "Routing events by outcome.",
            ),
        ):
            family = GaugeMetricFamily(name, doc, labels=[label])
            for value, count in sorted(s[key].items()):
                family.add_metric([value], count)
            yield family


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics (ENABLE_PROMETHEUS_METRICS): Prometheus text exposition."""
    async with request.app[POOL].connection() as conn:
        cursor = await conn.execute("SELECT api.metrics_snapshot() AS s")
        snapshot = (await cursor.fetchone())["s"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_PipelineSnapshot(snapshot))
    body = generate_latest(request.app[HTTP_METRICS].registry) + generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
