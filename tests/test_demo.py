"""`ticketing demo --no-serve` end to end: a real subprocess on its own embedded PostgreSQL,
the bundled sample mailbox served by the fake Gmail server, workers until idle."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from app.demo import MAILBOX_DIR, ORGANIZATION

REPO = Path(__file__).resolve().parents[1]
SUMMARY_RE = re.compile(
    r"Summary: (?P<tickets>\d+) tickets created \((?P<spam>\d+) spam; queues: (?P<queues>[^)]*)\), "
    r"(?P<routed>\d+) of (?P<messages>\d+) occurrences routed, (?P<failed>\d+) failed\."
)


def _run_demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "GMAIL_", "GOOGLE_", "BLOB_", "LOCAL_BLOB"))
    }
    env["APP_ENV"] = "development"
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--no-serve", "--data-dir", str(data_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _summary(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr[-3000:]
    match = SUMMARY_RE.search(result.stdout)
    assert match, result.stdout
    return match.groupdict()


def _rows(data_dir: Path, query: str) -> list[dict]:
    import pgserver

    server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), row_factory=dict_row) as conn:
            return conn.execute(query, [ORGANIZATION]).fetchall()
    finally:
        server.cleanup()


def test_demo_pipeline_creates_routed_tickets(tmp_path):
    data_dir = tmp_path / "demo"
    first = _run_demo(data_dir)
    summary = _summary(first)

    messages = len(list(MAILBOX_DIR.glob("*.eml")))
    assert int(summary["messages"]) == messages
    # Every bundled message parses: nothing fails, everything is routed.
    assert int(summary["failed"]) == 0
    assert int(summary["routed"]) == messages
    assert int(summary["tickets"]) > 0
    assert 0 < int(summary["spam"]) < int(summary["tickets"]) // 2
    assert "Mailing list" in summary["queues"] and "Customer support" in summary["queues"]
    # The progress bar ends full, on stderr.
    assert f"[{'#' * 30}] {messages}/{messages} occurrences routed, 0 failed" in first.stderr

    tickets = _rows(
        data_dir,
        "SELECT t.subject, t.status::text AS status, t.tags, t.original_recipient, "
        "       q.name AS queue, e.data->'decision'->'rule'->>'name' AS rule, "
        "       e.data->'decision'->>'outcome' AS outcome "
        "FROM core.tickets t JOIN core.organizations o ON o.id = t.organization_id "
        "LEFT JOIN core.queues q ON q.id = t.assignee_queue_id "
        "LEFT JOIN core.ticket_events e ON e.ticket_id = t.id AND e.type = 'routed' "
        "WHERE o.name = %s ORDER BY t.id",
    )
    by_subject = {row["subject"]: row for row in tickets}
    gtube = by_subject["Test spam mail (GTUBE)"]
    assert (gtube["status"], gtube["outcome"], gtube["queue"]) == ("spam", "auto_spam", None)
    bounce = by_subject["Delivery Status Notification (Failure)"]
    assert (bounce["status"], bounce["outcome"]) == ("spam", "auto_spam")

    # Rule 1: mail to the notmuch list goes to "Mailing list", open, tagged.
    listed = [row for row in tickets if row["original_recipient"] == "notmuch@notmuchmail.org"]
    assert len(listed) >= 15
    assert {(r["queue"], r["status"], r["rule"], tuple(r["tags"])) for r in listed} == {
        ("Mailing list", "open", "Mailing list", ("list",))
    }
    # Rule 2: the somenet.foo customer's mail goes to "Customer support".
    customer = by_subject["Ticket created by email with attachment"]
    assert (customer["queue"], customer["status"], customer["rule"]) == (
        "Customer support",
        "open",
        "Customer somenet.foo",
    )
    # Threads stitch: one ticket per thread, not per message.
    assert len(tickets) < messages

    # Running the demo again on the same data adds nothing.
    again = _summary(_run_demo(data_dir))
    assert again == summary
