"""The ops overview views: readable by the owner (a DBA), right numbers on seeded data."""

from __future__ import annotations

import json

import psycopg
import pytest

from kernel.db import API_ROLE
from tests.fixtures import seed


def _job(db, task: str, mailbox_id: str, status: str = "todo") -> int:
    job_id = db.execute(
        "SELECT logic.enqueue(%s, %s::jsonb) AS id",
        [task, json.dumps({"mailbox_id": mailbox_id, "occurrence_ids": [1]})],
    ).fetchone()["id"]
    if status != "todo":
        db.execute("UPDATE procrastinate_jobs SET status = %s WHERE id = %s", [status, job_id])
    return job_id


def _failure(db, job_id: int, org_id: str | None, mailbox_id: str | None, hours_ago: float):
    db.execute(
        "INSERT INTO core.job_failures (job_id, task_name, attempt, error_class, "
        "organization_id, mailbox_id, failed_at) "
        "VALUES (%s, 'occurrence_parse', 1, 'Boom', %s, %s, now() - make_interval(mins => %s))",
        [job_id, org_id, mailbox_id, round(hours_ago * 60)],
    )


@pytest.fixture
def seeded(db) -> dict[str, str]:
    """Two organisations: Acme with two mailboxes, jobs, failures and occurrences; Globex
    with one quiet mailbox."""
    acme = seed.organization(db, "Acme")
    globex = seed.organization(db, "Globex")
    journal = seed.mailbox(db, acme, "journal@acme.example", history_id=77, last_error="boom")
    paused = seed.mailbox(
        db,
        acme,
        "paused@acme.example",
        ingestion_paused_until="2999-01-01T00:00:00Z",
        pause_reason="paused by admin@acme.example",
    )
    quiet = seed.mailbox(db, globex, "journal@globex.example")

    seed.occurrence(db, acme, journal, "g1", "parsed", 100)
    seed.occurrence(db, acme, journal, "g2", "routed", 5000)
    seed.occurrence(db, acme, journal, "g3", "failed", 9000)
    seed.occurrence(db, acme, paused, "g4", "discovered", 300)
    seed.occurrence(db, globex, quiet, "g5", "routed", 10)

    _job(db, "occurrence_parse", journal)
    _job(db, "occurrence_stitch", journal)
    _job(db, "occurrence_stitch", journal, status="doing")
    failed = _job(db, "occurrence_parse", journal, status="failed")
    _failure(db, failed, acme, journal, hours_ago=1)
    _failure(db, failed, acme, journal, hours_ago=0.5)
    old_failed = _job(db, "occurrence_fetch_raw", journal, status="failed")
    _failure(db, old_failed, acme, journal, hours_ago=30)
    # Replayed already: counted as a failed job, no longer waiting in the DLQ.
    db.execute("SELECT ops.replay_job(%s)", [old_failed])
    return {"acme": acme, "globex": globex, "journal": journal, "paused": paused, "quiet": quiet}


def test_mailbox_sync_reports_every_mailbox_of_every_organisation(db, seeded):
    rows = {
        str(row["mailbox_id"]): row
        for row in db.execute("SELECT * FROM ops.mailbox_sync").fetchall()
    }
    assert set(rows) == {seeded["journal"], seeded["paused"], seeded["quiet"]}

    journal = rows[seeded["journal"]]
    assert str(journal["organization_id"]) == seeded["acme"]
    assert journal["email"] == "journal@acme.example"
    assert journal["history_id"] == 77
    assert journal["last_error"] == "boom"
    assert journal["blocked_reason"] is None
    # The newest occurrence on its way (routed and failed ones do not count) is 100 s old.
    assert 100 <= journal["lag_seconds"] < 160
    # Queued/running of this mailbox; the replay of the old failure is queued too.
    assert journal["jobs"] == {
        "occurrence_parse": {"queued": 1, "running": 0},
        "occurrence_stitch": {"queued": 1, "running": 1},
        "occurrence_fetch_raw": {"queued": 1, "running": 0},
    }
    assert journal["failures_24h"] == 2  # the 30-hour-old failure is out of the window

    paused = rows[seeded["paused"]]
    assert paused["blocked_reason"] == "paused"
    assert paused["pause_reason"] == "paused by admin@acme.example"
    assert paused["failures_24h"] == 0
    assert paused["jobs"] == {}
    assert 300 <= paused["lag_seconds"] < 360


def test_collisions_count_members_and_show_at_most_five_samples(db, seeded):
    group = db.execute(
        "INSERT INTO core.collision_groups (organization_id, loose_fingerprint, message_count) "
        "VALUES (%s, 'fp-1', 6) RETURNING id",
        [seeded["acme"]],
    ).fetchone()["id"]
    for n in range(6):
        db.execute(
            "INSERT INTO core.messages (organization_id, strict_signature, loose_fingerprint, "
            "collision_group_id, subject, from_address, sent_at) "
            "VALUES (%s, %s, 'fp-1', %s, %s, 'sender@example.com', "
            "'2024-01-01'::timestamptz + make_interval(hours => %s))",
            [seeded["acme"], f"sig-{n}", group, f"Invoice {n}", n],
        )
    # Same fingerprint, not in the group: never a sample.
    db.execute(
        "INSERT INTO core.messages (organization_id, strict_signature, loose_fingerprint) "
        "VALUES (%s, 'sig-loner', 'fp-1')",
        [seeded["acme"]],
    )

    rows = db.execute("SELECT * FROM ops.collisions").fetchall()
    assert len(rows) == 1
    row = rows[0]
    assert (row["collision_group_id"], str(row["organization_id"])) == (group, seeded["acme"])
    assert (row["loose_fingerprint"], row["message_count"]) == ("fp-1", 6)
    samples = row["sample_messages"]
    assert [s["subject"] for s in samples] == [f"Invoice {n}" for n in range(5)]
    assert set(samples[0]) == {"id", "subject", "from_address", "sent_at"}
    assert samples[0]["from_address"] == "sender@example.com"


def test_metrics_overview_counts_per_organisation(db, seeded):
    rows = {
        str(row["organization_id"]): row
        for row in db.execute("SELECT * FROM ops.metrics_overview").fetchall()
    }
    acme = rows[seeded["acme"]]
    # Queued: parse, stitch and the replay; running: one stitch; failed: both failed jobs.
    assert (acme["jobs_queued"], acme["jobs_running"], acme["jobs_failed"]) == (3, 1, 2)
    assert (acme["mailboxes"], acme["mailboxes_paused"]) == (2, 1)
    assert 200 <= acme["avg_lag_seconds"] < 260  # (100 + 300) / 2
    assert acme["occurrences_by_state"] == {"parsed": 1, "routed": 1, "failed": 1, "discovered": 1}
    assert acme["dlq_size"] == 1  # the other failed job was replayed

    globex = rows[seeded["globex"]]
    assert (globex["jobs_queued"], globex["jobs_running"], globex["jobs_failed"]) == (0, 0, 0)
    assert (globex["mailboxes"], globex["mailboxes_paused"]) == (1, 0)
    assert globex["avg_lag_seconds"] == 0
    assert globex["occurrences_by_state"] == {"routed": 1}
    assert globex["dlq_size"] == 0


@pytest.mark.parametrize("view", ["ops.mailbox_sync", "ops.collisions", "ops.metrics_overview"])
def test_the_api_role_cannot_read_the_ops_views_directly(db, view):
    db.execute(f"SET ROLE {API_ROLE}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(f"SELECT * FROM {view}")
