"""Where the database is and how processes connect to it.

`DATABASE_URL` names a server; without it, an embedded PostgreSQL (the `pgserver` wheel) is
started with its data under `var/`, so a new user needs nothing installed.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from kernel.settings import Settings

log = logging.getLogger(__name__)

# The role the API switches to for every query. It owns nothing and cannot bypass
# row-level security, even when the login user is a superuser. Created by migration 0001.
API_ROLE = "ticketing_api"

_embedded_lock = threading.Lock()
_embedded_servers: dict[Path, Any] = {}


def embedded_database_url(pgdata: Path) -> str:
    """Start (or join) the embedded PostgreSQL under `pgdata` and return its URL.

    pgserver stops the server when the last process that started it exits.
    """
    with _embedded_lock:
        server = _embedded_servers.get(pgdata)
        if server is None:
            import pgserver  # imported lazily: only local runs without DATABASE_URL need it

            pgdata.mkdir(parents=True, exist_ok=True)
            log.info("starting embedded PostgreSQL in %s", pgdata)
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            _embedded_servers[pgdata] = server
        return server.get_uri()


def database_url(settings: Settings) -> str:
    """The URL every process of this configuration connects to."""
    return settings.database_url or embedded_database_url(settings.embedded_pg_dir)


def uses_embedded(settings: Settings) -> bool:
    return settings.database_url is None


def connect(url: str, application_name: str, autocommit: bool = False) -> psycopg.Connection:
    """A plain synchronous connection (CLI, migrations, tests)."""
    return psycopg.connect(
        url, autocommit=autocommit, application_name=application_name, row_factory=dict_row
    )


# A pooled connection idle for longer than this is pinged before it is handed out (the
# server may have restarted meanwhile). Busy connections are not: under load that ping
# would be one more round trip per request. A connection that broke anyway fails its one
# request with 503 and the pool replaces it.
IDLE_CHECK_SECONDS = 5.0


async def _as_api_role(conn: psycopg.AsyncConnection) -> None:
    # Runs once per pooled connection: every later query of the API is subject to RLS.
    await conn.execute(f"SET ROLE {API_ROLE}")


def api_pool(settings: Settings, url: str) -> AsyncConnectionPool:
    """The API's pool: connections switched to the RLS-bound role, dict rows."""
    returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = (
        weakref.WeakKeyDictionary()
    )

    async def check_if_idle(conn: psycopg.AsyncConnection) -> None:
        if time.monotonic() - returned_at.get(conn, 0.0) > IDLE_CHECK_SECONDS:
            await AsyncConnectionPool.check_connection(conn)

    async def stamp_returned(conn: psycopg.AsyncConnection) -> None:
        returned_at[conn] = time.monotonic()

    return AsyncConnectionPool(
        url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        # Autocommit: a handler's SQL call is one statement, its own transaction (see
        # app.http.sql_json); no BEGIN/COMMIT round trips around it.
        kwargs={"application_name": "api", "row_factory": dict_row, "autocommit": True},
        configure=_as_api_role,
        check=check_if_idle,
        reset=stamp_returned,
        open=False,
        name="api",
    )
