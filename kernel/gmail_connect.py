"""Connecting a Gmail journal mailbox: the OAuth code exchange and the interactive grant checks.

The API's connect callback and connectivity check call these; no HTTP handler talks to Google
or Gmail itself. An admin is waiting on every call here, so they fail fast (a short retry
budget) instead of the worker's long one. Refusals are `ConnectRefused` (status, code, detail),
which the API renders as its error shape; this module knows nothing of HTTP handlers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp

from kernel.crypto import TokenDecryptionError, decrypt_token, token_key
from kernel.gmail import (
    GMAIL_READONLY_SCOPE,
    GMAIL_SEND_SCOPE,
    GmailApiError,
    GmailClient,
    GmailClientConfig,
    GmailError,
    GmailReconnectRequired,
    GmailRetriesExhausted,
    Profile,
    RetryPolicy,
)
from kernel.refusal import Refused
from kernel.settings import Settings

__all__ = [
    "GMAIL_READONLY_SCOPE",
    "GMAIL_SEND_SCOPE",
    "READ_SCOPES",
    "ConnectRefused",
    "Grant",
    "check_connectivity",
    "exchange_code",
    "grant_from_code",
    "interactive_config",
]

# Scopes that let the journal be read; gmail.readonly is what the connect flow asks for.
READ_SCOPES = frozenset(
    {
        GMAIL_READONLY_SCOPE,
        "https://www.googleapis.com/auth/gmail.modify",
        "https://mail.google.com/",
    }
)
# An admin is waiting on these calls: fail fast instead of the worker's long retry budget.
INTERACTIVE_RETRY = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=2.0, max_total_wait=5.0)
INTERACTIVE_TIMEOUT_SECONDS = 20.0


class ConnectRefused(Refused):
    """Connecting a mailbox cannot go on (the admin sees why)."""


@dataclasses.dataclass(frozen=True)
class Grant:
    """What the code exchange yields: the refresh token, its scopes and the mailbox it reads."""

    refresh_token: str
    scopes: list[str]
    profile: Profile


def interactive_config(settings: Settings) -> GmailClientConfig:
    """The Gmail client configuration for calls an admin waits on; refuses when unconfigured."""
    if not settings.google_client_id or not settings.google_client_secret:
        raise ConnectRefused(
            503,
            "google_oauth_not_configured",
            "Gmail is not configured on this server: set GOOGLE_CLIENT_ID and "
            "GOOGLE_CLIENT_SECRET.",
        )
    return dataclasses.replace(
        GmailClientConfig.from_settings(settings),
        timeout_seconds=INTERACTIVE_TIMEOUT_SECONDS,
        retry=INTERACTIVE_RETRY,
    )


def _fetch_profile(
    config: GmailClientConfig, refresh_token: str, access_token: str | None = None
) -> Profile:
    # Runs in a worker thread: the Gmail client is synchronous.
    with GmailClient(config, refresh_token, access_token=access_token) as client:
        return client.get_profile()


async def exchange_code(settings: Settings, code: str) -> dict[str, Any]:
    """POST the authorization code to the token endpoint; the token response as a dict."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": settings.google_oauth_redirect_uri,
        "client_id": settings.google_client_id,
        "client_secret": settings.google_client_secret,
    }
    timeout = aiohttp.ClientTimeout(total=INTERACTIVE_TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(settings.google_token_uri, data=form) as response,
        ):
            status = response.status
            try:
                body = await response.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                body = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConnectRefused(
            503, "google_unavailable", "Google's token endpoint could not be reached; retry."
        ) from exc
    if not isinstance(body, dict):
        body = {}
    if status == 200:
        return body
    error = str(body.get("error") or f"HTTP {status}")
    description = str(body.get("error_description") or "")
    if status >= 500:
        raise ConnectRefused(
            503, "google_unavailable", f"Google's token endpoint failed ({error})."
        )
    if error == "invalid_client":
        raise ConnectRefused(
            503,
            "google_oauth_misconfigured",
            "Google rejected this server's OAuth client: check GOOGLE_CLIENT_ID and "
            "GOOGLE_CLIENT_SECRET.",
        )
    raise ConnectRefused(
        400,
        "oauth_code_rejected",
        f"Google refused the authorization code ({error}{': ' + description if description else ''}); "
        "start the connection again.",
    )


