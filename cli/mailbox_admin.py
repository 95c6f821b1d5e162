"""Operator tasks on mailboxes that run outside the API (as the database owner).

`register_gmail_mailbox` is what `ticketing mailbox-register` does: store a Gmail journal
mailbox from a refresh token obtained elsewhere, encrypted like the connect flow does.
"""

from __future__ import annotations

from typing import Any

import psycopg

from kernel import db
from kernel.crypto import encrypt_token, token_key
from kernel.settings import Settings


class RegistrationError(Exception):
    """The mailbox could not be registered; the message says why."""


def register_gmail_mailbox(
    settings: Settings,
    database_url: str,
    *,
    organization: str,
    email: str,
    refresh_token: str,
    backfill: bool = True,
) -> dict[str, Any]:
    """Create (or re-key) the Gmail journal mailbox `email` of `organization`.

    The refresh token is encrypted bound to the organisation and mailbox; a backfill is
    queued unless `backfill` is False, and a push watch when GMAIL_PUBSUB_TOPIC is set. Returns {created, mailbox_id, organization_id, email,
    state, backfill_job_id}. Raises RegistrationError for an unknown organisation, a bad
    address or an empty token.
    """
    token = refresh_token.strip()
    if not token:
        raise RegistrationError("the refresh token is empty")
    key = token_key(settings)
    with db.connect(database_url, "cli") as conn, conn.transaction():
        try:
            target = conn.execute(
                "SELECT ops.gmail_mailbox_target(%s, %s) AS target", [organization, email]
            ).fetchone()["target"]
            ciphertext = encrypt_token(
                key,
                token,
                organization_id=target["organization_id"],
                mailbox_id=target["mailbox_id"],
            )
            return conn.execute(
                "SELECT ops.register_gmail_mailbox(%s, %s, %s, %s, %s, %s) AS result",
                [
                    target["organization_id"],
                    target["mailbox_id"],
                    email,
                    ciphertext,
                    backfill,
                    settings.push_enabled,
                ],
            ).fetchone()["result"]
        except psycopg.Error as exc:
            # logic.fail errors carry a sentence meant for people: pass it on as is.
            if (exc.sqlstate or "").startswith("TK"):
                raise RegistrationError(exc.diag.message_primary) from exc
            raise
