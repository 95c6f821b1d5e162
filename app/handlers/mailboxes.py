"""Mailboxes (admin): list, the Gmail connect flow, connectivity check, sync administration.

Most handlers are parse → one SQL call → respond. The connect callback and the
connectivity check also need Google (token endpoint, Gmail profile): that part lives in
kernel/gmail_connect.py, and no database transaction is held open while it runs.
"""

from __future__ import annotations

import json
import re
import secrets
from urllib.parse import urlencode

import psycopg
from aiohttp import web

from app.apidoc import INPUT_LIMITS, Doc, ok
from app.errors import ApiError, database_error
from app.http import SETTINGS, Route, is_browser, path_id, respond_sql, sql_json, transaction
from app.security import keyed_hash
from kernel.crypto import encrypt_token, token_key
from kernel.gmail_connect import (
    GMAIL_READONLY_SCOPE,
    GMAIL_SEND_SCOPE,
    check_connectivity,
    grant_from_code,
    interactive_config,
)
from kernel.refusal import Refused
from kernel.settings import Settings

OAUTH_STATE_TTL_SECONDS = 600
_MINUTES_RE = re.compile(r"^-?[0-9]{1,9}$")  # ASCII digits only, as query_limit


def oauth_state_hash(settings: Settings, state: str) -> bytes:
    """What core.oauth_states stores: an HMAC of the state token, never the token."""
    return keyed_hash(settings, b"oauth_state", state)


# ---------------------------------------------------------------- list


async def list_mailboxes(request: web.Request) -> web.Response:
    """The organisation's mailboxes (admin)."""
    return await respond_sql(request, "api.mailbox_list()")


# ---------------------------------------------------------------- Gmail connect flow


# ?purpose= of the OAuth start: the state's purpose and the scopes Google is asked for
# (a mailbox that sends replies needs gmail.send; sendAs.list and the rfc822msgid search
# need read access).
OAUTH_PURPOSES = {
    "journal": ("gmail_journal", GMAIL_READONLY_SCOPE),
    "journal_send": ("gmail_journal_send", f"{GMAIL_READONLY_SCOPE} {GMAIL_SEND_SCOPE}"),
    "sender": ("gmail_sender", f"{GMAIL_READONLY_SCOPE} {GMAIL_SEND_SCOPE}"),
}


async def oauth_start(request: web.Request) -> web.Response:
    """Begin connecting a Gmail mailbox: a one-time state and Google's consent URL."""
    settings = request.app[SETTINGS]
    purpose = request.query.get("purpose", "journal")
    if purpose not in OAUTH_PURPOSES:
        raise ApiError(422, "invalid_purpose", "purpose must be journal, journal_send or sender.")
    state_purpose, scope = OAUTH_PURPOSES[purpose]
    interactive_config(settings)  # refuse early when the OAuth client is not configured
    state = secrets.token_urlsafe(32)
    stored = json.loads(
        await sql_json(
            request,
            "api.mailbox_oauth_start(%s, %s, %s)",
            [oauth_state_hash(settings, state), OAUTH_STATE_TTL_SECONDS, state_purpose],
        )
    )
    query = urlencode(
        {
            "client_id": settings.google_client_id,
            "redirect_uri": settings.google_oauth_redirect_uri,
            "response_type": "code",
            "scope": scope,
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


def _to_frontend(request: web.Request, **query: str) -> web.Response:
    url = f"{request.app[SETTINGS].frontend_url}/mailboxes/connected?{urlencode(query)}"
    return web.Response(status=303, headers={"Location": url})


async def oauth_callback(request: web.Request) -> web.Response:
    """Google's redirect back: consume the state, exchange the code, store the mailbox.

    A browser (Accept names text/html) is sent to the web client's
    FRONTEND_URL/mailboxes/connected with `mailbox_id`, or with `error` (the error code) and
    `detail` when the connection failed. An API client gets JSON: 201 with the new mailbox
    (its backfill queued), 200 when an existing mailbox was reconnected, or the error.
    """
    browser = is_browser(request)
    try:
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
            raise ApiError(
                400, "oauth_error", f"Google answered the consent request with {error!r}."
            )
        code = request.query.get("code", "")
        if not code:
            raise ApiError(400, "missing_code", "The callback carries no authorization code.")

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
                    "api.mailbox_gmail_connect(%s, %s, %s, %s, %s, %s)",
                    [
                        target["mailbox_id"],
                        profile.email,
                        ciphertext,
                        scopes,
                        settings.push_enabled,
                        verdict["mailbox_purpose"],
                    ],
                )
            )
    except (Refused, psycopg.Error) as exc:
        # A browser cannot show a JSON error: the failure goes to the client's page instead.
        refusal = exc if isinstance(exc, Refused) else database_error(exc)
        if not browser or refusal is None:
            raise
        return _to_frontend(request, error=refusal.code, detail=refusal.detail)
    if browser:
        return _to_frontend(request, mailbox_id=result["mailbox"]["id"])
    return web.json_response(result["mailbox"], status=201 if result["created"] else 200)


