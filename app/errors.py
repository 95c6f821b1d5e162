"""One shape for every error: `{"detail": <sentence>, "code": <stable code>}` with the right status.

Handlers never catch database errors: SQL raises SQLSTATE `TKnnn` (see sql/logic/00_errors.sql)
and the middleware here maps that, standard SQLSTATEs and aiohttp's own HTTP errors.
"""

from __future__ import annotations

import logging

import psycopg
import psycopg_pool
from aiohttp import web

from kernel.refusal import Refused

log = logging.getLogger(__name__)


class ApiError(Refused):
    """An error the client can act on; rendered as JSON by `error_middleware` (as is any
    kernel Refused)."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, code, detail)
        self.headers = headers or {}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"detail": detail, "code": code}, status=status, headers=headers)


# SQLSTATE class or code → (status, code, detail). Exact codes win over their class.
_SQLSTATE_ERRORS: dict[str, tuple[int, str, str]] = {
    "23505": (409, "conflict", "That conflicts with something that already exists."),
    "23503": (422, "invalid_reference", "A referenced record does not exist."),
    "23502": (422, "validation_failed", "A required value is missing."),
    "23514": (422, "validation_failed", "A value is outside what is allowed."),
    "22": (400, "invalid_value", "A value could not be understood."),
    "42501": (403, "forbidden", "Not allowed."),
    "40001": (503, "retry_later", "The request collided with another one; retry it."),
    "40P01": (503, "retry_later", "The request collided with another one; retry it."),
    "57014": (503, "timeout", "The database took too long; retry later."),
    "53": (503, "database_unavailable", "The database is overloaded; retry later."),
    "57P": (503, "database_unavailable", "The database is restarting; retry later."),
    "08": (503, "database_unavailable", "The database cannot be reached; retry later."),
}

HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def database_error(exc: psycopg.Error) -> ApiError | None:
    """The API error for a database error, or None when it is a server fault."""
    sqlstate = exc.sqlstate or ""
    if sqlstate.startswith("TK") and sqlstate[2:].isdigit():
        return ApiError(
            int(sqlstate[2:]),
            exc.diag.message_detail or "error",
            exc.diag.message_primary or "Request failed.",
        )
    for key in (sqlstate, sqlstate[:3], sqlstate[:2]):
        if key in _SQLSTATE_ERRORS:
            return ApiError(*_SQLSTATE_ERRORS[key])
    if isinstance(exc, psycopg.OperationalError) and not sqlstate:
        return ApiError(503, "database_unavailable", "The database cannot be reached; retry later.")
    return None


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Turn every exception into the JSON error shape; never leak a stack trace."""
    try:
        return await handler(request)
    except Refused as exc:
        return error_response(exc.status, exc.code, exc.detail, getattr(exc, "headers", None))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, headers)
    except psycopg_pool.PoolTimeout:
        log.warning("database pool exhausted for %s %s", request.method, request.path)
        return error_response(503, "database_unavailable", "The database is busy; retry later.")
    except psycopg.Error as exc:
        mapped = database_error(exc)
        if mapped is not None:
            return error_response(mapped.status, mapped.code, mapped.detail, mapped.headers)
        log.exception("database error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Something went wrong on our side.")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Something went wrong on our side.")
