"""The recent-search index: one from a horizon back, replaced by its task once too old."""

from __future__ import annotations

from tests.worker.test_worker import run_worker_until_idle


def _indexes(db) -> list[dict]:
    return db.execute(
        "SELECT index_name, since, valid FROM worker.recent_search_indexes ORDER BY index_name"
    ).fetchall()


def _one_horizon_back(db):
    return db.execute(
        "SELECT ((now() AT TIME ZONE 'UTC') - core.recent_search_horizon())::date AS d"
    ).fetchone()["d"]


def _steps(db) -> list[str]:
    return db.execute("SELECT worker.recent_search_index_steps() AS s").fetchone()["s"]


def test_a_new_database_has_one_covering_a_horizon_back_and_nothing_to_do(db):
    (index,) = _indexes(db)
    assert index["valid"] and index["index_name"] == f"tickets_search_since_{index['since']:%Y%m%d}"
    # Built when the test session's template was migrated: today, or yesterday after midnight.
    assert 0 <= (_one_horizon_back(db) - index["since"]).days <= 1
    assert _steps(db) == []


def test_an_older_leftover_is_dropped_and_the_current_one_kept(db):
    (current,) = _indexes(db)
    db.execute(
        db.execute(
            "SELECT core.recent_search_index_ddl(current_date - 90, false) AS ddl"
        ).fetchone()["ddl"]
    )
    leftover = next(i for i in _indexes(db) if i != current)
    assert _steps(db) == [f"DROP INDEX CONCURRENTLY IF EXISTS core.{leftover['index_name']}"]


async def test_an_index_two_horizons_old_is_replaced_by_the_daily_task(db, db_url):
    db.execute(f"DROP INDEX core.{_indexes(db)[0]['index_name']}")
    old = db.execute(
        "SELECT core.recent_search_index_ddl(current_date - 61, false) AS ddl"
    ).fetchone()["ddl"]
    db.execute(old)
    (old_index,) = _indexes(db)
    since = _one_horizon_back(db)
    new_name = f"tickets_search_since_{since:%Y%m%d}"
    assert _steps(db) == [
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {new_name} ON core.tickets USING gin (search) "
        f"WHERE last_activity_at >= '{since} 00:00:00+00'::timestamptz",
        f"DROP INDEX CONCURRENTLY IF EXISTS core.{old_index['index_name']}",
    ]

    db.execute("SELECT logic.enqueue('tickets_refresh_recent_search_index', '{\"timestamp\": 0}')")
    await run_worker_until_idle(db_url)

    job = db.execute(
        "SELECT status FROM procrastinate_jobs "
        "WHERE task_name = 'tickets_refresh_recent_search_index'"
    ).fetchone()
    assert job["status"] == "succeeded"
    assert _indexes(db) == [{"index_name": new_name, "since": since, "valid": True}]
    assert _steps(db) == []


def test_a_failed_concurrent_build_is_dropped_and_built_again(db):
    (index,) = _indexes(db)
    # What an interrupted CREATE INDEX CONCURRENTLY leaves behind.
    db.execute(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
        [f"core.{index['index_name']}"],
    )
    steps = _steps(db)
    assert steps[0] == f"DROP INDEX CONCURRENTLY IF EXISTS core.{index['index_name']}"
    assert steps[1].startswith(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index['index_name']} ")
    assert len(steps) == 2
    for step in steps:
        db.execute(step)
    assert _indexes(db) == [{**index, "valid": True}]


def test_the_index_definition_does_not_follow_the_session_date_style(db):
    db.execute("SET datestyle = 'SQL, DMY'")
    ddl = db.execute(
        "SELECT core.recent_search_index_ddl(date '2026-10-25', true) AS ddl"
    ).fetchone()["ddl"]
    assert ddl == (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS tickets_search_since_20261025 ON core.tickets "
        "USING gin (search) WHERE last_activity_at >= '2026-10-25 00:00:00+00'::timestamptz"
    )
