"""Sessions: CSRF token, development login, logout, organisation switch, /me."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from psycopg.types.json import Jsonb

from app.apidoc import Doc, json_body, ok
from app.errors import ApiError
from app.http import (
    POOL,
    REQUEST_ID,
    SETTINGS,
    Route,
    anonymous_sql_json,
    json_text,
    read_json_object,
    respond_sql,
    sql_json,
)
from app.security import (
    clear_cookie,
    client_address,
    new_csrf_token,
    new_session_token,
    presented_session_token,
    session_token_hash,
    set_cookie,
)
from kernel.settings import Settings


def with_new_csrf(settings: Settings, payload: dict, session_token: str | None) -> web.Response:
    """`payload` and a new CSRF token bound to `session_token` (None: anonymous), which is
    also set as the CSRF cookie."""
    token = new_csrf_token(settings, session_token)
    response = web.json_response({**payload, "csrf_token": token})
    set_cookie(response, settings, settings.csrf_cookie_name, token, http_only=False)
    return response


def set_session_cookie(response: web.StreamResponse, settings: Settings, token: str) -> None:
    set_cookie(
        response,
        settings,
        settings.session_cookie_name,
        token,
        http_only=True,
        max_age=settings.session_ttl_seconds,
    )


def previous_session_hash(request: web.Request, settings: Settings) -> bytes | None:
    """The HMAC of the session the browser presents: a new login revokes it."""
    token = presented_session_token(request, settings)
    return session_token_hash(settings, token) if token else None


def new_session_params(request: web.Request, settings: Settings, token: str) -> list[Any]:
    """The arguments every login function ends with: the new token's HMAC, the HMAC of the
    session it replaces, the lifetime, and the user agent, address and request id."""
    return [
        session_token_hash(settings, token),
        previous_session_hash(request, settings),
        settings.session_ttl_seconds,
        request.headers.get("User-Agent", ""),
        client_address(request, settings.trust_forwarded_for),
        request[REQUEST_ID],
    ]


async def csrf(request: web.Request) -> web.Response:
    """Issue a CSRF token: set as cookie `oss_csrf` and returned as `csrf_token`; bound to the
    session cookie the request carries, anonymous (sign-in endpoints only) without one."""
    settings = request.app[SETTINGS]
    return with_new_csrf(settings, {}, presented_session_token(request, settings))


async def dev_login(request: web.Request) -> web.Response:
    """Development login by email and organisation name (404 unless ALLOW_DEV_LOGIN)."""
    settings = request.app[SETTINGS]
    if not settings.allow_dev_login:
        raise ApiError(404, "not_found", "Not Found")
    body = await read_json_object(request)
    token = new_session_token()
    async with request.app[POOL].connection() as conn:
        text = await anonymous_sql_json(
            conn,
            "api.dev_login(%s, %s, %s, %s, %s, %s, %s)",
            [Jsonb(body), *new_session_params(request, settings, token)],
        )
    # Login rotates the CSRF token, bound to the new session: the one returned here is the
    # one to use from now on.
    response = with_new_csrf(settings, json.loads(text), token)
    set_session_cookie(response, settings, token)
    return response


async def logout(request: web.Request) -> web.Response:
    """Revoke the current session and clear its cookie."""
    settings = request.app[SETTINGS]
    response = json_text(await sql_json(request, "api.logout()"))
    clear_cookie(response, settings, settings.session_cookie_name)
    return response


async def logout_all(request: web.Request) -> web.Response:
    """Revoke every session of the user (all organisations) and clear this one's cookie."""
    settings = request.app[SETTINGS]
    response = json_text(await sql_json(request, "api.logout_all()"))
    clear_cookie(response, settings, settings.session_cookie_name)
    return response


async def switch_org(request: web.Request) -> web.Response:
    """Move the session to another organisation the user belongs to."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.switch_org(%s)", [Jsonb(body)])


async def me(request: web.Request) -> web.Response:
    """The current user, organisation, role and memberships."""
    return await respond_sql(request, "api.me()")


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/auth/csrf",
        csrf,
        None,
        database=False,
        doc=Doc(
            operation_id="getCsrfToken",
            tag="auth",
            summary="Issue a CSRF token",
            description=(
                "Sets cookie `oss_csrf` and returns the same token; send it as header "
                "`x-csrf-token` on every non-GET request. The token is bound to the session "
                "cookie sent with this request; without one it is anonymous and good only for "
                "signing in."
            ),
            response=ok("A token.", "CsrfToken"),
        ),
    ),
    Route(
        "POST",
        "/auth/dev/login",
        dev_login,
        None,
        csrf_anonymous=True,
        sql="api.dev_login",
        doc=Doc(
            operation_id="devLogin",
            tag="auth",
            summary="Development login",
            description=(
                "Only when ALLOW_DEV_LOGIN=true (404 otherwise). Finds or creates the "
                "organisation, user and membership (the founder is admin, later members agents "
                "unless `role` is given), sets cookie `oss_session` (revoking the session the "
                "browser presented) and rotates the CSRF token."
            ),
            response=ok("Logged in.", "Login"),
            body=json_body(
                "DevLoginRequest", {"email": "alice@example.com", "organization_name": "Acme"}
            ),
            errors=(404,),
        ),
    ),
    Route(
        "POST",
        "/auth/logout",
        logout,
        "viewer",
        sql="api.logout",
        doc=Doc(
            operation_id="logout",
            tag="auth",
            summary="Log out",
            description="Revoke the session and clear its cookie.",
            response=ok("Logged out.", "LoggedOut"),
        ),
    ),
    Route(
        "POST",
        "/auth/logout-all",
        logout_all,
        "viewer",
        sql="api.logout_all",
        doc=Doc(
            operation_id="logoutAll",
            tag="auth",
            summary="Log out everywhere",
            description="Revoke every session of the user, in every organisation.",
            response=ok("Logged out.", "LoggedOutAll"),
        ),
    ),
    Route(
        "POST",
        "/auth/switch-org",
        switch_org,
        "viewer",
        sql="api.switch_org",
        doc=Doc(
            operation_id="switchOrganization",
            tag="auth",
            summary="Switch organisation",
            description=(
                "Move the session to another organisation of the user (404 "
                "organization_not_found otherwise)."
            ),
            response=ok("The session, now in that organisation.", "Session"),
            body=json_body("SwitchOrgRequest"),
            errors=(404,),
        ),
    ),
    Route(
        "GET",
        "/me",
        me,
        "viewer",
        sql="api.me",
        doc=Doc(
            operation_id="getMe",
            tag="auth",
            summary="The current session",
            description="User, organisation, role and memberships.",
            response=ok("The session.", "Me"),
        ),
    ),
)
