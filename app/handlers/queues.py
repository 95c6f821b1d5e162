"""Queues: everyone lists, admins create."""

from __future__ import annotations

from aiohttp import web

from app.http import optional_str, read_json_object, required_str, respond_sql


async def list_queues(request: web.Request) -> web.Response:
    """The organisation's queues, by name."""
    return await respond_sql(request, "api.queue_list()")


async def create_queue(request: web.Request) -> web.Response:
    """Create a queue (admin)."""
    body = await read_json_object(request, ("name", "description"))
    response = await respond_sql(
        request,
        "api.queue_create(%s, %s)",
        [required_str(body, "name"), optional_str(body, "description")],
    )
    response.set_status(201)
    return response
