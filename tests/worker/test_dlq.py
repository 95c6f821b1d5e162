"""Failed attempts are recorded; failed jobs form the DLQ and can be replayed."""

from __future__ import annotations

from tests.worker.test_worker import run_worker_until_idle


async def test_a_failed_task_lands_in_the_dlq_and_replay_runs_it_to_success(db, db_url):
    job_id = db.execute(
        "SELECT logic.enqueue('worker_ping', '{\"ping_id\": 424242}') AS id"
    ).fetchone()["id"]
    await run_worker_until_idle(db_url)

    dlq = db.execute("SELECT * FROM ops.dlq").fetchall()
    assert [(row["job_id"], row["task_name"]) for row in dlq] == [(job_id, "worker_ping")]
    assert dlq[0]["error_class"] == "RaiseException"
    assert "no worker ping 424242" in dlq[0]["error_message"]
    attempts = db.execute(
        "SELECT attempt, error_class FROM core.job_failures WHERE job_id = %s", [job_id]
    ).fetchall()
    assert attempts == [{"attempt": 1, "error_class": "RaiseException"}]

    # Fix the cause, then replay: a new job with a fresh attempt budget.
    db.execute("INSERT INTO core.worker_pings (id) OVERRIDING SYSTEM VALUE VALUES (424242)")
    first = db.execute("SELECT ops.replay_job(%s) AS r", [job_id]).fetchone()["r"]
    again = db.execute("SELECT ops.replay_job(%s) AS r", [job_id]).fetchone()["r"]
    assert first["created"] is True
    assert again == {**first, "created": False}  # no duplicate
    replay = db.execute(
        "SELECT attempts, status FROM procrastinate_jobs WHERE id = %s", [first["replay_job_id"]]
    ).fetchone()
    assert replay == {"attempts": 0, "status": "todo"}

    await run_worker_until_idle(db_url)
    status = db.execute(
        "SELECT status FROM procrastinate_jobs WHERE id = %s", [first["replay_job_id"]]
    ).fetchone()["status"]
    assert status == "succeeded"
    assert (
        db.execute("SELECT completed_by FROM core.worker_pings WHERE id = 424242").fetchone()[
            "completed_by"
        ]
        == "worker"
    )


def test_replay_of_a_job_with_a_pending_twin_adds_nothing(db):
    db.execute("INSERT INTO core.worker_pings (id) OVERRIDING SYSTEM VALUE VALUES (7)")
    failed = db.execute("SELECT logic.enqueue('worker_ping', '{\"ping_id\": 7}') AS id").fetchone()[
        "id"
    ]
    db.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [failed])
    db.execute(
        "INSERT INTO core.job_failures (job_id, task_name, attempt, error_class) "
        "VALUES (%s, 'worker_ping', 1, 'Boom')",
        [failed],
    )
    twin = db.execute("SELECT logic.enqueue('worker_ping', '{\"ping_id\": 7}') AS id").fetchone()[
        "id"
    ]
    result = db.execute("SELECT ops.replay_job(%s) AS r", [failed]).fetchone()["r"]
    assert result == {"job_id": failed, "replay_job_id": twin, "created": True}
    pending = db.execute(
        "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'"
    ).fetchone()["n"]
    assert pending == 1


def test_replay_of_an_unknown_or_unfailed_job_is_404(db):
    import psycopg
    import pytest

    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT ops.replay_job(999999)")
    assert raised.value.sqlstate == "TK404"
