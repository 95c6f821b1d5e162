"""Database lifecycle: migrations once, code reinstalled on every migrate."""

from __future__ import annotations

import psycopg

from kernel.migrate import CODE_SCHEMAS, code_hash, migrate, migration_ids


def test_migrate_twice_is_a_no_op_apart_from_the_reload(db, db_url):
    before = db.execute("SELECT reloaded_at FROM core.schema_state").fetchone()["reloaded_at"]
    result = migrate(db_url)
    assert result.applied == []
    assert result.code_hash == code_hash()
    after = db.execute("SELECT code_hash, reloaded_at FROM core.schema_state").fetchone()
    assert after["code_hash"] == code_hash()
    assert after["reloaded_at"] > before
    applied = [r["migration_id"] for r in db.execute("SELECT migration_id FROM _yoyo_migration")]
    assert sorted(applied) == migration_ids()


def test_reload_removes_code_that_is_no_longer_in_sql(db, db_url):
    db.execute("CREATE FUNCTION api.leftover() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    migrate(db_url)
    leftover = db.execute("SELECT to_regprocedure('api.leftover()') AS fn").fetchone()["fn"]
    assert leftover is None


def test_reload_keeps_data(db, db_url):
    db.execute("INSERT INTO core.organizations (name) VALUES ('Acme')")
    migrate(db_url)
    assert db.execute("SELECT name FROM core.organizations").fetchone()["name"] == "Acme"


def test_every_api_and_worker_function_is_documented(db):
    undocumented = db.execute(
        """
        SELECT n.nspname || '.' || p.proname AS fn
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('api', 'worker', 'logic', 'ops')
          AND obj_description(p.oid, 'pg_proc') IS NULL
        """
    ).fetchall()
    assert undocumented == []


def test_every_code_view_and_type_is_documented(db):
    undocumented = db.execute(
        """
        SELECT n.nspname || '.' || t.typname AS type
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_class c ON c.oid = t.typrelid
        WHERE n.nspname IN ('api', 'worker', 'logic', 'ops')
          AND (t.typtype IN ('e', 'd') OR c.relkind IN ('c', 'v', 'm'))
          AND CASE WHEN c.relkind IN ('v', 'm') THEN obj_description(c.oid, 'pg_class')
                   ELSE obj_description(t.oid, 'pg_type') END IS NULL
        """
    ).fetchall()
    assert undocumented == []


def test_code_functions_are_not_executable_by_public(db):
    exposed = db.execute(
        """
        SELECT n.nspname || '.' || p.proname AS fn
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%s)
          AND has_function_privilege('public', p.oid, 'EXECUTE')
        """,
        [list(CODE_SCHEMAS)],
    ).fetchall()
    assert exposed == []


def test_api_role_cannot_enqueue_jobs_directly(db):
    db.execute("SET ROLE ticketing_api")
    try:
        db.execute("SELECT logic.enqueue('worker_ping')")
    except psycopg.errors.InsufficientPrivilege:
        pass
    else:
        raise AssertionError("the API role could defer arbitrary jobs")
