"""Gmail push notifications through Cloud Pub/Sub: who may push, and what a push says.

Pub/Sub delivers each notification as a POST of an envelope
`{"message": {"data": base64(JSON {"emailAddress", "historyId"}), "messageId",
"publishTime"}, "subscription"}`. A push is authenticated either by the OIDC token Pub/Sub
attaches (`Authorization: Bearer`, a JWT signed by Google for the subscription's service
account, verified with google-auth against Google's published certificates) or, where
OIDC is not configured, by a shared secret in the push URL (`?token=`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import time
from dataclasses import dataclass

import aiohttp
import google.auth.exceptions
from aiohttp import web
from google.auth import jwt

from app.errors import ApiError
from app.http import check_text
from kernel.settings import Settings

# Who signs Pub/Sub's push tokens.
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
# Google's certificates change rarely; they are cached this long unless the response says.
DEFAULT_CERTS_MAX_AGE_SECONDS = 3600
CLOCK_SKEW_SECONDS = 30
_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass(frozen=True)
class GmailPush:
    """What a notification says: this mailbox has changed up to this history id."""

    email: str
    history_id: int
    message_id: str


def parse_push(body: bytes) -> GmailPush:
    """The notification inside a Pub/Sub push envelope; 400 invalid_push when malformed."""
    try:
        envelope = json.loads(body)
        message = envelope["message"]
        data = json.loads(base64.b64decode(message["data"], validate=True))
        email = data["emailAddress"]
        history_id = int(str(data["historyId"]))
        message_id = str(message.get("messageId", ""))
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        raise ApiError(
            400,
            "invalid_push",
            "Expected a Pub/Sub push envelope whose message.data is base64 JSON "
            '{"emailAddress", "historyId"}.',
        ) from exc
    # The address itself is checked by api.gmail_push, against the one e-mail rule.
    if not isinstance(email, str) or not 0 < history_id < 2**63:
        raise ApiError(422, "invalid_push", "The notification names no mailbox or history id.")
    check_text(email, "The notification's emailAddress")  # it goes to SQL as text
    return GmailPush(email.strip().lower(), history_id, message_id)


class PushAuthenticator:
    """Checks that a push comes from our Pub/Sub subscription (401 push_unauthenticated)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._certs: dict[str, str] = {}
        self._certs_expire_at = 0.0
        self._lock = asyncio.Lock()

    async def verify(self, authorization: str | None, query_token: str | None) -> None:
        if self.settings.push_oidc:
            await self._verify_oidc(authorization)
        elif not hmac.compare_digest(
            (query_token or "").encode(), (self.settings.gmail_push_token or "").encode()
        ):
            raise _unauthenticated("wrong or missing ?token=")

    async def _verify_oidc(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated("no bearer token")
        claims = None
        for refresh in (False, True):  # an unknown key id: Google may have rotated its keys
            certs = await self._current_certs(refresh)
            try:
                claims = jwt.decode(
                    token,
                    certs=certs,
                    audience=self.settings.gmail_push_audience,
                    clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
                )
                break
            except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
                if refresh or "Certificate for key id" not in str(exc):
                    raise _unauthenticated(str(exc)) from exc
        assert claims is not None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise _unauthenticated("token not issued by Google")
        if claims.get("email") != self.settings.gmail_push_service_account:
            raise _unauthenticated("token of another service account")
        if claims.get("email_verified") is not True:
            raise _unauthenticated("service account e-mail not verified")

    async def _current_certs(self, refresh: bool) -> dict[str, str]:
        async with self._lock:
            if refresh or time.monotonic() >= self._certs_expire_at:
                timeout = aiohttp.ClientTimeout(total=10)
                try:
                    async with (
                        aiohttp.ClientSession(timeout=timeout) as session,
                        session.get(self.settings.gmail_push_certs_url) as response,
                    ):
                        response.raise_for_status()
                        certs = await response.json(content_type=None)
                        cache_control = response.headers.get("Cache-Control", "")
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    raise ApiError(
                        503, "push_certs_unavailable", "Google's certificates could not be read."
                    ) from exc
                match = _MAX_AGE.search(cache_control)
                max_age = int(match[1]) if match else DEFAULT_CERTS_MAX_AGE_SECONDS
                self._certs = certs
                self._certs_expire_at = time.monotonic() + max_age
            return self._certs


PUSH_AUTHENTICATOR = web.AppKey("push_authenticator", PushAuthenticator)


def _unauthenticated(why: str) -> ApiError:
    return ApiError(401, "push_unauthenticated", f"Push not authenticated: {why}.")
