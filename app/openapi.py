"""The OpenAPI 3.1 document of the HTTP API, and `GET /openapi.json` serving it.

The document is plain data: one dict per operation under `PATHS`, the shapes under
`SCHEMAS`. Response shapes follow the `jsonb_build_object` calls of sql/api/*.sql (the
source of truth); every key those calls always emit is `required`, nullable values are typed
`[..., "null"]`. tests/api/test_openapi.py keeps it true: every route of the app must be
documented here and every documented operation must exist, and real responses are checked
against the schemas.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from app.http import SETTINGS

OPENAPI_VERSION = "3.1.0"

# ------------------------------------------------------------------ small schema vocabulary


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or JSON null (OpenAPI 3.1 / JSON Schema 2020-12 style)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object whose every property is always present except those named `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


def _request(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A request body object: unknown fields are refused (422 unknown_field)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _set(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An object where `name` is present and matches `schema`."""
    return {"required": [name], "properties": {name: schema}}


def _both(first: str, first_schema: dict[str, Any], second: str, second_schema: dict[str, Any]):
    """An object where both fields are present and match their schemas."""
    return {
        "required": [first, second],
        "properties": {first: first_schema, second: second_schema},
    }


def _list_of(item: str) -> dict[str, Any]:
    return _object({"items": {"type": "array", "items": _ref(item)}})


STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
INT = {"type": "integer"}
NINT = {"type": ["integer", "null"]}
BOOL = {"type": "boolean"}
UUID = {"type": "string", "format": "uuid"}
NUUID = {"type": ["string", "null"], "format": "uuid"}
TS = {"type": "string", "format": "date-time"}
NTS = {"type": ["string", "null"], "format": "date-time"}
OBJ = {"type": "object"}
STR_LIST = {"type": "array", "items": STR}
ROLE = {"type": "string", "enum": ["viewer", "agent", "admin"]}
NBOOL = {"type": ["boolean", "null"]}


def _text(max_length: int, nullable: bool = False) -> dict[str, Any]:
    """Required-style text as logic.require_text checks it: not blank, at most max_length."""
    return {
        "type": ["string", "null"] if nullable else "string",
        "maxLength": max_length,
        "pattern": "[^ \\t\\r\\n\\f]",  # something besides the whitespace it trims
    }


# A glob as api.routing_pattern accepts it (spaces around it are trimmed; runs of * count as
# one wildcard; at most 16 wildcards).
_GLOB_CHAR = "[^*?\\s\\x00-\\x1f\\x7f\\[\\]{}\\\\]"
GLOB = {
    "type": "string",
    "maxLength": 320,
    "pattern": f"^ *(?:(?:{_GLOB_CHAR}*(?:\\*+|\\?)){{1,16}}{_GLOB_CHAR}*|{_GLOB_CHAR}+) *$",
    "description": "Glob: * and ? are wildcards (at most 16; a run of * is one); no "
    "whitespace, [ ] { } or \\.",
}
NGLOB = {**GLOB, "type": ["string", "null"]}

# ------------------------------------------------------------------ schemas

