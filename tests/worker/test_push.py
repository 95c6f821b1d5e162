"""Gmail push end to end (issue 18): the real Gmail client library watches the mailbox on
the fake Gmail server, which publishes changes to a fake Pub/Sub push subscription, which
posts them to the real API, which queues the sync a worker runs."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient

from devtools.fake_pubsub import FakePushSubscription
from tests.worker.test_sync_walks import question

JOURNAL = "journal@example.com"
TOPIC = "projects/acme-helpdesk/topics/gmail"
SECRET = "push-secret-0123456789"


def watch_row(db, mailbox_id: str) -> dict:
    return db.execute(
        "SELECT watch_topic, watch_expires_at, watch_renewed_at, watch_error, last_push_at, "
        "logic.mailbox_watch_state(m) AS state FROM core.mailboxes m WHERE id = %s",
        [mailbox_id],
    ).fetchone()


@pytest.fixture
def push_on(ingest):
    """Workers configured with a Pub/Sub topic the fake Gmail may publish to."""
    ingest.settings = ingest.settings.with_overrides(gmail_pubsub_topic=TOPIC)
    ingest.runtime.settings = ingest.settings
    return ingest


async def test_registration_watches_the_mailbox_until_its_expiry(push_on, db):
    ingest = push_on
    received: list[tuple[str, int]] = []
    ingest.gmail.create_topic(TOPIC, lambda email, history_id: received.append((email, history_id)))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)  # queues mailbox_watch
    await ingest.run_worker()

    row = watch_row(db, mailbox_id)
    assert row["watch_topic"] == TOPIC and row["watch_error"] is None
    days = (row["watch_expires_at"] - row["watch_renewed_at"]).total_seconds() / 86400
    assert 6.9 < days <= 7.0
    assert row["state"]["state"] == "active"
    assert ingest.gmail.mailbox(JOURNAL).watch_topic == TOPIC

    ingest.gmail.add_message(JOURNAL, question(1))
    assert received and received[-1] == (JOURNAL, ingest.gmail.mailbox(JOURNAL).history_id)


async def test_watches_are_renewed_daily_and_stopped_when_push_is_turned_off(push_on, db):
    ingest = push_on
    ingest.gmail.create_topic(TOPIC, lambda *_: None)
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await ingest.run_worker()
    assert db.execute("SELECT worker.enqueue_due_watches(%s) AS n", [TOPIC]).fetchone()["n"] == 0

    db.execute(
        "UPDATE core.mailboxes SET watch_renewed_at = now() - interval '25 hours' WHERE id = %s",
        [mailbox_id],
    )
    assert db.execute("SELECT worker.enqueue_due_watches(%s) AS n", [TOPIC]).fetchone()["n"] == 1
    before = watch_row(db, mailbox_id)["watch_renewed_at"]
    await ingest.run_worker()
    assert watch_row(db, mailbox_id)["watch_renewed_at"] > before

    # GMAIL_PUBSUB_TOPIC unset: every watch is stopped, in Gmail too.
    ingest.runtime.settings = ingest.settings.with_overrides(gmail_pubsub_topic=None)
    assert db.execute("SELECT worker.enqueue_due_watches(NULL) AS n").fetchone()["n"] == 1
    await ingest.run_worker()
    row = watch_row(db, mailbox_id)
    assert row["watch_topic"] is None and row["state"]["state"] == "off"
    assert ingest.gmail.mailbox(JOURNAL).watch_topic is None


async def test_a_watch_gmail_refuses_is_recorded_and_polling_goes_on(push_on, db):
    ingest = push_on  # no such topic in the fake: Gmail may not publish to it
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await ingest.run_worker()
    row = watch_row(db, mailbox_id)
    assert row["watch_topic"] is None
    assert row["state"]["state"] == "failed"
    assert "User not authorized" in row["watch_error"]
    assert db.execute("SELECT count(*) AS n FROM ops.dlq").fetchone()["n"] == 0
    # The next hourly renewal tries again.
    assert db.execute("SELECT worker.enqueue_due_watches(%s) AS n", [TOPIC]).fetchone()["n"] == 1


async def test_new_mail_is_pushed_to_the_api_and_synced_without_polling(push_on, db, api_factory):
    ingest = push_on
    for n in range(3):
        ingest.gmail.add_message(JOURNAL, question(n))
    server = await api_factory(gmail_push_token=SECRET)
    subscription = FakePushSubscription(
        endpoint=str(server.make_url("/webhooks/gmail/pubsub")), shared_secret=SECRET
    ).start()
    client = TestClient(server)
    await client.start_server()
    try:
        ingest.gmail.create_topic(TOPIC, subscription.publish)
        mailbox_id = ingest.add_mailbox(db, JOURNAL)
        db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
        await ingest.run_worker()
        assert watch_row(db, mailbox_id)["state"]["state"] == "active"

        for n in range(3, 8):
            ingest.gmail.add_message(JOURNAL, question(n))
        # The push arrives (coalesced), and queues exactly one history sync.
        deadline = time.monotonic() + 10
        while not any(d.status == 204 for d in subscription.deliveries):
            assert time.monotonic() < deadline, subscription.deliveries
            await asyncio.sleep(0.05)
        await ingest.run_worker()
        routed = db.execute(
            "SELECT count(*) AS n FROM core.message_occurrences "
            "WHERE mailbox_id = %s AND state = 'routed'",
            [mailbox_id],
        ).fetchone()["n"]
        assert routed == 8
        assert watch_row(db, mailbox_id)["last_push_at"] is not None
    finally:
        subscription.close()
        await client.session.close()
