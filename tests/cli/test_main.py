"""The `ticketing` command as a user runs it: real processes, real databases."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

from tests.processes import (
    REPO,
    TICKETING,
    clean_env,
    free_port,
    healthz_once_up,
    http_get,
    serving,
)


def _ticketing(*args: str, env: dict[str, str] | None = None, timeout: int = 120):
    """Run `ticketing ARGS...` to completion; the CompletedProcess, output as text."""
    return subprocess.run(
        [*TICKETING, *args],
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def test_migrate_command_twice(db_url):
    for expected in ("applied: none pending", "applied: none pending"):
        done = _ticketing("migrate", env=clean_env(DATABASE_URL=db_url), timeout=120)
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout


def test_production_refuses_the_default_secret(db_url):
    done = _ticketing(
        "migrate", env=clean_env(DATABASE_URL=db_url, APP_ENV="production"), timeout=60
    )
    assert done.returncode == 2
    assert "SECRET_KEY" in done.stderr


def test_worker_until_idle_drains_and_exits(db, db_url):
    ping_id = db.execute("SELECT ops.request_worker_ping() AS id").fetchone()["id"]
    done = _ticketing("worker", "--until-idle", env=clean_env(DATABASE_URL=db_url), timeout=120)
    assert done.returncode == 0, done.stderr
    ping = db.execute("SELECT completed_by FROM core.worker_pings WHERE id = %s", [ping_id])
    assert ping.fetchone()["completed_by"] == "worker"


def test_serve_on_embedded_postgres_with_no_configuration(tmp_path):
    """The README's run command on a machine with nothing configured."""
    port = free_port()
    pgdata = tmp_path / "pgdata"
    log_path = tmp_path / "serve.log"
    env = clean_env(EMBEDDED_PG_DIR=str(pgdata))
    with serving("--port", str(port), env=env, log_path=log_path) as process:
        try:
            health = healthz_once_up(port, process, 90)
            assert health == (200, b'{"status": "ok"}'), log_path.read_text()
            status, body = http_get(f"http://127.0.0.1:{port}/readyz")
            assert status == 200, body  # migrated automatically on the embedded database
            assert (pgdata / "PG_VERSION").exists()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    # The embedded server stops with the last process that used it.
    deadline = time.monotonic() + 20
    while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (pgdata / "postmaster.pid").exists()


def test_parse_command_prints_one_json_line_per_file_and_goes_on(tmp_path):
    corpus = REPO.parent / "shared" / "corpus" / "messages"
    good = sorted((corpus / "redmine").glob("*.eml"))[:2]
    garbage = tmp_path / "garbage.eml"
    garbage.write_bytes(b"\x00\x01 not an email at all\n")
    done = _ticketing("parse", str(good[0]), str(garbage), str(good[1]), timeout=60)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(good[0]), str(garbage), str(good[1])]
    assert "error" in lines[1] and lines[1]["error"]
    assert "error" not in lines[0] and "recipient_evidence" in lines[0]
    assert done.returncode == 1  # some file could not be parsed


def test_serve_on_a_taken_port_says_so(db_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _ticketing(
            "serve", "--port", str(port), env=clean_env(DATABASE_URL=db_url), timeout=60
        )
    assert done.returncode == 2
    assert "already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_with_several_processes_shares_the_port_and_stops_them_all(db_url, tmp_path):
    import psutil

    port = free_port()
    log_path = tmp_path / "serve.log"
    args = ("--port", str(port), "--processes", "2")
    with serving(*args, env=clean_env(DATABASE_URL=db_url), log_path=log_path) as process:
        try:
            deadline = time.monotonic() + 60
            healthz_once_up(port, process, 60)
            children = psutil.Process(process.pid).children()
            assert len(children) == 2, log_path.read_text()

            def listening() -> set[int]:
                return {
                    c.pid
                    for c in children
                    for conn in c.net_connections(kind="tcp")
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
                }

            # One child answering does not mean the other has bound the port yet.
            while time.monotonic() < deadline and len(listening()) < len(children):
                time.sleep(0.2)
            assert listening() == {c.pid for c in children}, log_path.read_text()
            assert all(http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200 for _ in range(10))
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log_path.read_text()
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_several_processes_need_a_database_server(tmp_path):
    done = _ticketing(
        "serve", "--processes", "2", env=clean_env(EMBEDDED_PG_DIR=str(tmp_path / "pg")), timeout=60
    )
    assert done.returncode == 2
    assert "needs DATABASE_URL" in done.stderr


def test_org_create_makes_the_organisation_and_its_first_admin(db_url, db):
    env = clean_env(DATABASE_URL=db_url)
    done = _ticketing(
        "org-create",
        "--name",
        "Acme",
        "--admin",
        "Boss@Acme.example",
        "--domain",
        "acme.example",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert (created["name"], created["admin"], created["domains"], created["join_policy"]) == (
        "Acme",
        "boss@acme.example",
        ["acme.example"],
        "invite_only",
    )
    row = db.execute(
        "SELECT m.role, u.email, o.join_policy FROM core.memberships m "
        "JOIN core.users u ON u.id = m.user_id JOIN core.organizations o ON o.id = m.organization_id"
    ).fetchone()
    assert row == {"role": "admin", "email": "boss@acme.example", "join_policy": "invite_only"}
    assert db.execute("SELECT domain FROM core.organization_domains").fetchone()["domain"] == (
        "acme.example"
    )

    again = _ticketing("org-create", "--name", "ACME", "--admin", "x@acme.example", env=env)
    assert again.returncode == 1
    assert "exists already" in again.stderr
    taken = _ticketing(
        "org-create",
        "--name",
        "Other",
        "--admin",
        "x@other.example",
        "--domain",
        "acme.example",
        env=env,
    )
    assert taken.returncode == 1
    assert "already belongs to another organization" in taken.stderr
    assert db.execute("SELECT count(*) AS n FROM core.organizations").fetchone()["n"] == 1
