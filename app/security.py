"""Session tokens, CSRF tokens, cookies, security headers and the per-client rate limit."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid

from aiohttp import web

from app.errors import ApiError
from kernel.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Every token we issue is URL-safe base64 (a CSRF token: two of them joined by a dot).
# Anything else, including undecodable bytes, is no token at all.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")


def well_formed_token(value: str | None) -> str | None:
    """`value` when it could be a token this server issued, else None."""
    return value if value and _TOKEN_RE.match(value) else None


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


def keyed_hash(settings: Settings, purpose: bytes, value: str) -> bytes:
    """HMAC-SHA256 of `value` under SECRET_KEY, domain-separated by `purpose`."""
    return hmac.new(
        settings.secret_key.encode(), purpose + b"\0" + value.encode(), "sha256"
    ).digest()


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def session_token_hash(settings: Settings, token: str) -> bytes:
    """What the database stores and looks sessions up by: an HMAC, never the token."""
    return keyed_hash(settings, b"session", token)


def _csrf_signature(settings: Settings, nonce: str, session_token: str | None) -> str:
    # A session-bound token signs the nonce with the session token (the cookie's secret, of
    # which the database keeps only an HMAC); an anonymous one signs it under its own purpose,
    # so neither can pass for the other.
    if session_token is None:
        digest = keyed_hash(settings, b"csrf-anonymous", nonce)
    else:
        digest = keyed_hash(settings, b"csrf-session", f"{nonce}\0{session_token}")
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_csrf_token(settings: Settings, session_token: str | None) -> str:
    """A random nonce and its HMAC under SECRET_KEY, bound to the session token when there is
    one: a token fetched anonymously, issued to another session or planted by a sibling
    domain does not pass with a victim's session."""
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_csrf_signature(settings, nonce, session_token)}"


def csrf_token_valid(
    settings: Settings,
    cookie: str | None,
    header: str | None,
    session_token: str | None,
    anonymous_allowed: bool = False,
) -> bool:
    """Double submit (header equals cookie, constant time), and the token is ours and bound to
    the session the request carries (`session_token`); an anonymous token only where
    `anonymous_allowed` (the sign-in endpoints)."""
    cookie, header = well_formed_token(cookie), well_formed_token(header)
    if not cookie or not header:
        return False
    if not hmac.compare_digest(cookie.encode(), header.encode()):
        return False
    nonce, _, signature = cookie.partition(".")
    bound = [session_token] if session_token is not None else []
    if anonymous_allowed:
        bound.append(None)
    return any(
        hmac.compare_digest(signature.encode(), _csrf_signature(settings, nonce, token).encode())
        for token in bound
    )


def set_cookie(
    response: web.StreamResponse,
    settings: Settings,
    name: str,
    value: str,
    *,
    http_only: bool,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        domain=settings.cookie_domain,
        secure=settings.cookie_secure,
        httponly=http_only,
        samesite=settings.cookie_samesite,
    )


def clear_cookie(response: web.StreamResponse, settings: Settings, name: str) -> None:
    response.del_cookie(
        name,
        path="/",
        domain=settings.cookie_domain,
        secure=settings.cookie_secure,
        samesite=settings.cookie_samesite,
    )


def request_id_of(request: web.Request) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    return supplied if _REQUEST_ID_RE.match(supplied) else uuid.uuid4().hex


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    """The client's address; X-Forwarded-For only when a trusted proxy appends to it."""
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        # The right-most entry is the one our own proxy added; the rest is client-supplied.
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.remote or "unknown"


class RateLimiter:
    """Token bucket per client: `per_minute` requests, refilled continuously; 0 disables.

    A client is a session once the database has accepted that session (so many people
    behind one proxy or NAT each get their own budget); anything else, including a
    cookie that names no live session, is its address. Random cookies therefore buy no
    extra budget: they are charged to the address until a request proves them.
    """

    _MAX_CLIENTS = 50_000

    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._sessions: dict[str, None] = {}  # proven session keys, oldest first

    @staticmethod
    def session_key(token: str) -> str:
        # A digest, so the limiter never holds a usable token.
        return hashlib.sha256(token.encode()).hexdigest()[:32]

    def client_key(self, session_key: str | None, address: str) -> str:
        """The bucket a request spends from: its proven session's, else its address's."""
        if session_key is not None and session_key in self._sessions:
            return "session:" + session_key
        return "address:" + address

    def session_checked(self, session_key: str, accepted: bool) -> None:
        """Record what the database said of a session: accepted (own bucket) or not."""
        if not accepted:
            self._sessions.pop(session_key, None)
            return
        if session_key not in self._sessions and len(self._sessions) >= self._MAX_CLIENTS:
            # Forget the oldest proven half; they prove themselves again on their next request.
            for stale in list(self._sessions)[: self._MAX_CLIENTS // 2]:
                del self._sessions[stale]
        self._sessions[session_key] = None

    def take(self, client: str) -> float | None:
        """Spend one token; return None if allowed, else seconds until the next token."""
        if self.capacity <= 0:
            return None
        now = self.clock()
        tokens, stamp = self._buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - stamp) * self.refill_per_second)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.refill_per_second
        if len(self._buckets) >= self._MAX_CLIENTS and client not in self._buckets:
            self._forget_idle(now)
        self._buckets[client] = (tokens - 1.0, now)
        return None

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely carries no information: drop it.
        full_after = self.capacity / self.refill_per_second
        self._buckets = {
            key: value for key, value in self._buckets.items() if now - value[1] < full_after
        }


def presented_session_token(request: web.Request, settings: Settings) -> str | None:
    """The session token of the request's cookie, when it could be one this server issued."""
    return well_formed_token(request.cookies.get(settings.session_cookie_name))


def require_csrf(request: web.Request, settings: Settings, anonymous_allowed: bool) -> None:
    """Raise 403 unless a non-safe request carries the double-submit CSRF token of its
    session (or, where `anonymous_allowed`, an anonymous one)."""
    if request.method in SAFE_METHODS:
        return
    cookie = request.cookies.get(settings.csrf_cookie_name)
    if not csrf_token_valid(
        settings,
        cookie,
        request.headers.get(CSRF_HEADER),
        presented_session_token(request, settings),
        anonymous_allowed,
    ):
        raise ApiError(
            403,
            "csrf_failed",
            f"Missing or wrong CSRF token: send header {CSRF_HEADER} equal to the "
            f"{settings.csrf_cookie_name} cookie from GET /auth/csrf.",
        )
