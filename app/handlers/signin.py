"""Sign in with Google: GET /auth/google/start and GET /auth/google/callback.

The provider conversation and the ID token check are kernel/google_signin.py; the one-time
state (with nonce and PKCE verifier) and who may join which organisation are the database's
(sql/api/12_signin.sql). The state is bound to the browser that started the sign-in by an
HttpOnly cookie, so a callback link made by someone else (login CSRF) is refused.
"""

from __future__ import annotations

import json
import secrets

from aiohttp import web

from app.apidoc import Doc, ok
from app.errors import ApiError
from app.handlers.auth import new_session_params, set_session_cookie, with_new_csrf
from app.http import POOL, SETTINGS, Route, anonymous_sql_json, is_browser
from app.security import keyed_hash, new_session_token
from kernel import google_signin
from kernel.settings import Settings

# The browser binding of a started sign-in; sent back on the provider's redirect (a
# top-level GET navigation), so SameSite=Lax whatever COOKIE_SAMESITE says.
SIGNIN_COOKIE = "oss_signin"
_SIGNIN_COOKIE_PATH = "/auth/google"
_SIGNIN_COOKIE_MAX_AGE = 600  # logic.signin_state_lifetime()


def _hash(settings: Settings, purpose: bytes, value: str | None) -> bytes | None:
    return keyed_hash(settings, purpose, value) if value else None


async def google_start(request: web.Request) -> web.Response:
    """Begin signing in: a one-time state, then a redirect to Google (or its URL as JSON)."""
    settings = request.app[SETTINGS]
    google_signin.require_configured(settings)
    provider = await google_signin.discover(settings)
    begun = google_signin.start(settings, provider)
    browser = secrets.token_urlsafe(32)
    async with request.app[POOL].connection() as conn:
        stored = json.loads(
            await anonymous_sql_json(
                conn,
                "api.signin_start(%s, %s, %s, %s)",
                [
                    keyed_hash(settings, b"signin_state", begun.state),
                    keyed_hash(settings, b"signin_browser", browser),
                    begun.nonce,
                    begun.code_verifier,
                ],
            )
        )
    if not is_browser(request):
        response: web.Response = web.json_response(
            {"authorization_url": begun.url, "expires_at": stored["expires_at"]}
        )
    else:
        response = web.Response(status=302, headers={"Location": begun.url})
    response.set_cookie(
        SIGNIN_COOKIE,
        browser,
        max_age=_SIGNIN_COOKIE_MAX_AGE,
        path=_SIGNIN_COOKIE_PATH,
        domain=settings.cookie_domain,
        secure=settings.cookie_secure,
        httponly=True,
        samesite="Lax",
    )
    return response


async def google_callback(request: web.Request) -> web.Response:
    """Google's redirect back: spend the state, exchange the code, verify the ID token, let
    the database admit the person, open the session and send the browser to FRONTEND_URL."""
    settings = request.app[SETTINGS]
    state = request.query.get("state", "")
    if not state:
        raise ApiError(
            400, "invalid_signin_state", "The callback carries no sign-in state: sign in again."
        )
    async with request.app[POOL].connection() as conn:
        # Its own statement, committed now: the state is spent whatever happens next.
        verdict = json.loads(
            await anonymous_sql_json(
                conn,
                "api.signin_consume(%s, %s)",
                [
                    keyed_hash(settings, b"signin_state", state),
                    _hash(settings, b"signin_browser", request.cookies.get(SIGNIN_COOKIE)),
                ],
            )
        )
    if not verdict["valid"]:
        raise ApiError(400, verdict["code"], verdict["detail"])
    if error := request.query.get("error"):
        if error == "access_denied":
            raise ApiError(400, "signin_access_denied", "Sign-in was cancelled at Google.")
        raise ApiError(400, "signin_error", f"Google answered the sign-in with {error!r}.")
    code = request.query.get("code", "")
    if not code:
        raise ApiError(400, "missing_code", "The callback carries no authorization code.")

    google_signin.require_configured(settings)
    provider = await google_signin.discover(settings)
    id_token = await google_signin.exchange_code(settings, provider, code, verdict["code_verifier"])
    keys = await google_signin.signing_keys(provider)
    identity = google_signin.verify_id_token(settings, provider, id_token, keys, verdict["nonce"])

    token = new_session_token()
    async with request.app[POOL].connection() as conn:
        text = await anonymous_sql_json(
            conn,
            "api.google_login(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                identity.email,
                identity.hosted_domain,
                identity.subject,
                identity.name,
                *new_session_params(request, settings, token),
            ],
        )
    # As dev login: session cookie, CSRF token rotated and bound to the new session.
    response = with_new_csrf(settings, json.loads(text), token)
    if is_browser(request):
        response = _redirect_keeping_cookies(response, settings.frontend_url)
    set_session_cookie(response, settings, token)
    response.del_cookie(SIGNIN_COOKIE, path=_SIGNIN_COOKIE_PATH, domain=settings.cookie_domain)
    return response


def _redirect_keeping_cookies(source: web.Response, location: str) -> web.Response:
    redirect = web.Response(status=302, headers={"Location": location})
    for morsel in source.cookies.values():
        redirect.cookies[morsel.key] = morsel
    return redirect


_REDIRECT = {
    "description": "Redirect (browsers).",
    "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
}

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/auth/google/start",
        google_start,
        None,
        sql="api.signin_start",
        doc=Doc(
            operation_id="googleSignInStart",
            tag="auth",
            summary="Sign in with Google: start",
            description=(
                "Stores a one-time state (with nonce and PKCE verifier) for 10 minutes, sets the "
                "HttpOnly cookie `oss_signin` binding it to this browser, and redirects to "
                "Google's consent screen (scopes `openid email profile`) when a browser asks "
                "(Accept names text/html); any other client gets 200 "
                "`{authorization_url, expires_at}`. 503 google_signin_not_configured without GOOGLE_OIDC_CLIENT_ID/SECRET."
            ),
            response=ok(
                "The URL to send the browser to (clients other than browsers).", "GoogleSignInStart"
            ),
            responses={"302": {**_REDIRECT, "description": "Redirect to Google's consent screen."}},
        ),
    ),
    Route(
        "GET",
        "/auth/google/callback",
        google_callback,
        None,
        sql=("api.signin_consume", "api.google_login"),
        doc=Doc(
            operation_id="googleSignInCallback",
            tag="auth",
            summary="Sign in with Google: Google's redirect back",
            description=(
                "Spends the state (400 invalid_signin_state, signin_state_used, "
                "signin_state_expired, signin_state_mismatch), exchanges the code with the PKCE "
                "verifier (400 signin_code_rejected), verifies the ID token (401 "
                "invalid_id_token: signature, issuer, audience, expiry, nonce; 403 "
                "email_not_verified), and admits the person by invitation or verified "
                "Workspace domain (403 not_invited). Then sets cookie `oss_session`, rotates "
                "the CSRF token and redirects a browser (Accept names text/html) to "
                "FRONTEND_URL; any other client gets 200 with the login body."
            ),
            query=(
                {"name": "state", "in": "query", "schema": {"type": "string"}},
                {"name": "code", "in": "query", "schema": {"type": "string"}},
                {"name": "error", "in": "query", "schema": {"type": "string"}},
            ),
            response=ok("Signed in (clients other than browsers).", "Login"),
            responses={"302": {**_REDIRECT, "description": "Signed in: redirect to FRONTEND_URL."}},
            errors=(401, 403),
        ),
    ),
)
