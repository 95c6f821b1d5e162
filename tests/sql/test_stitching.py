"""occurrence_stitch (SPEC 2.5) through the real pipeline: raw mail is recorded as imported
occurrences (worker.record_imported), real procrastinate workers parse and stitch it, and
the tickets are compared with thread ground truth.

Measure: a message counts as correct when the set of messages sharing its ticket is exactly
the set of messages of its ground-truth thread (so a split thread or a glued pair both count
against every message involved). Agreement = correct messages / messages. Pairwise
agreement (same-thread ⇔ same-ticket over all pairs) is reported too.
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.utils
import hashlib
import random
import re
from datetime import UTC, datetime
from email.policy import compat32
from pathlib import Path

import pytest
from psycopg.types.json import Jsonb

from cli.importer import imported_item, mbox_messages
from kernel.markers import reply_address, ticket_marker
from tests.fixtures.ingest import CORPUS
from worker.app import app, make_connector
from worker.runner import runtime_context

THREADS = CORPUS / "threads"
NOTMUCH = THREADS / "notmuch-default.mbox"
# Retries of a job that failed (a deadlock, say) are scheduled a few seconds ahead.
RETRY_HORIZON_SECONDS = 40


# ------------------------------------------------------------------- running the pipeline


async def drain(ingest, concurrency: int = 1) -> None:
    """Run real workers until every job but routing's is done.

    Routing (ticket_apply_routing) is another stage: if it fails its retries are scheduled
    ahead, and this test neither waits for nor asserts on them.
    """
    with app.replace_connector(make_connector(ingest.db_url)) as worker_app:
        async with worker_app.open_async():
            while True:
                await worker_app.run_worker_async(
                    wait=False,
                    concurrency=concurrency,
                    install_signal_handlers=False,
                    additional_context=runtime_context(ingest.runtime),
                )
                async with worker_app.connector.pool.connection() as conn:
                    cursor = await conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE task_name <> "
                        "'ticket_apply_routing' AND (status = 'doing' OR (status = 'todo' AND "
                        "(scheduled_at IS NULL OR scheduled_at < now() + make_interval(secs => %s))))",
                        [RETRY_HORIZON_SECONDS],
                    )
                    (pending,) = await cursor.fetchone()
                if pending == 0:
                    return
                await asyncio.sleep(0.2)


def record(db, ingest, raws: list[bytes], organization: str, one_job_each: bool = False) -> str:
    """Record raw messages, in this order, as imported occurrences of a mailbox of
    `organization`; returns the mailbox id. `one_job_each` gives every message its own
    parse and stitch job (so concurrent workers meet one thread's messages at once)."""
    mailbox_id = db.execute(
        "SELECT ops.ensure_import_mailbox(%s, 'journal@support.example') AS id", [organization]
    ).fetchone()["id"]
    items = [imported_item(raw, ingest.runtime.blobs) for raw in raws]
    for chunk in [[item] for item in items] if one_job_each else [items]:
        db.execute("SELECT worker.record_imported(%s, %s)", [mailbox_id, Jsonb(chunk)])
    return str(mailbox_id)


def org_of(db, mailbox_id: str) -> str:
    return str(
        db.execute(
            "SELECT organization_id FROM core.mailboxes WHERE id = %s", [mailbox_id]
        ).fetchone()["organization_id"]
    )


def links(db, mailbox_id: str) -> dict[str, dict]:
    """Per raw sha256: the occurrence's state, live ticket and stitch decision."""
    rows = db.execute(
        "SELECT o.raw_sha256, o.state::text, o.ticket_id, t.merged_into_ticket_id, "
        "       'T-' || t.number AS code, tm.stitch_reason, tm.stitch_confidence, tm.evidence "
        "FROM core.message_occurrences o "
        "LEFT JOIN core.tickets t ON t.id = o.ticket_id "
        "LEFT JOIN core.ticket_messages tm ON tm.message_id = o.message_id "
        "WHERE o.mailbox_id = %s",
        [mailbox_id],
    ).fetchall()
    return {row["raw_sha256"]: row for row in rows}


# ------------------------------------------------------------------ independent ground truth

_TOKEN = re.compile(r"<([^<>]*)>")


def _tokens(message, name: str) -> list[str]:
    values = message.get_all(name) or []
    return [t for v in values for t in _TOKEN.findall(re.sub(r"\r?\n", "", str(v)))]


def truth_threads(raws: list[bytes]) -> list[int]:
    """Thread label per message by the corpus README's union-find: first <...> of
    Message-ID; every <...> of References/In-Reply-To links, except tokens without @ and
    tokens equal to an address of the same message unless some message has that id; ids of
    absent messages still connect; no subject grouping."""
    messages = [email.message_from_bytes(raw, policy=compat32) for raw in raws]
    own_ids = []
    for message in messages:
        ids = _tokens(message, "Message-ID")
        own_ids.append(ids[0] if ids else None)
    present = {i for i in own_ids if i}
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    nodes = []
    for index, (message, own) in enumerate(zip(messages, own_ids, strict=True)):
        node = f"id:{own}" if own else f"row:{index}"
        nodes.append(node)
        find(node)
        fields = [
            str(v) for h in ("From", "To", "Cc", "Reply-To") for v in message.get_all(h) or []
        ]
        addresses = {a.lower() for _, a in email.utils.getaddresses(fields) if a}
        for token in _tokens(message, "References") + _tokens(message, "In-Reply-To"):
            if "@" not in token or (token.lower() in addresses and token not in present):
                continue
            parent[find(node)] = find(f"id:{token}")
    roots = {}
    return [roots.setdefault(find(node), len(roots)) for node in nodes]


def manifest_thread_counts() -> dict[str, int]:
    counts = {}
    with open(CORPUS / "MANIFEST.tsv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            match = re.search(r"(?:^|;)threads=(\d+)", row["features"])
            if row["file"].startswith("threads/") and match:
                counts[row["file"]] = int(match.group(1))
    return counts


def thread_mailboxes() -> list[Path]:
    return sorted(THREADS.rglob("*.mbox"))


def sent_at(raw: bytes) -> datetime:
    value = email.message_from_bytes(raw, policy=compat32).get("Date")
    try:
        parsed = email.utils.parsedate_to_datetime(str(value)) if value else None
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def ordered(raws: list[bytes], order: str) -> list[bytes]:
    positions = list(range(len(raws)))
    if order == "oldest_first":
        positions.sort(key=lambda i: (sent_at(raws[i]), i))
    elif order == "newest_first":
        positions.sort(key=lambda i: (sent_at(raws[i]), i), reverse=True)
    else:
        random.Random(20240611).shuffle(positions)
    return [raws[i] for i in positions]


def agreement(truth: list[int], tickets: list[int]) -> tuple[int, int, int, int]:
    """(messages whose ticket is exactly their thread, messages, agreeing pairs, pairs)."""
    n = len(truth)
    exact = sum(
        1
        for i in range(n)
        if {j for j in range(n) if truth[j] == truth[i]}
        == {j for j in range(n) if tickets[j] == tickets[i]}
    )
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    agree = sum(1 for i, j in pairs if (truth[i] == truth[j]) == (tickets[i] == tickets[j]))
    return exact, n, agree, len(pairs)


# ------------------------------------------------------------------------ acceptance test


def test_independent_truth_matches_the_published_truth():
    """The test's own union-find reproduces notmuch's truth file and MANIFEST's counts."""
    raws = list(mbox_messages(NOTMUCH))
    with open(NOTMUCH.with_suffix(".threads.tsv"), newline="") as handle:
        published = [row["thread_root"] for row in csv.DictReader(handle, delimiter="\t")]
    mine = truth_threads(raws)
    assert len(mine) == len(published) == 53
    labels = {}
    assert all(labels.setdefault(m, p) == p for m, p in zip(mine, published, strict=True))
    assert len(set(mine)) == len(set(published)) == 24
    counts = manifest_thread_counts()
    for path in thread_mailboxes():
        key = str(path.relative_to(CORPUS))
        assert len(set(truth_threads(list(mbox_messages(path))))) == counts[key], key


@pytest.mark.parametrize("order", ["oldest_first", "newest_first", "shuffled"])
async def test_tickets_follow_the_threads_in_any_order(ingest, db, order):
    mailboxes = {}
    for index, path in enumerate(thread_mailboxes()):
        raws = list(mbox_messages(path))
        mailboxes[path] = (raws, record(db, ingest, ordered(raws, order), f"org-{index}"))
    await drain(ingest, concurrency=1)

    report, total_exact, total, total_agree, total_pairs = [], 0, 0, 0, 0
    for path, (raws, mailbox_id) in mailboxes.items():
        linked = links(db, mailbox_id)
        rows = [linked[hashlib.sha256(raw).hexdigest()] for raw in raws]
        assert {row["state"] for row in rows} <= {"stitched", "routed"}, path
        # Merges repoint occurrences: none is left on a merged ticket.
        assert all(row["merged_into_ticket_id"] is None for row in rows), path
        exact, n, agree, pairs = agreement(truth_threads(raws), [r["ticket_id"] for r in rows])
        report.append(
            f"{path.relative_to(THREADS)} {order}: {exact}/{n} exact, {agree}/{pairs} pairs"
        )
        total_exact, total, total_agree, total_pairs = (
            total_exact + exact,
            total + n,
            total_agree + agree,
            total_pairs + pairs,
        )
        if path == NOTMUCH:
            assert exact / n >= 0.99, report[-1]
    reasons = {
        row["stitch_reason"]
        for row in db.execute("SELECT DISTINCT stitch_reason FROM core.ticket_messages")
    }
    # Oldest first, replies meet their parents; newest first, parents meet their replies' ids.
    expected = {"oldest_first": {"in_reply_to"}, "newest_first": {"thread_member"}}
    assert expected.get(order, set()) <= reasons, reasons
    print("\n".join(report))
    print(f"ALL {order}: {total_exact}/{total} messages exact, {total_agree}/{total_pairs} pairs")
    assert total_exact / total >= 0.99
    assert total_agree / total_pairs >= 0.99


async def test_concurrent_workers_never_split_a_thread(ingest, db):
    """Every notmuch message in its own job, newest first, four workers at once."""
    raws = list(mbox_messages(NOTMUCH))
    mailbox_id = record(db, ingest, ordered(raws, "newest_first"), "Concurrent", one_job_each=True)
    await drain(ingest, concurrency=4)

    linked = links(db, mailbox_id)
    tickets = [linked[hashlib.sha256(raw).hexdigest()]["ticket_id"] for raw in raws]
    exact, n, _, _ = agreement(truth_threads(raws), tickets)
    assert exact == n
    live = db.execute(
        "SELECT count(*) AS n FROM core.tickets WHERE organization_id = %s "
        "AND merged_into_ticket_id IS NULL",
        [org_of(db, mailbox_id)],
    ).fetchone()["n"]
    assert live == len(set(truth_threads(raws))) == 24


# ------------------------------------------------------------------- cascade, one by one

SUPPORT = "support@support.example"


def eml(
    message_id: str | None,
    sender: str,
    subject: str = "Printer on fire",
    date: str = "Mon, 03 Jun 2024 10:00:00 +0000",
    to: str = SUPPORT,
    cc: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
    body: str = "Hello, the printer is on fire again.",
) -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {date}"]
    lines += [f"Message-ID: <{message_id}>"] if message_id else []
    lines += [f"Cc: {cc}"] if cc else []
    lines += [f"In-Reply-To: {in_reply_to}"] if in_reply_to else []
    lines += [f"References: {references}"] if references else []
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


async def stitch(ingest, db, organization: str, *raws: bytes) -> str:
    mailbox_id = record(db, ingest, list(raws), organization)
    await drain(ingest)
    return mailbox_id


def decision(db, rfc_message_id: str) -> dict:
    return db.execute(
        "SELECT * FROM ops.message_stitching WHERE rfc_message_id = %s", [rfc_message_id]
    ).fetchone()


def ticket(db, ticket_id: int) -> dict:
    return db.execute("SELECT * FROM core.tickets WHERE id = %s", [ticket_id]).fetchone()


def events(db, ticket_id: int) -> list[str]:
    rows = db.execute(
        "SELECT type FROM core.ticket_events WHERE ticket_id = %s ORDER BY id", [ticket_id]
    ).fetchall()
    return [row["type"] for row in rows]


MARKER_CASES = [
    # (case, headers/to of the follow-up given (secret, org, other org, number), reason, valid)
    (
        "signed header",
        lambda s, o, x, n: {"headers": {"X-OSS-Ticket-ID": ticket_marker(s, o, n)}},
        "signed_marker",
        True,
    ),
    (
        "signed reply address",
        lambda s, o, x, n: {"to": reply_address(s, o, n, SUPPORT)},
        "signed_marker",
        True,
    ),
    (
        "forged header",
        lambda s, o, x, n: {"headers": {"X-OSS-Ticket-ID": f"T-{n}.aaaaaaaaaaaaaaaa"}},
        "new_ticket",
        False,
    ),
    (
        "unsigned header",
        lambda s, o, x, n: {"headers": {"X-OSS-Ticket-ID": f"T-{n}"}},
        "new_ticket",
        False,
    ),
    (
        "header signed for another org",
        lambda s, o, x, n: {"headers": {"X-OSS-Ticket-ID": ticket_marker(s, x, n)}},
        "new_ticket",
        False,
    ),
    (
        "reply address signed for another org",
        lambda s, o, x, n: {"to": reply_address(s, x, n, SUPPORT)},
        "new_ticket",
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "follow_up", "reason", "valid"), MARKER_CASES, ids=[c[0] for c in MARKER_CASES]
)
async def test_only_signed_markers_attach(ingest, db, case, follow_up, reason, valid):
    mailbox_id = await stitch(
        ingest, db, "Acme", eml("first@customer.example", "alice@customer.example")
    )
    first = decision(db, "first@customer.example")
    number = ticket(db, first["ticket_id"])["number"]
    other_org = db.execute(
        "INSERT INTO core.organizations (name) VALUES ('Other') RETURNING id"
    ).fetchone()["id"]
    extra = follow_up(ingest.settings.secret_key, org_of(db, mailbox_id), str(other_org), number)
    # A stranger, another subject, no references: only the marker could link it.
    await stitch(
        ingest,
        db,
        "Acme",
        eml("next@elsewhere.example", "bob@elsewhere.example", subject="Unrelated words", **extra),
    )

    follow = decision(db, "next@elsewhere.example")
    assert follow["stitch_reason"] == reason
    if valid:
        assert follow["ticket_id"] == first["ticket_id"]
        assert follow["stitch_confidence"] == "high"
        assert follow["evidence"]["marker_ticket_number"] == number
    else:
        assert follow["ticket_id"] != first["ticket_id"]
        assert follow["stitch_confidence"] == "low"
        markers = follow["evidence"]["marker"]["markers"]
        assert markers and not any(m["valid"] for m in markers)
        assert follow["evidence"]["marker"]["verified_ticket_number"] is None
    stored = db.execute(
        "SELECT marker_ticket_number, marker_evidence FROM core.messages "
        "WHERE rfc_message_id = 'next@elsewhere.example'"
    ).fetchone()
    assert (stored["marker_ticket_number"] == number) is valid
    assert stored["marker_evidence"]["markers"][0]["valid"] is valid


@pytest.mark.parametrize(
    ("sender", "cc_on_first", "reason"),
    [
        ("alice@customer.example", None, "subject_code"),  # the requester
        ("carol@customer.example", "carol@customer.example", "subject_code"),  # a participant
        ("mallory@evil.example", None, "new_ticket"),  # a stranger quoting the code
    ],
)
async def test_subject_code_attaches_only_for_requester_or_participant(
    ingest, db, sender, cc_on_first, reason
):
    await stitch(
        ingest,
        db,
        "Acme",
        eml("first@customer.example", "Alice <alice@customer.example>", cc=cc_on_first),
    )
    first = decision(db, "first@customer.example")
    code = first["ticket_code"]
    await stitch(
        ingest, db, "Acme", eml("coded@x.example", sender, subject=f"Re: [{code}] status?")
    )
    coded = decision(db, "coded@x.example")
    assert coded["stitch_reason"] == reason
    assert (coded["ticket_id"] == first["ticket_id"]) is (reason == "subject_code")


async def test_bridging_message_merges_tickets_older_survives(ingest, db):
    await stitch(ingest, db, "Acme", eml("a@x.example", "alice@x.example", subject="One"))
    await stitch(ingest, db, "Acme", eml("b@x.example", "bob@x.example", subject="Two"))
    older, newer = (
        decision(db, "a@x.example")["ticket_id"],
        decision(db, "b@x.example")["ticket_id"],
    )
    assert older < newer
    await stitch(
        ingest,
        db,
        "Acme",
        eml(
            "c@x.example",
            "carol@x.example",
            subject="Both",
            references="<a@x.example> <b@x.example>",
        ),
    )

    assert {
        decision(db, i)["ticket_id"] for i in ("a@x.example", "b@x.example", "c@x.example")
    } == {older}
    assert decision(db, "b@x.example")["stitch_reason"] == "new_ticket"  # reason kept
    assert decision(db, "c@x.example")["evidence"]["merged_ticket_ids"] == [newer]
    assert ticket(db, newer)["merged_into_ticket_id"] == older
    assert ticket(db, older)["merged_into_ticket_id"] is None
    assert "merged" in events(db, older) and "merged" in events(db, newer)
    assert (
        db.execute(
            "SELECT count(*) AS n FROM core.ticket_thread_ids WHERE ticket_id = %s", [newer]
        ).fetchone()["n"]
        == 0
    )
    threads = db.execute(
        "SELECT * FROM ops.ticket_threads WHERE ticket_id = %s", [older]
    ).fetchone()
    assert threads["messages"] == 3 and threads["tickets_merged_in"] == 1
    # A later reply to the merged ticket's message lands in the survivor.
    await stitch(
        ingest, db, "Acme", eml("d@x.example", "bob@x.example", in_reply_to="<b@x.example>")
    )
    assert decision(db, "d@x.example")["ticket_id"] == older


async def test_replies_before_parents_end_in_one_ticket(ingest, db):
    """Newest first: the reply's reply, then a sibling whose parent never arrives, then the
    reply, then the root."""
    await stitch(
        ingest,
        db,
        "Acme",
        eml("r2@x.example", "alice@x.example", references="<root@x.example> <r1@x.example>"),
        eml("sib@x.example", "dave@x.example", in_reply_to="<root@x.example>"),
        eml("r1@x.example", "bob@x.example", references="<root@x.example>"),
        eml("root@x.example", "alice@x.example"),
    )
    decisions = {i: decision(db, f"{i}@x.example") for i in ("r2", "sib", "r1", "root")}
    assert len({d["ticket_id"] for d in decisions.values()}) == 1
    assert decisions["r2"]["stitch_reason"] == "new_ticket"
    assert {decisions[i]["stitch_reason"] for i in ("sib", "r1", "root")} == {"thread_member"}
    assert decisions["root"]["evidence"]["matched_id"] == "root@x.example"


@pytest.mark.parametrize(
    ("first", "second", "same_ticket"),
    [
        # <alice@...> in In-Reply-To is the sender's address, not a Message-ID: no glue.
        (
            eml("m1@x.example", "alice@x.example", in_reply_to="<alice@x.example>"),
            eml("m2@x.example", "alice@x.example", in_reply_to="<alice@x.example>"),
            False,
        ),
        # ... unless a message really has that id: before or after the reply, it joins.
        (
            eml("alice@x.example", "alice@x.example"),
            eml("m2@x.example", "alice@x.example", in_reply_to="<alice@x.example>"),
            True,
        ),
        (
            eml("m2@x.example", "alice@x.example", in_reply_to="<alice@x.example>"),
            eml("alice@x.example", "alice@x.example"),
            True,
        ),
        # Tokens without @ are never ids.
        (
            eml("m1@x.example", "a@x.example", references="<yes>"),
            eml("m2@x.example", "b@x.example", references="<yes>"),
            False,
        ),
    ],
    ids=["own-address", "address-is-a-seen-id", "address-id-arrives-later", "no-at"],
)
async def test_reference_tokens_that_are_not_ids(ingest, db, first, second, same_ticket):
    await stitch(ingest, db, "Acme", first)
    await stitch(ingest, db, "Acme", second)
    tickets = {
        row["ticket_id"] for row in db.execute("SELECT ticket_id FROM ops.message_stitching")
    }
    assert (len(tickets) == 1) is same_ticket


async def test_reply_reopens_resolved_ticket_and_times_only_move_forward(ingest, db):
    await stitch(
        ingest,
        db,
        "Acme",
        eml("root@x.example", "alice@x.example", date="Mon, 03 Jun 2024 10:00:00 +0000"),
    )
    ticket_id = decision(db, "root@x.example")["ticket_id"]
    db.execute("UPDATE core.tickets SET status = 'resolved' WHERE id = %s", [ticket_id])

    await stitch(
        ingest,
        db,
        "Acme",
        eml(
            "reply@x.example",
            "alice@x.example",
            date="Wed, 05 Jun 2024 09:00:00 +0000",
            in_reply_to="<root@x.example>",
        ),
    )
    after_reply = ticket(db, ticket_id)
    assert after_reply["status"] == "open"
    assert events(db, ticket_id)[-1] == "reopened"
    assert after_reply["last_message_at"] == datetime(2024, 6, 5, 9, tzinfo=UTC)

    # An older message met late neither moves the times back nor reopens.
    db.execute("UPDATE core.tickets SET status = 'resolved' WHERE id = %s", [ticket_id])
    await stitch(
        ingest,
        db,
        "Acme",
        eml(
            "late@x.example",
            "bob@x.example",
            date="Tue, 04 Jun 2024 09:00:00 +0000",
            references="<root@x.example>",
        ),
    )
    after_late = ticket(db, ticket_id)
    assert decision(db, "late@x.example")["ticket_id"] == ticket_id
    assert after_late["status"] == "resolved"
    assert after_late["last_message_at"] == after_reply["last_message_at"]
    assert after_late["last_activity_at"] == after_reply["last_activity_at"]


async def test_restitching_changes_nothing_and_search_finds_the_ticket(ingest, db):
    raws = list(mbox_messages(NOTMUCH))
    mailbox_id = record(db, ingest, ordered(raws, "shuffled"), "Acme")
    await drain(ingest)

    def snapshot():
        return [
            db.execute(sql).fetchall()
            for sql in (
                "SELECT id, number, status, search::text, last_message_at, last_activity_at, "
                "merged_into_ticket_id FROM core.tickets ORDER BY id",
                "SELECT * FROM core.ticket_messages ORDER BY message_id",
                "SELECT * FROM core.ticket_thread_ids ORDER BY rfc_message_id",
                "SELECT id, ticket_id, type, data FROM core.ticket_events ORDER BY id",
                "SELECT id, state, ticket_id, stitched_at FROM core.message_occurrences ORDER BY id",
            )
        ]

    before = snapshot()
    ids = [
        row["id"]
        for row in db.execute(
            "SELECT id FROM core.message_occurrences WHERE mailbox_id = %s", [mailbox_id]
        )
    ]
    result = db.execute("SELECT worker.stitch_occurrences(%s) AS r", [ids]).fetchone()["r"]
    assert result["stitched"] == 0
    assert snapshot() == before

    # Codes are per organisation and dense from the counter; each is searchable.
    numbers = [row["number"] for row in db.execute("SELECT number FROM core.tickets ORDER BY id")]
    assert numbers == list(range(1000, 1000 + len(numbers)))
    code = f"T-{numbers[3]}"
    found = db.execute(
        "SELECT id FROM core.tickets WHERE search @@ plainto_tsquery('simple', %s)", [code]
    ).fetchall()
    assert [row["id"] for row in found] == [
        db.execute("SELECT id FROM core.tickets WHERE number = %s", [numbers[3]]).fetchone()["id"]
    ]


async def test_stitching_queues_routing_which_routes_each_ticket_once(ingest, db):
    """SPEC 2: stitching records its result, leaves the occurrences 'stitched' and queues
    ticket_apply_routing for them in the same transaction; routing, a stage of its own, then
    routes each new ticket once (created, then routed) and leaves the occurrences 'routed'.
    The batch's copies of one message make one canonical message."""
    from worker import pipeline

    raws = list(mbox_messages(NOTMUCH))[:12]
    mailbox_id = db.execute(
        "SELECT ops.ensure_import_mailbox('Routing stage', 'journal@support.example') AS id"
    ).fetchone()["id"]
    items = [imported_item(raw, ingest.runtime.blobs) for raw in raws]
    # A second copy of the first message, under another Gmail id, in the same parse batch.
    items.append({**items[0], "id": items[0]["id"] + "-copy"})
    db.execute("SELECT worker.record_imported(%s, %s)", [mailbox_id, Jsonb(items)])
    ids = [
        row["id"]
        for row in db.execute(
            "SELECT id FROM core.message_occurrences WHERE mailbox_id = %s ORDER BY id",
            [mailbox_id],
        ).fetchall()
    ]
    assert len(ids) == 13

    # Parse and stitch by hand, stage by stage, to look between the stages.
    with app.replace_connector(make_connector(ingest.db_url)) as worker_app:
        async with worker_app.open_async():
            await pipeline.parse(worker_app.connector.pool, ingest.runtime, str(mailbox_id), ids)
    result = db.execute("SELECT worker.stitch_occurrences(%s) AS r", [ids]).fetchone()["r"]
    assert result["stitched"] == 13

    occurrences = db.execute(
        "SELECT state::text, message_id, stitched_at IS NOT NULL AS stitched, routed_at "
        "FROM core.message_occurrences WHERE mailbox_id = %s ORDER BY id",
        [mailbox_id],
    ).fetchall()
    assert {(o["state"], o["stitched"], o["routed_at"]) for o in occurrences} == {
        ("stitched", True, None)
    }
    assert occurrences[0]["message_id"] == occurrences[-1]["message_id"]
    assert len({o["message_id"] for o in occurrences}) == 12
    jobs = db.execute(
        "SELECT args, status::text, priority FROM procrastinate_jobs "
        "WHERE task_name = 'ticket_apply_routing'"
    ).fetchall()
    assert [(j["args"], j["status"]) for j in jobs] == [
        ({"mailbox_id": str(mailbox_id), "occurrence_ids": ids}, "todo")
    ]
    stitch_priority = db.execute(
        "SELECT max(priority) AS p FROM procrastinate_jobs WHERE task_name = 'occurrence_stitch'"
    ).fetchone()["p"]
    assert jobs[0]["priority"] > stitch_priority  # the later stage goes first
    unrouted = db.execute(
        "SELECT count(*) AS n FROM core.tickets "
        "WHERE mailbox_id = %s AND (routed_at IS NOT NULL OR status <> 'new')",
        [mailbox_id],
    ).fetchone()
    assert unrouted["n"] == 0

    # The real workers run what is queued: ticket_apply_routing routes (the parse and stitch
    # jobs queued above find nothing left to do).
    await drain(ingest, concurrency=2)
    states = db.execute(
        "SELECT state::text, count(*) AS n FROM core.message_occurrences "
        "WHERE mailbox_id = %s GROUP BY 1",
        [mailbox_id],
    ).fetchall()
    assert [(s["state"], s["n"]) for s in states] == [("routed", 13)]
    jobs = db.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE task_name = 'ticket_apply_routing'"
    ).fetchall()
    assert [j["status"] for j in jobs] == ["succeeded"]
    tickets = db.execute(
        "SELECT t.id, t.status::text, t.routed_at IS NOT NULL AS routed, "
        "       array_agg(e.type ORDER BY e.id) AS events "
        "FROM core.tickets t JOIN core.ticket_events e ON e.ticket_id = t.id "
        "WHERE t.mailbox_id = %s AND t.merged_into_ticket_id IS NULL GROUP BY t.id",
        [mailbox_id],
    ).fetchall()
    assert tickets
    for ticket in tickets:
        # Nothing is allowlisted for this organisation: routing makes each ticket spam.
        assert ticket["routed"] and ticket["status"] == "spam", ticket
        assert ticket["events"][:3] == ["created", "routed", "auto_spam"], ticket
        assert ticket["events"].count("routed") == 1, ticket
