"""The OpenAPI 3.1 document of the HTTP API, generated from the routes, and `GET /openapi.json`.

Each operation is generated from its route declaration (app/http.py `Route` with its
app/apidoc.py `Doc`, next to the handler): security, `x-min-role`, the role sentence, the
CSRF header, path ids, `?limit=` and the shared error responses are derived; the `Doc`
holds only what a person must write. The shapes are plain data under `SCHEMAS`. Response shapes follow the `jsonb_build_object` calls of sql/api/*.sql (the
source of truth); every key those calls always emit is `required`, nullable values are typed
`[..., "null"]`. tests/api/test_openapi.py keeps it true: every route of the app must be
documented here and every documented operation must exist, and real responses are checked
against the schemas.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from app.apidoc import (
    BOOL,
    DATABASE_ENUMS,
    EMAIL,
    GLOB,
    INPUT_LIMITS,
    INT,
    NBOOL,
    NGLOB,
    NINT,
    NSTR,
    NTS,
    NUUID,
    OBJ,
    ROLE,
    STR,
    STR_LIST,
    TS,
    UUID,
    Doc,
    enum_of,
)
from app.apidoc import array_of as _array_of
from app.apidoc import both as _both
from app.apidoc import list_of as _list_of
from app.apidoc import nullable as _nullable
from app.apidoc import obj as _object
from app.apidoc import present as _set
from app.apidoc import ref as _ref
from app.apidoc import request_object as _request
from app.apidoc import text as _text
from app.handlers import replies
from app.http import SETTINGS, Limit, PathId, Route

OPENAPI_VERSION = "3.1.0"

# ------------------------------------------------------------------ schemas

# The fields of a rule body (create and update), flat as the web client sends them.
_RULE_FIELDS: dict[str, Any] = {
    "name": _text(INPUT_LIMITS["rule_name"]),
    "priority": {
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": INPUT_LIMITS["rule_priority"],
    },
    "is_enabled": NBOOL,
    "match_recipient_pattern": NGLOB,
    "match_sender_domain_pattern": {
        **NGLOB,
        "pattern": GLOB["pattern"].replace("\\s", "\\s@"),
        "description": "Glob over the sender's domain (no @).",
    },
    "match_sender_email_pattern": NGLOB,
    "match_direction": {"enum": ["inbound", "outbound", None]},
    "action_assign_queue_id": {
        **NUUID,
        "description": "A queue of this organisation (else 422 unknown_queue).",
    },
    "action_assign_user_id": {
        **NUUID,
        "description": "A member of this organisation (else 422 unknown_user).",
    },
    "action_set_status": enum_of("ticket_status", nullable=True),
    "action_drop": NBOOL,
    "action_auto_close": NBOOL,
    "action_add_tags": {
        "type": ["array", "null"],
        "maxItems": INPUT_LIMITS["rule_tags"],
        "items": {
            "type": "string",
            "pattern": f"^ *[^\\s,\\x00-\\x1f\\x7f]{{1,{INPUT_LIMITS['tag_length']}}} *$",
        },
    },
}
_RULE_CONFLICTS = [
    _both("action_assign_queue_id", UUID, "action_assign_user_id", UUID),
    _both("action_set_status", STR, "action_auto_close", {"const": True}),
    _both("action_set_status", STR, "action_drop", {"const": True}),
    _both("action_auto_close", {"const": True}, "action_drop", {"const": True}),
]

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
                    "problems": {
                        **STR_LIST,
                        "description": "What makes the pipeline degraded, in words.",
                    },
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
            "email": EMAIL,
            "organization_name": _text(INPUT_LIMITS["organization_name"]),
            "role": enum_of("member_role", nullable=True),
        },
        ("email", "organization_name"),
    ),
    "SwitchOrgRequest": _request({"organization_id": UUID}, ("organization_id",)),
    "LoggedOut": _object({"logged_out": {"type": "boolean", "const": True}}),
    # ---- queues
    "Queue": _object({"id": UUID, "name": STR, "description": STR, "created_at": TS}),
    "QueueList": _array_of("Queue"),
    "QueueCreate": _request(
        {
            "name": _text(INPUT_LIMITS["queue_name"]),
            "description": {**NSTR, "maxLength": INPUT_LIMITS["queue_description"]},
        },
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
            "email_address": STR,
            "provider": {"type": "string", "enum": ["gmail", "mbox"]},
            "purpose": {"type": "string", "enum": ["journal", "sender"]},
            "gmail_profile_email": {
                **NSTR,
                "description": "The Gmail account of the stored grant (null: none).",
            },
            "display_name": STR,
            "state": enum_of("mailbox_state"),
            "is_enabled": BOOL,
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
            "updated_at": TS,
        }
    ),
    "MailboxList": _array_of("Mailbox"),
    "OAuthStart": _object(
        {
            "authorization_url": {**STR, "format": "uri"},
            "state": STR,
            "expires_at": TS,
        }
    ),
    "Connectivity": {
        **_object(
            {
                "status": {
                    "type": "string",
                    "enum": ["connected", "degraded", "paused", "disabled"],
                    "description": "connected: the grant works; degraded: it does not (see "
                    "error and code); paused / disabled: the mailbox's sync is paused or off "
                    "(the grant was still checked).",
                },
                "profile_email": {**NSTR, "description": "The Gmail account the grant reads."},
                "scopes": {**STR_LIST, "description": "The OAuth scopes granted."},
                "error": NSTR,
                "code": {
                    "enum": [
                        "not_gmail",
                        "not_connected",
                        "token_unreadable",
                        "needs_reconnect",
                        "gmail_unavailable",
                        "gmail_error",
                        "email_mismatch",
                        None,
                    ],
                    "description": "Why the grant does not work (null when it does).",
                },
                "history_id": {**NSTR, "description": "Gmail's current historyId, if read."},
                "messages_total": NINT,
                "gmail_status": {**NINT, "description": "Gmail's HTTP status of a refusal."},
            }
        ),
        "description": "Whether the stored grant works (GET users.getProfile).",
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
            "state": enum_of("mailbox_state"),
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
        {"id": UUID, "pattern": STR, "is_enabled": BOOL, "created_at": TS, "updated_at": TS}
    ),
    "AllowlistEntryList": _array_of("AllowlistEntry"),
    "AllowlistEntryCreate": _request({"pattern": GLOB, "is_enabled": NBOOL}, ("pattern",)),
    "AllowlistEntryUpdate": {
        **_request({"pattern": NGLOB, "is_enabled": NBOOL}),
        "minProperties": 1,
        "description": "Fields sent replace the stored ones; null leaves a field as it is.",
    },
    "RuleActions": _object(
        {
            "assign_queue_id": NUUID,
            "assign_user_id": NUUID,
            "set_status": enum_of("ticket_status", nullable=True),
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
            "is_enabled": BOOL,
            "match_recipient_pattern": NSTR,
            "match_sender_domain_pattern": NSTR,
            "match_sender_email_pattern": NSTR,
            "match_direction": {"enum": ["inbound", "outbound", None]},
            "action_assign_queue_id": NUUID,
            "action_assign_user_id": NUUID,
            "action_set_status": enum_of("ticket_status", nullable=True),
            "action_drop": BOOL,
            "action_auto_close": BOOL,
            "action_add_tags": STR_LIST,
        }
    ),
    "RuleList": _array_of("Rule"),
    "RuleCreate": {
        **_request(_RULE_FIELDS, ("name",)),
        # A queue or a user, not both; at most one of action_set_status, action_auto_close
        # and action_drop (422 conflicting_assignees, conflicting_status_actions).
        "not": {"anyOf": _RULE_CONFLICTS},
        # At least one action (else 422 rule_has_no_actions).
        "anyOf": [
            _set("action_assign_queue_id", UUID),
            _set("action_assign_user_id", UUID),
            _set("action_set_status", STR),
            _set("action_auto_close", {"const": True}),
            _set("action_drop", {"const": True}),
            _set("action_add_tags", {"type": "array", "minItems": 1}),
        ],
        "description": "A rule in flat fields; priority defaults to 100, is_enabled to true.",
    },
    "RuleUpdate": {
        **_request(_RULE_FIELDS),
        "not": {"anyOf": _RULE_CONFLICTS},
        "minProperties": 1,
        "description": "Merge patch: sent fields replace stored ones; null clears a "
        "condition or an assignment (and leaves name, priority, is_enabled and the flags as "
        "they are). The merged rule is validated as on create (422).",
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
    "AppliedActions": _object(
        {
            "assign_queue_id": NUUID,
            "assign_user_id": {
                **NUUID,
                "description": "null also when the rule's user is no longer a member.",
            },
            "set_status": NSTR,
            "drop": BOOL,
            "auto_close": BOOL,
            "add_tags": STR_LIST,
        }
    ),
    "RoutingSimulation": {
        "allOf": [
            _ref("RoutingDecision"),
            _object(
                {
                    "would_mark_spam": {
                        **BOOL,
                        "description": "The ticket would become spam (not allowlisted, "
                        "dropped, or a rule setting status spam).",
                    },
                    "matched_rule": _nullable(_object({"id": UUID, "name": STR, "priority": INT})),
                    "applied_actions": _ref("AppliedActions"),
                    "explanation": {**STR, "description": "The decision in words."},
                    "explanation_steps": {
                        **STR_LIST,
                        "description": "The same, one sentence per step.",
                    },
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
            "sender_email": {**NSTR, "description": "null: the mail revealed no sender."},
            "direction": {"enum": ["inbound", "outbound", None], "default": "inbound"},
        },
        ("recipient", "sender_email"),
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
    "TicketStatus": enum_of("ticket_status"),
    "TicketPriority": enum_of("ticket_priority"),
    "UserRef": _nullable(_object({"user_id": UUID, "email": NSTR, "display_name": NSTR})),
    "Ticket": _object(
        {
            "id": INT,
            "ticket_code": {**STR, "example": "T-1001"},
            "subject": STR,
            "status": _ref("TicketStatus"),
            "priority": _ref("TicketPriority"),
            "requester_email": NSTR,
            "requester_name": STR,
            "assignee_user_id": NUUID,
            "assignee_queue_id": NUUID,
            "tags": STR_LIST,
            "original_recipient": NSTR,
            "created_at": TS,
            "updated_at": TS,
            "last_message_at": NTS,
            "last_activity_at": TS,
            "message_count": INT,
            "last_message_direction": {
                "type": ["string", "null"],
                "enum": ["inbound", "outbound", None],
                "description": "Direction of the ticket's newest message.",
            },
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
            "size_bytes": INT,
            "is_inline": BOOL,
            "content_id": NSTR,
            "download_url": STR,
        }
    ),
    "Occurrence": _object(
        {
            "id": INT,
            "mailbox_id": UUID,
            "mailbox_email": STR,
            "gmail_message_id": STR,
            "gmail_thread_id": NSTR,
            "internal_date": NTS,
            "state": STR,
            "original_recipient": NSTR,
            "original_recipient_source": {
                "type": "string",
                "enum": [
                    "workspace_header",
                    "delivered_to",
                    "x_original_to",
                    "to_cc_scan",
                    "unknown",
                ],
            },
            "original_recipient_confidence": {
                "type": "string",
                "enum": ["high", "medium", "low", "unknown"],
            },
            "original_recipient_evidence": OBJ,
            "routed_at": NTS,
            "parse_error": NSTR,
            "stitch_error": NSTR,
            "route_error": NSTR,
            "failed_stage": NSTR,
        }
    ),
    "Address": {
        "type": "object",
        "properties": {"name": STR, "address": STR},
    },
    "Message": _object(
        {
            "message_id": INT,
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "stitched_at": TS,
            "stitch_reason": STR,
            "stitch_confidence": {"type": "string", "enum": ["high", "medium", "low"]},
            "stitch_evidence": OBJ,
            "collision_group_id": NINT,
            "rfc_message_id": NSTR,
            "date_header": NTS,
            "subject": STR,
            "from_email": NSTR,
            "from_name": STR,
            "to_emails": STR_LIST,
            "cc_emails": STR_LIST,
            "to": {"type": "array", "items": _ref("Address")},
            "cc": {"type": "array", "items": _ref("Address")},
            "reply_to": {"type": "array", "items": _ref("Address")},
            "snippet": STR,
            "body_text": STR,
            "body_html_sanitized": {
                **STR,
                "description": "Sanitised; cid: images point at downloads.",
            },
            "parse_evidence": {
                **OBJ,
                "description": "How the parser read the message: text_body and html_body "
                "(part, charset, method: ascii, bom, declared, utf-8, mostly-utf-8, detected "
                "or replacement, detector confidence), headers (raw 8-bit fields), skipped "
                "parts with the reason, and empty_body_reason when there is no text. {} for "
                "messages parsed before evidence was recorded.",
                "properties": {"empty_body_reason": STR},
            },
            "attachments": {"type": "array", "items": _ref("Attachment")},
            "occurrences": {
                "type": "array",
                "items": _ref("Occurrence"),
                "description": "Where the message was seen, with routing (recipient) evidence.",
            },
            "automated": {"type": ["string", "null"], "enum": ["auto_reply", "bounce", None]},
            "classification": {
                **OBJ,
                "description": "Why the message has its direction and automated value: "
                "{direction, automated, reasons: [{rule, detail}]}.",
            },
            "outbound_send": _nullable(_ref("OutboundSend")),
        }
    ),
    "Event": _object(
        {
            "id": INT,
            "event_type": STR,
            "actor_user_id": NUUID,
            "actor": _ref("UserRef"),
            "event_data": OBJ,
            "created_at": TS,
        }
    ),
    "Note": _object(
        {
            "id": INT,
            "ticket_id": INT,
            "author_user_id": NUUID,
            "author": _ref("UserRef"),
            "body_markdown": STR,
            "body_html_sanitized": {"type": "null", "description": "Notes are plain text."},
            "created_at": TS,
            "updated_at": TS,
        }
    ),
    "TicketDetail": _object(
        {
            "ticket": {
                "allOf": [
                    _ref("Ticket"),
                    _object(
                        {
                            "hidden": BOOL,
                            "merged_into_ticket_id": NINT,
                            "mailbox_id": NUUID,
                            "human_touched_at": NTS,
                            "routed_at": NTS,
                        }
                    ),
                ]
            },
            "messages": {"type": "array", "items": _ref("Message")},
            "events": {"type": "array", "items": _ref("Event")},
            "notes": {"type": "array", "items": _ref("Note")},
        }
    ),
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
        {
            "body_markdown": {
                "type": "string",
                "maxLength": INPUT_LIMITS["note_body"],
                "pattern": "\\S",
            }
        },
        ("body_markdown",),
    ),
    "SavedViewFilters": {
        **_request(
            {
                "q": {**NSTR, "maxLength": INPUT_LIMITS["search_query"]},
                "status": {"enum": [*DATABASE_ENUMS["ticket_status"], "", None]},
                "assignee_user_id": NUUID,
                "assignee_queue_id": NUUID,
                "limit": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": INPUT_LIMITS["ticket_page"],
                },
            }
        ),
        "description": "GET /tickets's filters, validated the same way (422).",
    },
    "SavedView": _object(
        {
            "id": UUID,
            "name": STR,
            "filters": _object(
                {
                    "q": STR,
                    "status": _ref("TicketStatus"),
                    "assignee_user_id": UUID,
                    "assignee_queue_id": UUID,
                    "limit": INT,
                },
                optional=("q", "status", "assignee_user_id", "assignee_queue_id", "limit"),
            ),
            "is_default": {"type": "boolean", "const": False},
            "created_at": TS,
            "updated_at": TS,
        }
    ),
    "SavedViewList": _array_of("SavedView"),
    "SavedViewCreate": _request(
        {
            "name": _text(INPUT_LIMITS["saved_view_name"]),
            "filters": _nullable(_ref("SavedViewFilters")),
        },
        ("name",),
    ),
    # ---- ops (admin)
    "OpsMailboxSync": _object(
        {
            "mailbox_id": UUID,
            "email_address": STR,
            "provider": {"type": "string", "enum": ["gmail", "mbox"]},
            "purpose": {"type": "string", "enum": ["journal", "sender"]},
            "state": enum_of("mailbox_state"),
            "is_enabled": BOOL,
            "paused_until": NTS,
            "pause_reason": NSTR,
            "blocked_reason": NSTR,
            "gmail_history_id": {**NINT, "description": "Gmail historyId cursor."},
            "backfill": _object(
                {
                    "state": {"type": "string", "enum": ["idle", "running", "done"]},
                    "pages": INT,
                    "completed_at": NTS,
                }
            ),
            "last_full_sync_at": {**NTS, "description": "When the backfill completed."},
            "last_incremental_sync_at": {**NTS, "description": "The last history sync."},
            "last_sync_error": NSTR,
            "last_error_at": NTS,
            "consecutive_failures": INT,
            "sync_lag_seconds": {
                **INT,
                "description": "Now minus the newest unrouted message's date; 0 when caught up.",
            },
            "queued_jobs_by_type": {"type": "object", "additionalProperties": INT},
            "running_jobs_by_type": {"type": "object", "additionalProperties": INT},
            "jobs": _ref("JobCounts"),
            "failed_jobs_last_24h": {
                **INT,
                "description": "Failed job attempts in the last 24 hours.",
            },
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
                "sample_message_ids": {"type": "array", "maxItems": 5, "items": INT},
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
    "CollisionBackfill": _object(
        {
            "fingerprints_scanned": {**INT, "description": "Distinct loose fingerprints."},
            "groups_updated": {**INT, "description": "Groups created or recounted."},
            "messages_updated": {**INT, "description": "Messages linked to another group."},
        }
    ),
    "OpsOverview": _object(
        {
            "queued_jobs": INT,
            "running_jobs": INT,
            "failed_jobs_24h": {**INT, "description": "Jobs that failed in the last 24 hours."},
            "failed_jobs": {**INT, "description": "Failed jobs, all time."},
            "mailbox_count": INT,
            "paused_mailbox_count": INT,
            "avg_sync_lag_seconds": INT,
            "occurrences_by_state": {"type": "object", "additionalProperties": INT},
            "dlq_size": {**INT, "description": "Failed jobs not replayed yet."},
        }
    ),
    "DlqJob": _object(
        {
            "id": INT,
            "type": {**STR, "description": "The task name."},
            "status": {"type": "string", "enum": ["failed", "replayed"]},
            "queue": STR,
            "attempts": INT,
            "max_attempts": {**INT, "description": "A failed job has used all its attempts."},
            "last_error": STR,
            "error_class": STR,
            "error_message": STR,
            "run_at": NTS,
            "updated_at": {**NTS, "description": "When it failed."},
            "payload": {**OBJ, "description": "The job's id arguments only, never mail."},
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

SCHEMAS.update(replies.SCHEMAS)  # send identities and replies: beside their routes

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

# ---- sign-in, members, invitations, audit trail, the user's sessions (issue 14)
SCHEMAS.update(
    {
        "GoogleSignInStart": _object({"authorization_url": STR, "expires_at": TS}),
        "LoggedOutAll": _object({"logged_out": {"type": "boolean", "const": True}, "revoked": INT}),
        "Member": _object(
            {"user_id": UUID, "email": STR, "display_name": STR, "role": ROLE, "joined_at": TS}
        ),
        "MemberList": _list_of("Member"),
        "MemberUpdate": _request({"role": ROLE}, ("role",)),
        "Invitation": _object(
            {
                "id": UUID,
                "email": STR,
                "role": ROLE,
                "invited_by": NUUID,
                "created_at": TS,
                "expires_at": TS,
                "accepted_at": NTS,
            }
        ),
        "InvitationList": _list_of("Invitation"),
        "InvitationCreate": _request(
            {"email": EMAIL, "role": enum_of("member_role", nullable=True)}, ("email",)
        ),
        "AuditEvent": _object(
            {
                "id": INT,
                "action": STR,
                "actor_user_id": NUUID,
                "target_type": STR,
                "target_id": STR,
                "details": OBJ,
                "request_id": STR,
                "created_at": TS,
            }
        ),
        "AuditEventPage": _object(
            {"items": {"type": "array", "items": _ref("AuditEvent")}, "next_cursor": NSTR}
        ),
        "MySession": _object(
            {
                "id": UUID,
                "organization_id": UUID,
                "organization_name": STR,
                "created_at": TS,
                "expires_at": TS,
                "user_agent": STR,
                "client_ip": STR,
                "current": BOOL,
            }
        ),
        "MySessionList": _list_of("MySession"),
        "JoinPolicy": _object(
            {
                "join_policy": {"type": "string", "enum": ["invite_only", "domain"]},
                "domain_join_role": {"type": "string", "enum": ["agent", "viewer"]},
                "domains": STR_LIST,
            }
        ),
        "JoinPolicyUpdate": {
            **_request(
                {
                    "join_policy": {"enum": ["invite_only", "domain", None]},
                    "domain_join_role": {"enum": ["agent", "viewer", None]},
                }
            ),
            "minProperties": 1,
        },
    }
)

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


CSRF = {"$ref": "#/components/parameters/CsrfToken"}

_INTEGER_ID = {"type": "integer", "minimum": 1}


def _path_parameter(path_id: PathId) -> dict[str, Any]:
    return {
        "name": path_id.name,
        "in": "path",
        "required": True,
        "schema": copy.deepcopy(UUID if path_id.kind == "uuid" else _INTEGER_ID),
        "description": path_id.description,
    }


def _limit_parameter(limit: Limit) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": limit.maximum,
            "default": limit.default,
        },
        "description": f"How many items (1..{limit.maximum}, default {limit.default}); "
        "else 422 invalid_limit.",
    }


def role_sentence(route: Route) -> str:
    """The sentence every operation's description ends with."""
    if route.min_role is None:
        return "No session needed."
    return f"Minimum role: {route.min_role}."


