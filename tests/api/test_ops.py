"""Ops endpoints (admin): mailbox sync, collision groups, overview, DLQ and replay.

Real database, the real API over HTTP, and a real worker for the failed jobs of the DLQ.
"""

from __future__ import annotations

import json

import pytest

from tests.fixtures import seed
from tests.worker.test_worker import run_worker_until_idle

ADMIN_ROUTES = [
    ("GET", "/ops/mailboxes/sync"),
    ("GET", "/ops/messages/collisions"),
    ("GET", "/ops/metrics/overview"),
    ("GET", "/ops/jobs/dlq"),
    ("POST", "/ops/jobs/1/replay"),
]
PAGED_ROUTES = ["/ops/messages/collisions", "/ops/jobs/dlq"]


def _seed_failed_job(db, org_id: str, args: dict, minutes_ago: int) -> int:
    """A job procrastinate gave up on, its failure attributed to the organisation."""
    job_id = db.execute(
        "SELECT logic.enqueue('worker_ping', %s::jsonb) AS id", [json.dumps(args)]
    ).fetchone()["id"]
    db.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [job_id])
    db.execute(
        "INSERT INTO core.job_failures (job_id, task_name, attempt, error_class, error_message, "
        "organization_id, failed_at) "
        "VALUES (%s, 'worker_ping', 1, 'RaiseException', 'no worker ping', %s, "
        "now() - make_interval(mins => %s))",
        [job_id, org_id, minutes_ago],
    )
    return job_id


async def _failed_ping_via_worker(db, db_url: str, org_id: str, mailbox_id: str) -> int:
    """A worker_ping for an unknown ping, failed by a real worker.

    A ping names no mailbox, so the worker attributes its failure to no organisation; the
    test attributes it to `org_id`'s mailbox, as the worker does for mailbox jobs.
    """
    job_id = db.execute(
        "SELECT logic.enqueue('worker_ping', '{\"ping_id\": 424242}') AS id"
    ).fetchone()["id"]
    await run_worker_until_idle(db_url)
    attributed = db.execute(
        "UPDATE core.job_failures SET organization_id = %s, mailbox_id = %s WHERE job_id = %s "
        "RETURNING attempt",
        [org_id, mailbox_id, job_id],
    ).fetchall()
    assert attributed == [{"attempt": 1}]
    return job_id


def _job_status(db, job_id: int) -> str:
    return db.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id]).fetchone()[
        "status"
    ]


# ---------------------------------------------------------------- mailbox sync


async def test_mailbox_sync_lists_the_organisations_mailboxes(login, db):
    admin = await login("admin@acme.example", "Acme")
    other = await login("admin@globex.example", "Globex")
    org = seed.org_id(admin)
    mailbox_id = seed.mailbox(
        db,
        org,
        "journal@acme.example",
        history_id=9007199254740993,
        last_error="Gmail 500",
        consecutive_failures=2,
    )
    seed.mailbox(db, seed.org_id(other), "journal@globex.example")
    seed.occurrence(db, org, mailbox_id, "m1", "parsed", 120)
    seed.occurrence(db, org, mailbox_id, "m2", "routed", 9000)
    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])
    db.execute(
        "INSERT INTO core.job_failures (job_id, task_name, attempt, error_class, "
        "organization_id, mailbox_id, failed_at) VALUES "
        "(1, 'mailbox_history_sync', 1, 'GmailError', %s, %s, now() - interval '1 hour'), "
        "(2, 'mailbox_history_sync', 1, 'GmailError', %s, %s, now() - interval '2 days')",
        [org, mailbox_id, org, mailbox_id],
    )

    response = await admin.get("/ops/mailboxes/sync")
    assert response.status == 200
    items = (await response.json())["items"]
    assert len(items) == 1
    item = items[0]
    assert 120 <= item.pop("sync_lag_seconds") < 180
    assert 0 <= item.pop("seconds_since_last_sync") < 60  # added just now, never synced
    assert item == {
        "mailbox_id": mailbox_id,
        "email_address": "journal@acme.example",
        "provider": "gmail",
        "purpose": "journal",
        "state": "active",
        "is_enabled": True,
        "paused_until": None,
        "pause_reason": None,
        "blocked_reason": None,
        "gmail_history_id": 9007199254740993,
        "backfill": {"state": "idle", "pages": 0, "completed_at": None},
        "last_full_sync_at": None,
        "last_incremental_sync_at": None,
        "last_sync_error": "Gmail 500",
        "last_error_at": None,
        "consecutive_failures": 2,
        "queued_jobs_by_type": {"mailbox_history_sync": 1},
        "running_jobs_by_type": {},
        "jobs": {"mailbox_history_sync": {"queued": 1, "running": 0}},
        "failed_jobs_last_24h": 1,
        "last_sync_success_at": None,
        "health": "ok",
        "health_reason": None,
        "stuck_jobs": 0,
        "watch": {
            "state": "off",
            "topic": None,
            "expires_at": None,
            "renewed_at": None,
            "error": None,
            "error_at": None,
            "last_push_at": None,
        },
    }
    other_items = (await (await other.get("/ops/mailboxes/sync")).json())["items"]
    assert [i["email_address"] for i in other_items] == ["journal@globex.example"]


