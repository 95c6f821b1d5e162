"""Ingestion end to end: the real Gmail client library against the fake Gmail server over
HTTP, real procrastinate workers, a real PostgreSQL and a real blob store."""

from __future__ import annotations

import asyncio
import csv
import hashlib
from pathlib import Path

import pytest

from devtools.fake_gmail import FaultRule
from tests.fixtures.ingest import CORPUS, kill_when, running_worker
from worker.mime import UnparseableMessage, parse_message

JOURNAL = "journal@example.com"


def corpus_files(limit: int | None = None) -> list[Path]:
    files = sorted((CORPUS / "messages").rglob("*.eml"))
    return files[:limit] if limit else files


def expected_signatures(files: list[Path]) -> tuple[set[str], int]:
    """Distinct strict signatures of the parseable files, and how many are unparseable."""
    signatures, unparseable = set(), 0
    for path in files:
        try:
            signatures.add(parse_message(path.read_bytes()).strict_signature)
        except UnparseableMessage:
            unparseable += 1
    return signatures, unparseable


def states(db, mailbox_id: str) -> dict[str, int]:
    rows = db.execute(
        "SELECT state::text, count(*) AS n FROM core.message_occurrences "
        "WHERE mailbox_id = %s GROUP BY 1",
        [mailbox_id],
    )
    return {row["state"]: row["n"] for row in rows}


def count(db, sql: str, params=None) -> int:
    return db.execute(sql, params).fetchone()["n"]


async def backfill(ingest, db, mailbox_id: str) -> None:
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    await ingest.run_worker()


async def test_backfill_of_the_whole_corpus(ingest, db):
    files = corpus_files()
    ingest.gmail.add_eml_files(JOURNAL, files)
    mailbox_id = ingest.add_mailbox(db, JOURNAL)

    await backfill(ingest, db, mailbox_id)

    signatures, unparseable = expected_signatures(files)
    # One occurrence per Gmail message; each either parsed or failed with a stated reason.
    assert states(db, mailbox_id) == {"routed": len(files) - unparseable, "failed": unparseable}
    failed = db.execute(
        "SELECT failed_stage, last_error FROM core.message_occurrences WHERE state = 'failed'"
    ).fetchall()
    assert all(
        f["failed_stage"] == "occurrence_parse" and f["last_error"].startswith("unparseable:")
        for f in failed
    )
    # One canonical message per logical email.
    assert count(db, "SELECT count(*) AS n FROM core.messages") == len(signatures)
    # Several listing pages (page size 100), none fetched twice; every message fetched once.
    pages = -(-len(files) // 100)
    mailbox = db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()
    assert mailbox["backfill_state"] == "done"
    assert mailbox["backfill_pages"] == pages
    assert ingest.gmail.counts["list"] == pages
    assert mailbox["history_id"] == mailbox["backfill_history_id"] is not None
    gmail_ids = [
        r["gmail_message_id"]
        for r in db.execute("SELECT gmail_message_id FROM core.message_occurrences")
    ]
    assert all(ingest.gmail.fetches_of(gmail_id) == 1 for gmail_id in gmail_ids)
    # No job failed: the pipeline, not the worker, absorbed the bad messages.
    assert count(db, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'failed'") == 0


async def test_raw_bytes_and_attachments_round_trip(ingest, db):
    with (CORPUS / "MANIFEST.tsv").open(newline="") as manifest:
        rows = csv.DictReader(manifest, delimiter="\t")
        files = [CORPUS / row["file"] for row in rows if row["has_attachments"] == "yes"][:25]
    assert len(files) == 25
    ingest.gmail.add_eml_files(JOURNAL, files)
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)

    blobs = ingest.runtime.blobs
    checked = 0
    for path in files:
        raw = path.read_bytes()
        occurrence = db.execute(
            "SELECT raw_blob_key, raw_sha256, message_id FROM core.message_occurrences "
            "WHERE raw_sha256 = %s",
            [hashlib.sha256(raw).hexdigest()],
        ).fetchone()
        assert blobs.get(occurrence["raw_blob_key"]) == raw
        stored = db.execute(
            "SELECT filename, sha256, size, blob_key FROM core.attachments "
            "WHERE message_id = %s ORDER BY position",
            [occurrence["message_id"]],
        ).fetchall()
        expected = parse_message(raw).attachments
        assert [(a["filename"], a["sha256"], a["size"]) for a in stored] == [
            (a.filename, a.sha256, a.size) for a in expected
        ]
        for attachment, row in zip(expected, stored, strict=True):
            assert blobs.get(row["blob_key"]) == attachment.payload
            checked += 1
    assert checked >= 25


async def test_backfill_again_adds_nothing_and_copies_add_no_canonical_messages(ingest, db):
    files = corpus_files(120)
    ingest.gmail.add_eml_files(JOURNAL, files)
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)
    occurrences = count(db, "SELECT count(*) AS n FROM core.message_occurrences")
    messages = count(db, "SELECT count(*) AS n FROM core.messages")

    await backfill(ingest, db, mailbox_id)
    assert count(db, "SELECT count(*) AS n FROM core.message_occurrences") == occurrences
    assert count(db, "SELECT count(*) AS n FROM core.messages") == messages

    # A second mailbox of the same organisation holding copies of the same mail.
    ingest.gmail.add_mailbox("support-archive@example.com")
    ingest.gmail.add_eml_files("support-archive@example.com", files[:50])
    second = ingest.add_mailbox(db, "support-archive@example.com")
    await backfill(ingest, db, second)
    assert sum(states(db, second).values()) == 50
    assert count(db, "SELECT count(*) AS n FROM core.messages") == messages
    shared = count(
        db,
        "SELECT count(DISTINCT message_id) AS n FROM core.message_occurrences o "
        "WHERE mailbox_id = %s AND EXISTS (SELECT 1 FROM core.message_occurrences p "
        "  WHERE p.message_id = o.message_id AND p.mailbox_id = %s)",
        [second, mailbox_id],
    )
    assert shared == count(
        db,
        "SELECT count(DISTINCT message_id) AS n FROM core.message_occurrences WHERE mailbox_id = %s",
        [second],
    )


