"""The procrastinate application: `procrastinate --app=worker.app.app worker` runs it.

The connection string is resolved on first connect (settings, else embedded PostgreSQL),
so importing this module never starts a database.
"""

from __future__ import annotations

import procrastinate

from kernel.db import database_url
from kernel.settings import load_settings
from worker.failures import record_failed_attempts


def _conninfo() -> str:
    return database_url(load_settings())


def make_connector(conninfo=_conninfo, max_size: int = 10) -> procrastinate.PsycopgConnector:
    """A connector for worker processes (`application_name=worker`)."""
    return procrastinate.PsycopgConnector(
        conninfo=conninfo,
        kwargs={"application_name": "worker"},
        min_size=1,
        max_size=max_size,
    )


# The key of the worker's runtime (worker.pipeline.Runtime) in a worker's additional context:
# worker.runner puts it there, tasks read it (worker.tasks.runtime_of).
RUNTIME = "runtime"

# Workers learn of new jobs by notification; polling is the fallback, and the only way to
# learn that a job held back by a procrastinate lock may start: the next backfill page of a
# mailbox is queued (and announced) while the page before it still holds the mailbox's
# lock. A short poll keeps a backfill from pausing between pages; it costs one small query
# per worker every 0.1 s.
FETCH_JOB_POLLING_SECONDS = 0.1
# A worker beats every 2 s; after logic.stalled_worker_seconds() (SQL) of silence it is
# presumed dead and its jobs are recovered.
HEARTBEAT_SECONDS = 2.0
PRUNE_NEVER_SECONDS = 10 * 365 * 86400.0

app = procrastinate.App(
    connector=make_connector(),
    import_paths=["worker.tasks"],
    worker_defaults={
        "worker_middleware": [record_failed_attempts],
        "fetch_job_polling_interval": FETCH_JOB_POLLING_SECONDS,
        "update_heartbeat_interval": HEARTBEAT_SECONDS,
        # procrastinate prunes workers silent this long when a worker starts, counting an
        # outage as silence; worker.recover_stalled_jobs prunes instead, outage-aware.
        "stalled_worker_timeout": PRUNE_NEVER_SECONDS,
    },
)
