"""Queues: everyone lists, admins create."""

from __future__ import annotations

from aiohttp import web
from psycopg.types.json import Jsonb

from app.apidoc import Doc, json_body, ok
from app.http import Route, read_json_object, respond_sql


async def list_queues(request: web.Request) -> web.Response:
    """The organisation's queues, by name."""
    return await respond_sql(request, "api.queue_list()")


async def create_queue(request: web.Request) -> web.Response:
    """Create a queue (admin)."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.queue_create(%s)", [Jsonb(body)])


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/queues",
        list_queues,
        "viewer",
        sql="api.queue_list",
        doc=Doc(
            operation_id="listQueues",
            tag="queues",
            summary="List queues",
            description="The organisation's queues by name.",
            response=ok("Queues.", "QueueList", []),
        ),
    ),
    Route(
        "POST",
        "/queues",
        create_queue,
        "admin",
        status=201,
        sql="api.queue_create",
        doc=Doc(
            operation_id="createQueue",
            tag="queues",
            summary="Create a queue",
            description="409 queue_exists on a case-insensitive name clash.",
            response=ok("Created.", "Queue"),
            body=json_body("QueueCreate", {"name": "Billing"}),
            errors=(409,),
        ),
    ),
)