async def test_history_sync_picks_up_new_mail_deletions_and_labels(ingest, db):
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(10))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)
    before = db.execute(
        "SELECT history_id FROM core.mailboxes WHERE id = %s", [mailbox_id]
    ).fetchone()

    new_ids = ingest.gmail.add_eml_files(JOURNAL, corpus_files(15)[10:])
    first = db.execute(
        "SELECT gmail_message_id FROM core.message_occurrences ORDER BY id LIMIT 1"
    ).fetchone()["gmail_message_id"]
    ingest.gmail.delete_message(JOURNAL, first)
    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])
    await ingest.run_worker()

    after = db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()
    assert after["history_id"] > before["history_id"]
    assert after["history_id"] == ingest.gmail.mailbox(JOURNAL).history_id
    assert after["last_history_sync_at"] is not None
    assert states(db, mailbox_id)["routed"] == 15
    assert (
        count(
            db,
            "SELECT count(*) AS n FROM core.message_occurrences WHERE gmail_message_id = ANY(%s)",
            [new_ids],
        )
        == 5
    )
    deleted = db.execute(
        "SELECT deleted_in_gmail_at FROM core.message_occurrences WHERE gmail_message_id = %s",
        [first],
    ).fetchone()
    assert deleted["deleted_in_gmail_at"] is not None


async def test_expired_history_id_leads_to_a_backfill(ingest, db):
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(8))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(12)[8:])
    ingest.gmail.expire_history(JOURNAL)

    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])
    await ingest.run_worker()

    mailbox = db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()
    assert mailbox["backfill_state"] == "done"
    assert mailbox["backfill_pages"] == 1  # the second backfill, after the 404
    assert states(db, mailbox_id) == {"routed": 12}


