"""The aiohttp application: `create_app(settings)` builds everything, no globals.

The operations are app/routes.py's `ROUTES` (re-exported here).
"""

from __future__ import annotations

import asyncio
import re
import uuid

from aiohttp import web, web_protocol

from app.cors import cors_middleware
from app.errors import HTTP_CODES, error_middleware, error_response
from app.http import (
    BLOBS,
    EXPECTED_SCHEMA,
    POOL,
    RATE_LIMITER,
    REQUEST_ID,
    SESSION_CHECKED,
    SETTINGS,
    Route,
    check_request_text,
    declared,
)
from app.metrics import HTTP_METRICS, HttpMetrics, http_metrics_middleware
from app.push import PUSH_AUTHENTICATOR, PushAuthenticator
from app.routes import ROUTES
from app.security import (
    REQUEST_ID_HEADER,
    SECURITY_HEADERS,
    RateLimiter,
    client_address,
    request_id_of,
    well_formed_token,
)
from kernel import db, migrate
from kernel.blobstore import blob_store_from_settings
from kernel.settings import Settings

__all__ = ["ROUTES", "create_app"]

# Names the product, not the versions of Python and aiohttp (aiohttp's default).
SERVER_HEADER = "oss-ticketing"

# Probes must answer even when a client is throttled; Pub/Sub pushes come from Google's
# addresses in bursts, are authenticated by their token and only queue a job.
_UNLIMITED_PATHS = frozenset(route.path for route in ROUTES if not route.rate_limited)


@web.middleware
async def request_context_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Outermost: request id in and out, security headers on every response."""
    request[REQUEST_ID] = request_id_of(request)
    response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    response.headers["Server"] = SERVER_HEADER
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


_AIOHTTP_HANDLE_ERROR = web_protocol.RequestHandler.handle_error


def _json_handle_error(self, request, status=500, exc=None, message=None):
    """aiohttp's answer to a request it could not parse (or a handler crash), as our JSON.

    aiohttp answers those before any middleware runs and offers no hook, hence this
    replacement of its method; the original still logs and refuses a half-sent response.
    """
    _AIOHTTP_HANDLE_ERROR(self, request, status, exc, message)
    if status >= 500:
        code, detail = "internal_error", "Something went wrong on our side."
    else:
        code = HTTP_CODES.get(status, "bad_request")
        detail = "The HTTP request is malformed or exceeds the server's limits."
    headers = {
        **SECURITY_HEADERS,
        "Server": SERVER_HEADER,
        REQUEST_ID_HEADER: uuid.uuid4().hex,
    }
    response = error_response(status, code, detail, headers)
    response.force_close()
    return response


def install_parser_error_json() -> None:
    """Make every aiohttp server in this process answer its own errors as JSON."""
    web_protocol.RequestHandler.handle_error = _json_handle_error


@web.middleware
async def rate_limit_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Outside the error middleware, so that it sees every answer's status (401 included)."""
    if request.path in _UNLIMITED_PATHS:
        return await handler(request)
    settings = request.app[SETTINGS]
    limiter = request.app[RATE_LIMITER]
    token = well_formed_token(request.cookies.get(settings.session_cookie_name))
    session = limiter.session_key(token) if token else None
    client = limiter.client_key(session, client_address(request, settings.trust_forwarded_for))
    wait = limiter.take(client)
    if wait is not None:
        return error_response(
            429,
            "rate_limited",
            "Too many requests from this client; slow down.",
            {"Retry-After": str(max(1, round(wait)))},
        )
    response = await handler(request)
    if session is not None and request.get(SESSION_CHECKED):
        limiter.session_checked(session, accepted=response.status != 401)
    return response


@web.middleware
async def input_middleware(request: web.Request, handler) -> web.StreamResponse:
    check_request_text(request)
    return await handler(request)


def _database(settings: Settings, database_url: str | None):
    async def context(app: web.Application):
        url = database_url or await asyncio.to_thread(db.database_url, settings)
        pool = db.api_pool(settings, url)
        await pool.open()
        app[POOL] = pool
        try:
            yield
        finally:
            await pool.close()

    return context


def create_app(settings: Settings, database_url: str | None = None) -> web.Application:
    """Build the API application; `database_url` overrides the settings' database."""
    settings.check_startup()
    install_parser_error_json()
    app = web.Application(
        middlewares=[
            request_context_middleware,
            cors_middleware,
            http_metrics_middleware,
            rate_limit_middleware,
            error_middleware,
            input_middleware,
        ],
        client_max_size=1024 * 1024,
    )
    app[SETTINGS] = settings
    app[HTTP_METRICS] = HttpMetrics()
    app[RATE_LIMITER] = RateLimiter(settings.rate_limit_requests_per_minute)
    app[PUSH_AUTHENTICATOR] = PushAuthenticator(settings)
    app[EXPECTED_SCHEMA] = {
        "migrations": migrate.migration_ids(),
        "code_hash": migrate.code_hash(),
    }
    app.cleanup_ctx.append(_database(settings, database_url))
    blobs = blob_store_from_settings(settings)
    app[BLOBS] = blobs

    async def close_blobs(_app: web.Application) -> None:
        blobs.close()

    app.on_cleanup.append(close_blobs)
    for route in ROUTES:
        if route.enabled is None or route.enabled(settings):
            app.router.add_route(route.method, router_path(route.path, ROUTES), declared(route))
    return app


def router_path(path: str, routes: tuple[Route, ...]) -> str:
    """`path` for aiohttp's router: a path id never takes a literal segment another route
    has at its place (so PATCH /tickets/send-identities is 405, not ticket
    `send-identities` not found)."""
    segments = path.split("/")
    for index, segment in enumerate(segments):
        name = re.fullmatch(r"\{(\w+)\}", segment)
        if name is None:
            continue
        literals = sorted(
            {
                other[index]
                for other in (r.path.split("/") for r in routes)
                if len(other) > index
                and other[:index] == segments[:index]
                and not other[index].startswith("{")
            }
        )
        if literals:
            taken = "|".join(re.escape(literal) for literal in literals)
            segments[index] = f"{{{name[1]}:(?!(?:{taken})(?:/|$))[^/]+}}"
    return "/".join(segments)
