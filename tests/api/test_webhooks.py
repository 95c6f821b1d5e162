"""POST /webhooks/gmail/pubsub: Gmail push notifications through Cloud Pub/Sub (issue 18).

Every push is authenticated (the shared secret, or Pub/Sub's OIDC token signed by a fake
Google issuer with its own key); an accepted one only queues a history sync."""

from __future__ import annotations

import base64
import json
import time

import pytest
from aiohttp.test_utils import TestClient

from devtools.fake_pubsub import (
    PUSH_SERVICE_ACCOUNT,
    FakeGoogleIssuer,
    envelope_for,
    serve_issuer_certs,
)
from tests.fixtures import seed

PATH = "/webhooks/gmail/pubsub"
SECRET = "push-secret-0123456789"
AUDIENCE = "https://helpdesk.acme.example/webhooks/gmail/pubsub"
JOURNAL = "journal@acme.example"


def mailbox(db, history_id: int | None = 1000, email: str = JOURNAL, **columns) -> str:
    """A mailbox of organisation Acme at `history_id`."""
    return seed.mailbox(db, seed.organization(db), email, history_id=history_id, **columns)


def sync_jobs(db, status: str = "todo") -> list[dict]:
    return db.execute(
        "SELECT id, args->>'mailbox_id' AS mailbox_id FROM procrastinate_jobs "
        "WHERE task_name = 'mailbox_history_sync' AND status = %s",
        [status],
    ).fetchall()


@pytest.fixture
async def pushed(api_factory):
    """A client of an API that accepts pushes with the shared secret."""
    server = await api_factory(gmail_push_token=SECRET, enable_prometheus_metrics=True)
    client = TestClient(server)
    await client.start_server()
    yield client
    await client.session.close()


async def push(client, email=JOURNAL, history_id=2000, token=SECRET, **kwargs):
    params = {"token": token} if token is not None else {}
    return await client.post(
        PATH, json=kwargs.pop("body", envelope_for(email, history_id)), params=params, **kwargs
    )


async def test_a_push_queues_one_history_sync_and_a_storm_still_one(pushed, db):
    mailbox_id = mailbox(db)
    response = await push(pushed)
    assert response.status == 204
    assert [job["mailbox_id"] for job in sync_jobs(db)] == [mailbox_id]
    for history_id in range(2001, 2021):
        assert (await push(pushed, history_id=history_id)).status == 204
    assert len(sync_jobs(db)) == 1
    row = db.execute(
        "SELECT last_push_at, last_push_history_id FROM core.mailboxes WHERE id = %s",
        [mailbox_id],
    ).fetchone()
    assert row["last_push_at"] is not None and row["last_push_history_id"] == 2020


async def test_a_push_during_a_running_sync_queues_exactly_one_more(pushed, db):
    mailbox(db)
    await push(pushed)
    db.execute(
        "UPDATE procrastinate_jobs SET status = 'doing' WHERE task_name = 'mailbox_history_sync'"
    )
    await push(pushed, history_id=2001)
    await push(pushed, history_id=2002)
    assert len(sync_jobs(db, "doing")) == 1
    assert len(sync_jobs(db, "todo")) == 1


async def test_a_push_for_what_is_already_synced_or_blocked_queues_nothing(pushed, db):
    mailbox(db, history_id=5000)
    mailbox(db, email="paused@acme.example", ingestion_paused_until="infinity")
    assert (await push(pushed, history_id=4000)).status == 204
    assert (await push(pushed, email="paused@acme.example")).status == 204
    assert sync_jobs(db) == []


async def test_an_unknown_mailbox_is_acknowledged_and_counted(pushed, db):
    response = await push(pushed, email="nobody@elsewhere.example")
    assert response.status == 204
    assert sync_jobs(db) == []
    metrics = await (await pushed.get("/metrics")).text()
    assert 'ticketing_gmail_pushes_total{outcome="unknown_mailbox"} 1.0' in metrics


