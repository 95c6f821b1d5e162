"""Mailboxes: the Gmail connect flow, connectivity, sync administration, operator registration.

Real database, the real API over HTTP, and the fake Gmail server (OAuth token endpoint and
Gmail API) over HTTP on the test's event loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from app.handlers.mailboxes import oauth_state_hash
from cli.mailbox_admin import RegistrationError, register_gmail_mailbox
from devtools.fake_gmail import (
    FAKE_CLIENT_ID,
    FAKE_CLIENT_SECRET,
    FakeGmail,
    FakeGmailServer,
    FaultRule,
    fake_gmail_server,
)
from kernel.crypto import TokenDecryptionError, decrypt_token, token_key
from kernel.settings import Settings
from tests.fixtures import seed
from tests.fixtures.api import ApiUser, api_settings, dev_login

START = "/mailboxes/gmail/journal/oauth/start"
CALLBACK = "/mailboxes/gmail/oauth/callback"
# An API client gets JSON; a browser (Accept naming text/html) is redirected to the client.
AS_API_CLIENT = {"Accept": "application/json"}
JOURNAL = "journal@acme.example"
READONLY = "https://www.googleapis.com/auth/gmail.readonly"
ENCRYPTION_KEY = bytes(range(100, 132))
REPO = Path(__file__).resolve().parent.parent.parent

Login = Callable[..., Awaitable[ApiUser]]


def _gmail_overrides(gmail: FakeGmailServer) -> dict[str, object]:
    return {
        "gmail_api_base_url": gmail.base_url,
        "google_token_uri": gmail.token_uri,
        "google_auth_uri": gmail.base_url + "o/oauth2/v2/auth",
        "google_client_id": FAKE_CLIENT_ID,
        "google_client_secret": FAKE_CLIENT_SECRET,
        "encryption_key": ENCRYPTION_KEY,
    }


@pytest.fixture
async def gmail() -> AsyncIterator[FakeGmailServer]:
    """The fake Gmail server on the test's loop (the API calls Gmail from threads)."""
    async with fake_gmail_server(FakeGmail(seed=7)) as server:
        yield server


async def _serve(api_factory, gmail: FakeGmailServer, **extra) -> TestServer:
    return await api_factory(**{**_gmail_overrides(gmail), **extra})


@pytest.fixture
async def mailbox_api(api_factory, gmail) -> TestServer:
    """The API configured for the fake Gmail server."""
    return await _serve(api_factory, gmail)


@pytest.fixture
async def log_in(mailbox_api, client_factory) -> Login:
    """`await log_in(email, organization, role=None)` against the Gmail-configured API."""

    async def make(email: str, organization: str, role: str | None = None) -> ApiUser:
        return await dev_login(await client_factory(mailbox_api), email, organization, role)

    return make


async def _start(user: ApiUser) -> str:
    response = await user.post(START)
    assert response.status == 200, await response.text()
    return (await response.json())["state"]


async def _connect(user: ApiUser, gmail: FakeGmailServer, email: str = JOURNAL):
    state = await _start(user)
    code = gmail.control.issue_authorization_code(email)
    return await user.get(CALLBACK, params={"code": code, "state": state}, headers=AS_API_CLIENT)


def _jobs(db, task: str | None = None) -> list[dict]:
    query = "SELECT task_name, args, status, queue_name FROM procrastinate_jobs"
    params: list = []
    if task is not None:
        query += " WHERE task_name = %s"
        params.append(task)
    return db.execute(query + " ORDER BY id", params).fetchall()


def _mailbox_row(db, mailbox_id) -> dict:
    return db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()