async def test_a_mailbox_that_does_not_sync_says_why(login, db):
    admin = await login("admin@acme.example", "Acme")
    org = seed.org_id(admin)
    stalled = seed.mailbox(db, org, "stalled@acme.example", history_id=1000)
    db.execute(
        "UPDATE core.mailboxes SET last_sync_success_at = now() - interval '10 minutes', "
        "last_error = 'HTTP 503: backend error' WHERE id = %s",
        [stalled],
    )
    stuck = seed.mailbox(db, org, "stuck@acme.example", history_id=1000)
    job = db.execute("SELECT logic.enqueue_history_sync(%s) AS id", [stuck]).fetchone()["id"]
    dead = db.execute(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 minute') "
        "RETURNING id"
    ).fetchone()["id"]
    db.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s", [dead, job]
    )
    healthy = seed.mailbox(db, org, "ok@acme.example", history_id=1000)
    db.execute("UPDATE core.mailboxes SET last_sync_success_at = now() WHERE id = %s", [healthy])

    items = {
        i["email_address"]: i
        for i in (await (await admin.get("/ops/mailboxes/sync")).json())["items"]
    }
    assert items["stalled@acme.example"]["health"] == "stalled"
    assert items["stalled@acme.example"]["seconds_since_last_sync"] >= 600
    assert "no successful sync for" in items["stalled@acme.example"]["health_reason"]
    assert "HTTP 503" in items["stalled@acme.example"]["health_reason"]
    assert items["stuck@acme.example"]["health"] == "stuck"
    assert items["stuck@acme.example"]["stuck_jobs"] == 1
    assert (
        f"job {job} (mailbox_history_sync) of worker {dead}"
        in (items["stuck@acme.example"]["health_reason"])
    )
    assert items["ok@acme.example"]["health"] == "ok"

    # The same, without a session, as counts: readiness reports the pipeline degraded.
    ready = await admin.get("/readyz")
    assert ready.status == 200
    pipeline = (await ready.json())["pipeline"]
    assert pipeline["status"] == "degraded"
    assert pipeline["stuck_jobs"] == 1
    assert pipeline["workers_alive"] == 0
    assert pipeline["mailboxes"] == {"ok": 1, "stalled": 1, "stuck": 1}
    assert pipeline["problems"] == [
        "no worker is alive",
        "1 job(s) held by dead workers",
        "1 mailbox(es) stuck",
        "1 mailbox(es) stalled",
    ]
    probe = await admin.get("/readyz?scope=pipeline")
    assert probe.status == 503
    body = await probe.json()
    assert body["code"] == "pipeline_degraded"
    assert "no worker is alive" in body["detail"] and "1 mailbox(es) stalled" in body["detail"]


# ---------------------------------------------------------------- collisions


def _seed_collision_group(db, org_id: str, fingerprint: str, hours_ago: int, size: int) -> int:
    group = db.execute(
        "INSERT INTO core.collision_groups (organization_id, loose_fingerprint, message_count, "
        "last_seen_at) VALUES (%s, %s, %s, now() - make_interval(hours => %s)) RETURNING id",
        [org_id, fingerprint, size, hours_ago],
    ).fetchone()["id"]
    for n in range(size):
        db.execute(
            "INSERT INTO core.messages (organization_id, strict_signature, loose_fingerprint, "
            "collision_group_id, subject, from_address, sent_at) "
            "VALUES (%s, %s, %s, %s, %s, 'billing@vendor.example', "
            "'2024-03-01T10:00:00Z'::timestamptz + make_interval(mins => %s))",
            [org_id, f"{fingerprint}-{n}", fingerprint, group, f"Invoice {n}", n],
        )
    return group


