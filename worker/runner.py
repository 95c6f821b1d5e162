"""Running workers: supervised until asked to stop, or until the pipeline is idle (scripts,
the demo, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import procrastinate
import psycopg
from procrastinate.periodic import PeriodicRegistry
from procrastinate.worker import Worker

from worker.app import RUNTIME
from worker.pipeline import Runtime
from worker.tasks import enqueue_due_syncs, recover_stalled

log = logging.getLogger(__name__)


def runtime_context(runtime: Runtime | None) -> dict:
    """A worker's additional context carrying `runtime` to the tasks (None: the tasks build
    one from the environment)."""
    return {RUNTIME: runtime} if runtime is not None else {}


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
    stalled_after: float | None = None,
    poll_seconds: float = 0.5,
    runtime: Runtime | None = None,
) -> None:
    """Process jobs until none is waiting or running, recovering jobs of dead workers.

    One long-lived worker runs meanwhile (a worker that stopped whenever the queue looked
    empty for a moment would wait for all its running jobs and restart every time); every
    `poll_seconds` this checks whether the pipeline is idle, and stops it when it is.
    Periodic tasks are not deferred meanwhile; the caller queues what it wants done. The
    tasks get `runtime` (worker.pipeline.Runtime), else one built from the environment.

    Jobs of workers silent for `stalled_after` seconds (default: the SQL limit,
    logic.stalled_worker_seconds()) are recovered before the worker starts (the caller
    may know they are dead: tests pass 0). While it runs, only the SQL limit applies: a
    shorter one would take this worker's own running jobs for stalled ones.
    """
    with _without_periodic_tasks(worker_app):
        await recover_stalled(worker_app, stalled_after)
        worker = asyncio.create_task(
            worker_app.run_worker_async(
                wait=True,
                concurrency=concurrency,
                install_signal_handlers=False,
                additional_context=runtime_context(runtime),
            ),
            name="worker until idle",
        )
        try:
            while True:
                await asyncio.wait({worker}, timeout=poll_seconds)
                if worker.done():
                    break
                await recover_stalled(worker_app)
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


# How often a supervised worker process gives back the jobs of dead workers, and how long it
# waits between restarts of its procrastinate worker (doubling up to the maximum).
RECOVERY_INTERVAL_SECONDS = 5.0
RESTART_DELAY_SECONDS = 0.5
MAX_RESTART_DELAY_SECONDS = 10.0
# A run that lasted this long was healthy: the next failure restarts at the first delay.
HEALTHY_RUN_SECONDS = 60.0


async def run_supervised(
    worker_app: procrastinate.App,
    conninfo: str,
    stop: asyncio.Event,
    *,
    concurrency: int = 4,
    queues: list[str] | None = None,
    sync_poll_seconds: float | None = None,
    runtime: Runtime | None = None,
) -> int:
    """Run a procrastinate worker until `stop` is set, whatever happens to the database.

    procrastinate's worker ends when its database goes away: an idle worker stops cleanly
    once its listener cannot reconnect, a busy one raises. Here every such end is followed
    by a wait until the database answers again and a new worker on a new pool; the jobs the
    old one left running are given back at once (its id is known to be dead). Meanwhile,
    every RECOVERY_INTERVAL_SECONDS, the jobs of other dead workers are recovered, and every
    `sync_poll_seconds` (SYNC_POLL_SECONDS) every mailbox gets the sync it needs: the
    polling safety net under push notifications, finer than the periodic task's minute.
    Returns the number of restarts; it returns only once `stop` is set. The tasks get
    `runtime` (worker.pipeline.Runtime), else one built from the environment.
    """
    dead_worker_ids: list[int] = []
    delay = RESTART_DELAY_SECONDS
    restarts = 0
    while not stop.is_set():
        options = {
            **worker_app.worker_defaults,
            "concurrency": concurrency,
            "queues": queues,
            "additional_context": runtime_context(runtime),
        }
        worker = Worker(app=worker_app, wait=True, install_signal_handlers=False, **options)
        started = asyncio.get_running_loop().time()
        try:
            async with worker_app.open_async():
                await recover_stalled(worker_app, dead_worker_ids=dead_worker_ids)
                dead_worker_ids.clear()
                ended = await _run_until_stopped(worker_app, worker, stop, sync_poll_seconds)
        except Exception as exc:  # the database went away under the worker
            ended = f"{type(exc).__name__}: {exc}"
        if worker.worker_id is not None:  # it could not unregister: its jobs are orphans
            dead_worker_ids.append(worker.worker_id)
        if stop.is_set():
            break
        restarts += 1
        if asyncio.get_running_loop().time() - started > HEALTHY_RUN_SECONDS:
            delay = RESTART_DELAY_SECONDS
        log.error("worker stopped without being asked (%s); restarting", ended)
        await _wait_for_database(conninfo, stop, delay)
        delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)
    return restarts


async def _run_until_stopped(
    worker_app: procrastinate.App, worker: Worker, stop: asyncio.Event, sync_poll_seconds
):
    """Run `worker` with the housekeeping loops beside it; stop it gracefully when `stop`
    is set. Returns why the worker ended on its own (None when it was asked to stop)."""
    run = asyncio.create_task(worker.run(), name="procrastinate worker")
    side = [
        asyncio.create_task(
            _every(
                RECOVERY_INTERVAL_SECONDS,
                lambda: recover_stalled(
                    worker_app, live_worker_ids=[worker.worker_id] if worker.worker_id else []
                ),
            ),
            name="stalled job recovery",
        )
    ]
    if sync_poll_seconds:
        side.append(
            asyncio.create_task(
                _every(sync_poll_seconds, lambda: enqueue_due_syncs(worker_app)),
                name="sync poll",
            )
        )
    stopping = asyncio.create_task(stop.wait(), name="stop requested")
    try:
        await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            worker.stop()  # graceful: running jobs finish first
        await asyncio.wait({run})
    finally:
        for task in (*side, stopping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if stop.is_set() and run.exception() is None:
        return None
    error = run.exception()
    return f"{type(error).__name__}: {error}" if error else "it stopped by itself"


async def _every(seconds: float, step) -> None:
    """Run `step()` every `seconds`; a failure (the database away) waits for the next turn:
    the worker itself notices a lasting outage."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except Exception as exc:
            log.warning("housekeeping step failed: %s", exc)


async def _wait_for_database(conninfo: str, stop: asyncio.Event, delay: float) -> None:
    """Sleep `delay`, then until a connection to the database succeeds (or `stop`)."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=2)
        except psycopg.Error as exc:
            log.warning("database unavailable (%s); retrying", exc)
            delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)
            continue
        await conn.close()
        return