SCHEMAS: dict[str, Any] = {
    "Error": {
        **_object(
            {
                "detail": {**STR, "description": "A human sentence."},
                "code": {**STR, "description": "A stable machine-readable code."},
            }
        ),
        "example": {
            "detail": "No ticket with that id in this organization.",
            "code": "ticket_not_found",
        },
    },
    # ---- health
    "Health": _object({"status": {"type": "string", "const": "ok"}}),
    "Ready": _object(
        {
            "status": {"type": "string", "const": "ready"},
            "migrations": {**INT, "description": "How many migrations are applied."},
            "code_hash": {**STR, "description": "Hash of the installed SQL code."},
            "pipeline": _object(
                {
                    "status": {"type": "string", "enum": ["ok", "degraded"]},
                    "workers_alive": {**INT, "description": "Workers with a recent heartbeat."},
                    "stuck_jobs": {**INT, "description": "Dead workers' jobs not yet recovered."},
                    "mailboxes": {
                        "type": "object",
                        "additionalProperties": INT,
                        "description": "Mailboxes by sync health (ok, blocked, stuck, ...).",
                    },
                }
            ),
        }
    ),
    # ---- sessions
    "CsrfToken": _object({"csrf_token": STR}),
    "User": _object({"id": UUID, "email": STR, "display_name": STR}),
    "Organization": _object({"id": UUID, "name": STR}),
    "Membership": _object({"id": UUID, "name": STR, "role": ROLE}),
    "Session": {
        **_object(
            {
                "user": _ref("User"),
                "organization": _ref("Organization"),
                "role": ROLE,
                "organizations": {"type": "array", "items": _ref("Membership")},
                "session": _object({"id": UUID, "expires_at": TS}),
            }
        ),
        "description": "The current session: user, organisation, role, all memberships (GET /me).",
    },
    "Me": {"$ref": "#/components/schemas/Session"},
    "Login": {
        "allOf": [_ref("Session"), _object({"csrf_token": STR})],
        "description": "A new session plus the rotated CSRF token to use from now on.",
    },
    "DevLoginRequest": _request(
        {
            "email": {
                "type": "string",
                "maxLength": 320,
                "pattern": "^ *[^@\\s]+@[^@\\s]+\\.[^@\\s]+ *$",
            },
            "organization_name": _text(200),
            "role": {"enum": ["viewer", "agent", "admin", None]},
        },
        ("email", "organization_name"),
    ),
    "SwitchOrgRequest": _request({"organization_id": UUID}, ("organization_id",)),
    "LoggedOut": _object({"logged_out": {"type": "boolean", "const": True}}),
    # ---- queues
    "Queue": _object({"id": UUID, "name": STR, "description": STR, "created_at": TS}),
    "QueueList": _list_of("Queue"),
    "QueueCreate": _request(
        {"name": _text(100), "description": {**NSTR, "maxLength": 2000}},
        ("name",),
    ),
    # ---- mailboxes
    "Backfill": _object(
        {
            "state": {"type": "string", "enum": ["idle", "running", "done"]},
            "pages": INT,
            "started_at": NTS,
            "completed_at": NTS,
        }
    ),
    "Mailbox": _object(
        {
            "id": UUID,
            "email": STR,
            "provider": {"type": "string", "enum": ["gmail", "mbox"]},
            "display_name": STR,
            "state": {"type": "string", "enum": ["active", "needs_reconnect", "disabled"]},
            "enabled": BOOL,
            "connected": {**BOOL, "description": "A refresh token is stored."},
            "granted_scopes": STR_LIST,
            "history_id": {**NSTR, "description": "Gmail historyId cursor (bigint as text)."},
            "backfill": _ref("Backfill"),
            "last_history_sync_at": NTS,
            "last_error": NSTR,
            "last_error_at": NTS,
            "paused_until": NTS,
            "pause_reason": NSTR,
            "blocked_reason": {**NSTR, "description": "Why sync is blocked now, if it is."},
            "created_at": TS,
        }
    ),
    "MailboxList": _list_of("Mailbox"),
    "OAuthStart": _object(
        {
            "authorization_url": {**STR, "format": "uri"},
            "state": STR,
            "expires_at": TS,
        }
    ),
    "Connectivity": {
        "description": "Whether the stored grant works; `ok: false` carries a code and reason.",
        "oneOf": [
            _object(
                {
                    "ok": {"type": "boolean", "const": True},
                    "email": STR,
                    "history_id": STR,
                    "messages_total": INT,
                }
            ),
            _object(
                {
                    "ok": {"type": "boolean", "const": False},
                    "code": {
                        "type": "string",
                        "enum": [
                            "not_gmail",
                            "not_connected",
                            "token_unreadable",
                            "needs_reconnect",
                            "gmail_unavailable",
                            "gmail_error",
                            "email_mismatch",
                        ],
                    },
                    "error": STR,
                    "status": INT,
                    "email": STR,
                },
                optional=("status", "email"),
            ),
        ],
    },
    "SyncQueued": _object(
        {
            "mailbox_id": UUID,
            "task": {"type": "string", "enum": ["mailbox_backfill", "mailbox_history_sync"]},
            "queued": {**BOOL, "description": "false when such a job was already waiting."},
            "job_id": NINT,
            "blocked_reason": NSTR,
        }
    ),
    "JobCounts": {
        "type": "object",
        "description": "Queued and running jobs by task name.",
        "additionalProperties": _object({"queued": INT, "running": INT}),
    },
    "SyncStatus": _object(
        {
            "mailbox_id": UUID,
            "email": STR,
            "state": {"type": "string", "enum": ["active", "needs_reconnect", "disabled"]},
            "enabled": BOOL,
            "cursor": NSTR,
            "backfill": _ref("Backfill"),
            "last_history_sync_at": NTS,
            "seconds_since_history_sync": NINT,
            "last_error": NSTR,
            "last_error_at": NTS,
            "consecutive_failures": INT,
            "paused_until": NTS,
            "pause_reason": NSTR,
            "blocked_reason": NSTR,
            "lag_seconds": {
                **INT,
                "description": "Now minus the newest unrouted message's date; 0 when caught up.",
            },
            "jobs": _ref("JobCounts"),
        }
    ),
    "MailboxPaused": _object({"mailbox": _ref("Mailbox")}),
    "MailboxResumed": _object(
        {
            "mailbox": _ref("Mailbox"),
            "queued": _object({"task": NSTR, "queued": BOOL, "job_id": NINT}),
        }
    ),
    # ---- routing
    "AllowlistEntry": _object(
        {"id": UUID, "pattern": STR, "enabled": BOOL, "created_at": TS, "updated_at": TS}
    ),
    "AllowlistEntryList": _list_of("AllowlistEntry"),
    "AllowlistEntryCreate": _request({"pattern": GLOB, "enabled": NBOOL}, ("pattern",)),
    "AllowlistEntryUpdate": {
        **_request({"pattern": NGLOB, "enabled": NBOOL}),
        "minProperties": 1,
        "description": "Fields sent replace the stored ones; null leaves a field as it is.",
    },
    "RuleConditions": _object(
        {
            "recipient_pattern": NSTR,
            "sender_domain_pattern": NSTR,
            "sender_email_pattern": NSTR,
            "direction": {"enum": ["inbound", "outbound", None]},
        }
    ),
    "RuleActions": _object(
        {
            "assign_queue_id": NUUID,
            "assign_user_id": NUUID,
            "set_status": {"enum": ["new", "open", "pending", "resolved", "closed", "spam", None]},
            "auto_close": BOOL,
            "drop": BOOL,
            "add_tags": STR_LIST,
        }
    ),
    "Rule": _object(
        {
            "id": UUID,
            "version": {**INT, "description": "Goes up on every change."},
            "created_at": TS,
            "updated_at": TS,
            "name": STR,
            "priority": INT,
            "enabled": BOOL,
            "conditions": _ref("RuleConditions"),
            "actions": _ref("RuleActions"),
        }
    ),
    "RuleList": _list_of("Rule"),
    "RuleConditionsInput": _request(
        {
            "recipient_pattern": NGLOB,
            "sender_domain_pattern": {
                **NGLOB,
                "pattern": GLOB["pattern"].replace("\\s", "\\s@"),
                "description": "Glob over the sender's domain (no @).",
            },
            "sender_email_pattern": NGLOB,
            "direction": {"enum": ["inbound", "outbound", None]},
        }
    ),
    "RuleActionsInput": {
        **_request(
            {
                "assign_queue_id": {
                    **NUUID,
                    "description": "A queue of this organisation (else 422 unknown_queue).",
                },
                "assign_user_id": {
                    **NUUID,
                    "description": "A member of this organisation (else 422 unknown_user).",
                },
                "set_status": {
                    "enum": ["new", "open", "pending", "resolved", "closed", "spam", None]
                },
                "auto_close": NBOOL,
                "drop": NBOOL,
                "add_tags": {
                    "type": ["array", "null"],
                    "maxItems": 20,
                    "items": {
                        "type": "string",
                        "pattern": "^ *[^\\s,\\x00-\\x1f\\x7f]{1,50} *$",
                    },
                },
            }
        ),
        # A queue or a user, not both; at most one of set_status, auto_close and drop
        # (422 conflicting_assignees, conflicting_status_actions).
        "not": {
            "anyOf": [
                _both("assign_queue_id", UUID, "assign_user_id", UUID),
                _both("set_status", STR, "auto_close", {"const": True}),
                _both("set_status", STR, "drop", {"const": True}),
                _both("auto_close", {"const": True}, "drop", {"const": True}),
            ]
        },
    },
    "RuleCreate": _request(
        {
            "name": _text(200),
            "priority": {
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": 10000,
                "default": 100,
            },
            "enabled": NBOOL,
            "conditions": _nullable(_ref("RuleConditionsInput")),
            "actions": {
                "allOf": [_ref("RuleActionsInput")],
                # At least one action (else 422 rule_has_no_actions).
                "anyOf": [
                    _set("assign_queue_id", UUID),
                    _set("assign_user_id", UUID),
                    _set("set_status", STR),
                    _set("auto_close", {"const": True}),
                    _set("drop", {"const": True}),
                    _set("add_tags", {"type": "array", "minItems": 1}),
                ],
            },
        },
        ("name", "actions"),
    ),
    "RuleUpdate": {
        **_request(
            {
                "name": _text(200),
                "priority": {"type": ["integer", "null"], "minimum": 0, "maximum": 10000},
                "enabled": NBOOL,
                "conditions": _nullable(_ref("RuleConditionsInput")),
                "actions": _nullable(_ref("RuleActionsInput")),
            }
        ),
        "minProperties": 1,
        "description": "Merge patch: sent fields replace stored ones; null clears a "
        "condition or action. The merged rule is validated as on create (422).",
    },
    "RoutingState": _object(
        {
            "status": STR,
            "assignee_queue_id": NUUID,
            "assignee_user_id": NUUID,
            "tags": STR_LIST,
            "hidden": BOOL,
        }
    ),
    "RoutingDecision": _object(
        {
            "input": _object(
                {"recipient": NSTR, "sender": NSTR, "sender_domain": NSTR, "direction": STR}
            ),
            "allowlisted": BOOL,
            "allowlist_entry": _nullable(_object({"id": UUID, "pattern": STR})),
            "rule": _nullable(_object({"id": UUID, "name": STR, "version": INT, "priority": INT})),
            "matched_conditions": {"type": ["object", "null"]},
            "actions": _nullable(_ref("RuleActions")),
            "skipped_actions": STR_LIST,
            "outcome": {"type": "string", "enum": ["auto_spam", "no_rule", "rule", "dropped"]},
            "status": NSTR,
        }
    ),
    "RoutingSimulation": {
        "allOf": [
            _ref("RoutingDecision"),
            _object(
                {
                    "explanation": STR_LIST,
                    "new_ticket": _object(
                        {"before": _ref("RoutingState"), "after": _ref("RoutingState")}
                    ),
                }
            ),
        ]
    },
    "SimulateRequest": _request(
        {
            "recipient": {**NSTR, "description": "null: the mail revealed no recipient."},
            "sender": {**NSTR, "description": "null: the mail revealed no sender."},
            "direction": {"enum": ["inbound", "outbound", None], "default": "inbound"},
        },
        ("recipient", "sender"),
    ),
    "Reroute": _object(
        {
            "ticket_id": INT,
            "decision": _ref("RoutingDecision"),
            "before": _ref("RoutingState"),
            "after": _ref("RoutingState"),
        }
    ),
    # ---- tickets
    "TicketStatus": {
        "type": "string",
        "enum": ["new", "open", "pending", "resolved", "closed", "spam"],
    },
    "TicketPriority": {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
    "UserRef": _nullable(_object({"user_id": UUID, "email": NSTR, "display_name": NSTR})),
    "Ticket": _object(
        {
            "id": INT,
            "code": {**STR, "example": "T-1001"},
            "subject": STR,
            "status": _ref("TicketStatus"),
            "priority": _ref("TicketPriority"),
            "requester": _object({"email": NSTR, "name": STR}),
            "assignee": _object({"user_id": NUUID, "queue_id": NUUID}),
            "tags": STR_LIST,
            "original_recipient": NSTR,
            "created_at": TS,
            "updated_at": TS,
            "last_message_at": NTS,
            "last_activity_at": TS,
            "message_count": INT,
        }
    ),
    "TicketPage": {
        **_object(
            {
                "items": {"type": "array", "items": _ref("Ticket")},
                "next_cursor": {
                    **NSTR,
                    "description": "Pass as `cursor` for the next page; null on the last.",
                },
            }
        ),
        "description": "A keyset page of tickets, newest activity first.",
    },
    "Attachment": _object(
        {
            "id": INT,
            "filename": STR,
            "content_type": STR,
            "size": INT,
            "content_id": NSTR,
            "disposition": {"type": "string", "enum": ["attachment", "inline"]},
            "download_url": STR,
        }
    ),
    "Occurrence": _object(
        {
            "id": INT,
            "mailbox": _object({"id": UUID, "email": STR}),
            "gmail_message_id": STR,
            "gmail_thread_id": NSTR,
            "internal_date": NTS,
            "original_recipient": NSTR,
            "recipient_source": NSTR,
            "recipient_confidence": {"enum": ["high", "medium", "low", None]},
            "recipient_evidence": OBJ,
            "state": STR,
        }
    ),
    "Address": {
        "type": "object",
        "properties": {"name": STR, "address": STR},
    },
    "Message": _object(
        {
            "id": INT,
            "rfc_message_id": NSTR,
            "from": _object({"name": STR, "address": NSTR}),
            "reply_to": {"type": "array", "items": _ref("Address")},
            "to": {"type": "array", "items": _ref("Address")},
            "cc": {"type": "array", "items": _ref("Address")},
            "subject": STR,
            "sent_at": NTS,
            "snippet": STR,
            "text_body": STR,
            "html_body": {**STR, "description": "Sanitised; cid: images point at downloads."},
            "parse_evidence": {
                **OBJ,
                "description": "How the parser read the message: text_body and html_body "
                "(part, charset, method: ascii, bom, declared, utf-8, mostly-utf-8, detected "
                "or replacement, detector confidence), headers (raw 8-bit fields), skipped "
                "parts with the reason, and empty_body_reason when there is no text. {} for "
                "messages parsed before evidence was recorded.",
                "properties": {"empty_body_reason": STR},
            },
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "stitch": _object(
                {
                    "reason": STR,
                    "confidence": {"type": "string", "enum": ["high", "medium", "low"]},
                    "evidence": OBJ,
                    "linked_at": TS,
                }
            ),
            "attachments": {"type": "array", "items": _ref("Attachment")},
            "occurrences": {
                "type": "array",
                "items": _ref("Occurrence"),
                "description": "Where the message was seen, with routing (recipient) evidence.",
            },
        }
    ),
    "Event": _object(
        {"id": INT, "type": STR, "actor": _ref("UserRef"), "data": OBJ, "created_at": TS}
    ),
    "Note": _object(
        {
            "id": INT,
            "ticket_id": INT,
            "body": STR,
            "author": _ref("UserRef"),
            "created_at": TS,
        },
        optional=("ticket_id",),
    ),
    "TicketDetail": {
        "allOf": [
            _ref("Ticket"),
            _object(
                {
                    "hidden": BOOL,
                    "merged_into_ticket_id": NINT,
                    "mailbox_id": NUUID,
                    "human_touched_at": NTS,
                    "routed_at": NTS,
                    "messages": {"type": "array", "items": _ref("Message")},
                    "events": {"type": "array", "items": _ref("Event")},
                    "notes": {"type": "array", "items": _ref("Note")},
                }
            ),
        ]
    },
    "TicketUpdate": {
        **_request(
            {
                "status": _ref("TicketStatus"),
                "priority": _ref("TicketPriority"),
                "assignee_user_id": NUUID,
                "assignee_queue_id": NUUID,
            }
        ),
        "minProperties": 1,
        "description": "null clears an assignee; assigning a user clears the queue and back.",
    },
    "NoteCreate": _request(
        {"body": {"type": "string", "maxLength": 20000, "pattern": "\\S"}}, ("body",)
    ),
    # ---- ops (admin)
    "OpsMailboxSync": _object(
        {
            "mailbox_id": UUID,
            "email": STR,
            "state": {"type": "string", "enum": ["active", "needs_reconnect", "disabled"]},
            "enabled": BOOL,
            "paused_until": NTS,
            "pause_reason": NSTR,
            "blocked_reason": NSTR,
            "cursor": {**NSTR, "description": "Gmail historyId cursor (bigint as text)."},
            "backfill": _object(
                {
                    "state": {"type": "string", "enum": ["idle", "running", "done"]},
                    "pages": INT,
                    "completed_at": NTS,
                }
            ),
            "last_history_sync_at": NTS,
            "last_error": NSTR,
            "last_error_at": NTS,
            "consecutive_failures": INT,
            "lag_seconds": INT,
            "jobs": _ref("JobCounts"),
            "failures_24h": {**INT, "description": "Failed job attempts in the last 24 hours."},
            "last_sync_success_at": NTS,
            "seconds_since_last_sync": {
                **INT,
                "description": "Since a sync step last succeeded (or the mailbox was added).",
            },
            "health": {
                "type": "string",
                "enum": ["ok", "blocked", "stuck", "idle", "stalled", "lagging"],
                "description": "Is the mailbox syncing as it should? blocked: disabled, "
                "paused or needs reconnect; stuck: a dead worker's job holds it; idle: no "
                "backfill has run; stalled: no successful sync for 5 poll intervals; "
                "lagging: mail waits over 15 minutes to be routed.",
            },
            "health_reason": {**NSTR, "description": "Why, in words (null when ok)."},
            "stuck_jobs": {**INT, "description": "Its running jobs held by dead workers."},
            "watch": _object(
                {
                    "state": {
                        "type": "string",
                        "enum": ["active", "expired", "failed", "off"],
                        "description": "The Gmail push watch: off when push is not "
                        "configured (polling only).",
                    },
                    "topic": NSTR,
                    "expires_at": NTS,
                    "renewed_at": NTS,
                    "error": NSTR,
                    "error_at": NTS,
                    "last_push_at": NTS,
                }
            ),
        }
    ),
    "OpsMailboxSyncList": _list_of("OpsMailboxSync"),
    "CollisionGroup": {
        **_object(
            {
                "collision_group_id": INT,
                "loose_fingerprint": STR,
                "message_count": INT,
                "first_seen_at": TS,
                "last_seen_at": TS,
                "sample_messages": {
                    "type": "array",
                    "maxItems": 5,
                    "items": _object(
                        {"id": INT, "subject": STR, "from_address": NSTR, "sent_at": NTS}
                    ),
                },
            }
        ),
        "description": "Near-duplicate messages sharing a loose fingerprint (not provably "
        "identical): count and up to 5 samples, earliest first.",
    },
    "CollisionGroupList": _list_of("CollisionGroup"),
    "OpsOverview": _object(
        {
            "jobs": _object({"queued": INT, "running": INT, "failed": INT}),
            "mailboxes": _object({"total": INT, "paused": INT}),
            "avg_lag_seconds": INT,
            "occurrences_by_state": {"type": "object", "additionalProperties": INT},
            "dlq_size": {**INT, "description": "Failed jobs not replayed yet."},
        }
    ),
    "DlqJob": _object(
        {
            "job_id": INT,
            "task": STR,
            "queue": STR,
            "attempts": INT,
            "args": {**OBJ, "description": "The job's id arguments only, never mail."},
            "error_class": NSTR,
            "error_message": NSTR,
            "failed_at": NTS,
            "replay": _nullable(_object({"replay_job_id": INT, "replayed_at": TS})),
        }
    ),
    "DlqJobList": _list_of("DlqJob"),
    "Replay": _object(
        {
            "job_id": INT,
            "replay_job_id": INT,
            "created": {**BOOL, "description": "false when it was replayed before."},
        }
    ),
}

SCHEMAS["PubSubPush"] = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    **STR,
                    "description": 'base64 of JSON {"emailAddress": "...", "historyId": N}',
                },
                "messageId": STR,
                "publishTime": STR,
                "attributes": OBJ,
            },
        },
        "subscription": STR,
    },
    "description": "A Cloud Pub/Sub push envelope carrying a Gmail notification.",
}