async def test_collisions_newest_first_with_samples_and_limit(login, db):
    admin = await login("admin@acme.example", "Acme")
    other = await login("admin@globex.example", "Globex")
    org = seed.org_id(admin)
    oldest = _seed_collision_group(db, org, "fp-old", hours_ago=5, size=2)
    newest = _seed_collision_group(db, org, "fp-new", hours_ago=1, size=7)
    middle = _seed_collision_group(db, org, "fp-mid", hours_ago=3, size=2)
    _seed_collision_group(db, seed.org_id(other), "fp-globex", hours_ago=0, size=2)

    everything = (await (await admin.get("/ops/messages/collisions")).json())["items"]
    assert [g["collision_group_id"] for g in everything] == [newest, middle, oldest]

    response = await admin.get("/ops/messages/collisions?limit=2")
    assert response.status == 200
    items = (await response.json())["items"]
    assert [g["collision_group_id"] for g in items] == [newest, middle]
    first = items[0]
    assert set(first) == {
        "collision_group_id",
        "loose_fingerprint",
        "message_count",
        "first_seen_at",
        "last_seen_at",
        "sample_message_ids",
        "sample_messages",
    }
    assert (first["loose_fingerprint"], first["message_count"]) == ("fp-new", 7)
    samples = first["sample_messages"]
    assert [s["subject"] for s in samples] == [f"Invoice {n}" for n in range(5)]
    assert samples[0]["from_address"] == "billing@vendor.example"
    assert samples[0]["sent_at"].startswith("2024-03-01T10:00:00")
    assert set(samples[0]) == {"id", "subject", "from_address", "sent_at"}
    assert first["sample_message_ids"] == [sample["id"] for sample in samples]

    other_items = (await (await other.get("/ops/messages/collisions")).json())["items"]
    assert [g["loose_fingerprint"] for g in other_items] == ["fp-globex"]


# ---------------------------------------------------------------- overview


async def test_metrics_overview_counts_the_organisations_pipeline(login, db):
    admin = await login("admin@acme.example", "Acme")
    other = await login("admin@globex.example", "Globex")
    org = seed.org_id(admin)
    journal = seed.mailbox(db, org, "journal@acme.example", history_id=5)
    paused = seed.mailbox(
        db, org, "paused@acme.example", ingestion_paused_until="2999-01-01T00:00:00Z"
    )
    globex_box = seed.mailbox(db, seed.org_id(other), "journal@globex.example", history_id=5)
    seed.occurrence(db, org, journal, "a", "parsed", 100)
    seed.occurrence(db, org, journal, "b", "failed", 50, last_error="ValueError: bad MIME")
    seed.occurrence(db, org, paused, "c", "discovered", 300)
    seed.occurrence(db, org, paused, "d", "discovered", 400)
    db.execute("SELECT logic.enqueue_history_sync(%s)", [journal])
    db.execute("SELECT logic.enqueue_history_sync(%s)", [globex_box])
    running = db.execute("SELECT logic.enqueue_backfill_step(%s) AS id", [journal]).fetchone()["id"]
    db.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [running])
    _seed_failed_job(db, org, {"ping_id": 1}, minutes_ago=3)

    response = await admin.get("/ops/metrics/overview")
    assert response.status == 200
    body = await response.json()
    assert 200 <= body.pop("avg_sync_lag_seconds") < 260  # (100 + 300) / 2
    assert body == {
        # The failed ping names no mailbox: in the DLQ, not among the mailbox jobs.
        "queued_jobs": 1,
        "running_jobs": 1,
        "failed_jobs": 0,
        "failed_jobs_24h": 1,
        "mailbox_count": 2,
        "paused_mailbox_count": 1,
        "occurrences_by_state": {"parsed": 1, "failed": 1, "discovered": 2},
        "dlq_size": 1,
    }
    assert await (await other.get("/ops/metrics/overview")).json() == {
        "queued_jobs": 1,
        "running_jobs": 0,
        "failed_jobs": 0,
        "failed_jobs_24h": 0,
        "mailbox_count": 1,
        "paused_mailbox_count": 0,
        "avg_sync_lag_seconds": 0,
        "occurrences_by_state": {},
        "dlq_size": 0,
    }


