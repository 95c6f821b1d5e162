"""Replies: send identities (admin; agents list the enabled ones) and an agent's reply.

A reply is parse → one SQL call (api.ticket_reply stores the outbound message, sets the
ticket pending and queues outbound_send in one transaction) → 202. Verifying an identity
asks Gmail (kernel/gmail_send.py, users.settings.sendAs.list) and SQL judges the answer.
"""

from __future__ import annotations

from aiohttp import web
from psycopg.types.json import Jsonb

from app.apidoc import (
    BOOL,
    DOMAIN,
    EMAIL,
    INPUT_LIMITS,
    NO_CONTENT,
    NSTR,
    NTS,
    NUUID,
    STR,
    TS,
    UUID,
    Doc,
    json_body,
    obj,
    ok,
    query,
    request_object,
    text,
)
from app.errors import ApiError
from app.http import (
    SETTINGS,
    Route,
    path_id,
    read_json_object,
    read_json_patch,
    respond_sql,
    transaction,
)
from kernel.gmail_send import send_as_addresses


async def list_identities(request: web.Request) -> web.Response:
    """The enabled send identities (all of them for an admin asking ?all=true)."""
    show_all = request.query.get("all", "false")
    if show_all not in ("true", "false"):
        raise ApiError(422, "invalid_all", "all must be true or false.")
    return await respond_sql(request, "api.send_identity_list(%s)", [show_all == "true"])


async def create_identity(request: web.Request) -> web.Response:
    """A new send identity, pending until verified."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.send_identity_create(%s)", [Jsonb(body)])


async def update_identity(request: web.Request) -> web.Response:
    """Change from_name, is_enabled or signed_reply_to."""
    identity_id = path_id(request, "send_identity_id")
    body = await read_json_patch(request)
    return await respond_sql(
        request, "api.send_identity_update(%s, %s)", [identity_id, Jsonb(body)]
    )


async def delete_identity(request: web.Request) -> web.Response:
    """Remove a send identity (204)."""
    return await respond_sql(
        request, "api.send_identity_delete(%s)", [path_id(request, "send_identity_id")]
    )


async def verify_identity(request: web.Request) -> web.Response:
    """Ask Gmail (sendAs.list) whether the mailbox may send as the identity; SQL judges."""
    identity_id = path_id(request, "send_identity_id")
    # Only reading: the transaction ends before waiting on Gmail.
    async with transaction(request) as conn:
        cursor = await conn.execute(
            "SELECT * FROM api.send_identity_verify_target(%s)", [identity_id]
        )
        target = await cursor.fetchone()
    send_as, error = await send_as_addresses(request.app[SETTINGS], target)
    return await respond_sql(
        request,
        "api.send_identity_record_verification(%s, %s, %s)",
        [identity_id, Jsonb(send_as), error],
    )


async def reply(request: web.Request) -> web.Response:
    """Queue an agent's reply (202): stored at once, sent by outbound_send."""
    ticket_id = path_id(request, "ticket_id")
    body = await read_json_object(request)
    return await respond_sql(request, "api.ticket_reply(%s, %s)", [ticket_id, Jsonb(body)])


async def get_mail_domains(request: web.Request) -> web.Response:
    """The organisation's own mail domains (their senders' mail is outbound)."""
    return await respond_sql(request, "api.mail_domains_json()")