async def _refresh_works(gmail: FakeGmailServer, refresh_token: str) -> bool:
    """Whether the fake's token endpoint accepts `refresh_token` (as Gmail clients use it)."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": FAKE_CLIENT_ID,
        "client_secret": FAKE_CLIENT_SECRET,
    }
    async with aiohttp.ClientSession() as session, session.post(gmail.token_uri, data=form) as r:
        return r.status == 200


# ---------------------------------------------------------------- the connect flow


async def test_start_returns_consent_url_and_stores_only_the_state_hmac(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    response = await admin.post(START)
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"authorization_url", "state", "expires_at"}

    url = urlsplit(body["authorization_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == gmail.base_url + "o/oauth2/v2/auth"
    assert {k: v for k, [v] in parse_qs(url.query).items()} == {
        "client_id": FAKE_CLIENT_ID,
        "redirect_uri": Settings.google_oauth_redirect_uri,
        "response_type": "code",
        "scope": READONLY,
        "access_type": "offline",
        "prompt": "consent",
        "state": body["state"],
    }

    row = db.execute(
        "SELECT s.state_hash, s.purpose, s.consumed_at, u.email, s.organization_id, "
        "       round(extract(epoch FROM s.expires_at - now())) AS ttl "
        "FROM core.oauth_states s JOIN core.users u ON u.id = s.user_id"
    ).fetchone()
    assert bytes(row["state_hash"]) == oauth_state_hash(api_settings(), body["state"])
    assert body["state"].encode() not in bytes(row["state_hash"])
    assert row["purpose"] == "gmail_journal"
    assert row["consumed_at"] is None
    assert row["email"] == "admin@acme.example"
    assert str(row["organization_id"]) == seed.org_id(admin)
    assert 590 <= row["ttl"] <= 600


async def test_connect_creates_the_mailbox_with_an_encrypted_token_and_a_backfill(
    log_in, gmail, db
):
    admin = await log_in("admin@acme.example", "Acme")
    gmail.control.add_mailbox("Journal@Acme.example")
    response = await _connect(admin, gmail, "Journal@Acme.example")
    assert response.status == 201, await response.text()
    mailbox = await response.json()
    assert "encrypted_refresh_token" not in await response.text()
    assert mailbox["email_address"] == JOURNAL  # stored lower-case
    assert mailbox["gmail_profile_email"] == JOURNAL
    assert mailbox["provider"] == "gmail" and mailbox["purpose"] == "journal"
    assert mailbox["state"] == "active"
    assert mailbox["is_enabled"] is True
    assert mailbox["connected"] is True
    assert mailbox["granted_scopes"] == [READONLY]
    assert mailbox["history_id"] is None  # only a sync step sets the cursor
    assert mailbox["backfill"]["state"] == "running"
    assert mailbox["backfill"]["pages"] == 0
    assert set(mailbox) >= {
        "id", "display_name", "last_history_sync_at", "last_error", "last_error_at",
        "paused_until", "pause_reason", "created_at",
    }  # fmt: skip

    row = _mailbox_row(db, mailbox["id"])
    ciphertext = bytes(row["encrypted_refresh_token"])
    key = token_key(api_settings(encryption_key=ENCRYPTION_KEY))
    refresh_token = decrypt_token(
        key, ciphertext, organization_id=seed.org_id(admin), mailbox_id=mailbox["id"]
    )
    assert refresh_token.encode() not in ciphertext
    assert await _refresh_works(gmail, refresh_token)
    with pytest.raises(TokenDecryptionError):
        decrypt_token(key, ciphertext, organization_id=seed.org_id(admin), mailbox_id=uuid.uuid4())
    with pytest.raises(TokenDecryptionError):
        decrypt_token(key, ciphertext, organization_id=uuid.uuid4(), mailbox_id=mailbox["id"])

    assert _jobs(db) == [
        {
            "task_name": "mailbox_backfill",
            "args": {"mailbox_id": mailbox["id"]},
            "status": "todo",
            "queue_name": "sync",
        }
    ]
    event = db.execute(
        "SELECT a.target_id, a.details, u.email FROM core.audit_events a "
        "JOIN core.users u ON u.id = a.actor_user_id WHERE a.action = 'mailbox.connect'"
    ).fetchone()
    assert event["target_id"] == mailbox["id"]
    assert event["email"] == "admin@acme.example"
    assert event["details"]["email"] == JOURNAL
    assert event["details"]["queued_task"] == "mailbox_backfill"
    assert db.execute("SELECT consumed_at FROM core.oauth_states").fetchone()["consumed_at"]

    listed = await admin.get("/mailboxes")
    assert listed.status == 200
    assert await listed.json() == [mailbox]


async def test_reconnecting_an_existing_mailbox_replaces_its_token(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    first = await (await _connect(admin, gmail)).json()
    old_ciphertext = bytes(_mailbox_row(db, first["id"])["encrypted_refresh_token"])
    # The grant was revoked meanwhile; history sync had a cursor.
    db.execute(
        "UPDATE core.mailboxes SET state = 'needs_reconnect', history_id = 5000, "
        "backfill_state = 'done' WHERE id = %s",
        [first["id"]],
    )
    db.execute("DELETE FROM procrastinate_jobs")

    response = await _connect(admin, gmail)
    assert response.status == 200, await response.text()
    again = await response.json()
    assert again["id"] == first["id"]
    assert again["state"] == "active"
    assert again["history_id"] == "5000"  # reconnecting does not move the cursor
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 1

    new_ciphertext = bytes(_mailbox_row(db, first["id"])["encrypted_refresh_token"])
    assert new_ciphertext != old_ciphertext
    new_token = decrypt_token(
        ENCRYPTION_KEY, new_ciphertext, organization_id=seed.org_id(admin), mailbox_id=first["id"]
    )
    assert await _refresh_works(gmail, new_token)
    assert [(j["task_name"], j["args"]) for j in _jobs(db)] == [
        ("mailbox_history_sync", {"mailbox_id": first["id"]})
    ]
    reconnects = db.execute(
        "SELECT count(*) AS n FROM core.audit_events WHERE action = 'mailbox.reconnect'"
    ).fetchone()
    assert reconnects["n"] == 1


async def test_a_state_is_used_once(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    state = await _start(admin)
    code = gmail.control.issue_authorization_code(JOURNAL)
    assert (
        await admin.get(CALLBACK, params={"code": code, "state": state}, headers=AS_API_CLIENT)
    ).status == 201

    replay = await admin.get(
        CALLBACK,
        params={"code": gmail.control.issue_authorization_code(JOURNAL), "state": state},
        headers=AS_API_CLIENT,
    )
    assert replay.status == 400
    assert (await replay.json())["code"] == "oauth_state_used"
    assert len(_jobs(db)) == 1


async def test_an_expired_state_is_refused(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    state = await _start(admin)
    db.execute("UPDATE core.oauth_states SET expires_at = now() - interval '1 second'")
    response = await admin.get(
        CALLBACK,
        params={"code": gmail.control.issue_authorization_code(JOURNAL), "state": state},
        headers=AS_API_CLIENT,
    )
    assert response.status == 400
    assert (await response.json())["code"] == "oauth_state_expired"
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 0
    assert db.execute("SELECT consumed_at FROM core.oauth_states").fetchone()["consumed_at"]


@pytest.mark.parametrize(
    ("missing", "code"), [("state", "invalid_oauth_state"), ("unknown", "invalid_oauth_state")]
)
async def test_a_missing_or_unknown_state_is_refused(log_in, gmail, db, missing, code):
    admin = await log_in("admin@acme.example", "Acme")
    params = {"code": gmail.control.issue_authorization_code(JOURNAL)}
    if missing == "unknown":
        params["state"] = "made-up-state"
    response = await admin.get(CALLBACK, params=params, headers=AS_API_CLIENT)
    assert response.status == 400
    assert (await response.json())["code"] == code
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 0


async def test_a_state_of_another_user_is_refused_and_spent(log_in, gmail, db):
    owner = await log_in("owner@acme.example", "Acme")
    colleague = await log_in("colleague@acme.example", "Acme", role="admin")
    state = await _start(owner)

    stolen = await colleague.get(
        CALLBACK,
        params={"code": gmail.control.issue_authorization_code(JOURNAL), "state": state},
        headers=AS_API_CLIENT,
    )
    assert stolen.status == 400
    assert (await stolen.json())["code"] == "oauth_state_mismatch"
    # The state was exposed: it is spent, the owner starts again.
    late = await owner.get(
        CALLBACK,
        params={"code": gmail.control.issue_authorization_code(JOURNAL), "state": state},
        headers=AS_API_CLIENT,
    )
    assert (await late.json())["code"] == "oauth_state_used"
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 0


async def test_a_state_of_another_organisation_is_unknown_here(log_in, gmail, db):
    acme = await log_in("admin@acme.example", "Acme")
    globex = await log_in("admin@globex.example", "Globex")
    state = await _start(acme)

    response = await globex.get(
        CALLBACK,
        params={"code": gmail.control.issue_authorization_code(JOURNAL), "state": state},
        headers=AS_API_CLIENT,
    )
    assert response.status == 400
    assert (await response.json())["code"] == "invalid_oauth_state"
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 0
    # Invisible to Globex, so still usable by its owner.
    done = await acme.get(
        CALLBACK,
        params={"code": gmail.control.issue_authorization_code(JOURNAL), "state": state},
        headers=AS_API_CLIENT,
    )
    assert done.status == 201
    assert str(_mailbox_row(db, (await done.json())["id"])["organization_id"]) == seed.org_id(acme)


async def test_a_rejected_code_still_consumes_the_state(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    state = await _start(admin)
    response = await admin.get(
        CALLBACK, params={"code": "4/not-a-real-code", "state": state}, headers=AS_API_CLIENT
    )
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "oauth_code_rejected"
    assert "invalid_grant" in body["detail"]
    assert db.execute("SELECT consumed_at FROM core.oauth_states").fetchone()["consumed_at"]

    retry = await admin.get(
        CALLBACK,
        params={"code": gmail.control.issue_authorization_code(JOURNAL), "state": state},
        headers=AS_API_CLIENT,
    )
    assert (await retry.json())["code"] == "oauth_state_used"
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 0
    assert _jobs(db) == []


async def test_an_unavailable_token_endpoint_is_503_and_the_state_is_spent(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    state = await _start(admin)
    gmail.control.inject(FaultRule(endpoint="token", status=503))
    response = await admin.get(
        CALLBACK,
        params={"code": gmail.control.issue_authorization_code(JOURNAL), "state": state},
        headers=AS_API_CLIENT,
    )
    assert response.status == 503
    assert (await response.json())["code"] == "google_unavailable"
    assert db.execute("SELECT consumed_at FROM core.oauth_states").fetchone()["consumed_at"]


async def test_consent_denied_at_google_is_400_and_the_state_is_spent(log_in, db):
    admin = await log_in("admin@acme.example", "Acme")
    state = await _start(admin)
    response = await admin.get(
        CALLBACK, params={"error": "access_denied", "state": state}, headers=AS_API_CLIENT
    )
    assert response.status == 400
    assert (await response.json())["code"] == "oauth_access_denied"
    assert db.execute("SELECT consumed_at FROM core.oauth_states").fetchone()["consumed_at"]


class _NoRefreshTokenGmail(FakeGmail):
    """Google's answer when consent was not given afresh: an access token only."""

    def handle_token(self, form, basic_auth):
        response = super().handle_token(form, basic_auth)
        response.body.pop("refresh_token", None)
        return response


