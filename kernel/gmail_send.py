"""Checking a send identity against Gmail: users.settings.sendAs.list with a mailbox's grant.

The API's verify route calls it (no handler talks to Gmail itself); SQL judges the answer
(api.send_identity_record_verification). An admin is waiting: the interactive retry budget.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kernel.crypto import TokenDecryptionError, decrypt_token, token_key
from kernel.gmail import GmailClient, GmailError, GmailReconnectRequired
from kernel.gmail_connect import ConnectRefused, interactive_config
from kernel.settings import Settings


async def send_as_addresses(
    settings: Settings, target: dict[str, Any]
) -> tuple[list[dict[str, Any]], str | None]:
    """(sendAs resources, None), or ([], why Gmail could not be asked) for the mailbox of
    `target` (a row of api.send_identity_verify_target). Raises ConnectRefused when the
    server has no OAuth client configured (503) or Gmail cannot be reached (503)."""
    config = interactive_config(settings)
    if target["provider"] != "gmail" or target["encrypted_refresh_token"] is None:
        return [], "The mailbox has no Gmail grant: connect it first."
    try:
        refresh_token = decrypt_token(
            token_key(settings),
            target["encrypted_refresh_token"],
            organization_id=target["organization_id"],
            mailbox_id=target["mailbox_id"],
        )
    except TokenDecryptionError as exc:
        return [], f"The stored grant cannot be decrypted: {exc}."

    def ask() -> list[dict[str, Any]]:
        with GmailClient(config, refresh_token) as client:
            return client.list_send_as()

    try:
        return await asyncio.to_thread(ask), None
    except GmailReconnectRequired as exc:
        return [], f"Gmail refused the mailbox's grant: {exc}"
    except GmailError as exc:
        raise ConnectRefused(503, "gmail_unavailable", f"Gmail could not be asked: {exc}") from exc
