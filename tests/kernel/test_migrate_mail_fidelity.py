"""Migration 0014: strict signatures v1 → v2 from stored fields, faithful to the parser."""

from __future__ import annotations

import psycopg
from yoyo import read_migrations

from kernel.migrate import MIGRATIONS_DIR
from tests.worker.test_mail_fidelity_ingest import corpus_sample, html_copy
from worker.mime import parse_message

JOURNAL = "journal@example.com"


def migration():
    """The migration's module as yoyo loads it (its steps need yoyo's collector)."""
    (found,) = [m for m in read_migrations(str(MIGRATIONS_DIR)) if m.id == "0014.mail-fidelity"]
    found.load()
    return found.module


def stored_rows(db_url: str, module) -> list[dict]:
    with psycopg.connect(db_url) as conn, conn.cursor() as cursor:
        cursor.execute(module._ROWS, [0, 100_000])
        names = [column.name for column in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


async def test_0014_recomputes_signatures_as_the_parser_computes_them(ingest, db, db_url):
    module = migration()
    messages = [*corpus_sample(30), html_copy("https://bank.example")]
    for raw in messages:
        ingest.gmail.add_message(JOURNAL, raw)
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    await ingest.run_worker()
    parser_keys = {parse_message(raw).strict_signature for raw in messages}
    assert {
        r["strict_signature"] for r in db.execute("SELECT strict_signature FROM core.messages")
    } == parser_keys

    # The database as it was before 0014: v1 keys (what the old parser stored), and one key
    # from some other recipe that the stored fields do not reproduce.
    rows = stored_rows(db_url, module)
    for row in rows:
        db.execute(
            "UPDATE core.messages SET strict_signature = %s WHERE id = %s",
            [module.signature_v1(row), row["id"]],
        )
    # The legacy one is the message that will not come again below (messages[0]).
    legacy_key = parse_message(messages[0]).strict_signature
    (legacy_id,) = [row["id"] for row in rows if row["strict_signature"] == legacy_key]
    db.execute("UPDATE core.messages SET strict_signature = 'legacy' WHERE id = %s", [legacy_id])
    db.execute("DELETE FROM core.migration_notes")
    links_before = db.execute(
        "SELECT id, message_id FROM core.message_occurrences ORDER BY id"
    ).fetchall()

    with psycopg.connect(db_url) as conn:
        module.recompute_signatures(conn)
        conn.commit()

    after = {
        r["id"]: r["strict_signature"]
        for r in db.execute("SELECT id, strict_signature FROM core.messages")
    }
    assert after[legacy_id] == "legacy"
    assert set(after.values()) - {"legacy"} == parser_keys - {legacy_key}
    assert (
        db.execute("SELECT id, message_id FROM core.message_occurrences ORDER BY id").fetchall()
        == links_before
    )
    note = db.execute("SELECT * FROM core.migration_notes").fetchone()
    assert note["migration_id"] == "0014.mail-fidelity"
    assert note["details"]["recomputed"] == len(rows) - 1
    assert note["details"]["unchanged_message_ids"] == [legacy_id]
    assert f"recomputed as strict-v2 (sanitised HTML added): {len(rows) - 1}" in note["summary"]
    assert "merged or split: 0" in note["summary"]

    # A copy of an old message arriving after the migration joins it.
    second = "journal-eu@example.com"
    ingest.gmail.add_mailbox(second)
    for raw in messages[1:]:
        ingest.gmail.add_message(second, raw)
    second_id = ingest.add_mailbox(db, second)
    db.execute("SELECT logic.enqueue_backfill(%s)", [second_id])
    await ingest.run_worker()
    assert db.execute("SELECT count(*) AS n FROM core.messages").fetchone()["n"] == len(rows)


def test_0014_v2_is_the_parsers_recipe():
    module = migration()
    parsed = parse_message(html_copy("https://bank.example"))
    row = {
        "rfc_message_id": parsed.message_id,
        "sent_at": parsed.date,
        "from_address": parsed.from_[1],
        "to_addresses": [{"name": n, "address": a} for n, a in parsed.to],
        "cc_addresses": [],
        "normalized_subject": parsed.normalized_subject,
        "body_sha256": parsed.body_sha256,
        "attachment_hashes": [],
        "html_body": parsed.html_body,
    }
    assert module.signature_v2(row) == parsed.strict_signature
