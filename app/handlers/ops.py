"""Operations (admin): mailbox sync health, collision groups, pipeline overview, the DLQ.

Each handler passes the request to one api.ops_* function, which reads an ops view for the
session's organisation (the same views a DBA queries directly).
"""

from __future__ import annotations

from aiohttp import web

from app.apidoc import Doc, ok
from app.http import Limit, Route, path_id, query_limit, respond_sql
from app.metrics import metrics


async def mailboxes_sync(request: web.Request) -> web.Response:
    """Sync state, pause, cursor, errors, lag, jobs and recent failures of every mailbox."""
    return await respond_sql(request, "api.ops_mailboxes_sync()")


async def collisions(request: web.Request) -> web.Response:
    """Collision groups, most recently seen first, with counts and sample messages."""
    return await respond_sql(request, "api.ops_collisions(%s)", [query_limit(request)])


async def metrics_overview(request: web.Request) -> web.Response:
    """Jobs, mailboxes, lag, occurrences by state and DLQ size of the organisation."""
    return await respond_sql(request, "api.ops_metrics_overview()")


async def dlq(request: web.Request) -> web.Response:
    """Failed jobs of the organisation, newest failure first (no mail content)."""
    return await respond_sql(request, "api.ops_dlq(%s)", [query_limit(request)])


async def collisions_backfill(request: web.Request) -> web.Response:
    """Recompute the collision groups from the stored fingerprints (idempotent)."""
    return await respond_sql(request, "api.ops_collisions_backfill()")


async def replay_job(request: web.Request) -> web.Response:
    """Re-queue a failed job with a fresh attempt budget (202; once per failed job)."""
    return await respond_sql(request, "api.ops_replay_job(%s)", [path_id(request, "job_id")])


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/ops/mailboxes/sync",
        mailboxes_sync,
        "admin",
        sql="api.ops_mailboxes_sync",
        doc=Doc(
            operation_id="opsMailboxSync",
            tag="ops",
            summary="Sync state of every mailbox",
            description=(
                "State, pause, cursor, last syncs, last error, lag, queued/running jobs by task, "
                "failures in the last 24 hours, sync health with its reason, and the Gmail push "
                "watch."
            ),
            response=ok("Mailboxes.", "OpsMailboxSyncList", {"items": []}),
        ),
    ),
    Route(
        "GET",
        "/ops/messages/collisions",
        collisions,
        "admin",
        sql="api.ops_collisions",
        limit=Limit("ops_page"),
        doc=Doc(
            operation_id="opsMessageCollisions",
            tag="ops",
            summary="Collision groups",
            description="Near-duplicate groups with counts and samples.",
            response=ok("Groups.", "CollisionGroupList", {"items": []}),
        ),
    ),
    Route(
        "POST",
        "/ops/messages/collisions/backfill",
        collisions_backfill,
        "admin",
        sql="api.ops_collisions_backfill",
        doc=Doc(
            operation_id="opsBackfillCollisions",
            tag="ops",
            summary="Recompute collision groups",
            description=(
                "Rebuilds the organisation's collision groups from the stored loose fingerprints "
                "(a group per fingerprint shared by two or more messages, its count, its "
                "members). Idempotent: a second run updates nothing."
            ),
            response=ok(
                "What was scanned and changed.",
                "CollisionBackfill",
                {"fingerprints_scanned": 60, "groups_updated": 0, "messages_updated": 0},
            ),
        ),
    ),
    Route(
        "GET",
        "/ops/metrics/overview",
        metrics_overview,
        "admin",
        sql="api.ops_metrics_overview",
        doc=Doc(
            operation_id="opsMetricsOverview",
            tag="ops",
            summary="Pipeline overview",
            description="Jobs, mailboxes, lag, occurrences by state, DLQ size.",
            response=ok("Overview.", "OpsOverview"),
        ),
    ),
    Route(
        "GET",
        "/ops/jobs/dlq",
        dlq,
        "admin",
        sql="api.ops_dlq",
        limit=Limit("ops_page"),
        doc=Doc(
            operation_id="opsListDlq",
            tag="ops",
            summary="Dead-letter queue",
            description="Failed jobs with task, attempts and last error (no mail content).",
            response=ok("Failed jobs.", "DlqJobList", {"items": []}),
        ),
    ),
    Route(
        "POST",
        "/ops/jobs/{job_id}/replay",
        replay_job,
        "admin",
        status=202,
        sql="api.ops_replay_job",
        doc=Doc(
            operation_id="opsReplayJob",
            tag="ops",
            summary="Replay a failed job",
            description=(
                "Re-queues it with a fresh attempt budget; replaying twice adds nothing. 404 "
                "job_not_found."
            ),
            response=ok("Replay queued (or the earlier one).", "Replay"),
        ),
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        None,
        sql="api.metrics_snapshot",
        rate_limited=False,
        # For scrapers, not sessions: exposed only on networks that may read it.
        enabled=lambda settings: settings.enable_prometheus_metrics,
        doc=Doc(
            operation_id="prometheusMetrics",
            tag="ops",
            summary="Prometheus metrics",
            description=(
                "Prometheus text exposition; served only when ENABLE_PROMETHEUS_METRICS=true "
                "(404 otherwise). For scrapers: expose it only on networks that may read it."
            ),
            response={
                "description": "Metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            errors=(404,),
        ),
    ),
)
