"""A fake Google OpenID Connect provider, for tests and the demo.

It serves what Sign in with Google uses, as strictly as Google documents it:

- `GET /.well-known/openid-configuration`: the discovery document (issuer = the base URL);
- `GET /oauth2/v3/certs`: the JWK set of the key it signs ID tokens with (FakeGoogleIssuer,
  the repository's one signer of Google-style tokens);
- `GET /o/oauth2/v2/auth`: the authorization endpoint. It checks `client_id`, that
  `redirect_uri` is registered exactly, `response_type=code`, a `scope` with `openid`, and
  `code_challenge_method` (S256 or plain) when a challenge is sent; the person who "signs in"
  is the provider's `current_user` (or the registered user named by `login_hint`). It
  redirects back with `code`, `state` and `iss`;
- `POST /token`: the token endpoint. It checks the client (401 invalid_client), that the
  code exists, is unused and younger than 10 minutes, and was issued to this client and
  `redirect_uri` (400 invalid_grant / redirect_uri_mismatch), and the PKCE `code_verifier`
  against the challenge (400 invalid_grant when missing or wrong); a code is spent by its
  first use. It answers an access token and an ID token with `iss, azp, aud, sub, email,
  email_verified, hd` (Workspace accounts only), `name, nonce, iat, exp`.

`id_token_overrides` changes claims of the next tokens (tests: wrong audience, expired,
another nonce); `None` as a value removes the claim.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from devtools.fake_pubsub import FakeGoogleIssuer

CODE_LIFETIME_SECONDS = 600
_SCOPES = {"openid", "email", "profile"}


@dataclass(frozen=True)
class FakeGoogleUser:
    """A Google account: a Workspace one has `hosted_domain` (the hd claim)."""

    email: str
    hosted_domain: str | None = None
    email_verified: bool = True
    name: str = ""
    subject: str = ""

    @property
    def sub(self) -> str:
        return self.subject or "sub-" + hashlib.sha256(self.email.encode()).hexdigest()[:20]


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    user: FakeGoogleUser
    nonce: str | None
    scope: str
    challenge: str | None
    challenge_method: str | None
    issued_at: float
    used: bool = False


@dataclass
class FakeOpenIDProvider:
    """The provider's state: its client, its users and the codes it issued."""

    client_id: str = "fake-oidc-client.apps.googleusercontent.com"
    client_secret: str = "fake-oidc-secret"  # noqa: S105 - a fake's fixed secret
    redirect_uris: tuple[str, ...] = ()
    issuer: FakeGoogleIssuer = field(default_factory=FakeGoogleIssuer)
    users: dict[str, FakeGoogleUser] = field(default_factory=dict)
    current_user: FakeGoogleUser | None = None
    id_token_overrides: dict[str, Any] = field(default_factory=dict)
    base_url: str = ""  # set when served
    _codes: dict[str, _Code] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, user: FakeGoogleUser) -> FakeGoogleUser:
        self.users[user.email] = user
        return user

    def sign_in_as(self, user: FakeGoogleUser) -> FakeGoogleUser:
        """The account the next authorization request signs in with."""
        self.current_user = self.add_user(user)
        return user

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/.well-known/openid-configuration"

    def discovery(self) -> dict[str, Any]:
        base = self.base_url
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/o/oauth2/v2/auth",
            "token_endpoint": f"{base}/token",
            "userinfo_endpoint": f"{base}/v1/userinfo",
            "jwks_uri": f"{base}/oauth2/v3/certs",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": sorted(_SCOPES),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": [
                "aud",
                "email",
                "email_verified",
                "exp",
                "family_name",
                "given_name",
                "hd",
                "iat",
                "iss",
                "name",
                "nonce",
                "sub",
            ],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code"],
            "authorization_response_iss_parameter_supported": True,
        }

    def id_token(self, code: _Code) -> str:
        now = int(time.time())
        user = code.user
        claims: dict[str, Any] = {
            "iss": self.base_url,
            "azp": code.client_id,
            "aud": code.client_id,
            "sub": user.sub,
            "email": user.email,
            "email_verified": user.email_verified,
            "name": user.name or user.email.split("@")[0],
            "iat": now,
            "exp": now + 3600,
        }
        if user.hosted_domain is not None:
            claims["hd"] = user.hosted_domain
        if code.nonce is not None:
            claims["nonce"] = code.nonce
        for name, value in self.id_token_overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self.issuer.sign(claims)

    # ------------------------------------------------------------------ endpoints

    async def _discovery(self, _request: web.Request) -> web.Response:
        return web.json_response(self.discovery())

    async def _jwks(self, _request: web.Request) -> web.Response:
        return web.json_response(self.issuer.jwks(), headers={"Cache-Control": "max-age=300"})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        # Errors before the redirect URI is trusted are shown to the person, never redirected.
        if q.get("client_id") != self.client_id:
            return _error_page(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = q.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return _error_page(400, "redirect_uri_mismatch", "redirect_uri is not registered.")
        if q.get("response_type") != "code":
            return _error_page(400, "unsupported_response_type", "response_type must be code.")
        scopes = set(q.get("scope", "").split())
        if "openid" not in scopes or not scopes <= _SCOPES:
            return _error_page(400, "invalid_scope", "scope must include openid.")
        method = q.get("code_challenge_method")
        challenge = q.get("code_challenge")
        if challenge is not None and (method or "plain") not in ("plain", "S256"):
            return _error_page(400, "invalid_request", "Unsupported code_challenge_method.")
        user = self.users.get(q.get("login_hint", "")) or self.current_user
        if user is None:
            return _redirect(redirect_uri, {"error": "access_denied", "state": q.get("state")})
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = _Code(
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                user=user,
                nonce=q.get("nonce"),
                scope=" ".join(sorted(scopes)),
                challenge=challenge,
                challenge_method=(method or "plain") if challenge is not None else None,
                issued_at=time.monotonic(),
            )
        return _redirect(
            redirect_uri,
            {"code": code, "state": q.get("state"), "iss": self.base_url, "scope": q.get("scope")},
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            with contextlib.suppress(ValueError):
                decoded = base64.b64decode(authorization[6:]).decode()
                client_id, _, client_secret = decoded.partition(":")
        if client_id != self.client_id or client_secret != self.client_secret:
            return _token_error(401, "invalid_client", "Unauthorized")
        if form.get("grant_type") != "authorization_code":
            return _token_error(400, "unsupported_grant_type", "Invalid grant_type.")
        with self._lock:
            code = self._codes.get(str(form.get("code", "")))
            if code is None or code.used:
                return _token_error(400, "invalid_grant", "Bad Request")
            code.used = True  # spent by its first use, even a failing one
        if time.monotonic() - code.issued_at > CODE_LIFETIME_SECONDS:
            return _token_error(400, "invalid_grant", "Bad Request")
        if code.client_id != client_id:
            return _token_error(400, "invalid_grant", "Bad Request")
        if form.get("redirect_uri") != code.redirect_uri:
            return _token_error(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            verifier = form.get("code_verifier")
            if not isinstance(verifier, str) or not verifier:
                return _token_error(400, "invalid_grant", "Missing code verifier.")
            expected = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .decode()
                .rstrip("=")
                if code.challenge_method == "S256"
                else verifier
            )
            if not secrets.compare_digest(expected, code.challenge):
                return _token_error(400, "invalid_grant", "Invalid code verifier.")
        return web.json_response(
            {
                "access_token": "ya29.fake-" + secrets.token_urlsafe(16),
                "expires_in": 3599,
                "scope": code.scope,
                "token_type": "Bearer",
                "id_token": self.id_token(code),
            },
            headers={"Cache-Control": "no-store"},
        )

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/oauth2/v3/certs", self._jwks)
        app.router.add_get("/o/oauth2/v2/auth", self._authorize)
        app.router.add_post("/token", self._token)
        return app


def _redirect(uri: str, params: dict[str, str | None]) -> web.Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    separator = "&" if "?" in uri else "?"
    return web.Response(status=302, headers={"Location": f"{uri}{separator}{query}"})


def _error_page(status: int, error: str, description: str) -> web.Response:
    return web.Response(status=status, text=f"Error {status}: {error}\n{description}\n")


def _token_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


@contextlib.asynccontextmanager
async def serve_provider(
    provider: FakeOpenIDProvider, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeOpenIDProvider]:
    """Serve `provider` on the current loop; its base_url is set while it runs."""
    runner = web.AppRunner(provider.application(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        provider.base_url = f"http://{bound_host}:{bound_port}"
        yield provider
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def serve_provider_in_thread(
    provider: FakeOpenIDProvider, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeOpenIDProvider]:
    """Serve `provider` from a thread of its own (the demo, synchronous callers)."""
    import asyncio

    started = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def run() -> None:
        nonlocal stop, loop
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        async with serve_provider(provider, host, port):
            started.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="fake-oidc", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the fake OpenID provider did not start")
    try:
        yield provider
    finally:
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