async def test_a_grant_without_refresh_token_is_422(api_factory, client_factory, db):
    control = _NoRefreshTokenGmail()
    async with fake_gmail_server(control) as gmail:
        server = await _serve(api_factory, gmail)
        admin = await dev_login(await client_factory(server), "admin@acme.example", "Acme")
        response = await _connect(admin, gmail)
        assert response.status == 422
        assert (await response.json())["code"] == "refresh_token_missing"
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 0
    assert db.execute("SELECT consumed_at FROM core.oauth_states").fetchone()["consumed_at"]


async def test_start_without_an_oauth_client_is_503(api_factory, client_factory, db):
    server = await api_factory(google_client_id=None, google_client_secret=None)
    admin = await dev_login(await client_factory(server), "admin@acme.example", "Acme")
    response = await admin.post(START)
    assert response.status == 503
    assert (await response.json())["code"] == "google_oauth_not_configured"
    assert db.execute("SELECT count(*) AS n FROM core.oauth_states").fetchone()["n"] == 0


async def test_a_browser_is_sent_to_the_web_clients_connected_page(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    state = await _start(admin)
    code = gmail.control.issue_authorization_code(JOURNAL)
    browser = {"Accept": "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8"}
    response = await admin.get(
        CALLBACK, params={"code": code, "state": state}, headers=browser, allow_redirects=False
    )
    assert response.status == 303
    [mailbox_id] = [str(r["id"]) for r in db.execute("SELECT id FROM core.mailboxes")]
    assert response.headers["Location"] == (
        f"http://localhost:3000/mailboxes/connected?mailbox_id={mailbox_id}"
    )
    # The state is spent: the browser lands on the client's page with the error instead.
    again = await admin.get(
        CALLBACK, params={"code": code, "state": state}, headers=browser, allow_redirects=False
    )
    assert again.status == 303
    location = urlsplit(again.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        "http://localhost:3000/mailboxes/connected"
    )
    query = {k: v for k, [v] in parse_qs(location.query).items()}
    assert query["error"] == "oauth_state_used" and query["detail"]
    assert "mailbox_id" not in query


async def test_an_api_client_without_an_accept_header_gets_json(log_in):
    admin = await log_in("admin@acme.example", "Acme")
    response = await admin.get(CALLBACK, params={"state": "unknown"}, allow_redirects=False)
    assert response.status == 400
    assert (await response.json())["code"] == "invalid_oauth_state"


async def test_the_callback_redirects_to_the_configured_frontend_url(
    api_factory, gmail, client_factory
):
    server = await _serve(api_factory, gmail, frontend_url="https://help.acme.example/app")
    admin = await dev_login(await client_factory(server), "admin@acme.example", "Acme")
    response = await admin.get(
        CALLBACK,
        params={"state": "unknown"},
        headers={"Accept": "text/html"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"].startswith(
        "https://help.acme.example/app/mailboxes/connected?error=invalid_oauth_state&detail="
    )


# ---------------------------------------------------------------- roles and tenancy

MAILBOX_ROUTES = [
    ("GET", "/mailboxes/{id}/connectivity"),
    ("POST", "/mailboxes/{id}/sync/backfill"),
    ("POST", "/mailboxes/{id}/sync/history"),
    ("GET", "/mailboxes/{id}/sync/status"),
    ("POST", "/mailboxes/{id}/sync/pause"),
    ("POST", "/mailboxes/{id}/sync/resume"),
]
ADMIN_ROUTES = [
    ("GET", "/mailboxes"),
    ("POST", START),
    ("GET", CALLBACK + "?code=x&state=y"),
    *MAILBOX_ROUTES,
]


async def _call(user: ApiUser, method: str, path: str):
    if method == "GET":
        return await user.get(path, headers=AS_API_CLIENT)
    return await user.post(path)


@pytest.mark.parametrize("role", ["viewer", "agent"])
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_viewers_and_agents_are_forbidden(log_in, db, role, method, path):
    founder = await log_in("founder@acme.example", "Acme")
    mailbox_id = seed.mailbox(db, seed.org_id(founder), JOURNAL, history_id=10)
    user = await log_in(f"{role}@acme.example", "Acme", role=role)
    before = _mailbox_row(db, mailbox_id)

    response = await _call(user, method, path.format(id=mailbox_id))
    assert response.status == 403
    body = await response.json()
    assert body["code"] == "forbidden"
    assert "admin" in body["detail"]
    assert _mailbox_row(db, mailbox_id) == before
    assert _jobs(db) == []
    assert db.execute("SELECT count(*) AS n FROM core.oauth_states").fetchone()["n"] == 0


@pytest.mark.parametrize(("method", "path"), MAILBOX_ROUTES)
async def test_another_organisations_mailbox_is_not_found(log_in, db, method, path):
    acme = await log_in("admin@acme.example", "Acme")
    globex = await log_in("admin@globex.example", "Globex")
    mailbox_id = seed.mailbox(db, seed.org_id(acme), JOURNAL, history_id=10)
    before = _mailbox_row(db, mailbox_id)

    response = await _call(globex, method, path.format(id=mailbox_id))
    assert response.status == 404
    assert (await response.json())["code"] == "mailbox_not_found"
    assert _mailbox_row(db, mailbox_id) == before
    assert _jobs(db) == []
    assert (await (await globex.get("/mailboxes")).json()) == []


@pytest.mark.parametrize(("method", "path"), MAILBOX_ROUTES)
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", str(uuid.uuid4())])
async def test_malformed_or_unknown_ids_are_not_found(log_in, method, path, bad_id):
    admin = await log_in("admin@acme.example", "Acme")
    response = await _call(admin, method, path.format(id=bad_id))
    assert response.status == 404
    assert (await response.json())["code"] == "mailbox_not_found"


# ---------------------------------------------------------------- connectivity


async def test_connectivity_ok_reports_the_profile_and_moves_nothing(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox = await (await _connect(admin, gmail)).json()
    for n in range(3):
        gmail.control.add_message(JOURNAL, f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())
    db.execute("UPDATE core.mailboxes SET history_id = 999 WHERE id = %s", [mailbox["id"]])
    before = _mailbox_row(db, mailbox["id"])

    response = await admin.get(f"/mailboxes/{mailbox['id']}/connectivity")
    assert response.status == 200
    assert await response.json() == {
        "status": "connected",
        "profile_email": JOURNAL,
        "scopes": [READONLY],
        "error": None,
        "code": None,
        "history_id": str(gmail.control.mailbox(JOURNAL).history_id),
        "messages_total": 3,
        "gmail_status": None,
    }
    assert _mailbox_row(db, mailbox["id"]) == before  # cursor and sync state untouched


async def test_connectivity_with_a_revoked_grant_says_needs_reconnect(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox = await (await _connect(admin, gmail)).json()
    refresh_token = decrypt_token(
        ENCRYPTION_KEY,
        bytes(_mailbox_row(db, mailbox["id"])["encrypted_refresh_token"]),
        organization_id=seed.org_id(admin),
        mailbox_id=mailbox["id"],
    )
    gmail.control.revoke_refresh_token(refresh_token)
    before = _mailbox_row(db, mailbox["id"])

    response = await admin.get(f"/mailboxes/{mailbox['id']}/connectivity")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "degraded" and body["scopes"] == [READONLY]
    assert body["code"] == "needs_reconnect"
    assert body["error"]
    assert _mailbox_row(db, mailbox["id"]) == before  # a check reports; it changes nothing


async def test_connectivity_without_a_stored_grant(log_in, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(db, seed.org_id(admin), JOURNAL)
    body = await (await admin.get(f"/mailboxes/{mailbox_id}/connectivity")).json()
    assert body["status"] == "degraded" and body["profile_email"] is None
    assert body["code"] == "not_connected" and body["error"]


async def test_connectivity_with_a_token_bound_to_another_mailbox(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox = await (await _connect(admin, gmail)).json()
    copied = _mailbox_row(db, mailbox["id"])["encrypted_refresh_token"]
    other_id = seed.mailbox(
        db, seed.org_id(admin), "other@acme.example", encrypted_refresh_token=copied
    )
    body = await (await admin.get(f"/mailboxes/{other_id}/connectivity")).json()
    assert body["status"] == "degraded"
    assert body["code"] == "token_unreadable"


# ---------------------------------------------------------------- sync administration


async def test_backfill_is_queued_once_while_one_waits(log_in, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(
        db, seed.org_id(admin), JOURNAL, history_id=700, backfill_state="done", backfill_pages=9
    )

    first = await admin.post(f"/mailboxes/{mailbox_id}/sync/backfill")
    assert first.status == 202
    body = await first.json()
    assert body["queued"] is True
    assert isinstance(body["job_id"], int)
    assert body["task"] == "mailbox_backfill"
    row = _mailbox_row(db, mailbox_id)
    assert (row["backfill_state"], row["backfill_pages"]) == ("running", 0)
    assert row["history_id"] == 700  # the cursor is the sync steps' business

    second = await admin.post(f"/mailboxes/{mailbox_id}/sync/backfill")
    assert second.status == 202
    assert (await second.json())["queued"] is False
    jobs = _jobs(db, "mailbox_backfill")
    assert [(j["args"], j["status"]) for j in jobs] == [({"mailbox_id": mailbox_id}, "todo")]

    db.execute("UPDATE procrastinate_jobs SET status = 'doing'")
    running = await admin.post(f"/mailboxes/{mailbox_id}/sync/backfill")
    assert running.status == 409
    assert (await running.json())["code"] == "backfill_running"

    audited = db.execute(
        "SELECT details FROM core.audit_events WHERE action = 'mailbox.sync_backfill' ORDER BY id"
    ).fetchall()
    assert [a["details"]["queued"] for a in audited] == [True, False]


async def test_history_sync_needs_a_cursor_and_is_queued_once(log_in, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(db, seed.org_id(admin), JOURNAL)

    early = await admin.post(f"/mailboxes/{mailbox_id}/sync/history")
    assert early.status == 409
    assert (await early.json())["code"] == "history_cursor_missing"

    db.execute("UPDATE core.mailboxes SET history_id = 42 WHERE id = %s", [mailbox_id])
    first = await admin.post(f"/mailboxes/{mailbox_id}/sync/history")
    assert first.status == 202
    assert (await first.json())["queued"] is True
    second = await admin.post(f"/mailboxes/{mailbox_id}/sync/history")
    assert second.status == 202
    assert (await second.json())["queued"] is False
    assert [(j["task_name"], j["args"], j["status"]) for j in _jobs(db)] == [
        ("mailbox_history_sync", {"mailbox_id": mailbox_id}, "todo")
    ]
    assert _mailbox_row(db, mailbox_id)["history_id"] == 42


@pytest.mark.parametrize("minutes", ["0", "10081", "-1", "abc", "1.5", "", "99999999999"])
async def test_pause_minutes_outside_1_to_10080_are_422(log_in, db, minutes):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(db, seed.org_id(admin), JOURNAL)
    response = await admin.post(f"/mailboxes/{mailbox_id}/sync/pause?minutes={minutes}")
    assert response.status == 422
    assert (await response.json())["code"] == "invalid_minutes"
    assert _mailbox_row(db, mailbox_id)["ingestion_paused_until"] is None


@pytest.mark.parametrize(
    ("query", "minutes"), [("?minutes=1", 1), ("?minutes=10080", 10080), ("", 30)]
)
async def test_pause_sets_until_and_reason(log_in, db, query, minutes):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(db, seed.org_id(admin), JOURNAL)
    response = await admin.post(f"/mailboxes/{mailbox_id}/sync/pause{query}")
    assert response.status == 200
    mailbox = (await response.json())["mailbox"]
    assert mailbox["pause_reason"] == "paused by admin@acme.example"
    assert mailbox["blocked_reason"] == "paused"
    remaining = db.execute(
        "SELECT extract(epoch FROM ingestion_paused_until - now()) AS s FROM core.mailboxes"
    ).fetchone()["s"]
    assert minutes * 60 - 5 <= remaining <= minutes * 60
    event = db.execute(
        "SELECT details FROM core.audit_events WHERE action = 'mailbox.pause'"
    ).fetchone()
    assert event["details"]["minutes"] == minutes


async def test_resume_clears_the_pause_and_queues_a_history_sync(log_in, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(db, seed.org_id(admin), JOURNAL, history_id=77, backfill_state="done")
    await admin.post(f"/mailboxes/{mailbox_id}/sync/pause?minutes=60")
    db.execute("UPDATE core.mailboxes SET consecutive_failures = 3")

    response = await admin.post(f"/mailboxes/{mailbox_id}/sync/resume")
    assert response.status == 200
    body = await response.json()
    assert body["mailbox"]["paused_until"] is None
    assert body["mailbox"]["pause_reason"] is None
    assert body["mailbox"]["blocked_reason"] is None
    assert body["queued"]["task"] == "mailbox_history_sync"
    assert body["queued"]["queued"] is True
    row = _mailbox_row(db, mailbox_id)
    assert (row["ingestion_paused_until"], row["pause_reason"], row["consecutive_failures"]) == (
        None,
        None,
        0,
    )
    assert [(j["task_name"], j["args"]) for j in _jobs(db)] == [
        ("mailbox_history_sync", {"mailbox_id": mailbox_id})
    ]
    event = db.execute(
        "SELECT details FROM core.audit_events WHERE action = 'mailbox.resume'"
    ).fetchone()
    assert event["details"]["consecutive_failures"] == 3
    assert event["details"]["pause_reason"] == "paused by admin@acme.example"


async def test_resume_without_a_cursor_queues_a_backfill(log_in, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(
        db,
        seed.org_id(admin),
        JOURNAL,
        ingestion_paused_until="infinity",
        pause_reason="circuit breaker: 5 consecutive sync failures",
    )
    body = await (await admin.post(f"/mailboxes/{mailbox_id}/sync/resume")).json()
    assert body["queued"]["task"] == "mailbox_backfill"
    assert [(j["task_name"], j["args"]) for j in _jobs(db)] == [
        ("mailbox_backfill", {"mailbox_id": mailbox_id})
    ]
    assert _mailbox_row(db, mailbox_id)["ingestion_paused_until"] is None


def _seed_occurrence(db, org_id, mailbox_id, n: int, state: str, age: str) -> None:
    db.execute(
        "INSERT INTO core.message_occurrences "
        "(organization_id, mailbox_id, gmail_message_id, state, internal_date) "
        "VALUES (%s, %s, %s, %s, now() - %s::interval)",
        [org_id, mailbox_id, f"m{n}", state, age],
    )


async def test_status_reports_cursor_lag_pause_and_jobs(log_in, db):
    admin = await log_in("admin@acme.example", "Acme")
    org_id = seed.org_id(admin)
    mailbox_id = seed.mailbox(
        db,
        org_id,
        JOURNAL,
        history_id=123456789012,
        backfill_state="done",
        backfill_pages=4,
        last_history_sync_at="now",
        consecutive_failures=2,
        last_error="HTTP 503 from Gmail",
    )
    db.execute(
        "UPDATE core.mailboxes SET last_history_sync_at = now() - interval '120 seconds', "
        "last_error_at = now()"
    )
    _seed_occurrence(db, org_id, mailbox_id, 1, "routed", "10 hours")
    _seed_occurrence(db, org_id, mailbox_id, 2, "parsed", "2 hours")
    _seed_occurrence(db, org_id, mailbox_id, 3, "discovered", "1 hour")
    _seed_occurrence(db, org_id, mailbox_id, 4, "routed", "1 minute")
    await admin.post(f"/mailboxes/{mailbox_id}/sync/history")

    response = await admin.get(f"/mailboxes/{mailbox_id}/sync/status")
    assert response.status == 200
    status = await response.json()
    assert status["mailbox_id"] == mailbox_id
    assert status["cursor"] == "123456789012"
    assert status["backfill"]["state"] == "done"
    assert status["backfill"]["pages"] == 4
    assert status["consecutive_failures"] == 2
    assert status["last_error"] == "HTTP 503 from Gmail"
    assert status["last_error_at"] is not None
    assert status["paused_until"] is None
    assert status["pause_reason"] is None
    assert status["blocked_reason"] is None
    assert 3600 <= status["lag_seconds"] <= 3605  # the newest message not yet routed
    assert 120 <= status["seconds_since_history_sync"] <= 125
    assert status["last_history_sync_at"] is not None
    assert status["jobs"] == {"mailbox_history_sync": {"queued": 1, "running": 0}}

    db.execute("UPDATE core.message_occurrences SET state = 'routed'")
    caught_up = await (await admin.get(f"/mailboxes/{mailbox_id}/sync/status")).json()
    assert caught_up["lag_seconds"] == 0


async def test_status_of_a_fresh_mailbox(log_in, db):
    admin = await log_in("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(db, seed.org_id(admin), JOURNAL, state="needs_reconnect")
    status = await (await admin.get(f"/mailboxes/{mailbox_id}/sync/status")).json()
    assert status["cursor"] is None
    assert status["lag_seconds"] == 0
    assert status["seconds_since_history_sync"] is None
    assert status["jobs"] == {}
    assert status["blocked_reason"] == "needs_reconnect"


# ---------------------------------------------------------------- operator registration


def test_register_creates_the_mailbox_and_queues_a_backfill(db, db_url):
    org_id = db.execute("INSERT INTO core.organizations (name) VALUES ('Acme') RETURNING id")
    org_id = str(org_id.fetchone()["id"])
    settings = Settings(secret_key="cli-secret-" + "x" * 30)

    result = register_gmail_mailbox(
        settings, db_url, organization="acme", email="Journal@Acme.example", refresh_token="1//t\n"
    )
    assert result["created"] is True
    assert result["email"] == JOURNAL
    assert result["organization_id"] == org_id
    row = _mailbox_row(db, result["mailbox_id"])
    assert row["provider"] == "gmail"
    assert row["granted_scopes"] == [READONLY]
    assert (
        decrypt_token(
            token_key(settings),
            bytes(row["encrypted_refresh_token"]),
            organization_id=org_id,
            mailbox_id=result["mailbox_id"],
        )
        == "1//t"
    )
    assert [(j["task_name"], j["args"], j["status"]) for j in _jobs(db)] == [
        ("mailbox_backfill", {"mailbox_id": result["mailbox_id"]}, "todo")
    ]
    assert result["backfill_job_id"] is not None

    # Registering again replaces the token of the same mailbox.
    again = register_gmail_mailbox(
        settings, db_url, organization="Acme", email=JOURNAL, refresh_token="1//u", backfill=False
    )
    assert (again["created"], again["mailbox_id"], again["backfill_job_id"]) == (
        False,
        result["mailbox_id"],
        None,
    )
    row = _mailbox_row(db, result["mailbox_id"])
    assert (
        decrypt_token(
            token_key(settings),
            bytes(row["encrypted_refresh_token"]),
            organization_id=org_id,
            mailbox_id=result["mailbox_id"],
        )
        == "1//u"
    )
    actions = [a["action"] for a in db.execute("SELECT action FROM core.audit_events ORDER BY id")]
    assert actions == ["mailbox.register", "mailbox.reregister"]


@pytest.mark.parametrize(
    ("organization", "email", "token", "message"),
    [
        ("Nowhere", JOURNAL, "1//t", "No organization"),
        ("Acme", "not-an-address", "1//t", "email must be"),
        ("Acme", JOURNAL, "  \n", "empty"),
    ],
)
def test_register_refuses_bad_input(db, db_url, organization, email, token, message):
    db.execute("INSERT INTO core.organizations (name) VALUES ('Acme')")
    with pytest.raises(RegistrationError, match=message):
        register_gmail_mailbox(
            Settings(), db_url, organization=organization, email=email, refresh_token=token
        )
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 0
    assert _jobs(db) == []


def test_register_command_line(db, db_url, tmp_path):
    db.execute("INSERT INTO core.organizations (name) VALUES ('Acme')")
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "APP_ENV"}}
    env.update(DATABASE_URL=db_url, SECRET_KEY="cli-secret-" + "y" * 30, JOURNAL_TOKEN="1//env")
    base = [sys.executable, "-m", "cli.main", "mailbox-register", "--organization", "Acme"]

    done = subprocess.run(
        [*base, "--email", JOURNAL, "--refresh-token-env", "JOURNAL_TOKEN", "--no-backfill"],
        env=env, capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert JOURNAL in done.stdout
    assert "1//env" not in done.stdout
    assert _jobs(db) == []

    token_file = tmp_path / "token"
    token_file.write_text("1//file\n")
    done = subprocess.run(
        [*base, "--email", "second@acme.example", "--refresh-token-file", str(token_file)],
        env=env, capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [j["task_name"] for j in _jobs(db)] == ["mailbox_backfill"]

    missing = subprocess.run(
        [*base.copy()[:-1], "Nowhere", "--email", JOURNAL, "--refresh-token-env", "JOURNAL_TOKEN"],
        env=env, capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "No organization" in missing.stderr
    assert db.execute("SELECT count(*) AS n FROM core.mailboxes").fetchone()["n"] == 2


async def test_a_sender_mailbox_asks_for_gmail_send_and_is_never_synced(log_in, gmail, db):
    admin = await log_in("admin@acme.example", "Acme")
    refused = await admin.post(START + "?purpose=everything")
    assert (refused.status, (await refused.json())["code"]) == (422, "invalid_purpose")
    response = await admin.post(START + "?purpose=sender")
    body = await response.json()
    scope = parse_qs(urlsplit(body["authorization_url"]).query)["scope"][0].split()
    assert scope == [READONLY, "https://www.googleapis.com/auth/gmail.send"]
    assert db.execute("SELECT purpose FROM core.oauth_states").fetchone()["purpose"] == (
        "gmail_sender"
    )
    gmail.control.add_mailbox("support@acme.example")
    code = gmail.control.issue_authorization_code("support@acme.example")
    connected = await admin.get(CALLBACK, params={"code": code, "state": body["state"]})
    assert connected.status == 201, await connected.text()
    row = db.execute("SELECT purpose FROM core.mailboxes").fetchone()
    assert row["purpose"] == "sender"
    assert _jobs(db) == []  # no backfill, no watch
    blocked = db.execute(
        "SELECT logic.sync_blocked_reason(m) AS reason FROM core.mailboxes m"
    ).fetchone()
    assert blocked["reason"] == "sender"
