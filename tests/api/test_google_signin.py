"""Sign in with Google against the fake OpenID provider, over real HTTP, on a real database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from devtools.fake_oidc import FakeGoogleUser, FakeOpenIDProvider, serve_provider
from tests.fixtures.api import ApiUser

REDIRECT_URI = "http://api.test/auth/google/callback"
# What a browser navigating sends: it is answered with redirects, other clients with JSON.
BROWSER_ACCEPT = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
FRONTEND = "http://ui.test/"


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenIDProvider]:
    async with serve_provider(FakeOpenIDProvider(redirect_uris=(REDIRECT_URI,))) as served:
        yield served


@pytest.fixture
async def google_api(api_factory, provider):
    return await api_factory(
        google_oidc_client_id=provider.client_id,
        google_oidc_client_secret=provider.client_secret,
        google_oidc_discovery_url=provider.discovery_url,
        google_oidc_redirect_uri=REDIRECT_URI,
        frontend_url=FRONTEND,
    )


def create_org(db, name: str, admin: str, domains=(), policy=None, role=None) -> dict[str, Any]:
    return db.execute(
        "SELECT ops.organization_create(%s, %s, %s, %s, %s) AS org",
        [name, admin, list(domains), policy, role],
    ).fetchone()["org"]


@dataclass
class Browser:
    """A browser: its cookie jar (the test client's) and the provider it is sent to."""

    client: TestClient
    provider: FakeOpenIDProvider

    async def authorize(self) -> str:
        """Start signing in and let the provider answer: the callback path with its query."""
        start = await self.client.get("/auth/google/start", allow_redirects=False)
        assert start.status == 302, await start.text()
        async with (
            aiohttp.ClientSession() as session,
            session.get(start.headers["Location"], allow_redirects=False) as consent,
        ):
            assert consent.status == 302, await consent.text()
            location = consent.headers["Location"]
        assert location.startswith(REDIRECT_URI)
        return "/auth/google/callback?" + urlsplit(location).query

    async def sign_in(self, user: FakeGoogleUser | None = None):
        if user is not None:
            self.provider.sign_in_as(user)
        return await self.client.get(await self.authorize(), allow_redirects=False)


@pytest.fixture
async def browser(google_api, client_factory, provider):
    async def make() -> Browser:
        return Browser(await client_factory(google_api, headers=BROWSER_ACCEPT), provider)

    return make


def sessions(db) -> int:
    return db.execute("SELECT count(*) AS n FROM core.sessions").fetchone()["n"]


async def signed_in_user(b: Browser) -> ApiUser:
    csrf = (await (await b.client.get("/auth/csrf")).json())["csrf_token"]
    me = await (await b.client.get("/me")).json()
    return ApiUser(client=b.client, csrf=csrf, login=me)


async def test_start_redirects_to_the_discovered_provider_with_pkce_state_and_nonce(
    browser, provider
):
    b = await browser()
    start = await b.client.get("/auth/google/start", allow_redirects=False)
    assert start.status == 302
    url = urlsplit(start.headers["Location"])
    assert (
        f"{url.scheme}://{url.netloc}{url.path}" == provider.discovery()["authorization_endpoint"]
    )
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["scope"] == "openid email profile"
    assert query["response_type"] == "code"
    assert query["client_id"] == provider.client_id
    assert query["redirect_uri"] == REDIRECT_URI
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    assert start.cookies["oss_signin"]["httponly"]

    as_json = await b.client.get("/auth/google/start", headers={"Accept": "application/json"})
    assert as_json.status == 200
    body = await as_json.json()
    assert body["authorization_url"].startswith(provider.discovery()["authorization_endpoint"])
    assert body["expires_at"]


async def test_invited_person_signs_in_with_the_invited_role_and_lands_on_the_frontend(browser, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    boss = await browser()
    response = await boss.sign_in(
        FakeGoogleUser("boss@acme.example", hosted_domain="acme.example", name="The Boss")
    )
    assert response.status == 302, await response.text()
    assert response.headers["Location"] == FRONTEND
    assert response.cookies["oss_session"]["httponly"]
    assert response.cookies["oss_csrf"].value
    admin = await signed_in_user(boss)
    assert admin.login["role"] == "admin"
    assert admin.login["user"]["display_name"] == "The Boss"

    invited = await admin.post(
        "/invitations", json={"email": "Vera@Acme.example", "role": "viewer"}
    )
    assert invited.status == 201, await invited.text()
    assert (await invited.json())["role"] == "viewer"

    vera = await browser()
    response = await vera.sign_in(FakeGoogleUser("vera@acme.example", hosted_domain="acme.example"))
    assert response.status == 302, await response.text()
    me = await (await vera.client.get("/me")).json()
    assert (me["user"]["email"], me["organization"]["name"], me["role"]) == (
        "vera@acme.example",
        "Acme",
        "viewer",
    )
    # A viewer reads but may not change.
    assert (await vera.client.get("/queues")).status == 200
    viewer = await signed_in_user(vera)
    assert (await viewer.post("/queues", json={"name": "Sales"})).status == 403
    # The invitation is used up.
    assert (await (await admin.get("/invitations")).json())["items"] == []
    actions = [r["action"] for r in db.execute("SELECT action FROM core.audit_events ORDER BY id")]
    assert "invitation.accepted" in actions and actions.count("auth.google_login") == 2


async def test_uninvited_person_is_refused_without_a_session(browser, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    stranger = await browser()
    response = await stranger.sign_in(
        FakeGoogleUser("eve@acme.example", hosted_domain="acme.example")
    )
    assert response.status == 403
    assert (await response.json())["code"] == "not_invited"
    assert "oss_session" not in response.cookies
    assert sessions(db) == 0
    assert db.execute("SELECT count(*) AS n FROM core.users").fetchone()["n"] == 1  # the admin


async def test_domain_policy_admits_the_workspace_domain_not_the_email_domain(browser, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"], "domain", "viewer")
    colleague = await browser()
    response = await colleague.sign_in(
        FakeGoogleUser("ann@acme.example", hosted_domain="acme.example")
    )
    assert response.status == 302, await response.text()
    assert (await (await colleague.client.get("/me")).json())["role"] == "viewer"

    # A personal Google account can carry an address of the domain, but no hd claim.
    personal = await browser()
    response = await personal.sign_in(FakeGoogleUser("bob@acme.example", hosted_domain=None))
    assert response.status == 403
    assert (await response.json())["code"] == "not_invited"
    # Another Workspace's account with this address's domain is no member either.
    other = await browser()
    response = await other.sign_in(
        FakeGoogleUser("carl@acme.example", hosted_domain="evil.example")
    )
    assert response.status == 403
    assert sessions(db) == 1


async def test_admin_opens_the_organisation_to_its_workspace_domain(browser, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    boss = await browser()
    await boss.sign_in(FakeGoogleUser("boss@acme.example", hosted_domain="acme.example"))
    admin = await signed_in_user(boss)
    policy = await (await admin.get("/organization/join-policy")).json()
    assert policy == {
        "join_policy": "invite_only",
        "domain_join_role": "agent",
        "domains": ["acme.example"],
    }
    colleague = FakeGoogleUser("ann@acme.example", hosted_domain="acme.example")
    assert (await (await browser()).sign_in(colleague)).status == 403  # not yet

    opened = await admin.patch("/organization/join-policy", json={"join_policy": "domain"})
    assert opened.status == 200, await opened.text()
    assert (await opened.json())["join_policy"] == "domain"
    ann = await browser()
    assert (await ann.sign_in(colleague)).status == 302
    assert (await (await ann.client.get("/me")).json())["role"] == "agent"
    events = (await (await admin.get("/audit-events")).json())["items"]
    assert [e["action"] for e in events][:3] == [
        "auth.google_login",
        "member.joined",
        "organization.join_policy_changed",
    ]


async def test_domain_policy_needs_a_verified_domain(login):
    admin = await login("admin@example.com", "Nodomain")
    refused = await admin.patch("/organization/join-policy", json={"join_policy": "domain"})
    assert (refused.status, (await refused.json())["code"]) == (409, "no_verified_domain")
    viewer = await login("viewer@example.com", "Nodomain", role="viewer")
    assert (await viewer.get("/organization/join-policy")).status == 403
    role = await admin.patch("/organization/join-policy", json={"domain_join_role": "viewer"})
    assert (await role.json())["domain_join_role"] == "viewer"


@pytest.mark.parametrize(
    ("overrides", "user", "status", "code"),
    [
        (
            {},
            FakeGoogleUser("boss@acme.example", "acme.example", email_verified=False),
            403,
            "email_not_verified",
        ),
        ({"aud": "someone-else.apps.googleusercontent.com"}, None, 401, "invalid_id_token"),
        (
            {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600},
            None,
            401,
            "invalid_id_token",
        ),
        ({"nonce": "a-nonce-of-another-sign-in"}, None, 401, "invalid_id_token"),
        ({"nonce": None}, None, 401, "invalid_id_token"),
        ({"iss": "https://accounts.example"}, None, 401, "invalid_id_token"),
    ],
    ids=["unverified-email", "wrong-aud", "expired", "wrong-nonce", "no-nonce", "wrong-iss"],
)
async def test_bad_id_tokens_are_refused_with_json_and_no_session(
    browser, provider, db, overrides, user, status, code
):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    provider.id_token_overrides = overrides
    b = await browser()
    response = await b.sign_in(user or FakeGoogleUser("boss@acme.example", "acme.example"))
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    assert (await response.json())["code"] == code
    assert sessions(db) == 0


async def test_a_token_signed_by_another_key_is_refused(browser, provider, db, monkeypatch):
    from devtools.fake_pubsub import FakeGoogleIssuer

    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    # Same key id as the published key, another private key.
    forger = FakeGoogleIssuer(key_id=provider.issuer.key_id)
    monkeypatch.setattr(provider.issuer, "sign", forger.sign)
    b = await browser()
    response = await b.sign_in(FakeGoogleUser("boss@acme.example", "acme.example"))
    assert response.status == 401
    assert (await response.json())["code"] == "invalid_id_token"
    assert sessions(db) == 0


async def test_replayed_state_is_refused(browser, provider, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    provider.sign_in_as(FakeGoogleUser("boss@acme.example", "acme.example"))
    b = await browser()
    callback = await b.authorize()
    first = await b.client.get(callback, allow_redirects=False)
    assert first.status == 302
    replay = await b.client.get(callback, allow_redirects=False)
    assert replay.status == 400
    assert (await replay.json())["code"] == "signin_state_used"
    assert sessions(db) == 1


async def test_callback_from_another_browser_is_refused(browser, provider, db):
    """Login CSRF: a callback link made in the attacker's browser fails in the victim's."""
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    provider.sign_in_as(FakeGoogleUser("boss@acme.example", "acme.example"))
    attacker, victim = await browser(), await browser()
    callback = await attacker.authorize()
    response = await victim.client.get(callback, allow_redirects=False)
    assert response.status == 400
    assert (await response.json())["code"] == "signin_state_mismatch"
    assert sessions(db) == 0


async def test_expired_and_unknown_states_are_refused(browser, provider, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    provider.sign_in_as(FakeGoogleUser("boss@acme.example", "acme.example"))
    b = await browser()
    callback = await b.authorize()
    db.execute(
        "UPDATE core.signin_states SET created_at = now() - interval '1 hour', "
        "expires_at = now() - interval '1 second'"
    )
    expired = await b.client.get(callback, allow_redirects=False)
    assert (expired.status, (await expired.json())["code"]) == (400, "signin_state_expired")
    unknown = await b.client.get("/auth/google/callback?state=made-up&code=x")
    assert (unknown.status, (await unknown.json())["code"]) == (400, "invalid_signin_state")
    assert sessions(db) == 0


async def test_pkce_verifier_is_required_by_the_provider_and_checked(browser, provider, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    provider.sign_in_as(FakeGoogleUser("boss@acme.example", "acme.example"))
    b = await browser()
    # Without the verifier the provider refuses the code (as Google does).
    callback = await b.authorize()
    code = parse_qs(urlsplit(callback).query)["code"][0]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            provider.discovery()["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": provider.client_id,
                "client_secret": provider.client_secret,
                "redirect_uri": REDIRECT_URI,
            },
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_grant"

    # A sign-in whose stored verifier is not the one of its challenge gets no session.
    callback = await b.authorize()
    db.execute("UPDATE core.signin_states SET code_verifier = repeat('x', 64)")
    response = await b.client.get(callback, allow_redirects=False)
    assert response.status == 400
    assert (await response.json())["code"] == "signin_code_rejected"
    assert sessions(db) == 0


async def test_relogin_revokes_the_previous_session(browser, provider, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    boss = FakeGoogleUser("boss@acme.example", "acme.example")
    b = await browser()
    await b.sign_in(boss)
    old = b.client.session.cookie_jar.filter_cookies(b.client.make_url("/"))["oss_session"].value
    await b.sign_in(boss)
    rows = db.execute(
        "SELECT revoked_at IS NOT NULL AS revoked FROM core.sessions ORDER BY created_at"
    )
    assert [r["revoked"] for r in rows] == [True, False]
    stale = await (await browser()).client.get("/me", headers={"Cookie": f"oss_session={old}"})
    assert stale.status == 401
    assert (await b.client.get("/me")).status == 200


async def test_another_google_account_with_a_known_address_is_refused(browser, provider, db):
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])
    b = await browser()
    assert (await b.sign_in(FakeGoogleUser("boss@acme.example", "acme.example"))).status == 302
    recycled = FakeGoogleUser("boss@acme.example", "acme.example", subject="another-account")
    response = await (await browser()).sign_in(recycled)
    assert response.status == 403
    assert (await response.json())["code"] == "google_account_mismatch"


async def test_sign_in_is_503_when_not_configured(new_client):
    client = await new_client()
    response = await client.get("/auth/google/start", allow_redirects=False)
    assert response.status == 503
    assert (await response.json())["code"] == "google_signin_not_configured"


async def test_production_settings_sign_in_invited_refuse_others_no_dev_login(
    api_factory, client_factory, provider, db
):
    """What the issue checks: production settings, org-create, an invited person works."""
    server = await api_factory(
        app_env="production",
        allow_dev_login=False,
        encryption_key=b"k" * 32,
        cookie_secure=False,  # the test client speaks plain HTTP
        google_oidc_client_id=provider.client_id,
        google_oidc_client_secret=provider.client_secret,
        google_oidc_discovery_url=provider.discovery_url,
        google_oidc_redirect_uri=REDIRECT_URI,
    )
    create_org(db, "Acme", "boss@acme.example", ["acme.example"])

    async def browser() -> Browser:
        return Browser(await client_factory(server, headers=BROWSER_ACCEPT), provider)

    boss = await browser()
    assert (await boss.sign_in(FakeGoogleUser("boss@acme.example", "acme.example"))).status == 302
    admin = await signed_in_user(boss)
    assert (await admin.post("/invitations", json={"email": "ann@acme.example"})).status == 201

    ann_browser = await browser()
    response = await ann_browser.sign_in(FakeGoogleUser("ann@acme.example", "acme.example"))
    assert response.status == 302
    assert response.headers["Location"] == "http://localhost:3000"  # FRONTEND_URL's default
    ann = await signed_in_user(ann_browser)
    assert ann.login["role"] == "agent"
    assert (await ann.get("/tickets")).status == 200

    uninvited = await (await browser()).sign_in(FakeGoogleUser("eve@acme.example", "acme.example"))
    assert (uninvited.status, (await uninvited.json())["code"]) == (403, "not_invited")

    # Development login does not exist in production.
    anonymous = await browser()
    token = (await (await anonymous.client.get("/auth/csrf")).json())["csrf_token"]
    dev = await anonymous.client.post(
        "/auth/dev/login",
        json={"email": "boss@acme.example", "organization_name": "Acme"},
        headers={"x-csrf-token": token},
    )
    assert dev.status == 404

    # A planted token (anonymous, or another member's) is refused with Ann's session.
    for planted in (token, admin.csrf):
        ann.client.session.cookie_jar.update_cookies({"oss_csrf": planted})
        refused = await ann.client.post("/auth/logout", headers={"x-csrf-token": planted})
        assert (refused.status, (await refused.json())["code"]) == (403, "csrf_failed")
    assert (await ann.get("/me")).status == 200
