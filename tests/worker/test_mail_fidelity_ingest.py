"""Mail fidelity through the whole pipeline: one canonical message per logical email
whatever mailbox, order or concurrency brought its copies; HTML tells messages apart; the
parse evidence reaches the ticket."""

from __future__ import annotations

import random

from tests.fixtures.ingest import CORPUS
from worker.mime import UnparseableMessage, parse_message

MAILBOXES = ("journal@example.com", "journal-eu@example.com", "journal-us@example.com")


def corpus_sample(count: int) -> list[bytes]:
    """Parseable corpus messages without an mbox `From ` line (a header is put in front)."""
    sample = []
    for path in sorted((CORPUS / "messages").rglob("*.eml")):
        raw = path.read_bytes()
        if raw.startswith(b"From ") or len(raw) > 200_000:
            continue
        try:
            parse_message(raw)
        except UnparseableMessage:
            continue
        sample.append(raw)
        if len(sample) == count:
            break
    return sample


def delivered(mailbox: str, raw: bytes) -> bytes:
    """The copy journaled into `mailbox`: the same message with its own Delivered-To."""
    return f"Delivered-To: {mailbox}\r\n".encode() + raw


def html_copy(href: str) -> bytes:
    """A message without Message-ID whose text is fixed and whose HTML links to `href`."""
    return (
        "From: billing@vendor.example\r\nTo: accounts@acme.example\r\n"
        "Subject: Invoice 2291\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative; boundary=q\r\n\r\n"
        "--q\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease pay the invoice.\r\n"
        "--q\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f'<p>Please pay the <a href="{href}">invoice</a>.</p>\r\n--q--\r\n'
    ).encode()


async def test_the_same_mail_in_three_mailboxes_is_one_message_in_any_order(ingest, db):
    messages = [
        *corpus_sample(40),
        html_copy("https://bank.example"),
        html_copy("https://x.example"),
    ]
    orders = [
        list(messages),
        list(reversed(messages)),
        random.Random(16).sample(messages, len(messages)),
    ]
    mailbox_ids = []
    for mailbox, order in zip(MAILBOXES, orders, strict=True):
        ingest.gmail.add_mailbox(mailbox)
        for raw in order:
            ingest.gmail.add_message(mailbox, delivered(mailbox, raw))
        mailbox_ids.append(ingest.add_mailbox(db, mailbox))
    # All three backfills at once: parse batches of different mailboxes race on the same
    # signatures.
    for mailbox_id in mailbox_ids:
        db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    await ingest.run_worker(concurrency=4)

    signatures = {parse_message(raw).strict_signature for raw in messages}
    assert len(signatures) == len(messages)  # the two HTML variants are two messages
    rows = db.execute(
        """
        SELECT m.strict_signature, count(o.id) AS occurrences,
               count(DISTINCT o.mailbox_id) AS mailboxes,
               bool_and(o.state = 'routed') AS routed
        FROM core.messages m JOIN core.message_occurrences o ON o.message_id = m.id
        GROUP BY m.id, m.strict_signature
        """
    ).fetchall()
    assert {row["strict_signature"] for row in rows} == signatures
    assert all((r["occurrences"], r["mailboxes"], r["routed"]) == (3, 3, True) for r in rows)
    # Every occurrence keeps its own evidence: the copy delivered to its own mailbox.
    mismatched = db.execute(
        "SELECT count(*) AS n FROM core.message_occurrences o "
        "JOIN core.mailboxes b ON b.id = o.mailbox_id "
        "WHERE o.recipient_evidence->'delivered-to'->>0 IS DISTINCT FROM b.email"
    ).fetchone()
    assert mismatched == {"n": 0}


async def test_delivered_twice_with_different_delivered_to_is_one_message(ingest, db):
    raw = (CORPUS / "messages/redmine/ticket_with_attachment.eml").read_bytes()
    ingest.gmail.add_message(MAILBOXES[0], delivered("support@acme.example", raw))
    ingest.gmail.add_message(MAILBOXES[0], delivered("sales@acme.example", raw))
    mailbox_id = ingest.add_mailbox(db, MAILBOXES[0])
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    await ingest.run_worker()

    rows = db.execute(
        "SELECT message_id, original_recipient FROM core.message_occurrences ORDER BY 2"
    ).fetchall()
    assert len({row["message_id"] for row in rows}) == 1
    assert [row["original_recipient"] for row in rows] == [
        "sales@acme.example",
        "support@acme.example",
    ]


async def test_copies_that_differ_only_in_html_each_keep_their_html(ingest, db):
    ingest.gmail.add_message(MAILBOXES[0], html_copy("https://bank.example"))
    ingest.gmail.add_message(MAILBOXES[0], html_copy("https://evil.example"))
    mailbox_id = ingest.add_mailbox(db, MAILBOXES[0])
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    await ingest.run_worker()

    rows = db.execute(
        "SELECT c.html_body, count(o.id) AS n FROM core.messages m "
        "JOIN core.message_contents c ON c.message_id = m.id "
        "JOIN core.message_occurrences o ON o.message_id = m.id GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [("bank.example" in r["html_body"], r["n"]) for r in rows] == [(True, 1), (False, 1)]
    assert "evil.example" in rows[1]["html_body"]
    # Still near-duplicates of each other.
    assert db.execute("SELECT message_count FROM core.collision_groups").fetchone() == {
        "message_count": 2
    }


async def test_the_ticket_shows_why_the_body_is_empty(ingest, db):
    raw = (CORPUS / "messages/redmine/subject_as_iso-8859-1.eml").read_bytes()  # TNEF only
    ingest.gmail.add_message(MAILBOXES[0], raw)
    mailbox_id = ingest.add_mailbox(db, MAILBOXES[0])
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    await ingest.run_worker()

    detail = db.execute(
        "SELECT api.ticket_message_json(tm.ticket_id, m, c, tm) AS message "
        "FROM core.ticket_messages tm JOIN core.messages m ON m.id = tm.message_id "
        "JOIN core.message_contents c ON c.message_id = m.id"
    ).fetchone()["message"]
    assert detail["body_text"] == ""
    assert [a["filename"] for a in detail["attachments"]] == ["winmail.dat"]
    assert "winmail.dat" in detail["parse_evidence"]["empty_body_reason"]
    assert detail["parse_evidence"]["html_body"] is None
