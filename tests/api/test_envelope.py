"""Cross-cutting behaviour: rate limiting, error mapping, readiness."""

from __future__ import annotations

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from app.errors import database_error
from app.security import RateLimiter
from tests.fixtures.api import dev_login


async def _client(server) -> TestClient:
    client = TestClient(server)
    await client.start_server()
    return client


async def test_rate_limit_answers_429_with_retry_after(api_factory):
    server = await api_factory(rate_limit_requests_per_minute=3)
    client = await _client(server)
    try:
        statuses = [(await client.get("/auth/csrf")).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await client.get("/auth/csrf")
        assert limited.status == 429
        assert await limited.json() == {
            "detail": "Too many requests from this client; slow down.",
            "code": "rate_limited",
        }
        assert int(limited.headers["Retry-After"]) >= 1
        # Probes are never throttled.
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.session.close()


@pytest.mark.parametrize(("trusted", "expected_last"), [(False, 429), (True, 200)])
async def test_forwarded_for_is_used_only_when_trusted(api_factory, trusted, expected_last):
    server = await api_factory(rate_limit_requests_per_minute=2, trust_forwarded_for=trusted)
    client = await _client(server)
    try:
        for _ in range(2):
            headers = {"X-Forwarded-For": "203.0.113.1"}
            assert (await client.get("/auth/csrf", headers=headers)).status == 200
        # A client spoofing another address: only a trusted proxy's header counts.
        other = await client.get("/auth/csrf", headers={"X-Forwarded-For": "203.0.113.2"})
        assert other.status == expected_last
    finally:
        await client.session.close()


async def test_rate_limit_keys_sessions_apart_behind_one_address(api_factory, client_factory):
    # Every test client is 127.0.0.1, like people behind one proxy or NAT.
    server = await api_factory(rate_limit_requests_per_minute=6)
    ana = await dev_login(await client_factory(server), "ana@acme.example", "Acme")
    bob = await dev_login(await client_factory(server), "bob@acme.example", "Acme")
    # The address has spent 4 tokens on the two logins (csrf + login each); each session's
    # first request proves it (charged to the address), then it spends its own budget.
    assert (await ana.get("/me")).status == 200
    assert (await bob.get("/me")).status == 200
    for user in (ana, bob):
        statuses = [(await user.get("/me")).status for _ in range(6)]
        assert statuses == [200] * 6
        assert (await user.get("/me")).status == 429
    # The address's own bucket is empty: anonymous requests are limited...
    anonymous = await client_factory(server)
    assert (await anonymous.get("/auth/csrf")).status == 429
    # ...and a made-up session cookie is charged to the address, not given a bucket.
    forged = await anonymous.get("/me", cookies={"oss_session": "made-up-token"})
    assert forged.status == 429


def test_rate_limiter_forgets_a_refused_session():
    limiter = RateLimiter(60)
    key = RateLimiter.session_key("token")
    assert limiter.client_key(key, "10.0.0.1") == "address:10.0.0.1"
    limiter.session_checked(key, accepted=True)
    assert limiter.client_key(key, "10.0.0.1") == "session:" + key
    limiter.session_checked(key, accepted=False)  # revoked, expired or never valid
    assert limiter.client_key(key, "10.0.0.1") == "address:10.0.0.1"


def test_rate_limiter_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one token a second
    assert all(limiter.take("a") is None for _ in range(60))
    wait = limiter.take("a")
    assert wait is not None and 0.9 < wait <= 1.0
    assert limiter.take("b") is None  # buckets are per client
    now[0] += 1.0
    assert limiter.take("a") is None
    assert limiter.take("a") is not None


def test_disabled_rate_limiter_never_limits():
    limiter = RateLimiter(0)
    assert all(limiter.take("a") is None for _ in range(1000))


@pytest.mark.parametrize(
    ("statement", "status", "code"),
    [
        ("SELECT logic.fail(404, 'thing_not_found', 'No such thing.')", 404, "thing_not_found"),
        ("SELECT logic.fail(409, 'thing_exists', 'Already there.')", 409, "thing_exists"),
        ("INSERT INTO core.organizations (id, name) VALUES (%(org)s, 'Again')", 409, "conflict"),
        ("INSERT INTO core.organizations (name) VALUES ('')", 422, "validation_failed"),
        (
            "INSERT INTO core.queues (organization_id, name) VALUES (gen_random_uuid(), 'x')",
            422,
            "invalid_reference",
        ),
        ("SELECT 'not-a-uuid'::uuid", 400, "invalid_value"),
        ("SELECT 1/0", 400, "invalid_value"),
    ],
)
def test_database_errors_map_to_api_errors(db, statement, status, code):
    org = db.execute(
        "INSERT INTO core.organizations (name) VALUES ('Acme') RETURNING id"
    ).fetchone()
    with pytest.raises(psycopg.Error) as raised:
        db.execute(statement, {"org": org["id"]} if "%(org)s" in statement else None)
    mapped = database_error(raised.value)
    assert mapped is not None
    assert (mapped.status, mapped.code) == (status, code)
    assert mapped.detail and "Traceback" not in mapped.detail


def test_server_faults_are_not_mapped(db):
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT * FROM core.no_such_table")
    assert database_error(raised.value) is None  # → 500 internal_error, logged


async def test_readyz_reports_ready_then_outdated_code(api_server, db):
    client = await _client(api_server)
    try:
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert (await ready.json())["status"] == "ready"

        db.execute("UPDATE core.schema_state SET code_hash = 'stale'")
        stale = await client.get("/readyz")
        assert stale.status == 503
        assert (await stale.json())["code"] == "code_outdated"

        db.execute("DELETE FROM public._yoyo_migration WHERE migration_id LIKE '0003%%'")
        pending = await client.get("/readyz")
        assert pending.status == 503
        assert (await pending.json())["code"] == "migrations_pending"
    finally:
        await client.session.close()


async def test_readyz_is_503_json_when_the_database_is_unreachable(api_factory, db_url):
    from aiohttp.test_utils import TestServer

    from app.server import create_app
    from tests.fixtures.api import api_settings

    # Port 1 on loopback: nothing listens there. The pool opens lazily (min_size=0).
    app = create_app(api_settings(), "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1")
    server = TestServer(app)
    await server.start_server()
    client = TestClient(server)
    try:
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["code"] == "database_unavailable"
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()
