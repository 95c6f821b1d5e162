"""Pipeline tasks: each has an explicit `name=` (the stage name) and only passes ids.

The Python part of a stage lives in worker/pipeline.py; its SQL function records the
result and queues the successor (through logic.enqueue) in one transaction.
"""

from __future__ import annotations

import logging
from typing import Any

import procrastinate
import psycopg
from procrastinate import JobContext, RetryStrategy

from worker import outbound, pipeline
from worker.app import RUNTIME, app

log = logging.getLogger(__name__)

# Transient failures of fetch/parse (Gmail beyond the client's own retries, blob store).
OCCURRENCE_RETRY = RetryStrategy(max_attempts=5, exponential_wait=2)


def _pool(context: JobContext):
    return context.app.connector.pool


async def _value(worker_app: procrastinate.App, query: str, params: list[Any] | None = None):
    """The single value of one SQL function call."""
    async with worker_app.connector.pool.connection() as conn:
        cursor = await conn.execute(query, params)
        return (await cursor.fetchone())[0]


def runtime_of(context: JobContext) -> pipeline.Runtime:
    """The runtime the worker was started with (worker.runner passes it in the worker's
    additional context under RUNTIME), else the one built from the environment."""
    given = context.additional_context.get(RUNTIME)
    return given if given is not None else pipeline.default_runtime()


@app.task(name="worker_ping", pass_context=True)
async def worker_ping(context: JobContext, ping_id: int) -> None:
    """Answer a ping deferred by ops.request_worker_ping(): proves a worker is consuming jobs."""
    async with _pool(context).connection() as conn:
        await conn.execute("SELECT worker.ping_complete(%s)", [ping_id])


@app.task(name="mailbox_backfill", pass_context=True, queue="sync")
async def mailbox_backfill(context: JobContext, mailbox_id: str) -> dict[str, Any]:
    """One page of a full backfill; the SQL step queues the next page."""
    return await _sync_step(pipeline.backfill_page, context, mailbox_id)


@app.task(name="mailbox_history_sync", pass_context=True, queue="sync")
async def mailbox_history_sync(context: JobContext, mailbox_id: str) -> dict[str, Any]:
    """Incremental sync from the mailbox's history cursor."""
    return await _sync_step(pipeline.history_sync, context, mailbox_id)


async def _sync_step(step, context: JobContext, mailbox_id: str) -> dict[str, Any]:
    try:
        return await step(_pool(context), runtime_of(context), mailbox_id)
    except psycopg.OperationalError as exc:
        # The database went away mid-step (a restart, an outage): what the step had not
        # committed rolled back, its checkpoint is intact, and the periodic sync queues the
        # step again once the database answers. Nothing to replay, so not a DLQ entry.
        log.warning("mailbox %s: sync step deferred, database unavailable: %s", mailbox_id, exc)
        return {"deferred": f"database unavailable: {type(exc).__name__}"}


async def _occurrence_stage(context: JobContext, stage, stage_name: str, mailbox_id, ids):
    try:
        return await stage(_pool(context), runtime_of(context), mailbox_id, ids)
    except Exception as exc:
        if context.job.attempts + 1 >= OCCURRENCE_RETRY.max_attempts:
            # Out of retries: the occurrences fail with the reason, listable and retriable.
            async with _pool(context).connection() as conn:
                await conn.execute(
                    "SELECT worker.give_up_batch(%s, %s, %s, %s)",
                    [stage_name, mailbox_id, ids, f"{type(exc).__name__}: {exc}"],
                )
        raise


@app.task(name="occurrence_fetch_raw", pass_context=True, queue="ingest", retry=OCCURRENCE_RETRY)
async def occurrence_fetch_raw(
    context: JobContext, mailbox_id: str, occurrence_ids: list[int]
) -> dict[str, Any]:
    """Raw RFC 822 bytes of a batch of occurrences → blob store."""
    return await _occurrence_stage(
        context, pipeline.fetch_raw, "occurrence_fetch_raw", mailbox_id, occurrence_ids
    )


@app.task(name="occurrence_parse", pass_context=True, queue="ingest", retry=OCCURRENCE_RETRY)
async def occurrence_parse(
    context: JobContext, mailbox_id: str, occurrence_ids: list[int]
) -> dict[str, Any]:
    """MIME → canonical message, contents, attachments, thread refs, recipient evidence."""
    return await _occurrence_stage(
        context, pipeline.parse, "occurrence_parse", mailbox_id, occurrence_ids
    )


@app.task(name="occurrence_stitch", pass_context=True, queue="ingest", retry=OCCURRENCE_RETRY)
async def occurrence_stitch(
    context: JobContext, mailbox_id: str, occurrence_ids: list[int]
) -> dict[str, Any]:
    """Message → ticket (new or existing) with the reason; the SQL function does it all."""
    return await _value(context.app, "SELECT worker.stitch_occurrences(%s)", [occurrence_ids])


