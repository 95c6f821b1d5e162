"""Request plumbing shared by handlers: app keys, JSON input, and the one way to call SQL.

A handler is: parse → one SQL call → respond. An authenticated handler's SQL call is one
statement that first runs `api.begin_request` (session proven, role checked, tenant set for
that transaction), so row-level security scopes it and a request costs one round trip.
Handlers that need several statements in one transaction use `transaction(request)`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from app.apidoc import INPUT_LIMITS
from app.errors import ApiError
from app.security import RateLimiter, require_csrf, session_token_hash, well_formed_token
from kernel.blobstore import BlobStore
from kernel.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class PathId:
    """A path segment that names a record: parsed here, documented from the same data.

    A segment that is not an id of the right kind names nothing: 404 like an unknown id.
    """

    name: str
    kind: str  # "uuid" or "bigint" (1-18 digits, below 2^63)
    code: str
    detail: str
    description: str

    def parse(self, value: str) -> str | int:
        if self.kind == "uuid":
            try:
                return str(uuid.UUID(value))
            except ValueError as exc:
                raise ApiError(404, self.code, self.detail) from exc
        if not _BIGINT_ID.fullmatch(value):
            raise ApiError(404, self.code, self.detail)
        return int(value)


_BIGINT_ID = re.compile(r"[0-9]{1,18}")
PATH_IDS: dict[str, PathId] = {
    p.name: p
    for p in (
        PathId(
            "mailbox_id",
            "uuid",
            "mailbox_not_found",
            "No mailbox with that id in this organization.",
            "Mailbox id.",
        ),
        PathId(
            "ticket_id",
            "bigint",
            "ticket_not_found",
            "No ticket with that id in this organization.",
            "Ticket id.",
        ),
        PathId(
            "attachment_id",
            "bigint",
            "attachment_not_found",
            "No attachment with that id on this ticket.",
            "Attachment id.",
        ),
        PathId(
            "allowlist_id",
            "uuid",
            "allowlist_entry_not_found",
            "No allowlist entry with that id in this organization.",
            "Allowlist entry id.",
        ),
        PathId(
            "rule_id",
            "uuid",
            "rule_not_found",
            "No routing rule with that id in this organization.",
            "Routing rule id.",
        ),
        PathId(
            "job_id", "bigint", "job_not_found", "No failed job with that id.", "Failed job id."
        ),
        PathId(
            "send_identity_id",
            "uuid",
            "send_identity_not_found",
            "No send identity with that id in this organization.",
            "Send identity id.",
        ),
        PathId(
            "user_id", "uuid", "member_not_found", "No member with that user id here.", "User id."
        ),
        PathId(
            "invitation_id",
            "uuid",
            "invitation_not_found",
            "No open invitation with that id here.",
            "Invitation id.",
        ),
        PathId(
            "session_id",
            "uuid",
            "session_not_found",
            "No live session of yours with that id.",
            "Session id.",
        ),
        PathId(
            "saved_view_id",
            "uuid",
            "saved_view_not_found",
            "You have no saved view with that id.",
            "Saved view id.",
        ),
    )
}


def path_id(request: web.Request, name: str) -> Any:
    """The path's `name` id (a UUID string or an int), or 404 with its not-found code."""
    return PATH_IDS[name].parse(request.match_info[name])


@dataclass(frozen=True)
class Limit:
    """A `?limit=` query parameter bounded by the input limit named `maximum_name`
    (logic.page_size checks the range in SQL; the document states it from INPUT_LIMITS)."""

    maximum_name: str

    @property
    def maximum(self) -> int:
        return INPUT_LIMITS[self.maximum_name]

    @property
    def default(self) -> int:
        return INPUT_LIMITS["page_default"]


@dataclass(frozen=True)
class Route:
    """One operation of the API, declared once: routing, access, status, SQL and documentation.

    `min_role` None means no session is needed; `csrf` False only for callers that
    authenticate otherwise and never send a cookie session; the CSRF token must be bound to
    the request's session, except that `csrf_anonymous` True (sign-in endpoints) also takes
    the anonymous token of GET /auth/csrf. `status` is the success status
    (respond_sql answers with it). `sql` names the api.* function the handler calls (its
    COMMENT ON documents it). `limit` declares a `?limit=` parameter, parsed by
    `query_limit`. `rate_limited` False: probes and pushes answer even when a client is
    throttled. `database` False: the operation never touches the database (no 503).
    `enabled`: the route exists only when it returns True for the settings. `doc` is the
    hand-written part of the OpenAPI operation (app/apidoc.py); app/openapi.py derives the
    rest (security, x-min-role, role sentence, CSRF and path parameters, error responses).
    """

    method: str
    path: str
    handler: Handler
    min_role: str | None
    csrf: bool = True
    csrf_anonymous: bool = False
    status: int = 200
    sql: str | None = None
    doc: Any = None
    limit: Limit | None = None
    rate_limited: bool = True
    database: bool = True
    enabled: Callable[[Settings], bool] | None = None

    @property
    def needs_csrf(self) -> bool:
        return self.method != "GET" and self.csrf

    @property
    def path_ids(self) -> tuple[PathId, ...]:
        return tuple(PATH_IDS[name] for name in re.findall(r"\{([^}]+)\}", self.path))


SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", AsyncConnectionPool)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
EXPECTED_SCHEMA = web.AppKey("expected_schema", dict)
BLOBS = web.AppKey("blobs", BlobStore)  # attachment downloads

REQUEST_ID = web.RequestKey("request_id", str)
DB = web.RequestKey("db", psycopg.AsyncConnection)  # the authenticated request's connection
MIN_ROLE = web.RequestKey("min_role", str)  # the route's minimum role
# Set once the request's session went to the database (which then accepted it unless 401).
SESSION_CHECKED = web.RequestKey("session_checked", bool)
ROUTE = web.RequestKey("route", Route)  # the operation being answered


def json_text(body: str, status: int = 200) -> web.Response:
    """Respond with JSON text produced by SQL, without parsing it in Python."""
    return web.Response(text=body, status=status, content_type="application/json")


async def _body(cursor: psycopg.AsyncCursor) -> str:
    row = await cursor.fetchone()
    if row is None or row["body"] is None:
        raise ApiError(404, "not_found", "Nothing found.")
    return row["body"]


async def anonymous_sql_json(
    conn: psycopg.AsyncConnection, query: str, params: list[Any] | None = None
) -> str:
    """Run `query` (one json-returning SQL function call) without a session; its text."""
    return await _body(await conn.execute(f"SELECT ({query})::text AS body", params or []))


def _session_params(request: web.Request) -> list[Any]:
    settings = request.app[SETTINGS]
    token = well_formed_token(request.cookies.get(settings.session_cookie_name))
    token_hash = session_token_hash(settings, token) if token else None
    request[SESSION_CHECKED] = True
    return [token_hash, request[MIN_ROLE], request[REQUEST_ID]]


async def sql_json(request: web.Request, query: str, params: list[Any] | None = None) -> str:
    """Run `query` (one json-returning SQL function call) as the request's session; its text.

    One statement: api.begin_request in FROM runs first (a 401/403 stops the statement
    before `query` is evaluated) and sets the tenant for the statement's transaction.
    `query` should be a function whose queries run inside it (plpgsql, or SQL with FROM or
    aggregates): they are planned after the tenant is set. A bare expression with
    sub-selects would be planned before, with no tenant, for its row estimates (results
    are right either way: row-level security is checked at execution).
    """
    cursor = await request[DB].execute(
        f"SELECT ({query})::text AS body FROM api.begin_request(%s, %s, %s) AS session",
        [*(params or []), *_session_params(request)],
    )
    return await _body(cursor)


def is_browser(request: web.Request) -> bool:
    """Whether a person's browser is navigating here: it names text/html in Accept (API
    clients, curl and test tools do not). Pages a browser is sent to (sign-in, the OAuth
    callbacks) answer it with redirects and everyone else with JSON."""
    return "text/html" in request.headers.get("Accept", "")


def success_status(request: web.Request) -> int:
    """The success status its route declares (200 outside a declared route)."""
    route = request.get(ROUTE)
    return route.status if route is not None else 200


async def respond_sql(request: web.Request, query: str, params: list[Any] | None = None):
    """The common authenticated handler body: one SQL call, its json as the response, with
    the route's success status (no body when that is 204)."""
    body = await sql_json(request, query, params)
    status = success_status(request)
    return web.Response(status=status) if status == 204 else json_text(body, status=status)


def query_limit(request: web.Request) -> int | None:
    """`?limit=` as the route declares it: None when absent (SQL applies the default and
    checks the range), 422 invalid_limit when it is not a whole number."""
    limit = request[ROUTE].limit
    value = request.query.get("limit") or None
    if value is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,9}", value):
        raise ApiError(
            422, "invalid_limit", f"limit must be an integer between 1 and {limit.maximum}."
        )
    return int(value)


