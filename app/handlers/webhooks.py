"""Webhooks: Gmail push notifications through Cloud Pub/Sub."""

from __future__ import annotations

import json

from aiohttp import web

from app.apidoc import Doc, json_body
from app.http import POOL, Route, anonymous_sql_json, success_status
from app.metrics import HTTP_METRICS
from app.push import PUSH_AUTHENTICATOR, parse_push


async def gmail_pubsub(request: web.Request) -> web.Response:
    """A mailbox changed: queue its history sync (never calls Gmail) and answer 204.

    An unknown mailbox is acknowledged too, so Pub/Sub stops retrying, and counted.
    """
    await request.app[PUSH_AUTHENTICATOR].verify(
        request.headers.get("Authorization"), request.query.get("token")
    )
    push = parse_push(await request.read())
    async with request.app[POOL].connection() as conn:
        result = json.loads(
            await anonymous_sql_json(conn, "api.gmail_push(%s, %s)", [push.email, push.history_id])
        )
    request.app[HTTP_METRICS].pushes.labels(result["outcome"]).inc()
    return web.Response(status=success_status(request))


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/webhooks/gmail/pubsub",
        gmail_pubsub,
        None,
        csrf=False,
        status=204,
        sql="api.gmail_push",
        rate_limited=False,
        # Without GMAIL_PUSH_TOKEN or OIDC settings the route does not exist (404).
        enabled=lambda settings: settings.push_configured,
        doc=Doc(
            operation_id="gmailPubSubPush",
            tag="webhooks",
            summary="Gmail push notification (Cloud Pub/Sub push)",
            description=(
                "A mailbox changed: queue its history sync (a storm of pushes queues one) and "
                "answer 204 at once; Gmail itself is never called here. An unknown mailbox is "
                "acknowledged too (204), so Pub/Sub stops retrying. No session and no CSRF "
                "header: the push is authenticated by Pub/Sub's OIDC token (Authorization: "
                "Bearer, when GMAIL_PUSH_AUDIENCE is set) or else by the shared secret "
                "GMAIL_PUSH_TOKEN in the query string; otherwise 401 push_unauthenticated. 400 "
                "or 422 invalid_push for a malformed envelope; 404 when push is not configured."
            ),
            response={"description": "Acknowledged."},
            body=json_body(
                "PubSubPush",
                {
                    "message": {
                        "data": "eyJlbWFpbEFkZHJlc3MiOiAiam91cm5hbEBhY21lLmV4YW1wbGUiLCAiaGlzdG9yeUlkIjogIjEyMzQ1In0=",
                        "messageId": "2070443601311540",
                        "publishTime": "2026-12-07T08:00:00Z",
                    },
                    "subscription": "projects/acme/subscriptions/gmail-push",
                },
            ),
            query=(
                {
                    "name": "token",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "The shared secret GMAIL_PUSH_TOKEN (when OIDC is not set).",
                },
            ),
            errors=(401, 404),
        ),
    ),
)
