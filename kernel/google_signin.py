"""Sign in with Google: the OpenID Connect authorization code flow with PKCE, state and nonce.

The provider comes from its discovery document (GOOGLE_OIDC_DISCOVERY_URL, Google's by
default): issuer, authorization, token and JWKS endpoints. The ID token is verified with
google-auth (`google.auth.jwt.decode`: RS256 signature against the provider's published keys,
`aud`, `iat` and `exp`); this module adds the claims the library leaves to its caller: `iss`
equal to the discovered issuer, the `nonce` of this sign-in, `email_verified`. Who may join
which organisation is the database's decision (api.google_login), not this module's.

Refusals are `SigninRefused` (status, code, detail); this module knows nothing of HTTP
handlers, the API renders them as its error shape.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from google.auth import exceptions as google_exceptions
from google.auth import jwt

from kernel.refusal import Refused
from kernel.settings import Settings

SCOPES = "openid email profile"
TIMEOUT_SECONDS = 15.0
# Seconds of clock difference tolerated with the provider for iat/exp (google-auth's check).
CLOCK_SKEW_SECONDS = 30
_DISCOVERY_TTL_SECONDS = 3600.0


class SigninRefused(Refused):
    """Sign-in cannot go on (the person signing in sees why)."""


@dataclasses.dataclass(frozen=True)
class Provider:
    """What the discovery document says of the provider."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclasses.dataclass(frozen=True)
class Identity:
    """The verified claims a sign-in goes on with."""

    email: str
    subject: str
    hosted_domain: str | None
    name: str


@dataclasses.dataclass(frozen=True)
class Start:
    """A started sign-in: the values stored server-side and the URL the browser goes to."""

    state: str
    nonce: str
    code_verifier: str
    url: str


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def code_challenge(code_verifier: str) -> str:
    """PKCE S256: base64url(SHA-256(verifier)) without padding (RFC 7636)."""
    return _b64url(hashlib.sha256(code_verifier.encode("ascii")).digest())


def require_configured(settings: Settings) -> None:
    if not settings.google_signin_configured:
        raise SigninRefused(
            503,
            "google_signin_not_configured",
            "Sign in with Google is not configured on this server: set GOOGLE_OIDC_CLIENT_ID "
            "and GOOGLE_OIDC_CLIENT_SECRET.",
        )


_discovered: dict[str, tuple[float, Provider]] = {}


async def _get_json(session: aiohttp.ClientSession, url: str, what: str) -> dict[str, Any]:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise SigninRefused(
                    503, "google_unavailable", f"The {what} answered HTTP {response.status}."
                )
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SigninRefused(503, "google_unavailable", f"The {what} could not be read.") from exc
    if not isinstance(body, dict):
        raise SigninRefused(503, "google_unavailable", f"The {what} is not a JSON object.")
    return body


async def discover(settings: Settings) -> Provider:
    """The provider of GOOGLE_OIDC_DISCOVERY_URL (cached for an hour per process)."""
    url = settings.google_oidc_discovery_url
    cached = _discovered.get(url)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        document = await _get_json(session, url, "OpenID discovery document")
    fields = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
    if not all(isinstance(document.get(name), str) and document[name] for name in fields):
        raise SigninRefused(
            503,
            "google_unavailable",
            "The OpenID discovery document lacks issuer, authorization, token or JWKS URL.",
        )
    provider = Provider(*(document[name] for name in fields))
    _discovered[url] = (time.monotonic() + _DISCOVERY_TTL_SECONDS, provider)
    return provider


def start(settings: Settings, provider: Provider) -> Start:
    """New state, nonce and PKCE verifier, and the authorization URL carrying them."""
    state, nonce, verifier = (
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(48),  # 64 characters: RFC 7636 wants 43 to 128
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.google_oidc_client_id,
            "redirect_uri": settings.google_oidc_redirect_uri,
            "scope": SCOPES,
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
            "prompt": "select_account",
        }
    )
    separator = "&" if "?" in provider.authorization_endpoint else "?"
    return Start(state, nonce, verifier, f"{provider.authorization_endpoint}{separator}{query}")