# ---------------------------------------------------------------- DLQ and replay


async def test_a_failed_job_is_listed_replayed_once_and_then_succeeds(login, db, db_url):
    admin = await login("admin@acme.example", "Acme")
    org = seed.org_id(admin)
    mailbox_id = seed.mailbox(db, org, "journal@acme.example")
    job_id = await _failed_ping_via_worker(db, db_url, org, mailbox_id)

    response = await admin.get("/ops/jobs/dlq")
    assert response.status == 200
    [item] = (await response.json())["items"]
    failed_at = item.pop("updated_at")
    assert failed_at is not None
    assert item.pop("run_at") <= failed_at
    assert "no worker ping 424242" in item.pop("error_message")
    assert item.pop("last_error").startswith("RaiseException: no worker ping 424242")
    assert item == {
        "id": job_id,
        "type": "worker_ping",
        "status": "failed",
        "queue": "default",
        "attempts": 1,
        "max_attempts": 1,
        "payload": {"ping_id": 424242},
        "error_class": "RaiseException",
        "replay": None,
    }
    overview = await (await admin.get("/ops/metrics/overview")).json()
    assert overview["dlq_size"] == 1

    # Fix the cause, then replay: 202 with a new job; a second replay adds nothing.
    db.execute("INSERT INTO core.worker_pings (id) OVERRIDING SYSTEM VALUE VALUES (424242)")
    first = await admin.post(f"/ops/jobs/{job_id}/replay")
    assert first.status == 202
    replayed = await first.json()
    assert replayed["job_id"] == job_id
    assert replayed["created"] is True
    second = await admin.post(f"/ops/jobs/{job_id}/replay")
    assert second.status == 202
    assert await second.json() == {**replayed, "created": False}
    pending = db.execute(
        "SELECT id FROM procrastinate_jobs WHERE task_name = 'worker_ping' AND status = 'todo'"
    ).fetchall()
    assert pending == [{"id": replayed["replay_job_id"]}]

    [item] = (await (await admin.get("/ops/jobs/dlq")).json())["items"]
    assert item["status"] == "replayed"
    assert item["replay"]["replay_job_id"] == replayed["replay_job_id"]
    assert item["replay"]["replayed_at"] is not None
    assert (await (await admin.get("/ops/metrics/overview")).json())["dlq_size"] == 0
    audits = db.execute(
        "SELECT action, target_type, target_id, details, organization_id::text AS org "
        "FROM core.audit_events WHERE action = 'job.replay' ORDER BY id"
    ).fetchall()
    assert [(a["target_id"], a["details"]["created"], a["org"]) for a in audits] == [
        (str(job_id), True, org),
        (str(job_id), False, org),
    ]

    await run_worker_until_idle(db_url)
    assert _job_status(db, replayed["replay_job_id"]) == "succeeded"
    completed_by = db.execute(
        "SELECT completed_by FROM core.worker_pings WHERE id = 424242"
    ).fetchone()["completed_by"]
    assert completed_by == "worker"


async def test_dlq_is_newest_first_limited_and_shows_ids_only(login, db):
    admin = await login("admin@acme.example", "Acme")
    org = seed.org_id(admin)
    old = _seed_failed_job(db, org, {"ping_id": 1}, minutes_ago=30)
    new = _seed_failed_job(db, org, {"ping_id": 2, "subject": "Salary review"}, minutes_ago=1)
    middle = _seed_failed_job(db, org, {"ping_id": 3, "occurrence_ids": [7, 8]}, minutes_ago=10)

    everything = (await (await admin.get("/ops/jobs/dlq")).json())["items"]
    assert [i["id"] for i in everything] == [new, middle, old]
    assert [i["payload"] for i in everything] == [
        {"ping_id": 2},  # mail content never leaves the database
        {"ping_id": 3, "occurrence_ids": [7, 8]},
        {"ping_id": 1},
    ]
    limited = (await (await admin.get("/ops/jobs/dlq?limit=2")).json())["items"]
    assert [i["id"] for i in limited] == [new, middle]


