"""Jobs of dead workers are given back whatever other copies exist, by any number of
recoverers at once; every failed job is in the DLQ and replayable (issue 11)."""

from __future__ import annotations

import threading

import psycopg
from psycopg.rows import dict_row

from tests.worker.test_worker import run_worker_until_idle


def dead_worker(db, seconds_silent: int = 600) -> int:
    return db.execute(
        "INSERT INTO procrastinate_workers (last_heartbeat) "
        "VALUES (now() - make_interval(secs => %s)) RETURNING id",
        [seconds_silent],
    ).fetchone()["id"]


def mailbox(db) -> str:
    org = db.execute(
        "INSERT INTO core.organizations (name) VALUES ('Acme') RETURNING id"
    ).fetchone()["id"]
    return str(
        db.execute(
            "INSERT INTO core.mailboxes (organization_id, email, history_id) "
            "VALUES (%s, 'journal@acme.example', 1000) RETURNING id",
            [org],
        ).fetchone()["id"]
    )


def sync_job(db, mailbox_id: str, task: str = "mailbox_history_sync") -> int:
    return db.execute("SELECT logic.enqueue_sync_job(%s, %s) AS id", [mailbox_id, task]).fetchone()[
        "id"
    ]


def take(db, job_id: int, worker_id: int) -> None:
    """What procrastinate does when a worker starts a job."""
    db.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
        [worker_id, job_id],
    )


def status(db, job_id: int) -> str:
    return db.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", [job_id]
    ).fetchone()["status"]


def recover(db, **kwargs) -> dict:
    return db.execute(
        "SELECT worker.recover_stalled_jobs(p_dead_worker_ids => %s::bigint[]) AS r",
        [kwargs.get("dead", [])],
    ).fetchone()["r"]


def test_a_dead_workers_sync_job_with_a_waiting_copy_is_superseded_not_retried(db):
    mailbox_id = mailbox(db)
    orphan = sync_job(db, mailbox_id)
    take(db, orphan, dead_worker(db))
    # The periodic sync queues a copy: the queueing lock counts only waiting jobs.
    copy = sync_job(db, mailbox_id)
    assert copy is not None

    result = recover(db)
    assert result["superseded"] == [orphan] and result["retried"] == []
    assert (status(db, orphan), status(db, copy)) == ("aborted", "todo")
    lost = db.execute(
        "SELECT error_class, error_message, mailbox_id::text FROM core.job_failures "
        "WHERE job_id = %s",
        [orphan],
    ).fetchone()
    assert lost["error_class"] == "WorkerLost"
    assert f"superseded by waiting job {copy}" in lost["error_message"]
    assert lost["mailbox_id"] == mailbox_id
    assert recover(db) == {"retried": [], "superseded": [], "failed": [], "logged": 0}


def test_every_orphan_of_a_dead_worker_is_recovered_in_one_call(db):
    mailbox_id = mailbox(db)
    worker = dead_worker(db)
    jobs = [
        db.execute(
            "SELECT logic.enqueue('occurrence_parse', %s, 'ingest') AS id",
            [f'{{"mailbox_id": "{mailbox_id}", "occurrence_ids": [{n}]}}'],
        ).fetchone()["id"]
        for n in range(5)
    ]
    backfill = sync_job(db, mailbox_id, "mailbox_backfill")
    for job in [*jobs, backfill]:
        take(db, job, worker)
    sync_job(db, mailbox_id, "mailbox_backfill")  # a copy of the backfill step waits

    result = recover(db)
    assert result["retried"] == jobs
    assert result["superseded"] == [backfill]
    assert {status(db, job) for job in jobs} == {"todo"}


def test_a_live_worker_keeps_its_jobs(db):
    mailbox_id = mailbox(db)
    live = db.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id").fetchone()[
        "id"
    ]
    job = sync_job(db, mailbox_id)
    take(db, job, live)
    assert recover(db)["retried"] == []
    assert status(db, job) == "doing"
    # Unless the caller knows it is dead (its own earlier incarnation).
    assert recover(db, dead=[live])["retried"] == [job]
    assert db.execute("SELECT count(*) AS n FROM procrastinate_workers").fetchone()["n"] == 0


