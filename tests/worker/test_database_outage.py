"""`ticketing worker` rides out database restarts and outages of any length, idle or busy,
and exits only when asked to (issue 11). Each test runs its own PostgreSQL server, which it
restarts and stops at will."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import psycopg
import pytest

from devtools.fake_gmail import FaultRule
from tests.fixtures.api import TEST_SECRET
from tests.fixtures.ingest import CORPUS, running_worker

# Long: a private PostgreSQL stopped and started under running workers.
pytestmark = pytest.mark.slow

JOURNAL = "journal@example.com"


def ping_answered(url: str, timeout: float) -> bool:
    """Whether a worker answers a ping deferred now within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    ping_id = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
                if ping_id is None:
                    ping_id = conn.execute("SELECT ops.request_worker_ping()").fetchone()[0]
                done = conn.execute(
                    "SELECT completed_at IS NOT NULL FROM ops.worker_pings WHERE id = %s",
                    [ping_id],
                ).fetchone()[0]
                if done:
                    return True
        except psycopg.OperationalError:
            pass  # still starting up
        time.sleep(0.2)
    return False


@pytest.mark.parametrize(
    "outage",
    ["restart fast", "restart immediate", "down 5 s", "down 40 s"],
)
def test_an_idle_worker_survives_the_database_going_away(private_pg, tmp_path, outage):
    env = {"DATABASE_URL": private_pg.url, "APP_ENV": "test", "SECRET_KEY": TEST_SECRET}
    with running_worker(env, tmp_path / "worker.log") as worker:
        assert ping_answered(private_pg.url, 30)
        kind, _, detail = outage.partition(" ")
        if kind == "restart":
            private_pg.restart(detail)
        else:
            private_pg.stop("immediate")
            time.sleep(float(detail.split()[0]))
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            private_pg.start()
        assert ping_answered(private_pg.url, 60), (tmp_path / "worker.log").read_text()
        assert worker.poll() is None  # never exits on its own
    assert worker.returncode == 0  # asked to stop: a clean exit


def test_a_busy_worker_loses_nothing_through_a_database_outage(private_pg, ingest, tmp_path):
    """Backfill in flight; the database crashes and stays away 10 s; no operator action."""
    outage_ingest = dataclasses.replace(ingest, db_url=private_pg.url)
    files = sorted((CORPUS / "messages").rglob("*.eml"))[:300]
    outage_ingest.gmail.add_eml_files(JOURNAL, files)
    # Slow Gmail batches, so work is in flight when the database goes.
    outage_ingest.gmail.inject(FaultRule(endpoint="batch", action="delay", delay=0.3, times=None))
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        mailbox_id = outage_ingest.add_mailbox(conn, JOURNAL)
        conn.execute("SELECT logic.enqueue_backfill(%s)", [mailbox_id])

    with running_worker(outage_ingest.worker_env(), tmp_path / "worker.log") as worker:
        wait_for(lambda: routed(private_pg.url, mailbox_id) >= 30, 90)
        private_pg.stop("immediate")
        time.sleep(10)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        private_pg.start()
        outage_ingest.gmail.clear_faults()
        # Everything ends routed or failed with a reason; nothing is left in between.
        wait_for(lambda: settled(private_pg.url, mailbox_id), 120, tmp_path / "worker.log")
        assert worker.poll() is None
    assert worker.returncode == 0
    with psycopg.connect(private_pg.url) as conn:
        occurrences, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT gmail_message_id) FROM core.message_occurrences"
        ).fetchone()
        failed_reasons = [
            row[0]
            for row in conn.execute(
                "SELECT last_error FROM core.message_occurrences WHERE state = 'failed'"
            )
        ]
        dlq = conn.execute("SELECT count(*) FROM ops.dlq").fetchone()[0]
    assert occurrences == distinct == len(files)
    # Only mail that cannot be parsed fails; the outage itself fails nothing.
    assert all(reason.startswith("unparseable:") for reason in failed_reasons)
    assert dlq == 0


def routed(url: str, mailbox_id: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute(
                "SELECT count(*) FROM core.message_occurrences "
                "WHERE mailbox_id = %s AND state = 'routed'",
                [mailbox_id],
            ).fetchone()[0]
    except psycopg.OperationalError:
        return 0


def settled(url: str, mailbox_id: str) -> bool:
    with psycopg.connect(url, connect_timeout=2) as conn:
        backfill, unsettled, jobs = conn.execute(
            "SELECT m.backfill_state, "
            "  (SELECT count(*) FROM core.message_occurrences o "
            "   WHERE o.mailbox_id = m.id AND o.state NOT IN ('routed', 'failed')), "
            "  (SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
            "   AND task_name <> 'mailbox_sync_due') "
            "FROM core.mailboxes m WHERE m.id = %s",
            [mailbox_id],
        ).fetchone()
    return backfill == "done" and unsettled == 0 and jobs == 0


def wait_for(condition, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, log.read_text()[-5000:] if log else "timed out"
        time.sleep(0.25)


def test_after_a_restart_no_worker_counts_as_silent_until_it_could_beat(private_pg):
    """An outage longer than the stalled limit must not make live workers look dead."""
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        worker_id = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 minute') RETURNING id"
        ).fetchone()[0]
        job = conn.execute(
            "SELECT logic.enqueue('worker_ping', '{\"ping_id\": 1}') AS id"
        ).fetchone()[0]
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
            [worker_id, job],
        )
    private_pg.restart("immediate")  # the worker could not beat while the server was down
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        result = conn.execute("SELECT worker.recover_stalled_jobs()").fetchone()[0]
        assert result["retried"] == []
        assert conn.execute("SELECT count(*) FROM logic.stalled_jobs()").fetchone()[0] == 0
        # Silence counts from the server's start: the same worker is dead 15 s later.
        later = conn.execute("SELECT count(*) FROM logic.stalled_jobs(0.0)").fetchone()[0]
        assert later == 1