async def test_another_organisations_failed_job_is_invisible_and_not_found(login, db, db_url):
    acme = await login("admin@acme.example", "Acme")
    globex = await login("admin@globex.example", "Globex")
    mailbox_id = seed.mailbox(db, seed.org_id(acme), "journal@acme.example")
    job_id = await _failed_ping_via_worker(db, db_url, seed.org_id(acme), mailbox_id)

    assert await (await globex.get("/ops/jobs/dlq")).json() == {"items": []}
    response = await globex.post(f"/ops/jobs/{job_id}/replay")
    assert response.status == 404
    assert (await response.json())["code"] == "job_not_found"
    assert db.execute("SELECT count(*) AS n FROM core.job_replays").fetchone()["n"] == 0
    assert _job_status(db, job_id) == "failed"
    assert [i["id"] for i in (await (await acme.get("/ops/jobs/dlq")).json())["items"]] == [job_id]


async def test_an_unattributed_failed_job_is_no_organisations_to_replay(login, db, db_url):
    admin = await login("admin@acme.example", "Acme")
    job_id = db.execute("SELECT logic.enqueue('worker_ping', '{\"ping_id\": 5}') AS id").fetchone()[
        "id"
    ]
    await run_worker_until_idle(db_url)
    assert _job_status(db, job_id) == "failed"

    assert await (await admin.get("/ops/jobs/dlq")).json() == {"items": []}
    response = await admin.post(f"/ops/jobs/{job_id}/replay")
    assert response.status == 404
    assert (await response.json())["code"] == "job_not_found"


@pytest.mark.parametrize("job_id", ["abc", "1e3", "-1", "99999999999999999999", "999999"])
async def test_malformed_or_unknown_job_ids_are_not_found(login, job_id):
    admin = await login("admin@acme.example", "Acme")
    response = await admin.post(f"/ops/jobs/{job_id}/replay")
    assert response.status == 404
    assert (await response.json())["code"] == "job_not_found"


async def test_a_job_that_has_not_failed_cannot_be_replayed(login, db):
    admin = await login("admin@acme.example", "Acme")
    mailbox_id = seed.mailbox(db, seed.org_id(admin), "journal@acme.example", history_id=5)
    job_id = db.execute("SELECT logic.enqueue_history_sync(%s) AS id", [mailbox_id]).fetchone()[
        "id"
    ]
    response = await admin.post(f"/ops/jobs/{job_id}/replay")
    assert response.status == 404
    assert (await response.json())["code"] == "job_not_found"


# ---------------------------------------------------------------- access and bounds


@pytest.mark.parametrize("role", ["viewer", "agent"])
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_viewers_and_agents_are_forbidden(login, db, role, method, path):
    founder = await login("founder@acme.example", "Acme")
    _seed_failed_job(db, seed.org_id(founder), {"ping_id": 1}, minutes_ago=1)
    user = await login(f"{role}@acme.example", "Acme", role=role)

    response = await (user.get(path) if method == "GET" else user.post(path))
    assert response.status == 403
    body = await response.json()
    assert body["code"] == "forbidden"
    assert "admin" in body["detail"]
    assert db.execute("SELECT count(*) AS n FROM core.job_replays").fetchone()["n"] == 0


@pytest.mark.parametrize("path", PAGED_ROUTES)
@pytest.mark.parametrize("limit", ["0", "201", "-5", "abc", "1.5", "9999999999"])
async def test_limits_outside_1_to_200_are_refused(login, path, limit):
    admin = await login("admin@acme.example", "Acme")
    response = await admin.get(f"{path}?limit={limit}")
    assert response.status == 422
    assert (await response.json())["code"] == "invalid_limit"


@pytest.mark.parametrize("path", PAGED_ROUTES)
@pytest.mark.parametrize("limit", ["1", "200"])
async def test_limits_at_the_bounds_are_accepted(login, path, limit):
    admin = await login("admin@acme.example", "Acme")
    response = await admin.get(f"{path}?limit={limit}")
    assert response.status == 200
    assert await response.json() == {"items": []}
