"""Sessions, CSRF and the request envelope (errors, request id, headers, rate limit)."""

from __future__ import annotations

import hmac

import pytest

from tests.fixtures.api import TEST_SECRET, dev_login


async def test_dev_login_walkthrough_from_the_seed(new_client, db):
    client = await new_client()

    csrf_response = await client.get("/auth/csrf")
    assert csrf_response.status == 200
    csrf = (await csrf_response.json())["csrf_token"]
    assert client.session.cookie_jar.filter_cookies(client.make_url("/"))["oss_csrf"].value == csrf

    response = await client.post(
        "/auth/dev/login",
        json={"email": "Alice@Example.com", "organization_name": "Acme"},
        headers={"x-csrf-token": csrf},
    )
    assert response.status == 200
    body = await response.json()
    assert set(body) >= {"user", "organization", "role", "session", "csrf_token"}
    assert body["user"]["email"] == "alice@example.com"
    assert body["organization"]["name"] == "Acme"
    assert body["role"] == "admin"  # the founder of a new organisation
    assert body["csrf_token"] != csrf  # login rotates the CSRF token

    session_cookie = response.cookies["oss_session"]
    assert session_cookie["httponly"]
    assert session_cookie["samesite"] == "Lax"
    token = session_cookie.value

    # Only the HMAC of the token is stored.
    stored = db.execute("SELECT token_hash FROM core.sessions").fetchall()
    expected = hmac.new(TEST_SECRET.encode(), b"session\0" + token.encode(), "sha256").digest()
    assert [row["token_hash"] for row in stored] == [expected]
    assert token.encode() not in stored[0]["token_hash"]

    # The returned token (and cookie) authorise mutations.
    created = await client.post(
        "/queues", json={"name": "Billing"}, headers={"x-csrf-token": body["csrf_token"]}
    )
    assert created.status == 201, await created.text()


async def test_dev_login_is_404_unless_enabled(api_factory, new_client):
    server = await api_factory(allow_dev_login=False)
    from aiohttp.test_utils import TestClient

    client = TestClient(server)
    await client.start_server()
    try:
        csrf = (await (await client.get("/auth/csrf")).json())["csrf_token"]
        response = await client.post(
            "/auth/dev/login",
            json={"email": "a@example.com", "organization_name": "Acme"},
            headers={"x-csrf-token": csrf},
        )
        assert response.status == 404
        assert await response.json() == {"detail": "Not Found", "code": "not_found"}
    finally:
        await client.session.close()


@pytest.mark.parametrize(
    ("header", "use_cookie", "why"),
    [
        (None, True, "header missing"),
        ("wrong-token", True, "header differs from cookie"),
        ("same", False, "no cookie"),
    ],
)
async def test_mutation_without_valid_csrf_is_refused(new_client, header, use_cookie, why):
    client = await new_client()
    if use_cookie:
        await client.get("/auth/csrf")
    headers = {"x-csrf-token": header} if header else {}
    response = await client.post(
        "/auth/dev/login",
        json={"email": "a@example.com", "organization_name": "Acme"},
        headers=headers,
    )
    assert response.status == 403, why
    assert (await response.json())["code"] == "csrf_failed"


async def test_forged_double_submit_pair_is_refused(new_client):
    """A cookie planted by a sibling domain matches its header but lacks our signature."""
    client = await new_client()
    client.session.cookie_jar.update_cookies({"oss_csrf": "forged.signature"})
    response = await client.post(
        "/auth/dev/login",
        json={"email": "a@example.com", "organization_name": "Acme"},
        headers={"x-csrf-token": "forged.signature"},
    )
    assert response.status == 403
    assert (await response.json())["code"] == "csrf_failed"


async def test_logged_in_mutation_needs_csrf_too(login):
    alice = await login("alice@example.com", "Acme")
    response = await alice.client.post("/queues", json={"name": "Billing"})
    assert response.status == 403
    assert (await response.json())["code"] == "csrf_failed"


async def test_me_shows_user_organisation_role_and_memberships(login):
    alice = await login("alice@example.com", "Acme")
    await login("alice@example.com", "Globex")  # a second membership, another session
    me = await (await alice.get("/me")).json()
    assert me["user"]["email"] == "alice@example.com"
    assert me["organization"]["name"] == "Acme"
    assert me["role"] == "admin"
    assert sorted(org["name"] for org in me["organizations"]) == ["Acme", "Globex"]


