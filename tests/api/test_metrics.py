"""GET /metrics: HTTP metrics by route template, pipeline metrics read at scrape time."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient


def _value(text: str, name: str, labels: str = "") -> float:
    pattern = "^" + re.escape(name) + (r"\{" + labels + r"\}" if labels else "") + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in metrics"
    return float(match.group(1))


async def test_metrics_are_404_unless_enabled(api_server):
    client = TestClient(api_server)
    await client.start_server()
    try:
        response = await client.get("/metrics")
        assert response.status == 404
    finally:
        await client.session.close()


async def test_metrics_show_http_and_pipeline_state_without_restart(api_factory, db, login):
    server = await api_factory(enable_prometheus_metrics=True)
    client = TestClient(server)
    await client.start_server()
    try:
        await client.get("/healthz")
        await client.get("/tickets/12345")  # a templated route, unauthenticated
        text = await (await client.get("/metrics")).text()
        assert (
            _value(text, "http_requests_total", 'method="GET",route="/healthz",status="200"') == 1
        )
        assert 'route="/tickets/{ticket_id}"' in text  # the template, never the raw path
        assert "/tickets/12345" not in text
        assert _value(text, "ticketing_dlq_size") == 0

        # A job fails and lands in the DLQ: the next scrape shows it, same process.
        job = db.execute("SELECT logic.enqueue('worker_ping', '{\"ping_id\": 1}') AS id").fetchone()
        db.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [job["id"]])
        text = await (await client.get("/metrics")).text()
        assert _value(text, "ticketing_dlq_size") == 1
        assert _value(text, "ticketing_jobs", 'status="failed",task="worker_ping"') == 1
    finally:
        await client.session.close()


async def test_metrics_show_a_mailbox_that_stopped_syncing_and_stuck_jobs(api_factory, db):
    server = await api_factory(enable_prometheus_metrics=True)
    client = TestClient(server)
    await client.start_server()
    try:
        org = db.execute(
            "INSERT INTO core.organizations (name) VALUES ('Acme') RETURNING id"
        ).fetchone()["id"]
        mailbox = db.execute(
            "INSERT INTO core.mailboxes (organization_id, email, history_id, "
            "last_sync_success_at) VALUES (%s, 'journal@acme.example', 1000, "
            "now() - interval '20 minutes') RETURNING id::text",
            [org],
        ).fetchone()["id"]
        job = db.execute("SELECT logic.enqueue_history_sync(%s) AS id", [mailbox]).fetchone()["id"]
        db.execute(
            "WITH w AS (INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour') RETURNING id) "
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = (SELECT id FROM w) "
            "WHERE id = %s",
            [job],
        )
        text = await (await client.get("/metrics")).text()
        label = f'mailbox_id="{mailbox}"'
        assert _value(text, "ticketing_mailbox_seconds_since_last_sync", label) >= 1200
        assert _value(text, "ticketing_mailbox_health", f'health="stuck",{label}') == 1
        assert _value(text, "ticketing_stuck_jobs") == 1
        assert _value(text, "ticketing_workers_alive") == 0

        db.execute("SELECT worker.recover_stalled_jobs()")
        text = await (await client.get("/metrics")).text()
        assert _value(text, "ticketing_stuck_jobs") == 0
        assert _value(text, "ticketing_mailbox_health", f'health="stalled",{label}') == 1
    finally:
        await client.session.close()
