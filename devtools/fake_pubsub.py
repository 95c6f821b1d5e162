"""A fake Cloud Pub/Sub push subscription, for tests, benchmarks and the demo.

Gmail publishes a notification `{"emailAddress", "historyId"}` to a topic whenever a
watched mailbox changes; a push subscription POSTs each message to an endpoint. This fake
does the subscription's part as the real service documents it:

- the request is the push envelope `{"message": {"data": base64(JSON), "messageId",
  "publishTime", "attributes"}, "subscription"}` with `Content-Type: application/json`;
- delivery is at least once: any answer but 102/200/201/202/204, or no answer, is retried
  with exponential backoff (here 0.1 s doubling to 10 s), and a message may be delivered
  again even after a success (`redeliver_probability`);
- authentication is either Pub/Sub's OIDC token (`Authorization: Bearer <JWT>` signed by
  Google for the subscription's service account, audience configurable) or, for endpoints
  without OIDC, a secret the endpoint URL itself carries (`?token=`);
- notifications for one mailbox are coalesced while undelivered (Gmail's notifications
  are hints: only the newest history id matters).

`FakeGoogleIssuer` signs the OIDC tokens with a key of its own and serves its certificates
in the format of Google's `oauth2/v1/certs` (and as a JWK set, as `oauth2/v3/certs`), so the
endpoint verifies real signatures; the fake OpenID provider (devtools/fake_oidc.py) signs its
ID tokens with it too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

PUSH_SERVICE_ACCOUNT = "gmail-push@fake-project.iam.gserviceaccount.com"
_SUCCESS = {102, 200, 201, 202, 204}


class FakeGoogleIssuer:
    """Signs ID tokens as Google would, with its own RSA key; serves the certificates."""

    def __init__(self, key_id: str = "fake-key-1") -> None:
        self.key_id = key_id
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-google-issuer")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self._key, hashes.SHA256())
        )
        self._certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._signer = crypt.RSASigner.from_string(pem, key_id=key_id)

    def certs(self) -> dict[str, str]:
        """What `oauth2/v1/certs` answers: key id → PEM certificate."""
        return {self.key_id: self._certificate_pem}

    def jwks(self) -> dict[str, Any]:
        """What `oauth2/v3/certs` (the discovery document's jwks_uri) answers: a JWK set."""
        numbers = self._key.public_key().public_numbers()

        def b64url(value: int) -> str:
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")

        key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.key_id}
        return {"keys": [{**key, "n": b64url(numbers.n), "e": b64url(numbers.e)}]}

    def sign(self, payload: dict[str, Any]) -> str:
        """`payload` as an RS256 JWT signed with this issuer's key (header kid: its key id)."""
        return jwt.encode(self._signer, payload).decode()

    def token(
        self,
        audience: str,
        email: str = PUSH_SERVICE_ACCOUNT,
        *,
        issuer: str = "https://accounts.google.com",
        email_verified: bool = True,
        lifetime: int = 3600,
        issued_at: float | None = None,
    ) -> str:
        """A signed ID token like the one Pub/Sub attaches to a push."""
        now = int(time.time() if issued_at is None else issued_at)
        payload = {
            "iss": issuer,
            "aud": audience,
            "azp": "1234567890",
            "email": email,
            "email_verified": email_verified,
            "sub": "1234567890",
            "iat": now,
            "exp": now + lifetime,
        }
        return self.sign(payload)


@contextlib.asynccontextmanager
async def serve_issuer_certs(
    issuer: FakeGoogleIssuer, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve the issuer's certificates on the current loop; yields their URL."""

    async def certs(_request: web.Request) -> web.Response:
        return web.json_response(issuer.certs(), headers={"Cache-Control": "max-age=300"})

    app = web.Application()
    app.router.add_get("/oauth2/v1/certs", certs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}/oauth2/v1/certs"
    finally:
        await runner.cleanup()


@dataclass
class Delivery:
    """One push attempt the subscription made."""

    email: str
    history_id: int
    status: int | None  # None: no answer (connection refused, timeout)
    at: float


@dataclass
class FakePushSubscription:
    """A push subscription delivering Gmail notifications to `endpoint` from its own thread.

    `shared_secret` is added to the endpoint as `?token=`; with `issuer`, every request
    carries an OIDC token for `audience` (default, as Pub/Sub's: the endpoint URL).
    """

    endpoint: str
    shared_secret: str | None = None
    issuer: FakeGoogleIssuer | None = None
    audience: str | None = None
    subscription: str = "projects/fake-project/subscriptions/gmail-push"
    redeliver_probability: float = 0.0
    seed: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    _pending: dict[str, int] = field(default_factory=dict)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _next_id: int = 1

    def publish(self, email: str, history_id: int) -> None:
        """Gmail published a change of `email` up to `history_id` (any thread)."""
        with self._lock:
            self._pending[email] = max(history_id, self._pending.get(email, 0))
        self._wake.set()

    def start(self) -> FakePushSubscription:
        self._thread = threading.Thread(target=self._run, name="fake-pubsub", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def idle(self) -> bool:
        """Nothing waits to be delivered."""
        with self._lock:
            return not self._pending

    def _run(self) -> None:
        asyncio.run(self._deliver_forever())

    async def _deliver_forever(self) -> None:
        rng = random.Random(self.seed)  # noqa: S311 - reproducible redelivery
        backoff: dict[str, float] = {}
        not_before: dict[str, float] = {}
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                with self._lock:
                    due = {
                        email: history_id
                        for email, history_id in self._pending.items()
                        if not_before.get(email, 0.0) <= time.monotonic()
                    }
                    for email in due:
                        del self._pending[email]
                if not due:
                    await asyncio.to_thread(self._wake.wait, 0.05)
                    self._wake.clear()
                    continue
                for email, history_id in due.items():
                    status = await self._post(session, email, history_id)
                    if status in _SUCCESS:
                        backoff.pop(email, None)
                        if rng.random() < self.redeliver_probability:
                            self.publish(email, history_id)  # at least once: again
                        continue
                    delay = min(backoff.get(email, 0.05) * 2, 10.0)
                    backoff[email] = delay
                    not_before[email] = time.monotonic() + delay
                    self.publish(email, history_id)

    async def _post(self, session: aiohttp.ClientSession, email: str, history_id: int):
        with self._lock:
            message_id = str(self._next_id)
            self._next_id += 1
        data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
        envelope = {
            "message": {
                "data": base64.b64encode(data).decode(),
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": datetime.datetime.now(datetime.UTC).isoformat(),
                "attributes": {},
            },
            "subscription": self.subscription,
        }
        headers = {}
        if self.issuer is not None:
            # Pub/Sub's default audience is the push endpoint URL.
            headers["Authorization"] = "Bearer " + self.issuer.token(self.audience or self.endpoint)
        url = self.endpoint
        if self.shared_secret is not None:
            parts = urlsplit(url)
            query = "&".join(filter(None, [parts.query, urlencode({"token": self.shared_secret})]))
            url = urlunsplit(parts._replace(query=query))
        status: int | None
        try:
            async with session.post(url, json=envelope, headers=headers) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        with self._lock:
            self.deliveries.append(Delivery(email, history_id, status, time.monotonic()))
        return status


def envelope_for(email: str, history_id: int, message_id: str = "1") -> dict[str, Any]:
    """A push envelope as Pub/Sub sends it (tests that post by hand)."""
    data = json.dumps({"emailAddress": email, "historyId": str(history_id)}).encode()
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": message_id,
            "publishTime": "2026-12-07T08:00:00Z",
        },
        "subscription": "projects/fake-project/subscriptions/gmail-push",
    }