async def test_later_members_join_as_agents_unless_a_role_is_asked(login):
    await login("founder@example.com", "Acme")
    agent = await login("bob@example.com", "Acme")
    viewer = await login("carol@example.com", "Acme", role="viewer")
    assert agent.login["role"] == "agent"
    assert viewer.login["role"] == "viewer"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"organization_name": "Acme"}, 422, "invalid_email"),
        ({"email": "not-an-address", "organization_name": "Acme"}, 422, "invalid_email"),
        ({"email": "a@example.com"}, 422, "invalid_organization_name"),
        ({"email": "a@example.com", "organization_name": "   "}, 422, "invalid_organization_name"),
        ({"email": 5, "organization_name": "Acme"}, 422, "invalid_email"),
        (
            {"email": "a@example.com", "organization_name": "Acme", "role": "owner"},
            422,
            "invalid_role",
        ),
    ],
)
async def test_dev_login_validation(new_client, db, body, status, code):
    client = await new_client()
    csrf = (await (await client.get("/auth/csrf")).json())["csrf_token"]
    response = await client.post("/auth/dev/login", json=body, headers={"x-csrf-token": csrf})
    assert response.status == status
    assert (await response.json())["code"] == code
    # Bad input loses nothing and leaves nothing half-made.
    assert db.execute("SELECT count(*) AS n FROM core.sessions").fetchone()["n"] == 0