async def exchange_code(
    settings: Settings, provider: Provider, code: str, code_verifier: str
) -> str:
    """POST the code (with the PKCE verifier) to the token endpoint; the ID token it returns."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": settings.google_oidc_redirect_uri,
        "client_id": settings.google_oidc_client_id,
        "client_secret": settings.google_oidc_client_secret,
        "code_verifier": code_verifier,
    }
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(provider.token_endpoint, data=form) as response,
        ):
            status = response.status
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SigninRefused(
            503, "google_unavailable", "Google's token endpoint could not be reached; retry."
        ) from exc
    if not isinstance(body, dict):
        body = {}
    if status >= 500:
        raise SigninRefused(503, "google_unavailable", "Google's token endpoint failed; retry.")
    if status != 200:
        error = str(body.get("error") or f"HTTP {status}")
        if error == "invalid_client":
            raise SigninRefused(
                503,
                "google_signin_misconfigured",
                "Google rejected this server's OpenID client: check GOOGLE_OIDC_CLIENT_ID and "
                "GOOGLE_OIDC_CLIENT_SECRET.",
            )
        raise SigninRefused(
            400,
            "signin_code_rejected",
            f"Google refused the sign-in code ({error}): sign in again.",
        )
    id_token = body.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise SigninRefused(400, "invalid_id_token", "Google's answer carries no ID token.")
    return id_token


def jwk_to_pem(key: dict[str, Any]) -> bytes | None:
    """An RSA signing key of a JWK set as PEM (what google-auth verifies with), else None."""
    if key.get("kty") != "RSA" or key.get("use", "sig") != "sig":
        return None
    try:
        n, e = (
            int.from_bytes(base64.urlsafe_b64decode(key[name] + "=" * (-len(key[name]) % 4)), "big")
            for name in ("n", "e")
        )
        public_key = RSAPublicNumbers(e, n).public_key()
    except (KeyError, TypeError, ValueError):
        return None
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def signing_keys(provider: Provider) -> dict[str, bytes]:
    """The provider's published RSA keys (JWKS), key id → PEM public key."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        jwks = await _get_json(session, provider.jwks_uri, "provider's key set (JWKS)")
    keys: dict[str, bytes] = {}
    for key in jwks.get("keys") or []:
        if isinstance(key, dict) and isinstance(key.get("kid"), str):
            pem = jwk_to_pem(key)
            if pem is not None:
                keys[key["kid"]] = pem
    return keys


def verify_id_token(
    settings: Settings, provider: Provider, id_token: str, keys: dict[str, bytes], nonce: str
) -> Identity:
    """The ID token's identity, once google-auth verified signature, aud and exp, and the
    issuer, nonce and verified e-mail are this sign-in's."""
    try:
        claims = jwt.decode(
            id_token,
            certs=keys,
            audience=settings.google_oidc_client_id,
            clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
        )
    except (ValueError, google_exceptions.GoogleAuthError) as exc:
        # Bad signature, unknown key, wrong audience, expired or malformed: all are refusals.
        raise SigninRefused(401, "invalid_id_token", f"The ID token is not valid: {exc}") from exc
    # Google also issues tokens as "accounts.google.com" (its legacy issuer form).
    issuers = {provider.issuer}
    if provider.issuer == "https://accounts.google.com":
        issuers.add("accounts.google.com")
    if claims.get("iss") not in issuers:
        raise SigninRefused(401, "invalid_id_token", "The ID token was issued by another provider.")
    if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(
        claims["nonce"].encode(), nonce.encode()
    ):
        raise SigninRefused(401, "invalid_id_token", "The ID token is not for this sign-in.")
    if claims.get("email_verified") is not True:
        raise SigninRefused(
            403,
            "email_not_verified",
            "Google has not verified this account's e-mail address: verify it, then sign in.",
        )
    email, subject = claims.get("email"), claims.get("sub")
    if not isinstance(email, str) or not isinstance(subject, str) or not subject:
        raise SigninRefused(401, "invalid_id_token", "The ID token lacks the e-mail or account.")
    hosted_domain = claims.get("hd")
    name = claims.get("name")
    return Identity(
        email=email,
        subject=subject,
        hosted_domain=hosted_domain if isinstance(hosted_domain, str) else None,
        name=name if isinstance(name, str) else "",
    )