def test_a_job_that_keeps_losing_its_worker_goes_to_the_dlq(db):
    mailbox_id = mailbox(db)
    job = db.execute(
        "SELECT logic.enqueue('occurrence_parse', %s, 'ingest') AS id",
        [f'{{"mailbox_id": "{mailbox_id}", "occurrence_ids": [1]}}'],
    ).fetchone()["id"]
    limit = db.execute("SELECT worker.max_lost_runs() AS n").fetchone()["n"]
    for run in range(1, limit + 1):
        take(db, job, dead_worker(db))
        result = recover(db)
        expected = "failed" if run == limit else "retried"
        assert result[expected] == [job]
    assert status(db, job) == "failed"
    dlq = db.execute("SELECT * FROM ops.dlq WHERE job_id = %s", [job]).fetchone()
    assert dlq["error_class"] == "WorkerLost"
    assert f"gave up after {limit} lost runs" in dlq["error_message"]


def test_concurrent_recoveries_decide_each_job_once(db, db_url):
    mailbox_id = mailbox(db)
    worker = dead_worker(db)
    jobs = []
    for n in range(200):
        job = db.execute(
            "SELECT logic.enqueue('occurrence_parse', %s, 'ingest') AS id",
            [f'{{"mailbox_id": "{mailbox_id}", "occurrence_ids": [{n}]}}'],
        ).fetchone()["id"]
        take(db, job, worker)
        jobs.append(job)
    results: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def recoverer() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
                start.wait()
                results.append(recover(conn))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=recoverer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    retried = sorted(job for result in results for job in result["retried"])
    assert retried == jobs  # each exactly once, none lost
    lost = db.execute(
        "SELECT count(*) AS n FROM core.job_failures WHERE error_class = 'WorkerLost'"
    ).fetchone()["n"]
    assert lost == len(jobs)


async def test_a_new_worker_recovers_at_once_whatever_copies_wait(db, db_url):
    """The whole state a killed sync step leaves: a new `--until-idle` run gets through."""
    mailbox_id = mailbox(db)
    db.execute("UPDATE core.mailboxes SET enabled = false WHERE id = %s", [mailbox_id])
    orphan = sync_job(db, mailbox_id)
    take(db, orphan, dead_worker(db))
    copy = sync_job(db, mailbox_id)
    await run_worker_until_idle(db_url)
    assert (status(db, orphan), status(db, copy)) == ("aborted", "succeeded")


def test_a_failure_the_worker_could_not_record_is_in_the_dlq_and_replayable(db):
    mailbox_id = mailbox(db)
    org = db.execute(
        "SELECT organization_id FROM core.mailboxes WHERE id = %s", [mailbox_id]
    ).fetchone()["organization_id"]
    job = db.execute(
        "SELECT logic.enqueue('occurrence_parse', %s, 'ingest') AS id",
        [f'{{"mailbox_id": "{mailbox_id}", "occurrence_ids": [7]}}'],
    ).fetchone()["id"]
    # The job failed while the database was away: nothing in core.job_failures.
    take(db, job, dead_worker(db, 0))
    db.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", [job])

    row = db.execute("SELECT * FROM ops.dlq WHERE job_id = %s", [job]).fetchone()
    assert row["organization_id"] == org
    assert row["error_class"] == "Unrecorded"
    assert row["failed_at"] is not None
    replay = db.execute("SELECT ops.replay_job(%s, %s) AS r", [job, org]).fetchone()["r"]
    assert replay["created"] is True
    assert status(db, replay["replay_job_id"]) == "todo"


def test_the_callers_own_worker_is_never_taken_for_dead(db):
    mailbox_id = mailbox(db)
    own = dead_worker(db)  # its heartbeat is old: say the database was slow to answer it
    job = sync_job(db, mailbox_id)
    take(db, job, own)
    result = db.execute(
        "SELECT worker.recover_stalled_jobs(p_live_worker_ids => %s::bigint[]) AS r", [[own]]
    ).fetchone()["r"]
    assert result["retried"] == [] and status(db, job) == "doing"