async def test_a_429_storm_is_ridden_out(ingest, db):
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(60))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    for endpoint in ("list", "batch", "profile"):
        ingest.gmail.inject(FaultRule(endpoint=endpoint, status=429, retry_after=0, times=2))
    ingest.gmail.inject(FaultRule(endpoint="batch_part", status=429, retry_after=0, times=10))

    await backfill(ingest, db, mailbox_id)

    assert states(db, mailbox_id) == {"routed": 60}
    assert count(db, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'failed'") == 0


async def test_paused_mailbox_does_not_sync(ingest, db):
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(5))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(9)[5:])
    db.execute(
        "UPDATE core.mailboxes SET ingestion_paused_until = now() + interval '30 minutes', "
        "pause_reason = 'test' WHERE id = %s",
        [mailbox_id],
    )
    cursor = db.execute(
        "SELECT history_id FROM core.mailboxes WHERE id = %s", [mailbox_id]
    ).fetchone()
    ingest.gmail.reset_counters()

    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])
    await ingest.run_worker()
    assert ingest.gmail.counts["history"] == 0
    assert sum(states(db, mailbox_id).values()) == 5
    assert (
        db.execute("SELECT history_id FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()
        == cursor
    )
    # The periodic sync skips it too.
    assert db.execute("SELECT logic.enqueue_due_syncs() AS n").fetchone()["n"] == 0

    # When the pause has expired, sync resumes by itself.
    db.execute(
        "UPDATE core.mailboxes SET ingestion_paused_until = now() - interval '1 second' "
        "WHERE id = %s",
        [mailbox_id],
    )
    assert db.execute("SELECT logic.enqueue_due_syncs() AS n").fetchone()["n"] == 1
    await ingest.run_worker()
    assert states(db, mailbox_id) == {"routed": 9}
    assert db.execute(
        "SELECT ingestion_paused_until, pause_reason FROM core.mailboxes WHERE id = %s",
        [mailbox_id],
    ).fetchone() == {"ingestion_paused_until": None, "pause_reason": None}


async def test_circuit_breaker_pauses_after_five_failed_syncs(ingest, db):
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(3))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)
    ingest.gmail.inject(FaultRule(endpoint="history", status=503, times=None))

    for attempt in range(1, 6):
        db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])
        await ingest.run_worker()
        mailbox = db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()
        if attempt < 5:
            assert mailbox["consecutive_failures"] == attempt
            assert mailbox["ingestion_paused_until"] is None
    assert mailbox["pause_reason"].startswith("circuit breaker: 5 consecutive sync failures")
    paused_for = mailbox["ingestion_paused_until"] - mailbox["last_error_at"]
    assert 14 * 60 < paused_for.total_seconds() <= 15 * 60
    assert "503" in mailbox["last_error"]


async def test_revoked_grant_marks_the_mailbox_needs_reconnect(ingest, db):
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(3))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    ingest.gmail.revoke_refresh_token(ingest.refresh_tokens[mailbox_id])
    ingest.gmail.expire_access_tokens()

    await backfill(ingest, db, mailbox_id)
    mailbox = db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()
    assert mailbox["state"] == "needs_reconnect"
    assert count(db, "SELECT count(*) AS n FROM core.message_occurrences") == 0
    # Periodic sync leaves it alone until an admin reconnects it.
    assert db.execute("SELECT logic.enqueue_due_syncs() AS n").fetchone()["n"] == 0


def _message(headers: str, body: str = "Hello") -> bytes:
    return (
        (headers.strip() + "\nSubject: help\nMessage-ID: <{}@example.com>\n\n{}\n")
        .format(hashlib.sha256(headers.encode()).hexdigest()[:16], body)
        .encode()
    )


