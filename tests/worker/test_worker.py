"""The worker consumes jobs deferred from SQL through logic.enqueue."""

from __future__ import annotations

import procrastinate

from worker.app import app, make_connector
from worker.runner import run_until_idle


async def run_worker_until_idle(db_url: str) -> None:
    """Process every waiting job with a real worker, then return."""
    with app.replace_connector(make_connector(db_url)) as worker_app:
        async with worker_app.open_async():
            await run_until_idle(worker_app, concurrency=2)


def test_enqueue_wraps_the_pinned_procrastinate_defer_function(db):
    row = db.execute(
        "SELECT pg_get_function_identity_arguments('public.procrastinate_defer_jobs_v1'::regproc)"
        " AS args"
    ).fetchone()
    assert row["args"] == "jobs procrastinate_job_to_defer_v1[]"
    assert procrastinate.__version__ == "3.10.0"


async def test_ping_deferred_from_sql_is_completed_by_a_worker(db, db_url):
    ping_id = db.execute("SELECT ops.request_worker_ping() AS id").fetchone()["id"]
    job = db.execute(
        "SELECT status, task_name FROM procrastinate_jobs WHERE args->>'ping_id' = %s",
        [str(ping_id)],
    ).fetchone()
    assert job == {"status": "todo", "task_name": "worker_ping"}

    await run_worker_until_idle(db_url)

    job = db.execute(
        "SELECT status FROM procrastinate_jobs WHERE args->>'ping_id' = %s", [str(ping_id)]
    ).fetchone()
    assert job["status"] == "succeeded"
    ping = db.execute("SELECT * FROM ops.worker_pings WHERE id = %s", [ping_id]).fetchone()
    assert ping["completed_at"] is not None
    assert ping["completed_by"] == "worker"


def test_queueing_lock_duplicates_are_swallowed(db):
    first = db.execute(
        "SELECT logic.enqueue('worker_ping', '{\"ping_id\": 1}', p_queueing_lock => 'ping') AS id"
    ).fetchone()["id"]
    second = db.execute(
        "SELECT logic.enqueue('worker_ping', '{\"ping_id\": 1}', p_queueing_lock => 'ping') AS id"
    ).fetchone()["id"]
    assert first is not None
    assert second is None
    count = db.execute(
        "SELECT count(*) AS n FROM procrastinate_jobs WHERE queueing_lock = 'ping'"
    ).fetchone()["n"]
    assert count == 1