async def replace_mail_domains(request: web.Request) -> web.Response:
    """Set the organisation's own mail domains to exactly the list sent."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.mail_domains_replace(%s)", [Jsonb(body)])


# ------------------------------------------------------------------ documentation

_ADDRESSES = {"type": "array", "items": EMAIL}
_RECIPIENTS = INPUT_LIMITS["reply_recipients"]
_NAME = {"type": "string", "maxLength": INPUT_LIMITS["sender_name"]}

SCHEMAS = {
    "SendIdentity": obj(
        {
            "id": UUID,
            "mailbox_id": UUID,
            "from_email": STR,
            "from_name": STR,
            "status": {"type": "string", "enum": ["pending", "verified", "failed"]},
            "status_reason": {**NSTR, "description": "Why it is verified or failed."},
            "verified_at": NTS,
            "is_enabled": BOOL,
            "signed_reply_to": {
                **BOOL,
                "description": "Replies carry a signed +token Reply-To on this address.",
            },
            "created_at": TS,
            "updated_at": TS,
        }
    ),
    "SendIdentityList": {"type": "array", "items": {"$ref": "#/components/schemas/SendIdentity"}},
    "SendIdentityCreate": request_object(
        {
            "mailbox_id": UUID,
            "from_email": EMAIL,
            "from_name": _NAME,
            "is_enabled": BOOL,
            "signed_reply_to": BOOL,
        },
        ("mailbox_id", "from_email"),
    ),
    "SendIdentityUpdate": {
        **request_object(
            {
                "from_name": _NAME,
                "is_enabled": BOOL,
                "signed_reply_to": BOOL,
            }
        ),
        "minProperties": 1,
    },
    "MailDomains": obj(
        {"domains": {"type": "array", "items": STR, "description": "By name, lower case."}}
    ),
    "MailDomainsUpdate": request_object(
        {
            "domains": {
                "type": "array",
                "maxItems": INPUT_LIMITS["mail_domains"],
                "items": DOMAIN,
            }
        },
        ("domains",),
    ),
    "TicketReply": request_object(
        {
            "send_identity_id": UUID,
            "to_emails": {**_ADDRESSES, "minItems": 1, "maxItems": _RECIPIENTS},
            "cc_emails": {**_ADDRESSES, "maxItems": _RECIPIENTS},
            "subject": text(INPUT_LIMITS["reply_subject"]),
            "body_text": text(INPUT_LIMITS["reply_body"]),
        },
        ("send_identity_id", "to_emails", "subject", "body_text"),
    ),
    "TicketReplyQueued": obj(
        {
            "status": {"type": "string", "const": "queued"},
            "job_id": {"type": ["integer", "null"], "description": "The outbound_send job."},
            "message_id": {"type": "integer", "description": "The outbound message's id."},
            "oss_message_id": {**UUID, "description": "The product's id of the reply."},
            "rfc_message_id": {
                **STR,
                "description": "The minted Message-ID (without angle brackets).",
            },
            "ticket_id": {"type": "integer"},
        }
    ),
    "OutboundSend": {
        **obj(
            {
                "state": {"type": "string", "enum": ["queued", "sending", "sent", "failed"]},
                "oss_message_id": UUID,
                "send_identity_id": NUUID,
                "mailbox_id": NUUID,
                "author_user_id": NUUID,
                "attempts": {"type": "integer"},
                "job_id": {"type": ["integer", "null"]},
                "gmail_message_id": NSTR,
                "gmail_thread_id": NSTR,
                "queued_at": TS,
                "sent_at": NTS,
                "failure_kind": {"type": ["string", "null"], "enum": ["send", "bounce", None]},
                "failure_reason": NSTR,
                "failed_at": NTS,
            }
        ),
        "description": "The send state of a reply the product sent (outbound_send).",
    },
}


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/organization/mail-domains",
        get_mail_domains,
        "admin",
        sql="api.mail_domains_json",
        doc=Doc(
            operation_id="getMailDomains",
            tag="replies",
            summary="The organisation's own mail domains",
            description=(
                "Mail whose sender is on one of these domains (or is a send identity) is the "
                "organisation's: outbound, joined to its thread's ticket, never routed, never "
                "spam, never reopening. Not the verified Workspace domains of sign-in."
            ),
            response=ok("The domains.", "MailDomains", {"domains": ["acme.example"]}),
        ),
    ),
    Route(
        "PUT",
        "/organization/mail-domains",
        replace_mail_domains,
        "admin",
        sql="api.mail_domains_replace",
        doc=Doc(
            operation_id="replaceMailDomains",
            tag="replies",
            summary="Set the organisation's own mail domains",
            description="Exactly the domains sent (trimmed, lower case, each once); audited.",
            response=ok("The domains.", "MailDomains", {"domains": ["acme.example"]}),
            body=json_body("MailDomainsUpdate", {"domains": ["acme.example"]}),
        ),
    ),
    Route(
        "GET",
        "/tickets/send-identities",
        list_identities,
        "agent",
        sql="api.send_identity_list",
        doc=Doc(
            operation_id="listSendIdentities",
            tag="replies",
            summary="Addresses replies can be sent from",
            description=(
                "A bare array, oldest first: the enabled identities (pick one whose status "
                "is verified to reply); an admin asking `?all=true` also sees disabled ones."
            ),
            response=ok("Send identities.", "SendIdentityList"),
            query=(query("all", {"type": "string", "enum": ["true", "false"]}),),
        ),
    ),
    Route(
        "POST",
        "/tickets/send-identities",
        create_identity,
        "admin",
        status=201,
        sql="api.send_identity_create",
        doc=Doc(
            operation_id="createSendIdentity",
            tag="replies",
            summary="Add a send identity",
            description=(
                "An address bound to a connected Gmail mailbox whose grant includes "
                "gmail.send (connect it with `purpose` journal_send or sender); status "
                "pending until verified. 409 send_identity_exists."
            ),
            response=ok("Created.", "SendIdentity"),
            body=json_body(
                "SendIdentityCreate",
                {
                    "mailbox_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                    "from_email": "support@example.com",
                    "from_name": "Example Support",
                },
            ),
            errors=(409,),
        ),
    ),
    Route(
        "POST",
        "/tickets/send-identities/{send_identity_id}/verify",
        verify_identity,
        "admin",
        sql=("api.send_identity_verify_target", "api.send_identity_record_verification"),
        doc=Doc(
            operation_id="verifySendIdentity",
            tag="replies",
            summary="Verify a send identity with Gmail",
            description=(
                "Asks Gmail (users.settings.sendAs.list with the mailbox's grant): verified "
                "when the grant includes gmail.send and the address is the account's own or "
                "an alias with verificationStatus accepted; failed with status_reason "
                "otherwise. 503 gmail_unavailable when Gmail cannot be reached."
            ),
            response=ok("The identity with its new status.", "SendIdentity"),
        ),
    ),
    Route(
        "PATCH",
        "/tickets/send-identities/{send_identity_id}",
        update_identity,
        "admin",
        sql="api.send_identity_update",
        doc=Doc(
            operation_id="updateSendIdentity",
            tag="replies",
            summary="Change a send identity",
            response=ok("The identity.", "SendIdentity"),
            body=json_body("SendIdentityUpdate", {"is_enabled": False}),
        ),
    ),
    Route(
        "DELETE",
        "/tickets/send-identities/{send_identity_id}",
        delete_identity,
        "admin",
        status=204,
        sql="api.send_identity_delete",
        doc=Doc(
            operation_id="deleteSendIdentity",
            tag="replies",
            summary="Remove a send identity",
            response=NO_CONTENT,
        ),
    ),
    Route(
        "POST",
        "/tickets/{ticket_id}/reply",
        reply,
        "agent",
        status=202,
        sql="api.ticket_reply",
        doc=Doc(
            operation_id="replyToTicket",
            tag="replies",
            summary="Reply to the customer",
            description=(
                "Stores the reply at once (an outbound message of the ticket with send state "
                "queued and a minted Message-ID threaded on the customer's newest message), "
                "sets the ticket pending with a `reply_queued` event and queues "
                "outbound_send, which sends it through the identity's Gmail mailbox exactly "
                "once (`reply_sent` / `reply_failed` events; the message's outbound_send "
                "shows the state). The subject gets one `Re:`. 422 send_identity_unverified "
                "/ send_identity_disabled / invalid_<field>; 404 send_identity_not_found "
                "(also another organisation's); 409 ticket_merged."
            ),
            response=ok(
                "Queued.",
                "TicketReplyQueued",
                {
                    "status": "queued",
                    "job_id": 42,
                    "message_id": 1234,
                    "oss_message_id": "0b9b2c4e-52a4-4b8e-9c55-0d3c5e6b1a77",
                    "rfc_message_id": "oss.0b9b2c4e-52a4-4b8e-9c55-0d3c5e6b1a77@example.com",
                    "ticket_id": 7,
                },
            ),
            body=json_body(
                "TicketReply",
                {
                    "send_identity_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                    "to_emails": ["customer@example.org"],
                    "cc_emails": [],
                    "subject": "Re: Printer on fire",
                    "body_text": "Hello, we are on it.",
                },
            ),
            errors=(409,),
        ),
    ),
)
