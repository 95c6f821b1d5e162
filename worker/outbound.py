"""outbound_send: build a reply as RFC 5322 and send it through Gmail, exactly once.

The send state lives in SQL (sql/worker/send.sql); this module only builds the message and
talks to Gmail between the SQL steps:

1. `worker.outbound_begin` (own transaction) moves the reply to `sending` and says what to
   do: `send`, `check` (an earlier attempt may have sent it: its answer was lost, its
   worker died after Gmail's answer, Gmail answered 5xx) or `done`.
2. `check`: look for the minted Message-ID in the sending mailbox (messages.list
   q=rfc822msgid:). Found: it was sent, record it. Not found: send.
3. Send once (the Gmail client never retries a send itself). Accepted → `worker.outbound_sent`.
   Refused (4xx, revoked grant) → `worker.outbound_fail` at once. Outcome unknown → the
   task raises and procrastinate retries with backoff; the next attempt is a `check`.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from kernel.gmail import GmailApiError, GmailReconnectRequired
from kernel.markers import reply_address, ticket_marker
from worker.pipeline import Runtime, gmail

# Transient failures of a send are retried this many times in all (then the DLQ).
SEND_ATTEMPTS = 6


class OutboundPermanentError(Exception):
    """A send that must not be retried: the reply is failed with this reason."""


def build_message(info: dict[str, Any], secret_key: str) -> bytes:
    """The reply as RFC 5322 bytes: From with display name, To/Cc, Subject, Date, the minted
    Message-ID, In-Reply-To/References, the signed X-OSS-Ticket-ID (and a signed +token
    Reply-To when the identity allows it), text/plain UTF-8 quoted-printable."""
    identity = info["identity"]
    message = EmailMessage(policy=email.policy.SMTP)
    local, _, domain = identity["from_email"].rpartition("@")
    message["From"] = Address(identity["from_name"] or "", local, domain)
    message["To"] = ", ".join(a["address"] for a in info["to"])
    if info["cc"]:
        message["Cc"] = ", ".join(a["address"] for a in info["cc"])
    message["Subject"] = info["subject"]
    message["Date"] = email.utils.format_datetime(datetime.fromisoformat(info["date"]))
    message["Message-ID"] = info["rfc_message_id"]
    if info.get("in_reply_to"):
        message["In-Reply-To"] = info["in_reply_to"]
    if info.get("references"):
        message["References"] = info["references"]
    organization_id, number = info["organization_id"], info["ticket_number"]
    message["X-OSS-Ticket-ID"] = ticket_marker(secret_key, organization_id, number)
    if identity["signed_reply_to"]:
        message["Reply-To"] = reply_address(
            secret_key, organization_id, number, identity["from_email"]
        )
    message.set_content(info["body_text"], subtype="plain", charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


def _mailbox(info: dict[str, Any]) -> dict[str, Any]:
    mailbox = dict(info["mailbox"])
    token = mailbox.get("encrypted_refresh_token")
    mailbox["encrypted_refresh_token"] = base64.b64decode(token) if token else None
    return mailbox


async def _call(pool, query: str, params: list[Any]) -> Any:
    async with pool.connection() as conn:
        cursor = await conn.execute(query, params)
        return (await cursor.fetchone())[0]


async def send_reply(pool, rt: Runtime, message_id: int) -> dict[str, Any]:
    """One attempt of outbound_send for reply `message_id`; raises when the outcome is
    unknown (the task retries), returns the recorded result otherwise."""
    info = await _call(pool, "SELECT worker.outbound_begin(%s)", [message_id])
    if info["action"] == "done":
        return {"state": info["state"], "action": "none"}
    try:
        if info["mailbox"] is None or info["identity"] is None:
            raise OutboundPermanentError("the send identity or its mailbox was removed")
        mailbox = _mailbox(info)
        if info["action"] == "check":
            found = await gmail(rt, mailbox, "find_by_rfc822msgid", info["rfc_message_id"])
            if found is not None:
                return await _call(
                    pool,
                    "SELECT worker.outbound_sent(%s, %s, %s, %s)",
                    [message_id, found.id, found.thread_id, True],
                )
        raw = build_message(info, rt.settings.secret_key)
        sent = await gmail(rt, mailbox, "send_raw", raw, info["gmail_thread_id"])
    except (OutboundPermanentError, GmailReconnectRequired, GmailApiError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, GmailReconnectRequired):
            # The grant is revoked: the mailbox needs an admin, as a sync would find.
            await _call(
                pool, "SELECT worker.mark_needs_reconnect(%s, %s)", [info["mailbox"]["id"], reason]
            )
        return await _call(
            pool, "SELECT worker.outbound_fail(%s, %s, %s)", [message_id, "send", reason]
        )
    return await _call(
        pool,
        "SELECT worker.outbound_sent(%s, %s, %s, %s)",
        [message_id, sent.id, sent.thread_id, False],
    )


async def give_up(pool, message_id: int, exc: BaseException) -> None:
    """Out of retries: the reply fails with the last error (the job goes to the DLQ)."""
    reason = f"gave up after {SEND_ATTEMPTS} attempts: {type(exc).__name__}: {exc}"
    await _call(pool, "SELECT worker.outbound_fail(%s, %s, %s)", [message_id, "send", reason])