RECIPIENT_TABLE = [
    # headers, original recipient, source, confidence
    (
        "X-Gm-Original-To: support@acme.example\nDelivered-To: journal@example.com\n"
        "To: someone@acme.example\nFrom: a@customer.example",
        "support@acme.example",
        "workspace_header",
        "high",
    ),
    (
        "Delivered-To: journal@example.com\nDelivered-To: billing@acme.example\n"
        "To: list@acme.example\nFrom: a@customer.example",
        "billing@acme.example",
        "delivered_to",
        "medium",
    ),
    (
        "X-Original-To: sales@acme.example\nTo: x@acme.example\nFrom: a@customer.example",
        "sales@acme.example",
        "x_original_to",
        "medium",
    ),
    (
        "To: help@acme.example\nCc: other@acme.example\nFrom: a@customer.example",
        "help@acme.example",
        "to_cc_scan",
        "low",
    ),
    ("From: a@customer.example", None, "unknown", "low"),
]


async def test_recipient_evidence_is_stored_on_occurrences(ingest, db):
    for headers, *_ in RECIPIENT_TABLE:
        ingest.gmail.add_message(JOURNAL, _message(headers))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)

    rows = db.execute(
        "SELECT o.original_recipient, o.recipient_source, o.recipient_confidence, "
        "o.recipient_evidence, m.rfc_message_id FROM core.message_occurrences o "
        "JOIN core.messages m ON m.id = o.message_id"
    ).fetchall()
    by_id = {row["rfc_message_id"]: row for row in rows}
    for headers, recipient, source, confidence in RECIPIENT_TABLE:
        message_id = parse_message(_message(headers)).message_id
        row = by_id[message_id]
        assert (
            row["original_recipient"],
            row["recipient_source"],
            row["recipient_confidence"],
        ) == (
            recipient,
            source,
            confidence,
        ), headers
    chain = by_id[parse_message(_message(RECIPIENT_TABLE[1][0])).message_id]
    assert chain["recipient_evidence"]["delivered-to"] == [
        "journal@example.com",
        "billing@acme.example",
    ]


async def test_near_duplicates_form_a_collision_group(ingest, db):
    base = "From: a@customer.example\nTo: help@acme.example\nDate: Mon, 2 Nov 2026 10:00:00 +0000\n"
    ingest.gmail.add_message(
        JOURNAL, (base + "Subject: Printer\nMessage-ID: <a1@x.example>\n\nIt jams.\n").encode()
    )
    ingest.gmail.add_message(
        JOURNAL, (base + "Subject: Re: Printer\nMessage-ID: <a2@x.example>\n\nIt jams.\n").encode()
    )
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)

    group = db.execute("SELECT * FROM core.collision_groups").fetchone()
    assert group["message_count"] == 2
    assert (
        count(
            db,
            "SELECT count(*) AS n FROM core.messages WHERE collision_group_id = %s",
            [group["id"]],
        )
        == 2
    )


@pytest.mark.slow  # kills a worker process mid-run
async def test_killing_the_worker_mid_backfill_loses_and_duplicates_nothing(ingest, db, tmp_path):
    files = corpus_files(300)
    ingest.gmail.add_eml_files(JOURNAL, files)
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    # Slow batches so the kill lands while work is in flight.
    ingest.gmail.inject(FaultRule(endpoint="batch", action="delay", delay=1.0, times=None))
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])

    await asyncio.to_thread(
        _start_worker_then_kill_it, db, mailbox_id, ingest.worker_env(), tmp_path / "w.log"
    )
    signatures, unparseable = expected_signatures(files)
    assert states(db, mailbox_id).get("routed", 0) < len(files) - unparseable
    unfinished = count(
        db, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    )
    assert unfinished > 0  # the kill left work behind, some of it held by the dead worker
    ingest.gmail.clear_faults()

    # A new worker recovers the dead worker's jobs and finishes the walk.
    await ingest.run_worker(stalled_after=0)

    expected = {"routed": len(files) - unparseable} | (
        {"failed": unparseable} if unparseable else {}
    )
    assert states(db, mailbox_id) == expected
    assert count(db, "SELECT count(*) AS n FROM core.messages") == len(signatures)
    duplicates = count(
        db,
        "SELECT count(*) AS n FROM (SELECT gmail_message_id FROM core.message_occurrences "
        "GROUP BY 1 HAVING count(*) > 1) d",
    )
    assert duplicates == 0
    assert (
        db.execute(
            "SELECT backfill_state FROM core.mailboxes WHERE id = %s", [mailbox_id]
        ).fetchone()["backfill_state"]
        == "done"
    )