async def test_invalid_json_body_is_400(new_client):
    client = await new_client()
    csrf = (await (await client.get("/auth/csrf")).json())["csrf_token"]
    response = await client.post(
        "/auth/dev/login",
        data=b"{not json",
        headers={"x-csrf-token": csrf, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert await response.json() == {
        "detail": "The request body is not valid JSON.",
        "code": "invalid_json",
    }


async def test_logout_revokes_the_session(login, db):
    alice = await login("alice@example.com", "Acme")
    token = alice.client.session.cookie_jar.filter_cookies(alice.client.make_url("/"))[
        "oss_session"
    ].value

    response = await alice.post("/auth/logout")
    assert response.status == 200
    assert db.execute("SELECT revoked_at IS NOT NULL AS revoked FROM core.sessions").fetchone()[
        "revoked"
    ]
    assert (await alice.get("/me")).status == 401

    # Replaying the old cookie after logout does not bring the session back.
    alice.client.session.cookie_jar.update_cookies({"oss_session": token})
    replay = await alice.get("/me")
    assert replay.status == 401
    assert (await replay.json())["code"] == "not_authenticated"


async def test_expired_session_is_refused(login, db):
    alice = await login("alice@example.com", "Acme")
    assert (await alice.get("/me")).status == 200
    db.execute(
        "UPDATE core.sessions SET created_at = now() - interval '9 hours', "
        "expires_at = now() - interval '1 second'"
    )
    response = await alice.get("/me")
    assert response.status == 401
    assert (await response.json())["code"] == "session_expired"


async def test_session_lifetime_follows_the_setting(api_factory, db):
    from aiohttp.test_utils import TestClient

    server = await api_factory(session_ttl_seconds=120)
    client = TestClient(server)
    await client.start_server()
    try:
        user = await dev_login(client, "alice@example.com", "Acme")
        response = user.login
        cookie_max_age = None
        for cookie in client.session.cookie_jar:
            if cookie.key == "oss_session":
                cookie_max_age = cookie["max-age"]
        assert cookie_max_age == "120"
        lifetime = db.execute(
            "SELECT extract(epoch FROM expires_at - created_at) AS s FROM core.sessions"
        ).fetchone()["s"]
        assert 119 <= float(lifetime) <= 121
        assert response["session"]["expires_at"]
    finally:
        await client.session.close()


async def test_garbage_session_cookie_is_401(new_client):
    client = await new_client()
    client.session.cookie_jar.update_cookies({"oss_session": "made-up"})
    response = await client.get("/me")
    assert response.status == 401
    assert (await response.json())["code"] == "not_authenticated"


async def test_removed_member_loses_access_at_once(login, db):
    await login("founder@example.com", "Acme")  # the admin, who stays
    alice = await login("alice@example.com", "Acme")
    db.execute(
        "DELETE FROM core.memberships WHERE user_id = "
        "(SELECT id FROM core.users WHERE email = 'alice@example.com')"
    )
    response = await alice.get("/queues")
    assert response.status == 401
    assert (await response.json())["code"] == "not_a_member"


async def test_switch_org_moves_the_session(login, db):
    alice = await login("alice@example.com", "Acme")
    globex = (await login("alice@example.com", "Globex")).login["organization"]["id"]
    await login("mallory@example.com", "Initech")
    initech = db.execute("SELECT id FROM core.organizations WHERE name = 'Initech'").fetchone()[
        "id"
    ]

    switched = await alice.post("/auth/switch-org", json={"organization_id": globex})
    assert switched.status == 200
    assert (await switched.json())["organization"]["name"] == "Globex"
    assert (await (await alice.get("/me")).json())["organization"]["id"] == globex

    refused = await alice.post("/auth/switch-org", json={"organization_id": str(initech)})
    assert refused.status == 404
    assert (await refused.json())["code"] == "organization_not_found"

    malformed = await alice.post("/auth/switch-org", json={"organization_id": "nope"})
    assert malformed.status == 422
    assert (await malformed.json())["code"] == "invalid_organization_id"

    actions = [
        row["action"]
        for row in db.execute("SELECT action FROM core.audit_events ORDER BY created_at, id")
    ]
    assert actions.count("auth.switch_org") == 1


async def test_unknown_route_and_wrong_method_are_json(new_client):
    client = await new_client()
    missing = await client.get("/no/such/route")
    assert missing.status == 404
    assert await missing.json() == {"detail": "Not Found", "code": "not_found"}

    wrong_method = await client.delete("/queues")
    assert wrong_method.status == 405
    assert (await wrong_method.json())["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["Allow"]


async def test_request_id_is_echoed_or_generated_and_headers_are_safe(new_client):
    client = await new_client()
    echoed = await client.get("/healthz", headers={"X-Request-ID": "req-123.abc"})
    assert echoed.headers["X-Request-ID"] == "req-123.abc"

    generated = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith junk"})
    assert generated.headers["X-Request-ID"] not in ("", "bad id\twith junk")
    assert len(generated.headers["X-Request-ID"]) == 32

    for response in (echoed, await client.get("/missing")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


async def test_request_id_reaches_the_audit_trail(new_client, db):
    client = await new_client()
    csrf = (await (await client.get("/auth/csrf")).json())["csrf_token"]
    await client.post(
        "/auth/dev/login",
        json={"email": "a@example.com", "organization_name": "Acme"},
        headers={"x-csrf-token": csrf, "X-Request-ID": "trace-42"},
    )
    row = db.execute("SELECT action, request_id FROM core.audit_events").fetchone()
    assert row == {"action": "auth.dev_login", "request_id": "trace-42"}


async def test_planted_csrf_token_is_refused_with_the_victims_session(login, new_client):
    """A token fetched anonymously, or issued to another user's session, is ours and signed,
    but bound to no session or another one: refused with the victim's session."""
    victim = await login("alice@example.com", "Acme")
    mallory = await login("mallory@example.com", "Acme")
    anonymous = await new_client()
    anonymous_token = (await (await anonymous.get("/auth/csrf")).json())["csrf_token"]

    for planted in (anonymous_token, mallory.csrf):
        victim.client.session.cookie_jar.update_cookies({"oss_csrf": planted})
        response = await victim.client.post(
            "/queues", json={"name": "Planted"}, headers={"x-csrf-token": planted}
        )
        assert response.status == 403
        assert (await response.json())["code"] == "csrf_failed"

    # The victim's own token, fetched with the session cookie, works; so does the one of
    # GET /auth/csrf with the session (the web client fetches one before each mutation).
    fresh = (await (await victim.get("/auth/csrf")).json())["csrf_token"]
    response = await victim.client.post(
        "/queues", json={"name": "Billing"}, headers={"x-csrf-token": fresh}
    )
    assert response.status == 201, await response.text()


async def test_anonymous_csrf_token_only_signs_in(new_client):
    client = await new_client()
    token = (await (await client.get("/auth/csrf")).json())["csrf_token"]
    refused = await client.post("/auth/logout", headers={"x-csrf-token": token})
    assert refused.status == 403
    assert (await refused.json())["code"] == "csrf_failed"
    # The same anonymous token signs in.
    signed_in = await client.post(
        "/auth/dev/login",
        json={"email": "a@example.com", "organization_name": "Acme"},
        headers={"x-csrf-token": token},
    )
    assert signed_in.status == 200


async def test_relogin_revokes_the_previous_session_token(login, new_client, db):
    alice = await login("alice@example.com", "Acme")
    old = alice.client.session.cookie_jar.filter_cookies(alice.client.make_url("/"))[
        "oss_session"
    ].value
    again = await dev_login(alice.client, "alice@example.com", "Acme")
    revoked = [
        row["revoked"]
        for row in db.execute(
            "SELECT revoked_at IS NOT NULL AS revoked FROM core.sessions ORDER BY created_at"
        )
    ]
    assert revoked == [True, False]
    stale = await (await new_client()).get("/me", headers={"Cookie": f"oss_session={old}"})
    assert stale.status == 401
    assert (await again.get("/me")).status == 200


async def test_dev_login_is_404_in_production(api_factory, client_factory):
    import base64

    server = await api_factory(
        app_env="production",
        allow_dev_login=False,
        encryption_key=base64.b64decode(base64.b64encode(b"k" * 32)),
    )
    client = await client_factory(server)
    csrf = (await (await client.get("/auth/csrf")).json())["csrf_token"]
    response = await client.post(
        "/auth/dev/login",
        json={"email": "a@example.com", "organization_name": "Acme"},
        headers={"x-csrf-token": csrf},
    )
    assert response.status == 404
    assert await response.json() == {"detail": "Not Found", "code": "not_found"}
