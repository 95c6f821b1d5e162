"""Pipeline tasks. Each has an explicit `name=`; its SQL function records the result and
enqueues the successor (through logic.enqueue) in one transaction."""

from __future__ import annotations

from typing import Any

import procrastinate

from worker.app import app


async def call_sql(context: procrastinate.JobContext, query: str, params: list[Any]) -> Any:
    """Run one SQL function call on the worker's pool and return its single value."""
    async with context.app.connector.pool.connection() as conn:
        cursor = await conn.execute(query, params)
        row = await cursor.fetchone()
        return None if row is None else row[0]


@app.task(name="worker_ping", pass_context=True)
async def worker_ping(context: procrastinate.JobContext, ping_id: int) -> None:
    """Answer a ping deferred by ops.request_worker_ping(): proves a worker is consuming jobs."""
    await call_sql(context, "SELECT worker.ping_complete(%s)", [ping_id])
