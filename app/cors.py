"""CORS for the configured browser origins (settings.cors_origins), with credentials.

The web client runs on another origin than the API (http://localhost:3000 against
http://localhost:8000) and sends its cookies with every call, so the browser needs the API's
leave to read the answers: `Access-Control-Allow-Origin: <that origin>` with
`Access-Control-Allow-Credentials: true` on every response to an allowed origin (errors
included, so the client can show `detail`), and an answer to the preflight `OPTIONS` of
every declared operation. Other origins get no CORS headers: their pages cannot read the
answers. CSRF protection is unchanged (a cross-origin page cannot read the oss_csrf cookie).
"""

from __future__ import annotations

from aiohttp import web

from app.http import SETTINGS
from app.security import REQUEST_ID_HEADER

# What a preflight may ask to send: the client's JSON bodies, its CSRF header, and ours.
ALLOWED_HEADERS = ", ".join(("accept", "content-type", "x-csrf-token", REQUEST_ID_HEADER.lower()))
# Headers the client's script may read beyond the CORS-safelisted ones.
EXPOSED_HEADERS = ", ".join((REQUEST_ID_HEADER, "Retry-After", "Content-Disposition"))
PREFLIGHT_MAX_AGE_SECONDS = 600


def _declared_methods(request: web.Request) -> list[str] | None:
    """The methods declared for the request's path (it is routed for none of them as
    OPTIONS); None when no operation has this path."""
    exc = getattr(request.match_info, "http_exception", None)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return sorted(exc.allowed_methods)
    return None


@web.middleware
async def cors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Outside all but the request context: preflights are answered here, and every answer
    to an allowed origin carries the CORS headers, whatever produced it (handler, error,
    rate limiter)."""
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin in request.app[SETTINGS].cors_origins
    methods = None
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        methods = _declared_methods(request)
    if methods is not None:
        response: web.StreamResponse = web.Response(status=204)
        if allowed:
            response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_SECONDS)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects, which the error middleware lets through
            if allowed:
                _allow(exc.headers, origin)
            exc.headers.add("Vary", "Origin")
            raise
    if allowed:
        _allow(response.headers, origin)
        if methods is None:
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    # The answer depends on the Origin header: shared caches must key on it.
    response.headers.add("Vary", "Origin")
    return response


def _allow(headers, origin: str) -> None:
    headers["Access-Control-Allow-Origin"] = origin
    headers["Access-Control-Allow-Credentials"] = "true"
