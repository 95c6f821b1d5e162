"""Routing: allowlist and rules administration (admin), the simulator and re-route (agent).

Bodies go to SQL as the JSON object the client sent: field validation, with its stable
error codes, lives in sql/api/40_routing_validation.sql (and 41..44) next to the data it
protects.
"""

from __future__ import annotations

import uuid

from aiohttp import web
from psycopg.types.json import Jsonb

from app.errors import ApiError
from app.http import Route, read_json_object, read_json_patch, respond_sql, sql_json


def _path_uuid(request: web.Request, name: str, code: str, what: str) -> str:
    # A path segment that is not a UUID names nothing: 404 like an unknown id.
    try:
        return str(uuid.UUID(request.match_info[name]))
    except ValueError as exc:
        raise ApiError(404, code, f"No {what} with that id in this organization.") from exc


def _allowlist_id(request: web.Request) -> str:
    return _path_uuid(request, "allowlist_id", "allowlist_entry_not_found", "allowlist entry")


def _rule_id(request: web.Request) -> str:
    return _path_uuid(request, "rule_id", "rule_not_found", "routing rule")


async def _created(request: web.Request, query: str, params: list) -> web.Response:
    response = await respond_sql(request, query, params)
    response.set_status(201)
    return response


async def _deleted(request: web.Request, query: str, params: list) -> web.Response:
    await sql_json(request, query, params)
    return web.Response(status=204)


async def list_allowlist(request: web.Request) -> web.Response:
    """The allowlist patterns, by pattern."""
    return await respond_sql(request, "api.routing_allowlist_list()")


async def create_allowlist_entry(request: web.Request) -> web.Response:
    """Add an allowlist pattern {pattern, enabled?}."""
    body = await read_json_object(request)
    return await _created(request, "api.routing_allowlist_create(%s)", [Jsonb(body)])


async def update_allowlist_entry(request: web.Request) -> web.Response:
    """Change an allowlist pattern {pattern?, enabled?}."""
    entry_id = _allowlist_id(request)
    body = await read_json_patch(request)
    return await respond_sql(
        request, "api.routing_allowlist_update(%s, %s)", [entry_id, Jsonb(body)]
    )


async def delete_allowlist_entry(request: web.Request) -> web.Response:
    """Remove an allowlist pattern."""
    return await _deleted(request, "api.routing_allowlist_delete(%s)", [_allowlist_id(request)])


async def list_rules(request: web.Request) -> web.Response:
    """The routing rules in evaluation order."""
    return await respond_sql(request, "api.routing_rule_list()")


async def create_rule(request: web.Request) -> web.Response:
    """Add a rule {name, priority?, enabled?, conditions?, actions}."""
    body = await read_json_object(request)
    return await _created(request, "api.routing_rule_create(%s)", [Jsonb(body)])


async def update_rule(request: web.Request) -> web.Response:
    """Merge changes into a rule; its version goes up."""
    rule_id = _rule_id(request)
    body = await read_json_patch(request)
    return await respond_sql(request, "api.routing_rule_update(%s, %s)", [rule_id, Jsonb(body)])


async def delete_rule(request: web.Request) -> web.Response:
    """Remove a rule."""
    return await _deleted(request, "api.routing_rule_delete(%s)", [_rule_id(request)])


async def simulate(request: web.Request) -> web.Response:
    """What routing would decide for {recipient, sender, direction?}, explained; changes nothing."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.routing_simulate(%s)", [Jsonb(body)])


async def reroute_ticket(request: web.Request) -> web.Response:
    """Route one ticket again against today's allowlist and rules (explicit command)."""
    raw_id = request.match_info["ticket_id"]
    if not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > 18:
        raise ApiError(404, "ticket_not_found", "No ticket with that id in this organization.")
    return await respond_sql(request, "api.ticket_reroute(%s)", [int(raw_id)])


ROUTES: tuple[Route, ...] = (
    Route("GET", "/tickets/routing/allowlist", list_allowlist, "admin"),
    Route("POST", "/tickets/routing/allowlist", create_allowlist_entry, "admin"),
    Route("PATCH", "/tickets/routing/allowlist/{allowlist_id}", update_allowlist_entry, "admin"),
    Route("DELETE", "/tickets/routing/allowlist/{allowlist_id}", delete_allowlist_entry, "admin"),
    Route("GET", "/tickets/routing/rules", list_rules, "admin"),
    Route("POST", "/tickets/routing/rules", create_rule, "admin"),
    Route("PATCH", "/tickets/routing/rules/{rule_id}", update_rule, "admin"),
    Route("DELETE", "/tickets/routing/rules/{rule_id}", delete_rule, "admin"),
    Route("POST", "/tickets/routing/simulate", simulate, "agent"),
    Route("POST", "/tickets/{ticket_id}/reroute", reroute_ticket, "agent"),
)