# ---------------------------------------------------------------- connectivity


async def connectivity(request: web.Request) -> web.Response:
    """Check the stored grant against Gmail (users.getProfile); moves no sync state."""
    settings = request.app[SETTINGS]
    mailbox_id = path_id(request, "mailbox_id")
    # Only reading is needed: the transaction ends before waiting on Gmail.
    async with transaction(request) as conn:
        cursor = await conn.execute("SELECT * FROM api.mailbox_credentials(%s)", [mailbox_id])
        mailbox = await cursor.fetchone()
    verdict = await check_connectivity(settings, mailbox_id, mailbox)
    return web.json_response(verdict)


# ---------------------------------------------------------------- sync administration


async def sync_backfill(request: web.Request) -> web.Response:
    """Queue a full backfill (202)."""
    return await respond_sql(
        request, "api.mailbox_sync_backfill(%s)", [path_id(request, "mailbox_id")]
    )


async def sync_history(request: web.Request) -> web.Response:
    """Queue an incremental history sync (202)."""
    return await respond_sql(
        request, "api.mailbox_sync_history(%s)", [path_id(request, "mailbox_id")]
    )


async def sync_status(request: web.Request) -> web.Response:
    """Cursor, backfill progress, errors, pause, lag and jobs of one mailbox."""
    return await respond_sql(
        request, "api.mailbox_sync_status(%s)", [path_id(request, "mailbox_id")]
    )


async def sync_pause(request: web.Request) -> web.Response:
    """Pause ingestion for `minutes` (1..the pause_minutes input limit, default 30)."""
    mailbox_id = path_id(request, "mailbox_id")
    raw = request.query.get("minutes", "30").strip()
    if not _MINUTES_RE.match(raw):
        raise ApiError(
            422,
            "invalid_minutes",
            f"minutes must be a whole number from 1 to {INPUT_LIMITS['pause_minutes']} (one week).",
        )
    return await respond_sql(request, "api.mailbox_sync_pause(%s, %s)", [mailbox_id, int(raw)])