async def grant_from_code(settings: Settings, code: str) -> Grant:
    """Exchange the code, check the grant can read mail, and read the mailbox's profile."""
    config = interactive_config(settings)
    tokens = await exchange_code(settings, code)
    refresh_token = tokens.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise ConnectRefused(
            422,
            "refresh_token_missing",
            "Google returned no refresh token: remove the app's access in the Google account "
            "and connect again (consent must be given afresh).",
        )
    scopes = str(tokens.get("scope") or GMAIL_READONLY_SCOPE).split()
    if not READ_SCOPES.intersection(scopes):
        raise ConnectRefused(
            422,
            "insufficient_scope",
            "The grant does not allow reading mail: allow Gmail read access when consenting.",
        )
    access_token = tokens.get("access_token")
    if not isinstance(access_token, str):
        access_token = None  # the client then refreshes with the new refresh token
    try:
        profile = await asyncio.to_thread(_fetch_profile, config, refresh_token, access_token)
    except GmailReconnectRequired as exc:
        raise ConnectRefused(
            400, "oauth_grant_rejected", f"Gmail rejected the new grant: {exc}"
        ) from exc
    except GmailError as exc:
        raise ConnectRefused(
            503, "gmail_unavailable", f"Gmail could not be reached: {exc}"
        ) from exc
    return Grant(refresh_token=refresh_token, scopes=scopes, profile=profile)


def _verdict(
    mailbox: dict[str, Any],
    *,
    code: str | None = None,
    error: str | None = None,
    profile_email: str | None = None,
    history_id: str | None = None,
    messages_total: int | None = None,
    gmail_status: int | None = None,
) -> dict[str, Any]:
    """The connectivity answer: the web client's {status, profile_email, scopes, error}, and
    what else is known (the refusal's code, Gmail's history id and message count)."""
    if code is not None:
        status = "degraded"
    elif not mailbox["enabled"]:
        status = "disabled"
    elif mailbox["paused"]:
        status = "paused"
    else:
        status = "connected"
    return {
        "status": status,
        "profile_email": profile_email,
        "scopes": list(mailbox["granted_scopes"] or []),
        "error": error,
        "code": code,
        "history_id": history_id,
        "messages_total": messages_total,
        "gmail_status": gmail_status,
    }


async def check_connectivity(
    settings: Settings, mailbox_id: str, mailbox: dict[str, Any]
) -> dict[str, Any]:
    """Check a mailbox's stored grant against Gmail (users.getProfile); the verdict as a dict.

    `mailbox` is a row of api.mailbox_credentials. Moves no sync state; raises
    `ConnectRefused` only when the server has no OAuth client configured.
    """

    def refused(code: str, error: str, **extra: Any) -> dict[str, Any]:
        return _verdict(mailbox, code=code, error=error, **extra)

    if mailbox["provider"] != "gmail":
        return refused("not_gmail", "This mailbox is not a Gmail mailbox.")
    if mailbox["encrypted_refresh_token"] is None:
        return refused("not_connected", "No Gmail grant is stored: connect the mailbox.")
    config = interactive_config(settings)
    try:
        refresh_token = decrypt_token(
            token_key(settings),
            mailbox["encrypted_refresh_token"],
            organization_id=mailbox["organization_id"],
            mailbox_id=mailbox_id,
        )
    except TokenDecryptionError as exc:
        return refused("token_unreadable", f"The stored grant cannot be decrypted: {exc}.")
    try:
        profile = await asyncio.to_thread(_fetch_profile, config, refresh_token)
    except GmailReconnectRequired as exc:
        return refused("needs_reconnect", f"Gmail refused the stored grant: {exc}")
    except GmailRetriesExhausted as exc:
        return refused("gmail_unavailable", str(exc))
    except GmailApiError as exc:
        return refused("gmail_error", str(exc), gmail_status=exc.status)
    except GmailError as exc:
        return refused("gmail_error", str(exc))
    if profile.email.lower() != mailbox["email"]:
        return refused(
            "email_mismatch",
            f"The stored grant is for {profile.email}, not {mailbox['email']}.",
            profile_email=profile.email,
        )
    return _verdict(
        mailbox,
        profile_email=profile.email,
        history_id=str(profile.history_id),
        messages_total=profile.messages_total,
    )
