"""Mailboxes (admin): list, the Gmail connect flow, connectivity check, sync administration.

Most handlers are parse → one SQL call → respond. The connect callback and the
connectivity check also need Google (token endpoint, Gmail profile): that part lives in
kernel/gmail_connect.py, and no database transaction is held open while it runs.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

from aiohttp import web

from app.errors import ApiError
from app.http import SETTINGS, json_text, respond_sql, sql_json, transaction
from app.security import keyed_hash
from kernel.crypto import encrypt_token, token_key
from kernel.gmail_connect import (
    GMAIL_READONLY_SCOPE,
    ConnectRefused,
    check_connectivity,
    grant_from_code,
    interactive_config,
)
from kernel.settings import Settings

OAUTH_STATE_TTL_SECONDS = 600
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


@contextlib.contextmanager
def _refusals_as_api_errors() -> Iterator[None]:
    """The kernel's connect refusals in the API's error shape."""
    try:
        yield
    except ConnectRefused as exc:
        raise ApiError(exc.status, exc.code, exc.detail) from exc


# ---------------------------------------------------------------- list


async def list_mailboxes(request: web.Request) -> web.Response:
    """The organisation's mailboxes (admin)."""
    return await respond_sql(request, "api.mailbox_list()")


# ---------------------------------------------------------------- Gmail connect flow


async def oauth_start(request: web.Request) -> web.Response:
    """Begin connecting a Gmail journal mailbox: a one-time state and Google's consent URL."""
    settings = request.app[SETTINGS]
    with _refusals_as_api_errors():
        interactive_config(settings)  # refuse early when the OAuth client is not configured
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

    with _refusals_as_api_errors():
        grant = await grant_from_code(settings, code)
    refresh_token, scopes, profile = grant.refresh_token, grant.scopes, grant.profile

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


async def connectivity(request: web.Request) -> web.Response:
    """Check the stored grant against Gmail (users.getProfile); moves no sync state."""
    settings = request.app[SETTINGS]
    mailbox_id = _mailbox_id(request)
    # Only reading is needed: the transaction ends before waiting on Gmail.
    async with transaction(request) as conn:
        cursor = await conn.execute("SELECT * FROM api.mailbox_credentials(%s)", [mailbox_id])
        mailbox = await cursor.fetchone()
    with _refusals_as_api_errors():
        verdict = await check_connectivity(settings, mailbox_id, mailbox)
    return web.json_response(verdict)


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
