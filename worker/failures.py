"""Worker middleware: every failed job attempt is recorded (task, job id, attempt, error)."""

from __future__ import annotations

import logging
import os
import socket

from procrastinate import JobContext

log = logging.getLogger(__name__)
_WORKER = f"{socket.gethostname()}:{os.getpid()}"


async def record_failed_attempts(call_next, context: JobContext, worker) -> object:
    """Wrap every job: on an exception, store the attempt in core.job_failures, re-raise."""
    try:
        return await call_next()
    except Exception as exc:
        job = context.job
        try:
            async with context.app.connector.pool.connection() as conn:
                await conn.execute(
                    "SELECT worker.record_job_failure(%s, %s, %s, %s, %s, %s, %s)",
                    [
                        job.id,
                        job.task_name,
                        job.queue,
                        job.attempts + 1,
                        type(exc).__name__,
                        str(exc),
                        _WORKER,
                    ],
                )
        except Exception:
            # Recording must never hide the job's own failure.
            log.exception("could not record the failure of job %s", job.id)
        raise
