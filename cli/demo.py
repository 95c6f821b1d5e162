"""`ticketing demo`: the whole product on one machine, with nothing installed or configured.

1. Embedded PostgreSQL with its data under `var/demo/pgdata` (apart from `ticketing serve`'s
   `var/pgdata`), migrated.
2. The repository's fake Gmail server, in a background thread, holding the bundled sample
   mailbox `demo/mailbox/*.eml` (real messages from the test corpus; see its SOURCES.md).
3. Organisation "Demo" with its admin, two queues, an allowlist and two routing rules, and
   the fake mailbox registered as its Gmail journal mailbox (refresh token issued by the
   fake, encrypted like any other); registration queues the backfill. Agents answer from
   the send identity support@demo.example, an alias of the journal account, verified
   against the fake's sendAs list.
4. Workers in this process until the pipeline is idle, with a progress bar on stderr.
5. A summary, then the API (development login on) and a curl walkthrough. While it serves,
   Gmail push is on: the fake publishes every change of the mailbox to a topic whose
   FakePushSubscription posts to this API's POST /webhooks/gmail/pubsub (with a random
   `?token=`, GMAIL_PUSH_TOKEN), and a supervised worker runs beside the API in this
   process. A second after the API listens, a customer's reply to an existing Redmine
   thread arrives in the fake mailbox; a line says which ticket it was routed into and how
   long that took from delivery.

Running it again reuses the data directory: what exists is kept (nothing is created twice),
the backfill finds the same messages and adds nothing. The live replies of earlier runs are
part of the journal mailbox too (the fake is given them again, so their Gmail ids stay
theirs), and each served run adds one more. `--reset` starts from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg.types.json import Jsonb

from cli.mailbox_admin import register_gmail_mailbox
from kernel import db
from kernel.blobstore import LocalBlobStore
from kernel.migrate import migrate
from kernel.settings import REPO_ROOT, Settings

DEFAULT_DATA_DIR = REPO_ROOT / "var" / "demo"
MAILBOX_DIR = REPO_ROOT / "demo" / "mailbox"
ORGANIZATION = "Demo"
ADMIN_EMAIL = "admin@demo.example"
JOURNAL_EMAIL = "journal@demo.example"
# The address agents answer from: an alias of the journal account, which the demo's grant
# may send as (the journal mailbox "connected with the send scope").
SUPPORT_EMAIL = "support@demo.example"
SUPPORT_NAME = "Demo Support"
WORKER_CONCURRENCY = 4
PROGRESS_INTERVAL = 0.25  # seconds between progress bar refreshes
PROGRESS_WIDTH = 30

# Corpus mail is addressed to its real recipients: the demo's "support addresses" are the
# notmuch mailing list and the Redmine fixtures' mail handler. Anything else (the GTUBE spam
# sample, a bounce, two stray messages) is not allowlisted and becomes spam.
ALLOWLIST = ("notmuch@notmuchmail.org", "redmine@somenet.foo")
QUEUES = (
    ("Mailing list", "Threads of the notmuch mailing list."),
    ("Customer support", "Requests from the customer somenet.foo."),
)
# (name, priority, conditions, queue name, other actions), in the API's flat rule fields
RULES = (
    (
        "Mailing list",
        10,
        {"match_recipient_pattern": "notmuch@notmuchmail.org"},
        "Mailing list",
        {"action_set_status": "open", "action_add_tags": ["list"]},
    ),
    (
        "Customer somenet.foo",
        20,
        {"match_sender_domain_pattern": "somenet.foo"},
        "Customer support",
        {"action_set_status": "open", "action_add_tags": ["customer"]},
    ),
)
SIMULATE_EXAMPLE = {
    "recipient": "redmine@somenet.foo",
    "sender_email": "jsmith@somenet.foo",
    "direction": "inbound",
}
# Gmail push while the demo serves: the fake's topic, and how long after the API listens the
# live message arrives.
PUSH_TOPIC = "projects/ticketing-demo/topics/gmail"
LIVE_DELAY_SECONDS = 1.0
LIVE_TIMEOUT_SECONDS = 120.0
# The live message replies to this Redmine thread (demo/mailbox/redmine-ticket_with_attachment).
LIVE_PARENT_ID = "<002301c8d3a6$2cdf6950$0a00a8c0@osiris>"
LIVE_PARENT_SUBJECT = "Ticket created by email with attachment"
LIVE_SENDER = "jsmith@somenet.foo"


def live_message(n: int) -> bytes:
    """The customer's reply of the demo's `n`-th served run (0-based)."""
    lines = [
        f'From: "John Smith" <{LIVE_SENDER}>',
        "To: <redmine@somenet.foo>",
        "X-Gm-Original-To: redmine@somenet.foo",
        f"Subject: Re: {LIVE_PARENT_SUBJECT}",
        f"Message-ID: <demo-live-{n}@somenet.foo>",
        f"In-Reply-To: {LIVE_PARENT_ID}",
        f"References: {LIVE_PARENT_ID}",
        f"Date: {format_datetime(dt.datetime.now(dt.UTC))}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Hello,",
        "",
        "the attachment opens fine now, thank you. Can the report be exported as PDF too?",
        "",
        f"John (live reply {n + 1} of the demo)",
        "",
    ]
    return "\r\n".join(lines).encode()


def resume_journal(database_url: str) -> tuple[list[tuple[str, int]], str | None]:
    """Before a run on an existing data directory: the live replies earlier served runs
    added to the journal mailbox, as (Gmail id, run number), and the highest Gmail id the
    journal holds (None before the first registration). The new fake Gmail gets those
    replies again under their ids, and issues new ids only above that highest one (an
    agent's sent reply also took an id). The fake holds no watch either, so the watch the
    database remembers is forgotten: the run's own watch job sets one up."""
    with db.connect(database_url, "demo") as conn, conn.transaction():
        rows = conn.execute(
            "SELECT o.gmail_message_id, "
            "substring(msg.rfc_message_id FROM 'demo-live-([0-9]+)@')::int AS run "
            "FROM core.message_occurrences o "
            "JOIN core.mailboxes m ON m.id = o.mailbox_id "
            "LEFT JOIN core.messages msg ON msg.id = o.message_id "
            "WHERE m.email = %s ORDER BY o.gmail_message_id",
            [JOURNAL_EMAIL],
        ).fetchall()
        conn.execute(
            "UPDATE core.mailboxes SET watch_topic = NULL, watch_expires_at = NULL, "
            "watch_renewed_at = NULL, watch_error = NULL, watch_error_at = NULL "
            "WHERE email = %s",
            [JOURNAL_EMAIL],
        )
    live = [(row["gmail_message_id"], row["run"]) for row in rows if row["run"] is not None]
    return live, (rows[-1]["gmail_message_id"] if rows else None)


@dataclass(frozen=True)
class DemoResult:
    """What the pipeline produced for the demo organisation."""

    database_url: str
    messages: int
    occurrences: int
    routed: int
    failed: int
    tickets: int
    spam: int
    per_queue: dict[str, int]
    example_ticket_id: int | None

    def summary(self) -> str:
        queues = ", ".join(f"{name} {count}" for name, count in self.per_queue.items())
        return (
            f"Summary: {self.tickets} tickets created ({self.spam} spam; queues: {queues}), "
            f"{self.routed} of {self.messages} occurrences routed, {self.failed} failed."
        )


def demo_settings(base: Settings, data_dir: Path) -> Settings:
    """`base` with the demo's database, blob store and development login.

    The demo always runs on its own embedded PostgreSQL, whatever DATABASE_URL says.
    """
    return base.with_overrides(
        database_url=None,
        embedded_pg_dir=data_dir / "pgdata",
        blob_store="local",
        local_blob_dir=data_dir / "blobs",
        allow_dev_login=True,
    )


def with_fake_gmail(settings: Settings, base_url: str, token_uri: str) -> Settings:
    """`settings` pointing the Gmail client and OAuth token exchange at the fake server."""
    from devtools.fake_gmail import FAKE_CLIENT_ID, FAKE_CLIENT_SECRET

    return settings.with_overrides(
        gmail_api_base_url=base_url,
        google_token_uri=token_uri,
        google_client_id=FAKE_CLIENT_ID,
        google_client_secret=FAKE_CLIENT_SECRET,
    )


def with_fake_google_signin(settings: Settings, provider: Any, api: str) -> Settings:
    """`settings` with Sign in with Google against the fake OpenID provider; a browser lands
    on GET /me after signing in (the demo has no web client)."""
    return settings.with_overrides(
        google_oidc_client_id=provider.client_id,
        google_oidc_client_secret=provider.client_secret,
        google_oidc_discovery_url=provider.discovery_url,
        google_oidc_redirect_uri=f"{api}/auth/google/callback",
        frontend_url=f"{api}/me",
    )


def _act_as(conn: psycopg.Connection, organization_id: Any, user_id: Any) -> None:
    """The tenant context a request of `user_id` in `organization_id` would set, for the
    rest of the transaction, so api.* functions run as for that admin."""
    conn.execute(
        "SELECT set_config('app.org_id', %s, true), set_config('app.user_id', %s, true), "
        "set_config('app.request_id', 'ticketing-demo', true)",
        [str(organization_id), str(user_id)],
    )


def seed_organization(database_url: str) -> dict[str, Any]:
    """Organisation "Demo", its admin, queues, allowlist and rules (each only if missing).

    Runs as the database owner in one transaction, through the same api.* functions the
    HTTP layer calls (tenant context set as a request would), so everything is validated
    and audited as if the admin had done it.
    """
    with db.connect(database_url, "demo") as conn, conn.transaction():
        org_id = conn.execute(
            "INSERT INTO core.organizations (name) VALUES (%s) ON CONFLICT ((lower(name))) "
            "DO UPDATE SET name = core.organizations.name RETURNING id",
            [ORGANIZATION],
        ).fetchone()["id"]
        user_id = conn.execute(
            "INSERT INTO core.users (email) VALUES (%s) ON CONFLICT (email) "
            "DO UPDATE SET email = excluded.email RETURNING id",
            [ADMIN_EMAIL],
        ).fetchone()["id"]
        conn.execute(
            "INSERT INTO core.memberships (organization_id, user_id, role) "
            "VALUES (%s, %s, 'admin') ON CONFLICT DO NOTHING",
            [org_id, user_id],
        )
        _act_as(conn, org_id, user_id)
        queue_ids: dict[str, str] = {}
        for name, description in QUEUES:
            row = conn.execute(
                "SELECT id FROM core.queues WHERE organization_id = %s AND lower(name) = lower(%s)",
                [org_id, name],
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT api.queue_create(%s)->>'id' AS id",
                    [Jsonb({"name": name, "description": description})],
                ).fetchone()
            queue_ids[name] = str(row["id"])
        for pattern in ALLOWLIST:
            conn.execute(
                "SELECT api.routing_allowlist_create(%s) WHERE NOT EXISTS (SELECT 1 FROM "
                "core.routing_allowlist WHERE organization_id = %s AND lower(pattern) = %s)",
                [Jsonb({"pattern": pattern}), org_id, pattern.lower()],
            )
        for name, priority, conditions, queue, actions in RULES:
            body = {
                "name": name,
                "priority": priority,
                **conditions,
                "action_assign_queue_id": queue_ids[queue],
                **actions,
            }
            conn.execute(
                "SELECT api.routing_rule_create(%s) WHERE NOT EXISTS (SELECT 1 FROM "
                "core.routing_rules WHERE organization_id = %s AND lower(name) = lower(%s))",
                [Jsonb(body), org_id, name],
            )
    return {"organization_id": str(org_id), "admin_user_id": str(user_id), "queues": queue_ids}


def seed_send_identity(
    settings: Settings, database_url: str, seeded: dict[str, Any], mailbox_id: str
) -> dict[str, Any]:
    """The verified send identity agents answer from (SUPPORT_EMAIL, sent through the
    journal mailbox, whose grant gains gmail.send), created and verified as the API's
    POST /tickets/send-identities and .../verify do: Gmail's sendAs list, judged in SQL."""
    from kernel.gmail_connect import GMAIL_SEND_SCOPE
    from kernel.gmail_send import send_as_addresses

    admin = (seeded["organization_id"], seeded["admin_user_id"])
    with db.connect(database_url, "demo") as conn, conn.transaction():
        _act_as(conn, *admin)
        conn.execute(
            "UPDATE core.mailboxes SET granted_scopes = array_append(granted_scopes, %s) "
            "WHERE id = %s AND NOT %s = ANY (granted_scopes)",
            [GMAIL_SEND_SCOPE, mailbox_id, GMAIL_SEND_SCOPE],
        )
        row = conn.execute(
            "SELECT id FROM core.send_identities WHERE from_email = %s", [SUPPORT_EMAIL]
        ).fetchone()
        if row is None:
            body = {
                "mailbox_id": mailbox_id,
                "from_email": SUPPORT_EMAIL,
                "from_name": SUPPORT_NAME,
            }
            row = conn.execute(
                "SELECT api.send_identity_create(%s)->>'id' AS id", [Jsonb(body)]
            ).fetchone()
        identity_id = row["id"]
        target = conn.execute(
            "SELECT * FROM api.send_identity_verify_target(%s)", [identity_id]
        ).fetchone()
    send_as, error = asyncio.run(send_as_addresses(settings, target))
    with db.connect(database_url, "demo") as conn, conn.transaction():
        _act_as(conn, *admin)
        return conn.execute(
            "SELECT api.send_identity_record_verification(%s, %s, %s) AS identity",
            [identity_id, Jsonb(send_as), error],
        ).fetchone()["identity"]


def pipeline_counts(conn: psycopg.Connection, mailbox_id: str) -> tuple[int, int, int]:
    """(occurrences, routed, failed) of the demo mailbox."""
    row = conn.execute(
        "SELECT count(*) AS total, count(*) FILTER (WHERE state = 'routed') AS routed, "
        "count(*) FILTER (WHERE state = 'failed') AS failed "
        "FROM core.message_occurrences WHERE mailbox_id = %s",
        [mailbox_id],
    ).fetchone()
    return row["total"], row["routed"], row["failed"]


def progress_line(done: int, failed: int, total: int, elapsed: float) -> str:
    """`[#####.....]  42/60 occurrences routed, 0 failed  3.1s` (failed count as done)."""
    filled = PROGRESS_WIDTH * (done + failed) // total if total else 0
    bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
    return f"[{bar}] {done:>{len(str(total))}}/{total} occurrences routed, {failed} failed  {elapsed:.1f}s"


async def run_pipeline(
    database_url: str, mailbox_id: str, expected: int, err: TextIO, runtime: Any = None
) -> None:
    """Run workers until the pipeline is idle, drawing a progress bar on `err` meanwhile.

    The bar redraws in place (carriage return) on a terminal, else prints a line whenever
    the counts change. The workers' tasks get `runtime` (worker.pipeline.Runtime).
    """
    from worker.app import app, make_connector
    from worker.runner import run_until_idle

    started = time.monotonic()
    tty = err.isatty()
    shown: tuple[int, int, int] | None = None

    def draw(counts: tuple[int, int, int], final: bool = False) -> None:
        nonlocal shown
        total, routed, failed = counts
        line = progress_line(routed, failed, max(total, expected), time.monotonic() - started)
        if tty:
            err.write("\r" + line + ("\n" if final else ""))
        elif counts != shown:
            err.write(line + "\n")
        shown = counts
        err.flush()

    connector = make_connector(database_url, max_size=WORKER_CONCURRENCY + 2)
    with (
        app.replace_connector(connector) as worker_app,
        db.connect(database_url, "demo", autocommit=True) as conn,
    ):
        async with worker_app.open_async():
            worker = asyncio.create_task(
                run_until_idle(worker_app, concurrency=WORKER_CONCURRENCY, runtime=runtime)
            )
            while not worker.done():
                draw(await asyncio.to_thread(pipeline_counts, conn, mailbox_id))
                await asyncio.wait({worker}, timeout=PROGRESS_INTERVAL)
            await worker
            draw(pipeline_counts(conn, mailbox_id), final=True)


def collect_result(database_url: str, mailbox_id: str, messages: int) -> DemoResult:
    """Counts for the summary, and a ticket a rule routed (for the walkthrough)."""
    with db.connect(database_url, "demo") as conn:
        total, routed, failed = pipeline_counts(conn, mailbox_id)
        tickets = conn.execute(
            "SELECT count(*) AS tickets, count(*) FILTER (WHERE t.status = 'spam') AS spam "
            "FROM core.tickets t JOIN core.organizations o ON o.id = t.organization_id "
            "WHERE lower(o.name) = lower(%s)",
            [ORGANIZATION],
        ).fetchone()
        per_queue = {
            row["name"]: row["tickets"]
            for row in conn.execute(
                "SELECT q.name, count(t.id) AS tickets FROM core.queues q "
                "JOIN core.organizations o ON o.id = q.organization_id "
                "LEFT JOIN core.tickets t ON t.assignee_queue_id = q.id "
                "WHERE lower(o.name) = lower(%s) GROUP BY q.name ORDER BY q.name",
                [ORGANIZATION],
            )
        }
        example = conn.execute(
            "SELECT t.id FROM core.tickets t JOIN core.queues q ON q.id = t.assignee_queue_id "
            "JOIN core.organizations o ON o.id = t.organization_id "
            "WHERE lower(o.name) = lower(%s) ORDER BY (q.name = %s) DESC, t.id LIMIT 1",
            [ORGANIZATION, QUEUES[1][0]],
        ).fetchone()
    return DemoResult(
        database_url=database_url,
        messages=max(messages, total),
        occurrences=total,
        routed=routed,
        failed=failed,
        tickets=tickets["tickets"],
        spam=tickets["spam"],
        per_queue=per_queue,
        example_ticket_id=example["id"] if example else None,
    )


def walkthrough(
    host: str, port: int, ticket_id: int | None, cors_origins: tuple[str, ...] = ()
) -> str:
    """The curl session printed once the API listens, and how to point the web client at
    it (kept in step with the README)."""
    api = f"http://{host}:{port}"
    pick = "python3 -c 'import sys, json; print(json.load(sys.stdin)[\"csrf_token\"])'"
    events = (
        "python3 -c 'import sys, json; "
        'print(json.dumps(json.load(sys.stdin)["events"], indent=1))\''
    )
    login = json.dumps({"email": ADMIN_EMAIL, "organization_name": ORGANIZATION})
    simulate = json.dumps(SIMULATE_EXAMPLE)
    ticket = ticket_id if ticket_id is not None else 1
    return "\n".join(
        [
            f"API on {api} (development login on; Ctrl-C stops). Try:",
            "",
            f"Sign in with Google (a fake provider signs you in as {ADMIN_EMAIL}): open",
            f"{api}/auth/google/start in a browser (you land on /me), or with curl:",
            "",
            "  jar=$(mktemp)",
            f"  curl -s -L -c $jar -b $jar {api}/auth/google/start   # ends on GET /me",
            "",
            "Or development login:",
            "",
            f"  api={api}; jar=$(mktemp)",
            f"  csrf=$(curl -s -c $jar -b $jar $api/auth/csrf | {pick})",
            '  csrf=$(curl -s -c $jar -b $jar -X POST $api/auth/dev/login -H "x-csrf-token: $csrf" \\',
            f"    -H 'content-type: application/json' -d '{login}' | {pick})",
            '  curl -s -b $jar "$api/tickets?limit=5"',
            f"  curl -s -b $jar $api/tickets/{ticket} | {events}   # how it was routed",
            '  curl -s -b $jar -X POST $api/tickets/routing/simulate -H "x-csrf-token: $csrf" \\',
            f"    -H 'content-type: application/json' -d '{simulate}'",
            "",
            f"Agents answer from {SUPPORT_EMAIL} (a verified send identity; GET",
            "/tickets/send-identities gives its id): POST /tickets/{id}/reply sends through the",
            "fake Gmail, and the journal copy comes back onto the same message.",
            "",
            "The OSS Ticketing web client (apps/web of Chasonnnn/OSS-Ticketing-System) runs",
            "against this API unmodified: build it with",
            f"  NEXT_PUBLIC_API_BASE_URL=http://localhost:{port}",
            "and open it on an origin the API allows (CORS_ORIGINS: "
            + (", ".join(cors_origins) or "none")
            + f"); sign in with {ADMIN_EMAIL} / {ORGANIZATION} on its Mailboxes page.",
            "",
            "Gmail push is on: in a second a customer's reply arrives in the fake mailbox and is",
            "routed live (the lines starting with 'Live:' say where, and how fast).",
            "",
        ]
    )


def run_demo(
    base: Settings,
    *,
    data_dir: Path = DEFAULT_DATA_DIR,
    host: str = "127.0.0.1",
    port: int = 8000,
    serve: bool = True,
    reset: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> DemoResult:
    """Steps 1-5 of the module docstring; returns after the pipeline if not `serve`."""
    from devtools.fake_gmail import FakeGmail, fake_gmail_in_thread
    from devtools.fake_oidc import FakeGoogleUser, FakeOpenIDProvider, serve_provider_in_thread
    from devtools.fake_pubsub import FakePushSubscription
    from worker.pipeline import Runtime

    t0 = time.monotonic()
    data_dir = data_dir.resolve()
    if reset and data_dir.exists():
        shutil.rmtree(data_dir)
    settings = demo_settings(base, data_dir)
    print(f"Starting embedded PostgreSQL in {settings.embedded_pg_dir} ...", file=err, flush=True)
    database_url = db.database_url(settings)
    migrate(database_url)

    gmail = FakeGmail()
    message_ids = gmail.add_eml_dir(JOURNAL_EMAIL, MAILBOX_DIR)
    gmail.add_send_as(JOURNAL_EMAIL, SUPPORT_EMAIL, display_name=SUPPORT_NAME)
    earlier_live, last_id = resume_journal(database_url)
    for gmail_id, run in earlier_live:
        gmail.skip_to(gmail_id)
        message_ids.append(gmail.add_message(JOURNAL_EMAIL, live_message(run)))
    if last_id is not None and last_id not in message_ids:
        gmail.skip_to(f"{int(last_id, 16) + 1:016x}")
    live_runs = len(earlier_live)
    subscription = None
    if serve:
        # Push on: the mailbox is watched to a topic of the fake (the initial pipeline runs
        # the watch), whose subscription posts to the API served below.
        token = secrets.token_urlsafe(24)
        push_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        subscription = FakePushSubscription(
            endpoint=f"http://{push_host}:{port}/webhooks/gmail/pubsub", shared_secret=token
        )
        gmail.create_topic(PUSH_TOPIC, subscription.publish)
        settings = settings.with_overrides(gmail_pubsub_topic=PUSH_TOPIC, gmail_push_token=token)
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    api = f"http://{local_host}:{port}"
    google = FakeOpenIDProvider(redirect_uris=(f"{api}/auth/google/callback",))
    google.sign_in_as(FakeGoogleUser(ADMIN_EMAIL, hosted_domain="demo.example", name="Demo Admin"))
    with fake_gmail_in_thread(gmail) as server, serve_provider_in_thread(google):
        settings = with_fake_gmail(settings, server.base_url, server.token_uri)
        settings = with_fake_google_signin(settings, google, api)
        runtime = Runtime(settings=settings, blobs=LocalBlobStore(settings.local_blob_dir))
        try:
            seeded = seed_organization(database_url)
            mailbox = register_gmail_mailbox(
                settings,
                database_url,
                organization=ORGANIZATION,
                email=JOURNAL_EMAIL,
                refresh_token=gmail.issue_refresh_token(JOURNAL_EMAIL),
            )
            seed_send_identity(settings, database_url, seeded, mailbox["mailbox_id"])
            print(
                f"Fake Gmail at {server.base_url}: {len(message_ids)} messages in "
                f"{JOURNAL_EMAIL}, registered for organisation {ORGANIZATION!r}; "
                "running the pipeline ...",
                file=err,
                flush=True,
            )
            asyncio.run(
                run_pipeline(database_url, mailbox["mailbox_id"], len(message_ids), err, runtime)
            )
            result = collect_result(database_url, mailbox["mailbox_id"], len(message_ids))
            print(result.summary(), file=out, flush=True)
            print(f"Ready in {time.monotonic() - t0:.1f}s.", file=err, flush=True)
            if serve:
                assert subscription is not None
                subscription.start()
                live = LiveArrival(gmail, mailbox["mailbox_id"], live_message(live_runs))
                try:
                    asyncio.run(
                        serve_live(settings, database_url, host, port, result, live, out, runtime)
                    )
                finally:
                    subscription.close()
            return result
        finally:
            runtime.close()


@dataclass
class LiveArrival:
    """The message the demo delivers while it serves."""

    gmail: Any
    mailbox_id: str
    raw: bytes


async def serve_live(
    settings: Settings,
    database_url: str,
    host: str,
    port: int,
    result: DemoResult,
    live: LiveArrival,
    out: TextIO,
    runtime: Any = None,
) -> None:
    """The API on the demo database and a supervised worker beside it (its tasks get
    `runtime`), until Ctrl-C.

    Prints the walkthrough once the API listens, then delivers the live message and prints
    where and how fast it was routed.
    """
    import signal

    from aiohttp import web

    from app.server import create_app
    from worker.app import app, make_connector
    from worker.runner import run_supervised

    logging.getLogger().setLevel(logging.INFO)
    # The worker's own chatter (every job) would drown the walkthrough.
    for name in ("procrastinate", "worker"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").addFilter(_redact_push_token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(create_app(settings, database_url))
    await runner.setup()
    connector = make_connector(database_url, max_size=WORKER_CONCURRENCY + 2)
    with app.replace_connector(connector) as worker_app:
        worker = asyncio.create_task(
            run_supervised(
                worker_app,
                database_url,
                stop,
                concurrency=WORKER_CONCURRENCY,
                sync_poll_seconds=settings.sync_poll_seconds,
                runtime=runtime,
            ),
            name="demo worker",
        )
        arrival = None
        try:
            await web.TCPSite(runner, host, port).start()
            print(
                walkthrough(host, port, result.example_ticket_id, settings.cors_origins),
                file=out,
                flush=True,
            )
            arrival = asyncio.create_task(deliver_live(database_url, live, stop, out))
            await stop.wait()
        finally:
            stop.set()
            if arrival is not None:
                arrival.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await arrival
            await worker
            await runner.cleanup()


_PUSH_TOKEN_RE = re.compile(r"([?&]token=)[^&\s\"]+")


def _redact_push_token(record: logging.LogRecord) -> bool:
    """Access log lines of pushes name the push secret in their URL: not in the log."""
    if isinstance(record.msg, str) and "token=" in record.msg:
        record.msg = _PUSH_TOKEN_RE.sub(r"\1REDACTED", record.msg)
    return True


async def deliver_live(
    database_url: str, live: LiveArrival, stop: asyncio.Event, out: TextIO
) -> float | None:
    """Deliver the live message to the fake mailbox; print where it was routed and how long
    after delivery (seconds, returned; None if it was not routed in time)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), LIVE_DELAY_SECONDS)
    if stop.is_set():
        return None
    gmail_id = await asyncio.to_thread(live.gmail.add_message, JOURNAL_EMAIL, live.raw)
    delivered = time.time()
    print(
        f"Live: a reply from {LIVE_SENDER} just arrived in the journal mailbox (Gmail push "
        "on); waiting for it to be routed ...",
        file=out,
        flush=True,
    )
    async with await psycopg.AsyncConnection.connect(
        database_url, application_name="demo", autocommit=True
    ) as conn:
        deadline = time.monotonic() + LIVE_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not stop.is_set():
            cursor = await conn.execute(
                "SELECT extract(epoch FROM o.routed_at)::float8 AS routed_at, t.id, t.number, "
                "t.subject, q.name AS queue FROM core.message_occurrences o "
                "JOIN core.ticket_messages tm ON tm.message_id = o.message_id "
                "JOIN core.tickets t ON t.id = tm.ticket_id "
                "LEFT JOIN core.queues q ON q.id = t.assignee_queue_id "
                "WHERE o.mailbox_id = %s AND o.gmail_message_id = %s AND o.state = 'routed'",
                [live.mailbox_id, gmail_id],
            )
            row = await cursor.fetchone()
            if row is not None:
                routed_at, ticket_id, _number, subject, queue = row
                seconds = routed_at - delivered
                print(
                    f"Live: routed into ticket {ticket_id} ({subject!r}, queue "
                    f"{queue or 'none'}) {seconds:.2f}s after delivery: "
                    f"curl -s -b $jar $api/tickets/{ticket_id}",
                    file=out,
                    flush=True,
                )
                return seconds
            await asyncio.sleep(0.05)
    if not stop.is_set():
        print("Live: not routed within 2 minutes; see GET /ops/mailboxes/sync.", file=out)
    return None
