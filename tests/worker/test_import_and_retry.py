"""import-mbox feeds the same pipeline; failed occurrences can be listed and retried."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli.importer import import_mbox, mbox_messages
from tests.fixtures.ingest import CORPUS

REPO = Path(__file__).resolve().parents[2]
THREADS = CORPUS / "threads" / "notmuch-default.mbox"


def _count(db, sql: str, params=None) -> int:
    return db.execute(sql, params).fetchone()["n"]


async def test_import_mbox_runs_through_the_pipeline_and_is_idempotent(ingest, db):
    expected = sum(1 for _ in mbox_messages(THREADS))
    result = import_mbox(
        ingest.db_url, THREADS, "Archive@Example.com", "Acme", ingest.runtime.blobs
    )
    assert result["messages"] == expected
    assert result["new_occurrences"] <= expected  # byte-identical copies collapse into one
    assert result["new_occurrences"] > 0
    await ingest.run_worker()

    mailbox_row = db.execute(
        "SELECT m.provider, m.email, o.name FROM core.mailboxes m "
        "JOIN core.organizations o ON o.id = m.organization_id"
    ).fetchone()
    assert mailbox_row == {"provider": "mbox", "email": "archive@example.com", "name": "Acme"}
    routed = _count(db, "SELECT count(*) AS n FROM core.message_occurrences WHERE state = 'routed'")
    assert routed == result["new_occurrences"]
    assert _count(db, "SELECT count(*) AS n FROM core.messages") > 0

    again = import_mbox(ingest.db_url, THREADS, "archive@example.com", "Acme", ingest.runtime.blobs)
    assert again["new_occurrences"] == 0
    assert again["already_imported"] == expected


def test_import_mbox_command(db_url, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "import-mbox",
            str(THREADS),
            "--mailbox",
            "archive@example.com",
            "--organization",
            "Acme",
            "--run-worker",
        ],
        env={
            "DATABASE_URL": db_url,
            "LOCAL_BLOB_DIR": str(tmp_path / "blobs"),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[0])
    assert summary["messages"] == sum(1 for _ in mbox_messages(THREADS))
    import psycopg

    with psycopg.connect(db_url) as conn:
        states = dict(
            conn.execute(
                "SELECT state::text, count(*) FROM core.message_occurrences GROUP BY 1"
            ).fetchall()
        )
    assert states == {"routed": summary["new_occurrences"]}


async def test_failed_occurrences_are_listed_per_stage_and_retried(ingest, db):
    good = sorted((CORPUS / "messages" / "redmine").glob("*.eml"))[:3]
    ingest.gmail.add_eml_files("journal@example.com", good)
    mailbox_id = ingest.add_mailbox(db, "journal@example.com")
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    await ingest.run_worker()
    # Make parsing fail for one occurrence: its raw blob has gone missing.
    victim = db.execute(
        "UPDATE core.message_occurrences SET state = 'raw_fetched', "
        "raw_blob_key = 'sha256/00/00/' || repeat('0', 64) "
        "WHERE id = (SELECT min(id) FROM core.message_occurrences) RETURNING id, message_id"
    ).fetchone()
    db.execute(
        "SELECT worker.enqueue_stage('occurrence_parse', %s, %s)",
        [mailbox_id, [victim["id"]]],
    )
    await ingest.run_worker()

    failed = db.execute("SELECT * FROM ops.failed_occurrences").fetchall()
    assert [(f["occurrence_id"], f["failed_stage"]) for f in failed] == [
        (victim["id"], "occurrence_parse")
    ]
    assert "BlobNotFound" in failed[0]["last_error"]
    by_stage = db.execute(
        "SELECT failed_stage, occurrences FROM ops.occurrence_failures_by_stage"
    ).fetchall()
    assert by_stage == [{"failed_stage": "occurrence_parse", "occurrences": 1}]

    # Repair the blob key, then retry from SQL.
    db.execute(
        "UPDATE core.message_occurrences o SET raw_blob_key = m.raw_blob_key "
        "FROM core.messages m WHERE m.id = %s AND o.id = %s",
        [victim["message_id"], victim["id"]],
    )
    assert (
        db.execute("SELECT ops.retry_occurrences(%s) AS n", [[victim["id"]]]).fetchone()["n"] == 1
    )
    await ingest.run_worker()
    assert db.execute("SELECT count(*) AS n FROM ops.failed_occurrences").fetchone()["n"] == 0
    state = db.execute(
        "SELECT state::text FROM core.message_occurrences WHERE id = %s", [victim["id"]]
    )
    assert state.fetchone()["state"] == "routed"
