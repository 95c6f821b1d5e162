"""Webhooks: Gmail push notifications through Cloud Pub/Sub."""

from __future__ import annotations

import json

from aiohttp import web

from app.errors import ApiError
from app.http import POOL, Route, anonymous_sql_json
from app.metrics import HTTP_METRICS
from app.push import PUSH_AUTHENTICATOR, parse_push


async def gmail_pubsub(request: web.Request) -> web.Response:
    """A mailbox changed: queue its history sync (never calls Gmail) and answer 204.

    An unknown mailbox is acknowledged too, so Pub/Sub stops retrying, and counted.
    """
    authenticator = request.app[PUSH_AUTHENTICATOR]
    if not authenticator.configured:
        raise ApiError(404, "not_found", "Gmail push is not configured on this server.")
    await authenticator.verify(request.headers.get("Authorization"), request.query.get("token"))
    push = parse_push(await request.read())
    async with request.app[POOL].connection() as conn:
        result = json.loads(
            await anonymous_sql_json(conn, "api.gmail_push(%s, %s)", [push.email, push.history_id])
        )
    outcome = (
        "unknown_mailbox"
        if result["mailboxes"] == 0
        else "sync_queued"
        if result["queued"]
        else "no_sync_needed"
    )
    request.app[HTTP_METRICS].pushes.labels(outcome).inc()
    return web.Response(status=204)


ROUTES = [
    # Pub/Sub carries no cookie session: the push is authenticated by its token instead.
    Route("POST", "/webhooks/gmail/pubsub", gmail_pubsub, None, csrf=False),
]