async def sync_resume(request: web.Request) -> web.Response:
    """Clear the pause and failure streak; queue a history sync (or a backfill)."""
    return await respond_sql(
        request,
        "api.mailbox_sync_resume(%s, %s)",
        [path_id(request, "mailbox_id"), request.app[SETTINGS].push_enabled],
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/mailboxes",
        list_mailboxes,
        "admin",
        sql="api.mailbox_list",
        doc=Doc(
            operation_id="listMailboxes",
            tag="mailboxes",
            summary="List mailboxes",
            description="The organisation's mailboxes by address (never the refresh token).",
            response=ok("Mailboxes.", "MailboxList", []),
        ),
    ),
    Route(
        "POST",
        "/mailboxes/gmail/journal/oauth/start",
        oauth_start,
        "admin",
        sql="api.mailbox_oauth_start",
        doc=Doc(
            operation_id="startGmailOAuth",
            tag="mailboxes",
            summary="Start connecting a Gmail journal mailbox",
            description=(
                "A one-time state (10 minutes, bound to this admin and organisation) and "
                "Google's consent URL to open in the admin's browser. 503 "
                "google_oauth_not_configured without GOOGLE_CLIENT_ID/SECRET. `purpose`: "
                "journal (default, gmail.readonly), journal_send (the journal also sends "
                "replies: gmail.send too) or sender (a mailbox that only sends replies, never "
                "synced; gmail.readonly and gmail.send)."
            ),
            response=ok("Consent URL.", "OAuthStart"),
            query=(
                {
                    "name": "purpose",
                    "in": "query",
                    "schema": {"type": "string", "enum": list(OAUTH_PURPOSES)},
                },
            ),
        ),
    ),
    Route(
        "GET",
        "/mailboxes/gmail/oauth/callback",
        oauth_callback,
        "admin",
        sql=(
            "api.mailbox_oauth_consume_state",
            "api.mailbox_gmail_connect_target",
            "api.mailbox_gmail_connect",
        ),
        doc=Doc(
            operation_id="gmailOAuthCallback",
            tag="mailboxes",
            summary="Google's redirect back",
            description=(
                "Consumes the state, exchanges the code, reads the Gmail profile and creates the "
                "mailbox (backfill queued) or reconnects it. A browser (`Accept` naming "
                "text/html) is redirected (303) to FRONTEND_URL/mailboxes/connected?mailbox_id="
                "..., or ?error=<code>&detail=... when it failed. Other clients get JSON: 201 "
                "created, 200 reconnected; 400 for a bad/used/expired state, a refused code or "
                "consent; 422 refresh_token_missing / insufficient_scope; 409 "
                "mailbox_connect_conflict."
            ),
            response=ok("Existing mailbox reconnected.", "Mailbox"),
            query=(
                {
                    "name": "state",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                },
                {"name": "code", "in": "query", "schema": {"type": "string"}},
                {"name": "error", "in": "query", "schema": {"type": "string"}},
            ),
            errors=(409, 422),
            responses={
                "201": ok("Mailbox created.", "Mailbox"),
                "303": {
                    "description": "A browser: to the web client's connected page.",
                    "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
                },
            },
        ),
    ),
    Route(
        "GET",
        "/mailboxes/{mailbox_id}/connectivity",
        connectivity,
        "admin",
        sql="api.mailbox_credentials",
        doc=Doc(
            operation_id="checkMailboxConnectivity",
            tag="mailboxes",
            summary="Check the stored grant",
            description=(
                "users.getProfile with the stored grant; moves no sync state. Problems are a 200 "
                "with ok=false."
            ),
            response=ok("Verdict.", "Connectivity"),
        ),
    ),
    Route(
        "POST",
        "/mailboxes/{mailbox_id}/sync/backfill",
        sync_backfill,
        "admin",
        status=202,
        sql="api.mailbox_sync_backfill",
        doc=Doc(
            operation_id="queueMailboxBackfill",
            tag="mailboxes",
            summary="Queue a full backfill",
            description="queued=false when one is already waiting; 409 backfill_running while one runs.",
            response=ok("Accepted.", "SyncQueued"),
            errors=(409,),
        ),
    ),
    Route(
        "POST",
        "/mailboxes/{mailbox_id}/sync/history",
        sync_history,
        "admin",
        status=202,
        sql="api.mailbox_sync_history",
        doc=Doc(
            operation_id="queueMailboxHistorySync",
            tag="mailboxes",
            summary="Queue an incremental history sync",
            description="409 history_cursor_missing before the first backfill.",
            response=ok("Accepted.", "SyncQueued"),
            errors=(409,),
        ),
    ),
    Route(
        "GET",
        "/mailboxes/{mailbox_id}/sync/status",
        sync_status,
        "admin",
        sql="api.mailbox_sync_status",
        doc=Doc(
            operation_id="getMailboxSyncStatus",
            tag="mailboxes",
            summary="Sync status and lag",
            description="Cursor, backfill progress, last sync and error, pause, lag, jobs.",
            response=ok("Status.", "SyncStatus"),
        ),
    ),
    Route(
        "POST",
        "/mailboxes/{mailbox_id}/sync/pause",
        sync_pause,
        "admin",
        sql="api.mailbox_sync_pause",
        doc=Doc(
            operation_id="pauseMailboxSync",
            tag="mailboxes",
            summary="Pause ingestion",
            description="Sync steps do nothing until the pause expires or is resumed.",
            response=ok("Paused.", "MailboxPaused"),
            query=(
                {
                    "name": "minutes",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": INPUT_LIMITS["pause_minutes"],
                        "default": 30,
                    },
                    "description": "Pause length in minutes; else 422 invalid_minutes.",
                },
            ),
            errors=(422,),
        ),
    ),
    Route(
        "POST",
        "/mailboxes/{mailbox_id}/sync/resume",
        sync_resume,
        "admin",
        sql="api.mailbox_sync_resume",
        doc=Doc(
            operation_id="resumeMailboxSync",
            tag="mailboxes",
            summary="Resume ingestion",
            description=(
                "Clears the pause and failure streak, queues a history sync (a backfill without "
                "a cursor)."
            ),
            response=ok("Resumed.", "MailboxResumed"),
        ),
    ),
)
