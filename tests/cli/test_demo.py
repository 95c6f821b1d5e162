"""`ticketing demo --no-serve` end to end: a real subprocess on its own embedded PostgreSQL,
the bundled sample mailbox served by the fake Gmail server, workers until idle."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from cli.demo import MAILBOX_DIR, ORGANIZATION

# Long: the whole demo in a subprocess (embedded PostgreSQL, pipeline, server).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SUMMARY_RE = re.compile(
    r"Summary: (?P<tickets>\d+) tickets created \((?P<spam>\d+) spam; queues: (?P<queues>[^)]*)\), "
    r"(?P<routed>\d+) of (?P<messages>\d+) occurrences routed, (?P<failed>\d+) failed\."
)


def _demo_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "GMAIL_", "GOOGLE_", "BLOB_", "LOCAL_BLOB"))
    }
    env["APP_ENV"] = "development"
    return env


def _run_demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--no-serve", "--data-dir", str(data_dir)],
        cwd=REPO,
        env=_demo_env(),
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


LIVE_RE = re.compile(
    r"Live: routed into ticket (?P<ticket>\d+) \('Ticket created by email with attachment', "
    r"queue Customer support\) (?P<seconds>\d+\.\d+)s after delivery"
)


def _serve_until_live(data_dir: Path) -> tuple[str, re.Match[str]]:
    """`ticketing demo` serving on a free port until its live message is routed, then
    Ctrl-C; (stdout, the match of the "Live: routed" line)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lines: list[str] = []
    routed = threading.Event()
    stderr_path = data_dir.parent / "demo.stderr"
    with (
        stderr_path.open("w") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "cli.main", "demo", "--port", str(port), "--data-dir",
             str(data_dir)],
            cwd=REPO,
            env=_demo_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as proc,
    ):  # fmt: skip

        def read() -> None:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("Live: routed into ticket"):
                    routed.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert routed.wait(timeout=150), "".join(lines) + stderr_path.read_text()[-3000:]
            # Sign in with Google as the walkthrough says: the fake provider signs the admin
            # in, and the browser lands on GET /me with a session.
            with requests.Session() as browser:
                browser.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"
                me = browser.get(f"http://127.0.0.1:{port}/auth/google/start", timeout=30)
                assert me.status_code == 200, me.text
                assert me.url == f"http://127.0.0.1:{port}/me"
                assert (me.json()["user"]["email"], me.json()["role"]) == (
                    "admin@demo.example",
                    "admin",
                )
                _reply_is_sent_once(browser, f"http://127.0.0.1:{port}", "".join(lines))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
    assert proc.returncode == 0, stderr_path.read_text()[-3000:]
    text = "".join(lines)
    assert f"API on http://127.0.0.1:{port}" in text
    # The push secret stays out of the log.
    assert set(re.findall(r"token=(\w+)", stderr_path.read_text())) <= {"REDACTED"}
    match = LIVE_RE.search(text)
    assert match, text
    return text, match


def _reply_is_sent_once(browser: requests.Session, api: str, output: str) -> None:
    """An agent's reply from the demo's send identity is sent through the fake Gmail, and
    its journal copy comes back onto the same message (one outbound message)."""
    ticket = LIVE_RE.search(output)["ticket"]
    identities = browser.get(f"{api}/tickets/send-identities", timeout=30).json()
    assert [(i["from_email"], i["status"]) for i in identities] == [
        ("support@demo.example", "verified")
    ]
    csrf = browser.get(f"{api}/auth/csrf", timeout=30).json()["csrf_token"]
    reply = browser.post(
        f"{api}/tickets/{ticket}/reply",
        json={
            "send_identity_id": identities[0]["id"],
            "to_emails": ["jsmith@somenet.foo"],
            "cc_emails": [],
            "subject": "Re: Ticket created by email with attachment",
            "body_text": "Thanks, we are on it.",
        },
        headers={"x-csrf-token": csrf},
        timeout=30,
    )
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["message_id"]
    deadline = time.monotonic() + 60
    while True:
        detail = browser.get(f"{api}/tickets/{ticket}", timeout=30).json()
        (sent,) = [m for m in detail["messages"] if str(m["message_id"]) == str(message_id)]
        if sent["outbound_send"]["state"] == "sent" and sent["occurrences"]:
            break
        assert time.monotonic() < deadline, detail
        time.sleep(0.5)
    assert sent["direction"] == "outbound"
    assert len(sent["occurrences"]) == 1  # the journal copy, folded onto the same message


def test_demo_serves_with_push_and_routes_a_live_message(tmp_path):
    """`ticketing demo` (serving): the walkthrough, then a reply delivered to the fake mailbox
    is pushed to the demo's own API, synced by the worker beside it and routed into the
    ticket of its Redmine thread; Ctrl-C stops it cleanly. The next run keeps that reply in
    the journal and routes a new one, again pushed."""
    data_dir = tmp_path / "demo"
    bundled = len(list(MAILBOX_DIR.glob("*.eml")))
    pushes_query = (
        "SELECT m.last_push_at FROM core.mailboxes m JOIN core.organizations o "
        "ON o.id = m.organization_id WHERE o.name = %s"
    )
    text, live = _serve_until_live(data_dir)
    summary = SUMMARY_RE.search(text).groupdict()
    assert (int(summary["routed"]), int(summary["messages"])) == (bundled, bundled)
    # The reply joined its thread's ticket, stitched by In-Reply-To.
    rows = _rows(
        data_dir,
        "SELECT tm.ticket_id, tm.stitch_reason FROM core.messages m "
        "JOIN core.ticket_messages tm ON tm.message_id = m.id "
        "JOIN core.organizations o ON o.id = m.organization_id "
        "WHERE o.name = %s AND m.rfc_message_id LIKE '%%demo-live-%%@somenet.foo%%'",
    )
    assert [(r["ticket_id"], r["stitch_reason"]) for r in rows] == [
        (int(live["ticket"]), "in_reply_to")
    ]
    first_push = _rows(data_dir, pushes_query)[0]["last_push_at"]
    assert first_push is not None

    # Again: the first reply is in the journal under its Gmail id (nothing new from it), the
    # new fake Gmail is watched again, and the second reply arrives by push too. The
    # journal also holds the copy of the first run's agent reply (counted, not re-created).
    text, again = _serve_until_live(data_dir)
    summary = SUMMARY_RE.search(text).groupdict()
    assert (int(summary["routed"]), int(summary["messages"])) == (bundled + 2, bundled + 2)
    assert int(summary["failed"]) == 0
    assert again["ticket"] == live["ticket"]
    assert _rows(data_dir, pushes_query)[0]["last_push_at"] > first_push
