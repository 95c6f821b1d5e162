"""Operations (admin): mailbox sync health, collision groups, pipeline overview, the DLQ.

Each handler passes the request to one api.ops_* function, which reads an ops view for the
session's organisation (the same views a DBA queries directly).
"""

from __future__ import annotations

import re

from aiohttp import web

from app.errors import ApiError
from app.http import Route, respond_sql


def _query_limit(request: web.Request) -> int | None:
    """`?limit=`: None when absent (SQL applies the default); the range is checked in SQL."""
    value = request.query.get("limit") or None
    if value is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,9}", value):
        raise ApiError(422, "invalid_limit", "limit must be an integer between 1 and 200.")
    return int(value)


def _job_id(request: web.Request) -> int:
    """The path's job id; anything that is not a job id is a job that does not exist."""
    value = request.match_info["job_id"]
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise ApiError(404, "job_not_found", "No failed job with that id.")
    return int(value)


async def mailboxes_sync(request: web.Request) -> web.Response:
    """Sync state, pause, cursor, errors, lag, jobs and recent failures of every mailbox."""
    return await respond_sql(request, "api.ops_mailboxes_sync()")


async def collisions(request: web.Request) -> web.Response:
    """Collision groups, most recently seen first, with counts and sample messages."""
    return await respond_sql(request, "api.ops_collisions(%s)", [_query_limit(request)])


async def metrics_overview(request: web.Request) -> web.Response:
    """Jobs, mailboxes, lag, occurrences by state and DLQ size of the organisation."""
    return await respond_sql(request, "api.ops_metrics_overview()")


async def dlq(request: web.Request) -> web.Response:
    """Failed jobs of the organisation, newest failure first (no mail content)."""
    return await respond_sql(request, "api.ops_dlq(%s)", [_query_limit(request)])


async def replay_job(request: web.Request) -> web.Response:
    """Re-queue a failed job with a fresh attempt budget (202; once per failed job)."""
    response = await respond_sql(request, "api.ops_replay_job(%s)", [_job_id(request)])
    response.set_status(202)
    return response


ROUTES: tuple[Route, ...] = (
    Route("GET", "/ops/mailboxes/sync", mailboxes_sync, "admin"),
    Route("GET", "/ops/messages/collisions", collisions, "admin"),
    Route("GET", "/ops/metrics/overview", metrics_overview, "admin"),
    Route("GET", "/ops/jobs/dlq", dlq, "admin"),
    Route("POST", "/ops/jobs/{job_id}/replay", replay_job, "admin"),
)