@asynccontextmanager
async def transaction(request: web.Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """A transaction on the request's connection, opened by api.begin_request.

    For handlers that run several statements atomically or read rows rather than json.
    """
    conn = request[DB]
    async with conn.transaction():
        await conn.execute("SELECT api.begin_request(%s, %s, %s)", _session_params(request))
        yield conn


# Characters PostgreSQL text cannot hold (NUL) and that UTF-8 cannot encode (lone
# surrogates, which aiohttp produces from undecodable bytes in the URL and headers).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = str.maketrans("", "", "".join(c for c in map(chr, range(128)) if c not in "[]{}"))
_JSON_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


def check_text(value: str, where: str) -> str:
    """`value` unless it holds a character PostgreSQL text cannot store (400 invalid_text)."""
    if _UNSTORABLE.search(value):
        raise ApiError(
            400,
            "invalid_text",
            f"{where} contains a character that cannot be stored (NUL or a lone surrogate).",
        )
    return value


def check_request_text(request: web.Request) -> None:
    """The one edge check of text that reaches SQL from the URL and the headers we store."""
    for name, value in request.query.items():
        check_text(name, "A query parameter name")
        check_text(value, f"Query parameter {name}")
    for value in request.match_info.values():
        check_text(value, "The path")
    for header in ("User-Agent", "X-Forwarded-For"):
        check_text(request.headers.get(header, ""), f"Header {header}")


def _check_json_text(value: Any) -> None:
    # Iterative, so that the walk itself is bounded by the depth check, not the stack.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            check_text(item, "The request body")
        elif isinstance(item, dict):
            for key, member in item.items():
                check_text(key, "The request body")
                pending.append(member)
        elif isinstance(item, list):
            pending.extend(item)


def _json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit`, in `limit` linear passes."""
    brackets = _JSON_STRING.sub("", text).translate(_JSON_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        reduced = _JSON_EMPTY_PAIR.sub("", brackets)
        if reduced == brackets:
            return False  # unbalanced: the parser reports it as invalid JSON
        brackets = reduced
    return bool(_JSON_EMPTY_PAIR.search(brackets))


def _number(text: str) -> int | float:
    # JSON Schema counts 600.0 as an integer, so the API does too.
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 2**63 else value


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is `{}`.

    The edge for bodies: `application/json` only (415), nesting at most MAX_JSON_DEPTH
    (400), size capped by the app's client_max_size (413), and no string that PostgreSQL
    text cannot hold (400). Its fields are read and checked in SQL (logic/06_input.sql).
    """
    raw = await request.read()
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the request body as application/json.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", "The request body is not valid UTF-8.") from exc
    if _json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise ApiError(
            400, "json_too_deep", f"The request body nests deeper than {MAX_JSON_DEPTH} levels."
        )
    try:
        body = json.loads(text, parse_float=_number)
    except (ValueError, RecursionError) as exc:  # ValueError: also integers past 4300 digits
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    _check_json_text(body)
    return body


async def read_json_patch(request: web.Request) -> dict[str, Any]:
    """A PATCH body: a JSON object naming at least one field to change (422 otherwise)."""
    body = await read_json_object(request)
    if not body:
        raise ApiError(422, "no_changes", "Send at least one field to change.")
    return body


def declared(route: Route) -> Handler:
    """The handler aiohttp routes to: `route` known to the request, the CSRF token checked
    when the route needs it (Route.needs_csrf), then the session required when the route
    names a minimum role."""
    handler = route.handler
    if route.min_role is not None:
        handler = authenticated(handler, route.min_role)
    inner = handler

    async def wrapped(request: web.Request) -> web.StreamResponse:
        request[ROUTE] = route
        if route.needs_csrf:
            require_csrf(request, request.app[SETTINGS], route.csrf_anonymous)
        return await inner(request)

    wrapped.__name__ = route.handler.__name__
    wrapped.__doc__ = route.handler.__doc__
    return wrapped


def authenticated(handler: Handler, min_role: str) -> Handler:
    """Wrap `handler` so that its SQL runs as the request's session with `min_role`.

    The only place where roles are enforced: the route table names `min_role`, and the
    database refuses the session (401) or the role (403) in every statement the handler
    runs through `sql_json` or `transaction` (the connection is in autocommit mode).
    """

    async def wrapped(request: web.Request) -> web.StreamResponse:
        async with request.app[POOL].connection() as conn:
            request[DB] = conn
            request[MIN_ROLE] = min_role
            return await handler(request)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped
