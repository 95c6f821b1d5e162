"""Mailboxes (admin): list, the Gmail connect flow, connectivity check, sync administration.

Most handlers are parse → one SQL call → respond. The connect callback and the
connectivity check also talk to Google (token endpoint, Gmail profile) and encrypt or
decrypt the refresh token: that is the Python-only part, and no database transaction is
held open while it runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from app.errors import ApiError
from app.http import SETTINGS, json_text, respond_sql, sql_json, transaction
from app.security import keyed_hash
from kernel.crypto import TokenDecryptionError, decrypt_token, encrypt_token, token_key
from kernel.gmail import (
    GMAIL_READONLY_SCOPE,
    GmailApiError,
    GmailClient,
    GmailClientConfig,
    GmailError,
    GmailReconnectRequired,
    GmailRetriesExhausted,
    Profile,
    RetryPolicy,
)
from kernel.settings import Settings

OAUTH_STATE_TTL_SECONDS = 600
# Scopes that let the journal be read; gmail.readonly is what the connect flow asks for.
_READ_SCOPES = frozenset(
    {
        GMAIL_READONLY_SCOPE,
        "https://www.googleapis.com/auth/gmail.modify",
        "https://mail.google.com/",
    }
)
# An admin is waiting on these calls: fail fast instead of the worker's long retry budget.
_INTERACTIVE_RETRY = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=2.0, max_total_wait=5.0)
_INTERACTIVE_TIMEOUT_SECONDS = 20.0
_MINUTES_RE = re.compile(r"^-?\d{1,9}$")


def oauth_state_hash(settings: Settings, state: str) -> bytes:
    """What core.oauth_states stores: an HMAC of the state token, never the token."""
    return keyed_hash(settings, b"oauth_state", state)


def _mailbox_id(request: web.Request) -> str:
    # A path segment that is not a UUID names no mailbox: 404 like an unknown id.
    try:
        return str(uuid.UUID(request.match_info["mailbox_id"]))
    except ValueError as exc:
        raise ApiError(
            404, "mailbox_not_found", "No mailbox with that id in this organization."
        ) from exc


def _gmail_config(settings: Settings) -> GmailClientConfig:
    if not settings.google_client_id or not settings.google_client_secret:
        raise ApiError(
            503,
            "google_oauth_not_configured",
            "Gmail is not configured on this server: set GOOGLE_CLIENT_ID and "
            "GOOGLE_CLIENT_SECRET.",
        )
    return dataclasses.replace(
        GmailClientConfig.from_settings(settings),
        timeout_seconds=_INTERACTIVE_TIMEOUT_SECONDS,
        retry=_INTERACTIVE_RETRY,
    )


def _fetch_profile(
    config: GmailClientConfig, refresh_token: str, access_token: str | None = None
) -> Profile:
    # Runs in a worker thread: the Gmail client is synchronous.
    with GmailClient(config, refresh_token, access_token=access_token) as client:
        return client.get_profile()


# ---------------------------------------------------------------- list


async def list_mailboxes(request: web.Request) -> web.Response:
    """The organisation's mailboxes (admin)."""
    return await respond_sql(request, "api.mailbox_list()")


# ---------------------------------------------------------------- Gmail connect flow


async def oauth_start(request: web.Request) -> web.Response:
    """Begin connecting a Gmail journal mailbox: a one-time state and Google's consent URL."""
    settings = request.app[SETTINGS]
    _gmail_config(settings)  # refuse early when the OAuth client is not configured
    state = secrets.token_urlsafe(32)
    stored = json.loads(
        await sql_json(
            request,
            "api.mailbox_oauth_start(%s, %s)",
            [oauth_state_hash(settings, state), OAUTH_STATE_TTL_SECONDS],
        )
    )
    query = urlencode(
        {
            "client_id": settings.google_client_id,
            "redirect_uri": settings.google_oauth_redirect_uri,
            "response_type": "code",
            "scope": GMAIL_READONLY_SCOPE,
            "access_type": "offline",  # a refresh token, for syncing without the admin
            "prompt": "consent",  # Google sends a refresh token only with fresh consent
            "state": state,
        }
    )
    separator = "&" if "?" in settings.google_auth_uri else "?"
    return web.json_response(
        {
            "authorization_url": f"{settings.google_auth_uri}{separator}{query}",
            "state": state,
            "expires_at": stored["expires_at"],
        }
    )