# ------------------------------------------------------------------ shared pieces

_ERROR_RESPONSES = {
    "400": (
        "BadRequest",
        "Malformed input: invalid_json, json_too_deep (nesting past 32 levels), invalid_text "
        "(NUL or a lone surrogate anywhere), invalid_cursor, or an HTTP request the server "
        "cannot parse (bad_request).",
    ),
    "401": ("Unauthorized", "No valid session: not_authenticated, session_expired, not_a_member."),
    "403": ("Forbidden", "Role too low (forbidden) or CSRF header missing/wrong (csrf_failed)."),
    "404": ("NotFound", "Unknown id in this organisation (or feature disabled)."),
    "409": ("Conflict", "Conflicts with the current state."),
    "422": ("UnprocessableEntity", "A value is invalid: invalid_<field>, unknown_field, ..."),
    "413": ("PayloadTooLarge", "The body is over 1 MiB (payload_too_large)."),
    "415": ("UnsupportedMediaType", "A body that is not application/json."),
    "429": ("TooManyRequests", "Rate limited (rate_limited); see Retry-After."),
    "503": ("ServiceUnavailable", "Database or Google unavailable; retry later."),
}

RESPONSES: dict[str, Any] = {
    name: {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    for name, description in _ERROR_RESPONSES.values()
}
RESPONSES["TooManyRequests"]["headers"] = {
    "Retry-After": {"description": "Seconds to wait.", "schema": INT}
}
RESPONSES["InternalError"] = {
    "description": "Unexpected server fault (internal_error); never a stack trace.",
    "content": {"application/json": {"schema": _ref("Error")}},
}


def _errors(*statuses: int) -> dict[str, Any]:
    """The shared error responses for `statuses`, plus the catch-all internal error."""
    refs: dict[str, Any] = {
        str(status): {"$ref": f"#/components/responses/{_ERROR_RESPONSES[str(status)][0]}"}
        for status in statuses
    }
    refs["default"] = {"$ref": "#/components/responses/InternalError"}
    return refs


def _json(description: str, schema: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(schema)}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _body(schema: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(schema)}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


CSRF = {"$ref": "#/components/parameters/CsrfToken"}
PUBLIC: list[Any] = []  # `security` of operations that need no session


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


MAILBOX_ID = _path_param("mailbox_id", UUID, "Mailbox id.")
TICKET_ID = _path_param("ticket_id", {"type": "integer", "minimum": 1}, "Ticket id.")
ATTACHMENT_ID = _path_param("attachment_id", {"type": "integer", "minimum": 1}, "Attachment id.")
ALLOWLIST_ID = _path_param("allowlist_id", UUID, "Allowlist entry id.")
RULE_ID = _path_param("rule_id", UUID, "Routing rule id.")
JOB_ID = _path_param("job_id", {"type": "integer", "minimum": 1}, "Failed job id.")


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        "description": f"How many items (1..{maximum}, default {default}); else 422 invalid_limit.",
    }


