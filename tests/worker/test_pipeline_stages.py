"""The stage catalog (logic.pipeline_stages) is the one description of the pipeline: it
must match the tasks worker/tasks.py registers and chain its states without a gap."""

from __future__ import annotations

import worker.tasks  # noqa: F401 - registers the tasks
from worker.app import app


def test_the_catalog_matches_the_registered_tasks(db):
    stages = db.execute("SELECT * FROM logic.pipeline_stages()").fetchall()
    assert [s["task"] for s in stages] == [
        "mailbox_backfill",
        "mailbox_history_sync",
        "occurrence_fetch_raw",
        "occurrence_parse",
        "occurrence_stitch",
        "ticket_apply_routing",
    ]
    for stage in stages:
        task = app.tasks[stage["task"]]
        assert task.queue == stage["queue"], stage["task"]
        function = db.execute(
            "SELECT to_regproc(%s) IS NOT NULL AS exists", [stage["records_with"]]
        ).fetchone()
        assert function["exists"], stage["records_with"]


def test_each_stage_consumes_what_the_one_before_leaves(db):
    stages = {s["task"]: s for s in db.execute("SELECT * FROM logic.pipeline_stages()")}
    for stage in stages.values():
        if stage["next_task"] is not None:
            assert stages[stage["next_task"]]["from_state"] == stage["to_state"]
    # Later stages go first; sync steps before all of them.
    chain = [
        "occurrence_fetch_raw",
        "occurrence_parse",
        "occurrence_stitch",
        "ticket_apply_routing",
    ]
    priorities = [stages[task]["priority"] for task in chain]
    assert priorities == sorted(priorities)
    assert stages["mailbox_history_sync"]["priority"] > max(priorities)


def test_jobs_are_queued_as_the_catalog_says(db):
    org = db.execute(
        "INSERT INTO core.organizations (name) VALUES ('Acme') RETURNING id"
    ).fetchone()
    mailbox = db.execute(
        "INSERT INTO core.mailboxes (organization_id, email) VALUES (%s, 'j@acme.example') "
        "RETURNING id",
        [org["id"]],
    ).fetchone()["id"]
    db.execute(
        "SELECT worker.enqueue_next_stage('occurrence_parse', %s, ARRAY[1, 2, 3])", [mailbox]
    )
    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox])
    jobs = db.execute(
        "SELECT j.task_name, j.queue_name, j.priority, s.queue, s.priority AS catalog_priority "
        "FROM procrastinate_jobs j JOIN logic.pipeline_stages() s ON s.task = j.task_name"
    ).fetchall()
    assert {j["task_name"] for j in jobs} == {"occurrence_stitch", "mailbox_history_sync"}
    for job in jobs:
        assert (job["queue_name"], job["priority"]) == (job["queue"], job["catalog_priority"])
    unknown = db.execute(
        "SELECT worker.enqueue_next_stage('ticket_apply_routing', %s, ARRAY[1]) AS n", [mailbox]
    ).fetchone()
    assert unknown["n"] is None  # the last stage queues nothing
