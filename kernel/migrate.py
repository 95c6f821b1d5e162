"""Database lifecycle: data is migrated (yoyo, forward-only), code is reinstalled (sql/).

`migrate(url)` applies pending yoyo migrations, then drops and recreates the code schemas
and runs every file under sql/ in one transaction. yoyo's post-apply hooks run only when a
migration was pending, so the reload is done here, every time.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from yoyo import get_backend, read_migrations

from kernel.db import API_ROLE, connect
from kernel.settings import REPO_ROOT

log = logging.getLogger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "migrations"
SQL_DIR = REPO_ROOT / "sql"
# Load order: api and worker functions call logic; ops views read everything.
CODE_SCHEMAS = ("logic", "worker", "api", "ops")
_RELOAD_LOCK = 0x7469636B  # pg_advisory_xact_lock key shared by every reload


@dataclass(frozen=True)
class MigrateResult:
    applied: list[str]
    code_hash: str


def sql_files() -> list[Path]:
    """Every code file, in load order: schema by schema, then by file name."""
    return [path for schema in CODE_SCHEMAS for path in sorted((SQL_DIR / schema).glob("*.sql"))]


def code_hash() -> str:
    """Hash of the sql/ tree as it is on disk (names and contents)."""
    digest = hashlib.sha256()
    for path in sql_files():
        digest.update(path.relative_to(SQL_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def migration_ids() -> list[str]:
    """Ids of the migrations shipped in migrations/, sorted."""
    return sorted(m.id for m in read_migrations(str(MIGRATIONS_DIR)))


def _yoyo_url(url: str) -> str:
    # yoyo picks its driver from the scheme; psycopg 3 is `postgresql+psycopg`.
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def apply_migrations(url: str) -> list[str]:
    """Apply pending yoyo migrations under yoyo's lock; return the ids applied."""
    backend = get_backend(_yoyo_url(url))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()


def reload_code(url: str) -> str:
    """Drop and recreate the code schemas from sql/ in one transaction; return the code hash."""
    files = sql_files()
    current_hash = code_hash()
    with connect(url, "migrate") as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_RELOAD_LOCK])
        conn.execute("DROP SCHEMA IF EXISTS " + ", ".join(reversed(CODE_SCHEMAS)) + " CASCADE")
        for schema in CODE_SCHEMAS:
            conn.execute(f"CREATE SCHEMA {schema}")
        for path in files:
            try:
                conn.execute(path.read_text("utf-8"))
            except Exception as exc:
                exc.add_note(f"while loading {path.relative_to(REPO_ROOT)}")
                raise
        # Functions are executable by PUBLIC by default: take that back, then open the api
        # schema (the REST contract) to the API role. logic grants are made file by file.
        schemas = ", ".join(CODE_SCHEMAS)
        conn.execute(f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schemas} FROM PUBLIC")
        conn.execute(f"GRANT USAGE ON SCHEMA api, logic TO {API_ROLE}")
        conn.execute(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api TO {API_ROLE}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA api TO {API_ROLE}")
        conn.execute(
            "INSERT INTO core.schema_state (code_hash) VALUES (%s) "
            "ON CONFLICT (singleton) DO UPDATE SET code_hash = excluded.code_hash, "
            "reloaded_at = now()",
            [current_hash],
        )
    return current_hash


def migrate(url: str) -> MigrateResult:
    """Bring the database at `url` up to date: migrations, then a full code reload."""
    applied = apply_migrations(url)
    for migration_id in applied:
        log.info("applied migration %s", migration_id)
    installed_hash = reload_code(url)
    log.info("reloaded %d sql files (code %s)", len(sql_files()), installed_hash[:12])
    return MigrateResult(applied=applied, code_hash=installed_hash)
