"""Running workers: forever, or until the pipeline is idle (scripts, the demo, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import procrastinate
from procrastinate.periodic import PeriodicRegistry

from worker.tasks import STALLED_WORKER_SECONDS, retry_stalled

log = logging.getLogger(__name__)

# A job scheduled further ahead than this (a paused mailbox, a long retry back-off) does
# not keep --until-idle waiting.
IDLE_HORIZON_SECONDS = 120


async def pending_jobs(worker_app: procrastinate.App) -> tuple[int, int]:
    """(jobs waiting to run soon, jobs running) across every queue."""
    async with worker_app.connector.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'todo' AND (scheduled_at IS NULL "
            "    OR scheduled_at <= now() + make_interval(secs => %s))),"
            "       count(*) FILTER (WHERE status = 'doing')"
            " FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
            [IDLE_HORIZON_SECONDS],
        )
        todo, doing = await cursor.fetchone()
    return todo, doing


@contextlib.contextmanager
def _without_periodic_tasks(worker_app: procrastinate.App) -> Iterator[None]:
    # A run until idle does only the work already queued: periodic deferrals would keep
    # adding jobs at minute boundaries (and make scripted runs non-deterministic).
    registry = worker_app.periodic_registry
    worker_app.periodic_registry = PeriodicRegistry()
    try:
        yield
    finally:
        worker_app.periodic_registry = registry


async def run_until_idle(
    worker_app: procrastinate.App,
    *,
    concurrency: int = 4,
    stalled_after: float = STALLED_WORKER_SECONDS,
    poll_seconds: float = 0.5,
) -> None:
    """Process jobs until none is waiting or running, recovering jobs of dead workers.

    One long-lived worker runs meanwhile (a worker that stopped whenever the queue looked
    empty for a moment would wait for all its running jobs and restart every time); every
    `poll_seconds` this checks whether the pipeline is idle, and stops it when it is.
    Periodic tasks are not deferred meanwhile; the caller queues what it wants done.

    Jobs of workers silent for `stalled_after` seconds are recovered before the worker
    starts (the caller may know they are dead: tests pass 0). While it runs, only the usual
    heartbeat rule (STALLED_WORKER_SECONDS) applies: a shorter one would take this
    worker's own running jobs for stalled ones.
    """
    with _without_periodic_tasks(worker_app):
        await retry_stalled(worker_app, stalled_after)
        worker = asyncio.create_task(
            worker_app.run_worker_async(
                wait=True,
                concurrency=concurrency,
                install_signal_handlers=False,
            ),
            name="worker until idle",
        )
        try:
            while True:
                await asyncio.wait({worker}, timeout=poll_seconds)
                if worker.done():
                    break
                await retry_stalled(worker_app, STALLED_WORKER_SECONDS)
                todo, doing = await pending_jobs(worker_app)
                if todo == 0 and doing == 0:
                    return
                log.debug("waiting for %d queued and %d running jobs", todo, doing)
        finally:
            if not worker.done():
                worker.cancel()  # a graceful stop: procrastinate finishes running jobs
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        worker.result()  # a worker that died on its own raises here