# ------------------------------------------------------------------ operations

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "tags": ["health"],
            "summary": "Liveness",
            "description": "The process is up (no database call). No session needed.",
            "x-min-role": None,
            "security": PUBLIC,
            "responses": {"200": _json("Alive.", "Health"), **_errors()},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "tags": ["health"],
            "summary": "Readiness",
            "description": "200 only when the database answers and carries this build's "
            "migrations and SQL code; 503 migrations_pending, code_outdated or "
            "database_unavailable otherwise. The body reports the ingestion pipeline's health "
            "(live workers, stuck jobs, mailboxes by sync health); with `scope=pipeline` a "
            "degraded pipeline answers 503 pipeline_degraded (for a monitoring probe, not a "
            "load balancer). No session needed.",
            "x-min-role": None,
            "security": PUBLIC,
            "parameters": [
                {
                    "name": "scope",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["pipeline"]},
                    "description": "`pipeline`: also 503 when ingestion cannot run by itself; "
                    "any other value is 422 invalid_scope.",
                }
            ],
            "responses": {"200": _json("Ready.", "Ready"), **_errors(422, 503)},
        }
    },
    "/auth/csrf": {
        "get": {
            "operationId": "getCsrfToken",
            "tags": ["auth"],
            "summary": "Issue a CSRF token",
            "description": "Sets cookie `oss_csrf` and returns the same token; send it as "
            "header `x-csrf-token` on every non-GET request. No session needed.",
            "x-min-role": None,
            "security": PUBLIC,
            "responses": {"200": _json("A token.", "CsrfToken"), **_errors(429)},
        }
    },
    "/auth/dev/login": {
        "post": {
            "operationId": "devLogin",
            "tags": ["auth"],
            "summary": "Development login",
            "description": "Only when ALLOW_DEV_LOGIN=true (404 otherwise). Finds or creates "
            "the organisation, user and membership (the founder is admin, later members "
            "agents unless `role` is given), sets cookie `oss_session` and rotates the CSRF "
            "token. No session needed.",
            "x-min-role": None,
            "security": PUBLIC,
            "parameters": [CSRF],
            "requestBody": _body(
                "DevLoginRequest", {"email": "alice@example.com", "organization_name": "Acme"}
            ),
            "responses": {
                "200": _json("Logged in.", "Login"),
                **_errors(400, 403, 404, 422, 429, 503),
            },
        }
    },
    "/auth/logout": {
        "post": {
            "operationId": "logout",
            "tags": ["auth"],
            "summary": "Log out",
            "description": "Revoke the session and clear its cookie. Minimum role: viewer.",
            "x-min-role": "viewer",
            "parameters": [CSRF],
            "responses": {
                "200": _json("Logged out.", "LoggedOut"),
                **_errors(401, 403, 429, 503),
            },
        }
    },
    "/auth/switch-org": {
        "post": {
            "operationId": "switchOrganization",
            "tags": ["auth"],
            "summary": "Switch organisation",
            "description": "Move the session to another organisation of the user (404 "
            "organization_not_found otherwise). Minimum role: viewer.",
            "x-min-role": "viewer",
            "parameters": [CSRF],
            "requestBody": _body("SwitchOrgRequest"),
            "responses": {
                "200": _json("The session, now in that organisation.", "Session"),
                **_errors(400, 401, 403, 404, 422, 429, 503),
            },
        }
    },
    "/me": {
        "get": {
            "operationId": "getMe",
            "tags": ["auth"],
            "summary": "The current session",
            "description": "User, organisation, role and memberships. Minimum role: viewer.",
            "x-min-role": "viewer",
            "responses": {"200": _json("The session.", "Me"), **_errors(401, 429, 503)},
        }
    },
    "/queues": {
        "get": {
            "operationId": "listQueues",
            "tags": ["queues"],
            "summary": "List queues",
            "description": "The organisation's queues by name. Minimum role: viewer.",
            "x-min-role": "viewer",
            "responses": {
                "200": _json("Queues.", "QueueList", {"items": []}),
                **_errors(401, 429, 503),
            },
        },
        "post": {
            "operationId": "createQueue",
            "tags": ["queues"],
            "summary": "Create a queue",
            "description": "409 queue_exists on a case-insensitive name clash. Minimum role: "
            "admin.",
            "x-min-role": "admin",
            "parameters": [CSRF],
            "requestBody": _body("QueueCreate", {"name": "Billing"}),
            "responses": {
                "201": _json("Created.", "Queue"),
                **_errors(400, 401, 403, 409, 422, 429, 503),
            },
        },
    },
    "/mailboxes": {
        "get": {
            "operationId": "listMailboxes",
            "tags": ["mailboxes"],
            "summary": "List mailboxes",
            "description": "The organisation's mailboxes by address (never the refresh token). "
            "Minimum role: admin.",
            "x-min-role": "admin",
            "responses": {
                "200": _json("Mailboxes.", "MailboxList", {"items": []}),
                **_errors(401, 403, 429, 503),
            },
        }
    },
    "/mailboxes/gmail/journal/oauth/start": {
        "post": {
            "operationId": "startGmailOAuth",
            "tags": ["mailboxes"],
            "summary": "Start connecting a Gmail journal mailbox",
            "description": "A one-time state (10 minutes, bound to this admin and "
            "organisation) and Google's consent URL to open in the admin's browser. 503 "
            "google_oauth_not_configured without GOOGLE_CLIENT_ID/SECRET. Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF],
            "responses": {
                "200": _json("Consent URL.", "OAuthStart"),
                **_errors(401, 403, 429, 503),
            },
        }
    },
    "/mailboxes/gmail/oauth/callback": {
        "get": {
            "operationId": "gmailOAuthCallback",
            "tags": ["mailboxes"],
            "summary": "Google's redirect back",
            "description": "Consumes the state, exchanges the code, reads the Gmail profile "
            "and creates the mailbox (201, backfill queued) or reconnects it (200). 400 for "
            "a bad/used/expired state, a refused code or consent; 422 refresh_token_missing "
            "/ insufficient_scope; 409 mailbox_connect_conflict. Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [
                {
                    "name": "state",
                    "in": "query",
                    "required": True,
                    "schema": {**STR, "minLength": 1},
                },
                {"name": "code", "in": "query", "schema": STR},
                {"name": "error", "in": "query", "schema": STR},
            ],
            "responses": {
                "200": _json("Existing mailbox reconnected.", "Mailbox"),
                "201": _json("Mailbox created.", "Mailbox"),
                **_errors(400, 401, 403, 409, 422, 429, 503),
            },
        }
    },
    "/mailboxes/{mailbox_id}/connectivity": {
        "get": {
            "operationId": "checkMailboxConnectivity",
            "tags": ["mailboxes"],
            "summary": "Check the stored grant",
            "description": "users.getProfile with the stored grant; moves no sync state. "
            "Problems are a 200 with ok=false. Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [MAILBOX_ID],
            "responses": {
                "200": _json("Verdict.", "Connectivity"),
                **_errors(401, 403, 404, 429, 503),
            },
        }
    },
    "/mailboxes/{mailbox_id}/sync/backfill": {
        "post": {
            "operationId": "queueMailboxBackfill",
            "tags": ["mailboxes"],
            "summary": "Queue a full backfill",
            "description": "queued=false when one is already waiting; 409 backfill_running "
            "while one runs. Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF, MAILBOX_ID],
            "responses": {
                "202": _json("Accepted.", "SyncQueued"),
                **_errors(401, 403, 404, 409, 429, 503),
            },
        }
    },
    "/mailboxes/{mailbox_id}/sync/history": {
        "post": {
            "operationId": "queueMailboxHistorySync",
            "tags": ["mailboxes"],
            "summary": "Queue an incremental history sync",
            "description": "409 history_cursor_missing before the first backfill. Minimum "
            "role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF, MAILBOX_ID],
            "responses": {
                "202": _json("Accepted.", "SyncQueued"),
                **_errors(401, 403, 404, 409, 429, 503),
            },
        }
    },
    "/mailboxes/{mailbox_id}/sync/status": {
        "get": {
            "operationId": "getMailboxSyncStatus",
            "tags": ["mailboxes"],
            "summary": "Sync status and lag",
            "description": "Cursor, backfill progress, last sync and error, pause, lag, jobs. "
            "Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [MAILBOX_ID],
            "responses": {
                "200": _json("Status.", "SyncStatus"),
                **_errors(401, 403, 404, 429, 503),
            },
        }
    },
    "/mailboxes/{mailbox_id}/sync/pause": {
        "post": {
            "operationId": "pauseMailboxSync",
            "tags": ["mailboxes"],
            "summary": "Pause ingestion",
            "description": "Sync steps do nothing until the pause expires or is resumed. "
            "Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [
                CSRF,
                MAILBOX_ID,
                {
                    "name": "minutes",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10080, "default": 30},
                    "description": "Pause length (1..10080); else 422 invalid_minutes.",
                },
            ],
            "responses": {
                "200": _json("Paused.", "MailboxPaused"),
                **_errors(401, 403, 404, 422, 429, 503),
            },
        }
    },
    "/mailboxes/{mailbox_id}/sync/resume": {
        "post": {
            "operationId": "resumeMailboxSync",
            "tags": ["mailboxes"],
            "summary": "Resume ingestion",
            "description": "Clears the pause and failure streak, queues a history sync (a "
            "backfill without a cursor). Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF, MAILBOX_ID],
            "responses": {
                "200": _json("Resumed.", "MailboxResumed"),
                **_errors(401, 403, 404, 429, 503),
            },
        }
    },
    "/tickets/routing/allowlist": {
        "get": {
            "operationId": "listAllowlist",
            "tags": ["routing"],
            "summary": "List allowlist patterns",
            "description": "By pattern. Minimum role: admin.",
            "x-min-role": "admin",
            "responses": {
                "200": _json("Patterns.", "AllowlistEntryList", {"items": []}),
                **_errors(401, 403, 429, 503),
            },
        },
        "post": {
            "operationId": "createAllowlistEntry",
            "tags": ["routing"],
            "summary": "Add an allowlist pattern",
            "description": "409 allowlist_pattern_exists on a case-insensitive duplicate. "
            "Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF],
            "requestBody": _body("AllowlistEntryCreate", {"pattern": "support@acme.example"}),
            "responses": {
                "201": _json("Created.", "AllowlistEntry"),
                **_errors(400, 401, 403, 409, 422, 429, 503),
            },
        },
    },
    "/tickets/routing/allowlist/{allowlist_id}": {
        "patch": {
            "operationId": "updateAllowlistEntry",
            "tags": ["routing"],
            "summary": "Change an allowlist pattern",
            "description": "Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF, ALLOWLIST_ID],
            "requestBody": _body("AllowlistEntryUpdate"),
            "responses": {
                "200": _json("Updated.", "AllowlistEntry"),
                **_errors(400, 401, 403, 404, 409, 422, 429, 503),
            },
        },
        "delete": {
            "operationId": "deleteAllowlistEntry",
            "tags": ["routing"],
            "summary": "Remove an allowlist pattern",
            "description": "Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF, ALLOWLIST_ID],
            "responses": {
                "204": {"description": "Removed."},
                **_errors(401, 403, 404, 429, 503),
            },
        },
    },
    "/tickets/routing/rules": {
        "get": {
            "operationId": "listRules",
            "tags": ["routing"],
            "summary": "List routing rules",
            "description": "In evaluation order (priority, id). Minimum role: admin.",
            "x-min-role": "admin",
            "responses": {
                "200": _json("Rules.", "RuleList", {"items": []}),
                **_errors(401, 403, 429, 503),
            },
        },
        "post": {
            "operationId": "createRule",
            "tags": ["routing"],
            "summary": "Add a routing rule",
            "description": "Conditions (ANDed): recipient_pattern, sender_domain_pattern, "
            "sender_email_pattern, direction. Actions: assign_queue_id or assign_user_id, "
            "set_status, auto_close, drop, add_tags. 409 rule_name_exists. Minimum role: "
            "admin.",
            "x-min-role": "admin",
            "parameters": [CSRF],
            "requestBody": _body(
                "RuleCreate",
                {
                    "name": "Billing",
                    "priority": 10,
                    "conditions": {"recipient_pattern": "billing@*"},
                    "actions": {"add_tags": ["billing"]},
                },
            ),
            "responses": {
                "201": _json("Created.", "Rule"),
                **_errors(400, 401, 403, 409, 422, 429, 503),
            },
        },
    },
    "/tickets/routing/rules/{rule_id}": {
        "patch": {
            "operationId": "updateRule",
            "tags": ["routing"],
            "summary": "Change a routing rule",
            "description": "Merged into the rule, validated as a whole; its version goes up. "
            "Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF, RULE_ID],
            "requestBody": _body("RuleUpdate"),
            "responses": {
                "200": _json("Updated.", "Rule"),
                **_errors(400, 401, 403, 404, 409, 422, 429, 503),
            },
        },
        "delete": {
            "operationId": "deleteRule",
            "tags": ["routing"],
            "summary": "Remove a routing rule",
            "description": "Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF, RULE_ID],
            "responses": {
                "204": {"description": "Removed."},
                **_errors(401, 403, 404, 429, 503),
            },
        },
    },
    "/tickets/routing/simulate": {
        "post": {
            "operationId": "simulateRouting",
            "tags": ["routing"],
            "summary": "Simulate routing",
            "description": "What routing would decide for a recipient/sender/direction, "
            "explained, and its effect on a new ticket; changes nothing. Minimum role: agent.",
            "x-min-role": "agent",
            "parameters": [CSRF],
            "requestBody": _body(
                "SimulateRequest",
                {"recipient": "support@acme.example", "sender": "casey@example.net"},
            ),
            "responses": {
                "200": _json("The decision.", "RoutingSimulation"),
                **_errors(400, 401, 403, 422, 429, 503),
            },
        }
    },
    "/tickets/{ticket_id}/reroute": {
        "post": {
            "operationId": "rerouteTicket",
            "tags": ["routing"],
            "summary": "Route a ticket again",
            "description": "Applies today's allowlist and rules to the ticket, even after a "
            "person touched it. Minimum role: agent.",
            "x-min-role": "agent",
            "parameters": [CSRF, TICKET_ID],
            "responses": {
                "200": _json("Decision and effect.", "Reroute"),
                **_errors(401, 403, 404, 429, 503),
            },
        }
    },
    "/tickets": {
        "get": {
            "operationId": "listTickets",
            "tags": ["tickets"],
            "summary": "List and search tickets",
            "description": "Keyset pages, newest activity first; merged and hidden tickets "
            "are left out. A cursor only continues the listing with the same filters (400 "
            "cursor_mismatch). Minimum role: viewer.",
            "x-min-role": "viewer",
            "parameters": [
                _limit(50, 100),
                {
                    "name": "cursor",
                    "in": "query",
                    "schema": STR,
                    "description": "Opaque `next_cursor` of the previous page.",
                },
                {"name": "status", "in": "query", "schema": _ref("TicketStatus")},
                {
                    "name": "q",
                    "in": "query",
                    "schema": {**STR, "maxLength": 500},
                    "description": "Full-text search (web search syntax) over subject, "
                    "requester, code and message bodies.",
                },
                {"name": "assignee_user_id", "in": "query", "schema": UUID},
                {"name": "assignee_queue_id", "in": "query", "schema": UUID},
            ],
            "responses": {
                "200": _json("A page.", "TicketPage", {"items": [], "next_cursor": None}),
                **_errors(400, 401, 422, 429, 503),
            },
        }
    },
    "/tickets/{ticket_id}": {
        "get": {
            "operationId": "getTicket",
            "tags": ["tickets"],
            "summary": "Ticket detail",
            "description": "The ticket, its thread messages (attachments, occurrences with "
            "routing evidence), events and notes. Minimum role: viewer.",
            "x-min-role": "viewer",
            "parameters": [TICKET_ID],
            "responses": {
                "200": _json("The ticket.", "TicketDetail"),
                **_errors(401, 404, 429, 503),
            },
        },
        "patch": {
            "operationId": "updateTicket",
            "tags": ["tickets"],
            "summary": "Change status, priority or assignee",
            "description": "Writes one `updated` event; 409 ticket_merged for a merged "
            "ticket. Minimum role: agent.",
            "x-min-role": "agent",
            "parameters": [CSRF, TICKET_ID],
            "requestBody": _body("TicketUpdate", {"status": "open", "priority": "high"}),
            "responses": {
                "200": _json("The ticket.", "Ticket"),
                **_errors(400, 401, 403, 404, 409, 422, 429, 503),
            },
        },
    },
    "/tickets/{ticket_id}/notes": {
        "post": {
            "operationId": "addTicketNote",
            "tags": ["tickets"],
            "summary": "Add an internal note",
            "description": "Writes a `note_added` event. Minimum role: agent.",
            "x-min-role": "agent",
            "parameters": [CSRF, TICKET_ID],
            "requestBody": _body("NoteCreate", {"body": "Called the customer back."}),
            "responses": {
                "201": _json("Created.", "Note"),
                **_errors(400, 401, 403, 404, 409, 422, 429, 503),
            },
        }
    },
    "/tickets/{ticket_id}/attachments/{attachment_id}/download": {
        "get": {
            "operationId": "downloadAttachment",
            "tags": ["tickets"],
            "summary": "Download an attachment",
            "description": "S3 store: 307 to a short-lived presigned URL. Local store: the "
            "bytes, with a safe Content-Disposition. Minimum role: viewer.",
            "x-min-role": "viewer",
            "parameters": [TICKET_ID, ATTACHMENT_ID],
            "responses": {
                "200": {
                    "description": "The attachment's bytes.",
                    "headers": {"Content-Disposition": {"schema": STR}},
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "307": {
                    "description": "Redirect to a presigned URL.",
                    "headers": {"Location": {"schema": STR, "required": True}},
                },
                **_errors(401, 404, 429, 503),
            },
        }
    },
    "/ops/mailboxes/sync": {
        "get": {
            "operationId": "opsMailboxSync",
            "tags": ["ops"],
            "summary": "Sync state of every mailbox",
            "description": "State, pause, cursor, last syncs, last error, lag, queued/running "
            "jobs by task, failures in the last 24 hours, sync health with its reason, and the "
            "Gmail push watch. Minimum role: admin.",
            "x-min-role": "admin",
            "responses": {
                "200": _json("Mailboxes.", "OpsMailboxSyncList", {"items": []}),
                **_errors(401, 403, 429, 503),
            },
        }
    },
    "/ops/messages/collisions": {
        "get": {
            "operationId": "opsMessageCollisions",
            "tags": ["ops"],
            "summary": "Collision groups",
            "description": "Near-duplicate groups with counts and samples. Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [_limit(50, 200)],
            "responses": {
                "200": _json("Groups.", "CollisionGroupList", {"items": []}),
                **_errors(401, 403, 422, 429, 503),
            },
        }
    },
    "/ops/metrics/overview": {
        "get": {
            "operationId": "opsMetricsOverview",
            "tags": ["ops"],
            "summary": "Pipeline overview",
            "description": "Jobs, mailboxes, lag, occurrences by state, DLQ size. Minimum "
            "role: admin.",
            "x-min-role": "admin",
            "responses": {
                "200": _json("Overview.", "OpsOverview"),
                **_errors(401, 403, 429, 503),
            },
        }
    },
    "/ops/jobs/dlq": {
        "get": {
            "operationId": "opsListDlq",
            "tags": ["ops"],
            "summary": "Dead-letter queue",
            "description": "Failed jobs with task, attempts and last error (no mail "
            "content). Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [_limit(50, 200)],
            "responses": {
                "200": _json("Failed jobs.", "DlqJobList", {"items": []}),
                **_errors(401, 403, 422, 429, 503),
            },
        }
    },
    "/ops/jobs/{job_id}/replay": {
        "post": {
            "operationId": "opsReplayJob",
            "tags": ["ops"],
            "summary": "Replay a failed job",
            "description": "Re-queues it with a fresh attempt budget; replaying twice adds "
            "nothing. 404 job_not_found. Minimum role: admin.",
            "x-min-role": "admin",
            "parameters": [CSRF, JOB_ID],
            "responses": {
                "202": _json("Replay queued (or the earlier one).", "Replay"),
                **_errors(401, 403, 404, 429, 503),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "prometheusMetrics",
            "tags": ["ops"],
            "summary": "Prometheus metrics",
            "description": "Prometheus text exposition; served only when "
            "ENABLE_PROMETHEUS_METRICS=true (404 otherwise). For scrapers: no session, "
            "expose it only on networks that may read it.",
            "x-min-role": None,
            "security": PUBLIC,
            "responses": {
                "200": {
                    "description": "Metrics.",
                    "content": {"text/plain": {"schema": STR}},
                },
                **_errors(404, 503),
            },
        }
    },
    "/webhooks/gmail/pubsub": {
        "post": {
            "operationId": "gmailPubSubPush",
            "tags": ["webhooks"],
            "summary": "Gmail push notification (Cloud Pub/Sub push)",
            "description": "A mailbox changed: queue its history sync (a storm of pushes "
            "queues one) and answer 204 at once; Gmail itself is never called here. An unknown "
            "mailbox is acknowledged too (204), so Pub/Sub stops retrying. No session and no "
            "CSRF header: the push is authenticated by Pub/Sub's OIDC token (Authorization: "
            "Bearer, when GMAIL_PUSH_AUDIENCE is set) or else by the shared secret "
            "GMAIL_PUSH_TOKEN in the query string; otherwise 401 push_unauthenticated. 400 or "
            "422 invalid_push for a malformed envelope; 404 when push is not configured.",
            "x-min-role": None,
            "security": PUBLIC,
            "parameters": [
                {
                    "name": "token",
                    "in": "query",
                    "schema": STR,
                    "description": "The shared secret GMAIL_PUSH_TOKEN (when OIDC is not set).",
                }
            ],
            "requestBody": _body(
                "PubSubPush",
                {
                    "message": {
                        "data": "eyJlbWFpbEFkZHJlc3MiOiAiam91cm5hbEBhY21lLmV4YW1wbGUiLCAi"
                        "aGlzdG9yeUlkIjogIjEyMzQ1In0=",
                        "messageId": "2070443601311540",
                        "publishTime": "2026-12-07T08:00:00Z",
                    },
                    "subscription": "projects/acme/subscriptions/gmail-push",
                },
            ),
            "responses": {
                "204": {"description": "Acknowledged."},
                **_errors(400, 401, 404, 422, 503),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "getOpenApiDocument",
            "tags": ["meta"],
            "summary": "This document",
            "description": "The OpenAPI document of the API. No session needed.",
            "x-min-role": None,
            "security": PUBLIC,
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": OBJ}},
                },
                **_errors(429),
            },
        }
    },
}