def derived_errors(route: Route) -> set[int]:
    """The error statuses that follow from the route itself.

    401 with a session; 403 for a role above viewer or a CSRF-checked method; 404 for a path
    id; 400/422 for a body (invalid_json, invalid values) and 413/415 (too large, not JSON);
    422 for a `?limit=` (invalid_limit);
    429 unless exempt from rate limiting; 503 when the database is involved; 400 always
    (malformed HTTP, text PostgreSQL cannot hold).
    """
    statuses = {400}
    if route.min_role is not None:
        statuses.add(401)
    if route.min_role in ("agent", "admin") or route.needs_csrf:
        statuses.add(403)
    if route.path_ids:
        statuses.add(404)
    if route.doc.body is not None:
        statuses |= {400, 413, 415, 422}
    if route.limit is not None:
        statuses.add(422)  # invalid_limit
    if route.rate_limited:
        statuses.add(429)
    if route.database:
        statuses.add(503)
    return statuses


def operation(route: Route) -> dict[str, Any]:
    """The OpenAPI operation of `route`: its `Doc` plus everything derived from the route."""
    doc = route.doc
    description = " ".join(part for part in (doc.description, role_sentence(route)) if part)
    result: dict[str, Any] = {
        "operationId": doc.operation_id,
        "tags": [doc.tag],
        "summary": doc.summary,
        "description": description,
        "x-min-role": route.min_role,
    }
    if route.min_role is None:
        result["security"] = []  # no session cookie
    parameters: list[dict[str, Any]] = []
    if route.needs_csrf:
        parameters.append(CSRF)
    parameters += [_path_parameter(path_id) for path_id in route.path_ids]
    if route.limit is not None:
        parameters.append(_limit_parameter(route.limit))
    parameters += doc.query
    if parameters:
        result["parameters"] = parameters
    if doc.body is not None:
        result["requestBody"] = doc.body
    result["responses"] = {
        str(route.status): doc.response,
        **doc.responses,
        **_errors(*sorted(derived_errors(route) | set(doc.errors))),
    }
    return result


def paths(routes: tuple[Route, ...]) -> dict[str, dict[str, Any]]:
    """The `paths` object: one operation per route, in route order."""
    result: dict[str, dict[str, Any]] = {}
    for route in routes:
        result.setdefault(route.path, {})[route.method.lower()] = operation(route)
    return result


def document(routes: tuple[Route, ...] | None = None) -> dict[str, Any]:
    """The whole OpenAPI document of `routes` (default: the app's), a fresh dict every call."""
    if routes is None:
        from app.routes import ROUTES  # the route table imports this module's handler
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
                    "replies",
                    "ops",
                    "webhooks",
                    "meta",
                )
            ],
            "paths": paths(ROUTES if routes is None else routes),
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


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/openapi.json",
        openapi_json,
        None,
        database=False,
        doc=Doc(
            operation_id="getOpenApiDocument",
            tag="meta",
            summary="This document",
            description="The OpenAPI document of the API.",
            response={
                "description": "OpenAPI 3.1 document.",
                "content": {"application/json": {"schema": OBJ}},
            },
        ),
    ),
)