def _start_worker_then_kill_it(db, mailbox_id: str, env: dict, log_path: Path) -> None:
    """Run `ticketing worker` until some messages are through, then SIGKILL it."""
    with running_worker(env, log_path) as worker:
        kill_when(worker, lambda: states(db, mailbox_id).get("routed", 0) >= 50)


@pytest.mark.parametrize("bad", [b"", b"\x00\x01\x02binary", b"// not an email\n\nat all"])
async def test_a_poisoned_message_fails_its_own_occurrence_only(ingest, db, bad):
    ingest.gmail.add_eml_files(JOURNAL, corpus_files(4))
    ingest.gmail.add_message(JOURNAL, bad or b"\n")
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)
    assert states(db, mailbox_id) == {"routed": 4, "failed": 1}
    failed = db.execute(
        "SELECT failed_stage, last_error FROM core.message_occurrences WHERE state = 'failed'"
    ).fetchone()
    assert failed["failed_stage"] == "occurrence_parse"
    assert failed["last_error"]


async def test_ingest_into_an_s3_blob_store(ingest, db, s3_store):
    """The same pipeline with raw mail and attachments in S3 (MinIO or SeaweedFS)."""
    ingest.runtime.blobs = s3_store
    files = corpus_files()[::60][:10]
    ingest.gmail.add_eml_files(JOURNAL, files)
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    await backfill(ingest, db, mailbox_id)

    _, unparseable = expected_signatures(files)
    assert states(db, mailbox_id).get("routed") == len(files) - unparseable
    for path in files:
        raw = path.read_bytes()
        key = db.execute(
            "SELECT raw_blob_key FROM core.message_occurrences WHERE raw_sha256 = %s",
            [hashlib.sha256(raw).hexdigest()],
        ).fetchone()["raw_blob_key"]
        assert s3_store.get(key) == raw
    for row in db.execute("SELECT blob_key, sha256 FROM core.attachments"):
        assert hashlib.sha256(s3_store.get(row["blob_key"])).hexdigest() == row["sha256"]


async def test_a_broken_backfill_chain_goes_on_from_its_checkpoint(ingest, db):
    files = corpus_files(250)
    ingest.gmail.add_eml_files(JOURNAL, files)
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    # Listing fails beyond the client's retries: the step's job fails, the chain stops.
    ingest.gmail.inject(FaultRule(endpoint="list", action="status", status=503, times=None))
    await ingest.run_worker()
    stuck = db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()
    assert stuck["backfill_state"] == "running"
    assert stuck["consecutive_failures"] >= 1
    pages_before = stuck["backfill_pages"]

    ingest.gmail.clear_faults()
    assert db.execute("SELECT logic.enqueue_due_syncs() AS n").fetchone()["n"] == 1
    await ingest.run_worker()
    done = db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()
    assert done["backfill_state"] == "done"
    assert done["backfill_pages"] == 3
    assert done["backfill_pages"] > pages_before
    _, unparseable = expected_signatures(files)
    assert sum(states(db, mailbox_id).values()) == len(files)
    assert states(db, mailbox_id).get("failed", 0) == unparseable


@pytest.mark.parametrize("value", ["nul \x00 inside", float("nan")])
def test_payloads_postgres_would_refuse_are_refused_per_message(value):
    from worker.pipeline import payload_json

    with pytest.raises(ValueError):
        payload_json({"subject": value})
    # An escaped backslash followed by u0000 is text, not a NUL.
    assert payload_json({"subject": "a \\u0000 b"}) == '{"subject":"a \\\\u0000 b"}'
