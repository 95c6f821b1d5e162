"""Listing walks over Gmail: one walk keeps one query, a crash resumes from what was stored,
and nothing is skipped or repeated (issue 11). The real Gmail client library talks to the
fake Gmail server, whose page tokens are valid only with the query that produced them."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

import pytest
from psycopg_pool import AsyncConnectionPool

from devtools.fake_gmail import FaultRule
from tests.fixtures.ingest import kill_when, running_worker
from worker import pipeline

JOURNAL = "journal@example.com"


def question(n: int) -> bytes:
    """A small customer message, its own thread."""
    return (
        f"From: Customer {n} <c{n}@customer.example>\r\n"
        "To: support@acme.example\r\n"
        f"Subject: Question {n}\r\n"
        f"Message-ID: <q{n}@customer.example>\r\n"
        f"Date: Mon, 07 Dec 2026 08:{n % 60:02d}:00 +0000\r\n"
        "\r\n"
        f"Hello, this is question number {n}.\r\n"
    ).encode()


def mailbox_row(db, mailbox_id: str) -> dict:
    return db.execute("SELECT * FROM core.mailboxes WHERE id = %s", [mailbox_id]).fetchone()


def occurrence_counts(db, mailbox_id: str) -> tuple[int, int, int]:
    """(occurrences, distinct Gmail ids, routed) of the mailbox."""
    row = db.execute(
        "SELECT count(*) AS n, count(DISTINCT gmail_message_id) AS d, "
        "count(*) FILTER (WHERE state = 'routed') AS routed "
        "FROM core.message_occurrences WHERE mailbox_id = %s",
        [mailbox_id],
    ).fetchone()
    return row["n"], row["d"], row["routed"]


def history_queries(gmail) -> list[dict[str, list[str]]]:
    return [parse_qs(r.query) for r in gmail.log if r.kind == "history" and not r.in_batch]


async def synced_mailbox(ingest, db, messages: int) -> str:
    """A mailbox holding `messages` questions, backfilled and routed."""
    for n in range(messages):
        ingest.gmail.add_message(JOURNAL, question(n))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    await ingest.run_worker()
    assert mailbox_row(db, mailbox_id)["backfill_state"] == "done"
    return mailbox_id


def failed_jobs(db) -> list[dict]:
    return db.execute(
        "SELECT id, task_name FROM procrastinate_jobs WHERE status = 'failed'"
    ).fetchall()


async def test_a_history_walk_longer_than_a_page_keeps_its_query_and_loses_nothing(ingest, db):
    ingest.runtime.history_page_size = 10
    mailbox_id = await synced_mailbox(ingest, db, 1)
    start = mailbox_row(db, mailbox_id)["history_id"]

    for n in range(1, 36):  # a burst of 35 between two syncs: four pages of ten or more
        ingest.gmail.add_message(JOURNAL, question(n))
    # A delivery may be followed by label records of its own (the fake is realistic).
    records = [r for r in ingest.gmail.mailbox(JOURNAL).history if r.id > start]
    ingest.gmail.reset_counters()
    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])
    await ingest.run_worker()

    queries = history_queries(ingest.gmail)
    assert len(queries) == -(-len(records) // 10) >= 4
    # Every page of the walk is the same query; only the token moves it on.
    assert {q["startHistoryId"][0] for q in queries} == {str(start)}
    assert "pageToken" not in queries[0]
    assert all("pageToken" in q for q in queries[1:])
    assert occurrence_counts(db, mailbox_id) == (36, 36, 36)
    assert failed_jobs(db) == []
    # The cursor covers the whole walk: the next sync reads nothing new, in one page.
    ingest.gmail.reset_counters()
    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])
    await ingest.run_worker()
    assert len(history_queries(ingest.gmail)) == 1
    assert occurrence_counts(db, mailbox_id) == (36, 36, 36)


@pytest.mark.slow  # kills a worker process mid-run
async def test_a_worker_killed_inside_a_history_walk_resumes_from_the_last_stored_record(
    ingest, db, tmp_path
):
    mailbox_id = await synced_mailbox(ingest, db, 1)
    start = mailbox_row(db, mailbox_id)["history_id"]
    for n in range(1, 701):  # 700 between two syncs: two pages or more of Gmail's 500
        ingest.gmail.add_message(JOURNAL, question(n))
    # Slow pages, so the kill lands between the two pages of the walk.
    ingest.gmail.inject(FaultRule(endpoint="history", action="delay", delay=1.5, times=None))
    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])

    env = ingest.worker_env()
    stored = await asyncio.to_thread(
        _kill_once_the_cursor_moves, db, mailbox_id, start, env, tmp_path
    )
    assert start < stored < ingest.gmail.mailbox(JOURNAL).history_id
    # The dead worker's job still holds the mailbox's lock; the periodic sync queues a copy
    # of it meanwhile (procrastinate's queueing lock only counts waiting jobs; the dead
    # worker's own periodic deferrer may have queued it already).
    db.execute("SELECT logic.enqueue_due_syncs()")
    jobs = db.execute(
        "SELECT status::text, count(*) AS n FROM procrastinate_jobs "
        "WHERE task_name = 'mailbox_history_sync' AND status IN ('todo', 'doing') GROUP BY 1"
    ).fetchall()
    assert {row["status"]: row["n"] for row in jobs} == {"todo": 1, "doing": 1}

    ingest.gmail.clear_faults()
    ingest.gmail.reset_counters()
    await ingest.run_worker(stalled_after=0)

    queries = history_queries(ingest.gmail)
    # A fresh query from the stored cursor: no token of the dead walk.
    assert queries[0]["startHistoryId"] == [str(stored)]
    assert "pageToken" not in queries[0]
    assert occurrence_counts(db, mailbox_id) == (701, 701, 701)
    orphan = db.execute(
        "SELECT j.status, f.error_message FROM procrastinate_jobs j "
        "JOIN core.job_failures f ON f.job_id = j.id AND f.error_class = 'WorkerLost' "
        "WHERE j.task_name = 'mailbox_history_sync'"
    ).fetchall()
    assert [row["status"] for row in orphan] == ["aborted"]
    assert "superseded by waiting job" in orphan[0]["error_message"]
    assert failed_jobs(db) == []


def _kill_once_the_cursor_moves(db, mailbox_id, start, env, tmp_path) -> int:
    """Run `ticketing worker`; SIGKILL it once a page is stored but before the walk ends."""
    with running_worker(env, tmp_path / "worker.log", concurrency=2) as worker:
        kill_when(worker, lambda: mailbox_row(db, mailbox_id)["history_id"] != start)
    row = mailbox_row(db, mailbox_id)
    assert row["history_id"] != start, (tmp_path / "worker.log").read_text()
    return row["history_id"]


async def test_a_backfill_walk_keeps_the_page_size_it_started_with(ingest, db):
    for n in range(120):
        ingest.gmail.add_message(JOURNAL, question(n))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    async with AsyncConnectionPool(ingest.db_url, min_size=1, max_size=2, open=False) as pool:
        ingest.runtime.backfill_page_size = 50
        await pipeline.backfill_page(pool, ingest.runtime, mailbox_id)
        # A worker configured otherwise (an upgrade mid-walk) continues the same query.
        ingest.runtime.backfill_page_size = 30
        await pipeline.backfill_page(pool, ingest.runtime, mailbox_id)
        await pipeline.backfill_page(pool, ingest.runtime, mailbox_id)
    sizes = [parse_qs(r.query)["maxResults"] for r in ingest.gmail.log if r.kind == "list"]
    assert sizes == [["50"], ["50"], ["50"]]
    row = mailbox_row(db, mailbox_id)
    assert (row["backfill_state"], row["backfill_pages"]) == ("done", 3)
    assert occurrence_counts(db, mailbox_id)[:2] == (120, 120)


async def test_a_refused_backfill_page_token_restarts_the_walk(ingest, db):
    for n in range(60):
        ingest.gmail.add_message(JOURNAL, question(n))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    # A walk checkpointed with a token Gmail no longer accepts (expired).
    db.execute(
        "UPDATE core.mailboxes SET backfill_page_token = 'expired-token', backfill_pages = 4, "
        "backfill_page_size = 100 WHERE id = %s",
        [mailbox_id],
    )
    await ingest.run_worker()
    row = mailbox_row(db, mailbox_id)
    assert row["backfill_state"] == "done"
    assert row["backfill_pages"] == 1  # walked again from the first page
    assert "page token refused" in row["last_error"]
    assert occurrence_counts(db, mailbox_id) == (60, 60, 60)
    assert failed_jobs(db) == []


async def test_a_fetch_job_that_dies_refetches_only_what_it_had_not_stored(ingest, db):
    ingest.runtime.fetch_chunk_size = 10
    for n in range(30):
        ingest.gmail.add_message(JOURNAL, question(n))
    mailbox_id = ingest.add_mailbox(db, JOURNAL)
    db.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])
    async with AsyncConnectionPool(ingest.db_url, min_size=1, max_size=2, open=False) as pool:
        await pipeline.backfill_page(
            pool, ingest.runtime, mailbox_id
        )  # discovers all 30: one fetch job
    in_order = [
        row["gmail_message_id"]
        for row in db.execute(
            "SELECT gmail_message_id FROM core.message_occurrences WHERE mailbox_id = %s "
            "ORDER BY id",
            [mailbox_id],
        )
    ]
    chunks = [in_order[:10], in_order[10:20], in_order[20:]]
    # The second chunk's batch keeps failing until the Gmail client gives up: the job's
    # first run dies there, the second succeeds.
    attempts = ingest.runtime.gmail_retry.max_attempts
    ingest.gmail.inject(
        FaultRule(endpoint="batch_part", status=500, times=attempts, message_id=chunks[1][4])
    )
    await ingest.run_worker()

    assert occurrence_counts(db, mailbox_id) == (30, 30, 30)
    fetch_jobs = db.execute(
        "SELECT attempts, status FROM procrastinate_jobs WHERE task_name = 'occurrence_fetch_raw'"
    ).fetchall()
    assert fetch_jobs == [{"attempts": 2, "status": "succeeded"}]  # two runs
    # The first chunk was recorded before the failure: it was not fetched again.
    assert [ingest.gmail.fetches_of(i) for i in chunks[0]] == [1] * 10
    assert all(ingest.gmail.fetches_of(i) > 1 for i in chunks[1])
    assert [ingest.gmail.fetches_of(i) for i in chunks[2]] == [1] * 10