# Answered by the edge before any handler: 400 for any request (malformed HTTP, text
# PostgreSQL cannot hold), 413 and 415 for a body, 429 everywhere but the probes.
_UNLIMITED = ("/healthz", "/readyz", "/metrics")


def _with_edge_errors(paths: dict[str, Any]) -> dict[str, Any]:
    for path, operations in paths.items():
        for operation in operations.values():
            statuses = [400]
            if "requestBody" in operation:
                statuses += [413, 415]
            if path not in _UNLIMITED:
                statuses.append(429)
            for status, ref in _errors(*statuses).items():
                operation["responses"].setdefault(status, ref)
    return paths


def document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh dict on every call)."""
    return copy.deepcopy(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "OSS Ticketing API",
                "version": "1",
                "description": "Helpdesk backend for Google Workspace journal mailboxes. JSON "
                'everywhere; errors are {"detail", "code"}. Sessions are the HttpOnly cookie '
                "`oss_session` (POST /auth/dev/login in development). Every non-GET request "
                "needs header `x-csrf-token` equal to cookie `oss_csrf` (GET /auth/csrf). "
                "Roles: viewer < agent < admin; each operation names its minimum role in "
                "`x-min-role` (null: no session needed).",
            },
            "servers": [{"url": "/"}],
            "security": [{"session": []}],
            "tags": [
                {"name": name}
                for name in (
                    "health",
                    "auth",
                    "queues",
                    "mailboxes",
                    "routing",
                    "tickets",
                    "ops",
                    "webhooks",
                    "meta",
                )
            ],
            "paths": _with_edge_errors(copy.deepcopy(PATHS)),
            "components": {
                "securitySchemes": {
                    "session": {
                        "type": "apiKey",
                        "in": "cookie",
                        "name": "oss_session",
                        "description": "Session cookie set by login (HttpOnly).",
                    }
                },
                "parameters": {
                    "CsrfToken": {
                        "name": "x-csrf-token",
                        "in": "header",
                        "required": True,
                        "schema": STR,
                        "description": "Double-submit CSRF token: equal to cookie `oss_csrf` "
                        "(GET /auth/csrf); else 403 csrf_failed.",
                    }
                },
                "responses": RESPONSES,
                "schemas": SCHEMAS,
            },
        }
    )


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI document (no session needed)."""
    settings = request.app[SETTINGS]
    doc = document()
    # Cookie names are configurable: describe the ones this server uses.
    doc["components"]["securitySchemes"]["session"]["name"] = settings.session_cookie_name
    return web.json_response(doc)