@pytest.mark.parametrize("token", [None, "", "wrong", SECRET + "x"])
async def test_a_push_without_the_secret_is_refused_and_changes_nothing(pushed, db, token):
    mailbox(db)
    response = await push(pushed, token=token)
    assert response.status == 401
    assert (await response.json())["code"] == "push_unauthenticated"
    assert sync_jobs(db) == []
    assert db.execute("SELECT last_push_at FROM core.mailboxes").fetchone()["last_push_at"] is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("not json", 400),
        ({"message": {}}, 400),
        ({"message": {"data": "%%% not base64"}}, 400),
        ({"message": {"data": base64.b64encode(b"[1, 2]").decode()}}, 400),
        ({"message": {"data": base64.b64encode(b'{"emailAddress": "x"}').decode()}}, 400),
        (
            {
                "message": {
                    "data": base64.b64encode(
                        json.dumps({"emailAddress": "no-at-sign", "historyId": "5"}).encode()
                    ).decode()
                }
            },
            422,
        ),
        (envelope_for(JOURNAL, 0), 422),
    ],
)
async def test_a_malformed_push_is_refused(pushed, db, body, status):
    mailbox(db)
    if isinstance(body, str):
        response = await pushed.post(
            PATH, data=body, params={"token": SECRET}, headers={"Content-Type": "application/json"}
        )
    else:
        response = await push(pushed, body=body)
    assert response.status == status
    assert (await response.json())["code"] == "invalid_push"
    assert sync_jobs(db) == []


async def test_push_is_off_without_configuration(api_server, client_factory, db):
    client = await client_factory(api_server)
    mailbox(db)
    response = await push(client)
    assert response.status == 404
    assert sync_jobs(db) == []


@pytest.fixture
async def oidc(api_factory):
    """An API verifying Pub/Sub's OIDC tokens against a fake Google issuer's certificates."""
    issuer = FakeGoogleIssuer()
    async with serve_issuer_certs(issuer) as certs_url:
        server = await api_factory(
            gmail_push_audience=AUDIENCE,
            gmail_push_service_account=PUSH_SERVICE_ACCOUNT,
            gmail_push_certs_url=certs_url,
            gmail_push_token=SECRET,  # ignored once OIDC is configured
        )
        client = TestClient(server)
        await client.start_server()
        yield client, issuer
        await client.session.close()


async def test_a_push_with_pubsubs_oidc_token_is_accepted(oidc, db):
    client, issuer = oidc
    mailbox(db)
    response = await push(
        client, token=None, headers={"Authorization": "Bearer " + issuer.token(AUDIENCE)}
    )
    assert response.status == 204
    assert len(sync_jobs(db)) == 1


@pytest.mark.parametrize(
    "make_token",
    [
        lambda issuer: issuer.token("https://other.example/hook"),
        lambda issuer: issuer.token(AUDIENCE, issued_at=time.time() - 7200),
        lambda issuer: issuer.token(AUDIENCE, email="someone@else.iam.gserviceaccount.com"),
        lambda issuer: issuer.token(AUDIENCE, email_verified=False),
        lambda issuer: issuer.token(AUDIENCE, issuer="https://evil.example"),
        lambda issuer: FakeGoogleIssuer(key_id=issuer.key_id).token(AUDIENCE),  # other key
        lambda issuer: issuer.token(AUDIENCE)[:-4] + "AAAA",  # signature tampered
        lambda issuer: "not-a-jwt",
    ],
    ids=[
        "wrong audience",
        "expired",
        "other service account",
        "unverified e-mail",
        "other issuer",
        "signed by another key",
        "tampered",
        "garbage",
    ],
)
async def test_a_push_with_a_bad_oidc_token_is_refused(oidc, db, make_token):
    client, issuer = oidc
    mailbox(db)
    # The shared secret is no substitute once OIDC is configured.
    response = await push(client, headers={"Authorization": "Bearer " + make_token(issuer)})
    assert response.status == 401
    assert (await response.json())["code"] == "push_unauthenticated"
    assert sync_jobs(db) == []


async def test_pushes_need_no_csrf_token_and_are_not_rate_limited(api_factory, db):
    server = await api_factory(gmail_push_token=SECRET, rate_limit_requests_per_minute=5)
    client = TestClient(server)
    await client.start_server()
    try:
        mailbox(db)
        statuses = [(await push(client, history_id=2000 + n)).status for n in range(20)]
        assert statuses == [204] * 20
    finally:
        await client.session.close()
