"""Routing: allowlist and rules administration (admin), the simulator and re-route (agent).

Bodies go to SQL as the JSON object the client sent: field validation, with its stable
error codes, lives in SQL: the shared readers and rules in sql/logic/06_input.sql and
50_routing.sql, each operation's checks in sql/api/41..44 next to the data it protects.
"""

from __future__ import annotations

from aiohttp import web
from psycopg.types.json import Jsonb

from app.apidoc import NO_CONTENT, Doc, json_body, ok
from app.http import (
    Route,
    path_id,
    read_json_object,
    read_json_patch,
    respond_sql,
)


async def list_allowlist(request: web.Request) -> web.Response:
    """The allowlist patterns, by pattern."""
    return await respond_sql(request, "api.routing_allowlist_list()")


async def create_allowlist_entry(request: web.Request) -> web.Response:
    """Add an allowlist pattern {pattern, is_enabled?}."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.routing_allowlist_create(%s)", [Jsonb(body)])


async def update_allowlist_entry(request: web.Request) -> web.Response:
    """Change an allowlist pattern {pattern?, is_enabled?}."""
    entry_id = path_id(request, "allowlist_id")
    body = await read_json_patch(request)
    return await respond_sql(
        request, "api.routing_allowlist_update(%s, %s)", [entry_id, Jsonb(body)]
    )


async def delete_allowlist_entry(request: web.Request) -> web.Response:
    """Remove an allowlist pattern."""
    return await respond_sql(
        request, "api.routing_allowlist_delete(%s)", [path_id(request, "allowlist_id")]
    )


async def list_rules(request: web.Request) -> web.Response:
    """The routing rules in evaluation order."""
    return await respond_sql(request, "api.routing_rule_list()")


async def create_rule(request: web.Request) -> web.Response:
    """Add a rule {name, priority?, is_enabled?, match_*?, action_*}."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.routing_rule_create(%s)", [Jsonb(body)])


async def update_rule(request: web.Request) -> web.Response:
    """Merge changes into a rule; its version goes up."""
    rule_id = path_id(request, "rule_id")
    body = await read_json_patch(request)
    return await respond_sql(request, "api.routing_rule_update(%s, %s)", [rule_id, Jsonb(body)])


async def delete_rule(request: web.Request) -> web.Response:
    """Remove a rule."""
    return await respond_sql(request, "api.routing_rule_delete(%s)", [path_id(request, "rule_id")])


async def simulate(request: web.Request) -> web.Response:
    """What routing would decide for {recipient, sender_email, direction?}; changes nothing."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.routing_simulate(%s)", [Jsonb(body)])


async def reroute_ticket(request: web.Request) -> web.Response:
    """Route one ticket again against today's allowlist and rules (explicit command)."""
    return await respond_sql(request, "api.ticket_reroute(%s)", [path_id(request, "ticket_id")])


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/tickets/routing/allowlist",
        list_allowlist,
        "admin",
        sql="api.routing_allowlist_list",
        doc=Doc(
            operation_id="listAllowlist",
            tag="routing",
            summary="List allowlist patterns",
            description="By pattern.",
            response=ok("Patterns.", "AllowlistEntryList", []),
        ),
    ),
    Route(
        "POST",
        "/tickets/routing/allowlist",
        create_allowlist_entry,
        "admin",
        status=201,
        sql="api.routing_allowlist_create",
        doc=Doc(
            operation_id="createAllowlistEntry",
            tag="routing",
            summary="Add an allowlist pattern",
            description="409 allowlist_pattern_exists on a case-insensitive duplicate.",
            response=ok("Created.", "AllowlistEntry"),
            body=json_body("AllowlistEntryCreate", {"pattern": "support@acme.example"}),
            errors=(409,),
        ),
    ),
    Route(
        "PATCH",
        "/tickets/routing/allowlist/{allowlist_id}",
        update_allowlist_entry,
        "admin",
        sql="api.routing_allowlist_update",
        doc=Doc(
            operation_id="updateAllowlistEntry",
            tag="routing",
            summary="Change an allowlist pattern",
            response=ok("Updated.", "AllowlistEntry"),
            body=json_body("AllowlistEntryUpdate"),
            errors=(409,),
        ),
    ),
    Route(
        "DELETE",
        "/tickets/routing/allowlist/{allowlist_id}",
        delete_allowlist_entry,
        "admin",
        status=204,
        sql="api.routing_allowlist_delete",
        doc=Doc(
            operation_id="deleteAllowlistEntry",
            tag="routing",
            summary="Remove an allowlist pattern",
            response=NO_CONTENT,
        ),
    ),
    Route(
        "GET",
        "/tickets/routing/rules",
        list_rules,
        "admin",
        sql="api.routing_rule_list",
        doc=Doc(
            operation_id="listRules",
            tag="routing",
            summary="List routing rules",
            description="In evaluation order (priority, id).",
            response=ok("Rules.", "RuleList", []),
        ),
    ),
    Route(
        "POST",
        "/tickets/routing/rules",
        create_rule,
        "admin",
        status=201,
        sql="api.routing_rule_create",
        doc=Doc(
            operation_id="createRule",
            tag="routing",
            summary="Add a routing rule",
            description=(
                "Conditions (ANDed): match_recipient_pattern, match_sender_domain_pattern, "
                "match_sender_email_pattern, match_direction. Actions: action_assign_queue_id or "
                "action_assign_user_id, action_set_status, action_auto_close, action_drop, "
                "action_add_tags. 409 rule_name_exists."
            ),
            response=ok("Created.", "Rule"),
            body=json_body(
                "RuleCreate",
                {
                    "name": "Billing",
                    "priority": 10,
                    "match_recipient_pattern": "billing@*",
                    "action_add_tags": ["billing"],
                },
            ),
            errors=(409,),
        ),
    ),
    Route(
        "PATCH",
        "/tickets/routing/rules/{rule_id}",
        update_rule,
        "admin",
        sql="api.routing_rule_update",
        doc=Doc(
            operation_id="updateRule",
            tag="routing",
            summary="Change a routing rule",
            description="Merged into the rule, validated as a whole; its version goes up.",
            response=ok("Updated.", "Rule"),
            body=json_body("RuleUpdate"),
            errors=(409,),
        ),
    ),
    Route(
        "DELETE",
        "/tickets/routing/rules/{rule_id}",
        delete_rule,
        "admin",
        status=204,
        sql="api.routing_rule_delete",
        doc=Doc(
            operation_id="deleteRule",
            tag="routing",
            summary="Remove a routing rule",
            response=NO_CONTENT,
        ),
    ),
    Route(
        "POST",
        "/tickets/routing/simulate",
        simulate,
        "agent",
        sql="api.routing_simulate",
        doc=Doc(
            operation_id="simulateRouting",
            tag="routing",
            summary="Simulate routing",
            description=(
                "What routing would decide for a recipient/sender/direction, explained, and its "
                "effect on a new ticket; changes nothing."
            ),
            response=ok("The decision.", "RoutingSimulation"),
            body=json_body(
                "SimulateRequest",
                {
                    "recipient": "support@acme.example",
                    "sender_email": "casey@example.net",
                    "direction": "inbound",
                },
            ),
        ),
    ),
    Route(
        "POST",
        "/tickets/{ticket_id}/reroute",
        reroute_ticket,
        "agent",
        sql="api.ticket_reroute",
        doc=Doc(
            operation_id="rerouteTicket",
            tag="routing",
            summary="Route a ticket again",
            description=(
                "Applies today's allowlist and rules to the ticket, even after a person touched it."
            ),
            response=ok("Decision and effect.", "Reroute"),
        ),
    ),
)