@app.task(name="ticket_apply_routing", pass_context=True, queue="ingest", retry=OCCURRENCE_RETRY)
async def ticket_apply_routing(
    context: JobContext, mailbox_id: str, occurrence_ids: list[int]
) -> dict[str, Any]:
    """Allowlist and rules → status and assignee of new tickets; follow-ups are only marked."""
    return await _value(context.app, "SELECT worker.route_occurrences(%s)", [occurrence_ids])


# A reply whose send outcome is unknown is retried with backoff (2, 4, 8, ... s); the
# next attempt first asks Gmail whether the message exists (worker/outbound.py).
SEND_RETRY = RetryStrategy(max_attempts=outbound.SEND_ATTEMPTS, exponential_wait=2)


@app.task(name="outbound_send", pass_context=True, queue="send", retry=SEND_RETRY)
async def outbound_send(context: JobContext, message_id: int) -> dict[str, Any]:
    """Send an agent's reply through Gmail exactly once (state in SQL: worker.outbound_*)."""
    try:
        return await outbound.send_reply(_pool(context), runtime_of(context), message_id)
    except Exception as exc:
        if context.job.attempts + 1 >= SEND_RETRY.max_attempts:
            await outbound.give_up(_pool(context), message_id, exc)
        raise


@app.periodic(cron="* * * * *")
@app.task(name="mailbox_sync_due", pass_context=True, queue="sync")
async def mailbox_sync_due(context: JobContext, timestamp: int) -> int:
    """Every minute: history sync for every enabled, unpaused mailbox; stopped backfills go on.
    (`ticketing worker` also does it every SYNC_POLL_SECONDS.)"""
    return await enqueue_due_syncs(context.app)


async def enqueue_due_syncs(worker_app: procrastinate.App) -> int:
    """worker.enqueue_due_syncs: the sync every mailbox needs now; returns how many queued."""
    return await _value(worker_app, "SELECT worker.enqueue_due_syncs()")


@app.task(name="mailbox_watch", pass_context=True, queue="sync")
async def mailbox_watch(context: JobContext, mailbox_id: str) -> dict[str, Any]:
    """Set up, renew or stop the mailbox's Gmail push watch (users.watch / users.stop)."""
    return await pipeline.watch_mailbox(_pool(context), runtime_of(context), mailbox_id)


@app.periodic(cron="17 * * * *")
@app.task(name="mailbox_watch_renew", pass_context=True, queue="sync")
async def mailbox_watch_renew(context: JobContext, timestamp: int) -> int:
    """Hourly: queue mailbox_watch where a watch is missing, due for its daily renewal,
    expired, failed, or must stop (push turned off, mailbox disabled)."""
    topic = runtime_of(context).settings.gmail_pubsub_topic
    return await _value(context.app, "SELECT worker.enqueue_due_watches(%s)", [topic])


@app.periodic(cron="23 3 * * *")
@app.task(name="tickets_refresh_recent_search_index", pass_context=True)
async def tickets_refresh_recent_search_index(context: JobContext, timestamp: int) -> int:
    """Daily: replace the recent-search index once it covers too long a past; steps run."""
    async with _pool(context).connection() as conn:
        # CREATE/DROP INDEX CONCURRENTLY refuse to run inside a transaction.
        autocommit = conn.autocommit
        await conn.set_autocommit(True)
        try:
            cursor = await conn.execute("SELECT worker.recent_search_index_steps()")
            steps = (await cursor.fetchone())[0]
            for step in steps:
                log.info("recent-search index: %s", step)
                await conn.execute(step)
        finally:
            await conn.set_autocommit(autocommit)
    return len(steps)


@app.periodic(cron="* * * * *")
@app.task(name="retry_stalled_jobs", pass_context=True)
async def retry_stalled_jobs(context: JobContext, timestamp: int) -> dict[str, Any]:
    """Every minute: give the jobs of dead workers back (`ticketing worker` also does it
    every few seconds; this covers plain `procrastinate worker` processes)."""
    return await recover_stalled(context.app)


async def recover_stalled(
    worker_app: procrastinate.App,
    stalled_seconds: float | None = None,
    dead_worker_ids: list[int] | None = None,
    live_worker_ids: list[int] | None = None,
) -> dict[str, Any]:
    """worker.recover_stalled_jobs: retry, supersede or fail the jobs of dead workers."""
    result = await _value(
        worker_app,
        "SELECT worker.recover_stalled_jobs("
        "coalesce(%s::double precision, worker.stalled_worker_seconds()), %s::bigint[], "
        "%s::bigint[])",
        [stalled_seconds, dead_worker_ids or [], live_worker_ids or []],
    )
    for action in ("retried", "superseded", "failed"):
        if result[action]:
            log.warning("jobs of dead workers %s: %s", action, result[action])
    return result