async def _exchange_code(settings: Settings, code: str) -> dict[str, Any]:
    """POST the authorization code to the token endpoint; the token response as a dict."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": settings.google_oauth_redirect_uri,
        "client_id": settings.google_client_id,
        "client_secret": settings.google_client_secret,
    }
    timeout = aiohttp.ClientTimeout(total=_INTERACTIVE_TIMEOUT_SECONDS)
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
        raise ApiError(
            503, "google_unavailable", "Google's token endpoint could not be reached; retry."
        ) from exc
    if not isinstance(body, dict):
        body = {}
    if status == 200:
        return body
    error = str(body.get("error") or f"HTTP {status}")
    description = str(body.get("error_description") or "")
    if status >= 500:
        raise ApiError(503, "google_unavailable", f"Google's token endpoint failed ({error}).")
    if error == "invalid_client":
        raise ApiError(
            503,
            "google_oauth_misconfigured",
            "Google rejected this server's OAuth client: check GOOGLE_CLIENT_ID and "
            "GOOGLE_CLIENT_SECRET.",
        )
    raise ApiError(
        400,
        "oauth_code_rejected",
        f"Google refused the authorization code ({error}{': ' + description if description else ''}); "
        "start the connection again.",
    )


async def oauth_callback(request: web.Request) -> web.Response:
    """Google's redirect back: consume the state, exchange the code, store the mailbox.

    201 with the new mailbox (its backfill queued), or 200 when an existing mailbox of the
    organisation was reconnected.
    """
    settings = request.app[SETTINGS]
    state = request.query.get("state", "")
    if not state:
        raise ApiError(
            400,
            "invalid_oauth_state",
            "The callback carries no OAuth state: start the connection again.",
        )
    # Its own transaction, committed now: the state is spent whatever happens next
    # (refusal, Google error).
    verdict = json.loads(
        await sql_json(
            request, "api.mailbox_oauth_consume_state(%s)", [oauth_state_hash(settings, state)]
        )
    )
    if not verdict["valid"]:
        raise ApiError(400, verdict["code"], verdict["detail"])
    if error := request.query.get("error"):
        if error == "access_denied":
            raise ApiError(
                400,
                "oauth_access_denied",
                "Access to the mailbox was not granted on Google's consent screen.",
            )
        raise ApiError(400, "oauth_error", f"Google answered the consent request with {error!r}.")
    code = request.query.get("code", "")
    if not code:
        raise ApiError(400, "missing_code", "The callback carries no authorization code.")

    config = _gmail_config(settings)
    tokens = await _exchange_code(settings, code)
    refresh_token = tokens.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise ApiError(
            422,
            "refresh_token_missing",
            "Google returned no refresh token: remove the app's access in the Google account "
            "and connect again (consent must be given afresh).",
        )
    scopes = str(tokens.get("scope") or GMAIL_READONLY_SCOPE).split()
    if not _READ_SCOPES.intersection(scopes):
        raise ApiError(
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
        raise ApiError(400, "oauth_grant_rejected", f"Gmail rejected the new grant: {exc}") from exc
    except GmailError as exc:
        raise ApiError(503, "gmail_unavailable", f"Gmail could not be reached: {exc}") from exc

    # The target and the grant stored for it in one transaction.
    async with transaction(request):
        target = json.loads(
            await sql_json(request, "api.mailbox_gmail_connect_target(%s)", [profile.email])
        )
        ciphertext = encrypt_token(
            token_key(settings),
            refresh_token,
            organization_id=target["organization_id"],
            mailbox_id=target["mailbox_id"],
        )
        result = json.loads(
            await sql_json(
                request,
                "api.mailbox_gmail_connect(%s, %s, %s, %s, %s)",
                [target["mailbox_id"], profile.email, ciphertext, scopes, settings.push_enabled],
            )
        )
    return web.json_response(result["mailbox"], status=201 if result["created"] else 200)


# ---------------------------------------------------------------- connectivity


def _not_ok(code: str, error: str, **extra: Any) -> web.Response:
    return web.json_response({"ok": False, "code": code, "error": error, **extra})


async def connectivity(request: web.Request) -> web.Response:
    """Check the stored grant against Gmail (users.getProfile); moves no sync state."""
    settings = request.app[SETTINGS]
    mailbox_id = _mailbox_id(request)
    # Only reading is needed: the transaction ends before waiting on Gmail.
    async with transaction(request) as conn:
        cursor = await conn.execute("SELECT * FROM api.mailbox_credentials(%s)", [mailbox_id])
        mailbox = await cursor.fetchone()
    if mailbox["provider"] != "gmail":
        return _not_ok("not_gmail", "This mailbox is not a Gmail mailbox.")
    if mailbox["encrypted_refresh_token"] is None:
        return _not_ok("not_connected", "No Gmail grant is stored: connect the mailbox.")
    config = _gmail_config(settings)
    try:
        refresh_token = decrypt_token(
            token_key(settings),
            mailbox["encrypted_refresh_token"],
            organization_id=mailbox["organization_id"],
            mailbox_id=mailbox_id,
        )
    except TokenDecryptionError as exc:
        return _not_ok("token_unreadable", f"The stored grant cannot be decrypted: {exc}.")
    try:
        profile = await asyncio.to_thread(_fetch_profile, config, refresh_token)
    except GmailReconnectRequired as exc:
        return _not_ok("needs_reconnect", f"Gmail refused the stored grant: {exc}")
    except GmailRetriesExhausted as exc:
        return _not_ok("gmail_unavailable", str(exc))
    except GmailApiError as exc:
        return _not_ok("gmail_error", str(exc), status=exc.status)
    except GmailError as exc:
        return _not_ok("gmail_error", str(exc))
    if profile.email.lower() != mailbox["email"]:
        return _not_ok(
            "email_mismatch",
            f"The stored grant is for {profile.email}, not {mailbox['email']}.",
            email=profile.email,
        )
    return web.json_response(
        {
            "ok": True,
            "email": profile.email,
            "history_id": str(profile.history_id),
            "messages_total": profile.messages_total,
        }
    )


# ---------------------------------------------------------------- sync administration


async def sync_backfill(request: web.Request) -> web.Response:
    """Queue a full backfill (202)."""
    response = await respond_sql(request, "api.mailbox_sync_backfill(%s)", [_mailbox_id(request)])
    response.set_status(202)
    return response


async def sync_history(request: web.Request) -> web.Response:
    """Queue an incremental history sync (202)."""
    response = await respond_sql(request, "api.mailbox_sync_history(%s)", [_mailbox_id(request)])
    response.set_status(202)
    return response


async def sync_status(request: web.Request) -> web.Response:
    """Cursor, backfill progress, errors, pause, lag and jobs of one mailbox."""
    return await respond_sql(request, "api.mailbox_sync_status(%s)", [_mailbox_id(request)])


async def sync_pause(request: web.Request) -> web.Response:
    """Pause ingestion for `minutes` (1..10080, default 30)."""
    mailbox_id = _mailbox_id(request)
    raw = request.query.get("minutes", "30").strip()
    if not _MINUTES_RE.match(raw):
        raise ApiError(
            422, "invalid_minutes", "minutes must be a whole number from 1 to 10080 (one week)."
        )
    return json_text(
        await sql_json(request, "api.mailbox_sync_pause(%s, %s)", [mailbox_id, int(raw)])
    )


async def sync_resume(request: web.Request) -> web.Response:
    """Clear the pause and failure streak; queue a history sync (or a backfill)."""
    return await respond_sql(
        request,
        "api.mailbox_sync_resume(%s, %s)",
        [_mailbox_id(request), request.app[SETTINGS].push_enabled],
    )
