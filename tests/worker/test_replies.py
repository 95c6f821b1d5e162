"""Agent replies end to end (issue 17): the API queues, real procrastinate workers send
through the real Gmail client library to the fake Gmail server, the journal copy comes back
through ingestion, and the customer answers. Real PostgreSQL throughout."""

from __future__ import annotations

import email
import email.policy
import email.utils
import threading
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from devtools.fake_gmail import FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FaultRule
from kernel.markers import verify_markers
from tests.fixtures.api import TEST_SECRET, ApiUser, dev_login
from tests.fixtures.ingest import kill_when, running_worker

JOURNAL = "journal@example.com"
SUPPORT = "support@acme.example"
CUSTOMER = "customer@client.example"
SEND_SCOPES = [
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
]


@dataclass
class Desk:
    """An organisation with a journal mailbox, a sender mailbox, a verified identity and one
    customer ticket; an admin and an agent logged into the API."""

    journal_id: str
    sender_id: str
    identity_id: str
    ticket_id: int
    admin: ApiUser
    agent: ApiUser


def customer_mail(
    message_id: str,
    subject: str,
    body: str,
    *,
    in_reply_to: str = "",
    sender: str = CUSTOMER,
    extra: str = "",
) -> bytes:
    date = email.utils.format_datetime(email.utils.localtime())
    threading_headers = (
        f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n" if in_reply_to else ""
    )
    return (
        f"From: Casey Customer <{sender}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: {message_id}\r\n{threading_headers}{extra}"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


async def sync(ingest, db, mailbox_id: str) -> None:
    db.execute("SELECT logic.enqueue_history_sync(%s)", [mailbox_id])
    await ingest.run_worker()


@pytest.fixture
async def desk(ingest, db, api_factory, client_factory) -> Desk:
    ingest.gmail.journal_address = JOURNAL
    journal_id = ingest.add_mailbox(db, JOURNAL)
    sender_id = ingest.add_mailbox(db, SUPPORT)
    db.execute(
        "UPDATE core.mailboxes SET purpose = 'sender', granted_scopes = %s WHERE id = %s",
        [SEND_SCOPES, sender_id],
    )
    org = db.execute("SELECT id FROM core.organizations WHERE name = 'Acme'").fetchone()["id"]
    db.execute(
        "INSERT INTO core.routing_allowlist (organization_id, pattern) VALUES (%s, %s)",
        [org, SUPPORT],
    )
    ingest.gmail.add_message(
        JOURNAL, customer_mail("<c1@client.example>", "Printer on fire", "It is still burning.")
    )
    db.execute("SELECT logic.enqueue_backfill(%s)", [journal_id])
    await ingest.run_worker()
    ticket_id = db.execute("SELECT id FROM core.tickets").fetchone()["id"]

    server = await api_factory(
        gmail_api_base_url=ingest.server.base_url,
        google_token_uri=ingest.server.token_uri,
        google_client_id=FAKE_CLIENT_ID,
        google_client_secret=FAKE_CLIENT_SECRET,
    )
    admin = await dev_login(await client_factory(server), "admin@acme.example", "Acme", "admin")
    agent = await dev_login(await client_factory(server), "agent@acme.example", "Acme", "agent")
    created = await admin.post(
        "/tickets/send-identities",
        {"mailbox_id": sender_id, "from_email": SUPPORT, "from_name": "Acme Support"},
    )
    assert created.status == 201, await created.text()
    identity = await created.json()
    assert identity["status"] == "pending"
    verified = await admin.post(f"/tickets/send-identities/{identity['id']}/verify")
    assert verified.status == 200, await verified.text()
    assert (await verified.json())["status"] == "verified"
    return Desk(journal_id, sender_id, identity["id"], ticket_id, admin, agent)


def reply_body(desk: Desk, **changes) -> dict:
    return {
        "send_identity_id": desk.identity_id,
        "to_emails": [CUSTOMER],
        "cc_emails": [],
        "subject": "Re: RE: Printer on fire",
        "body_text": "Grüße — we sent the fire brigade.\nLine two.",
        **changes,
    }


def ticket(db, ticket_id: int) -> dict:
    return db.execute("SELECT * FROM core.tickets WHERE id = %s", [ticket_id]).fetchone()


def outbound(db) -> list[dict]:
    return db.execute("SELECT * FROM core.outbound_messages ORDER BY message_id").fetchall()


def events(db, ticket_id: int, kind: str) -> list[dict]:
    return db.execute(
        "SELECT * FROM core.ticket_events WHERE ticket_id = %s AND type = %s ORDER BY id",
        [ticket_id, kind],
    ).fetchall()


async def test_a_reply_is_sent_once_folded_with_its_journal_copy_and_answered(ingest, db, desk):
    response = await desk.agent.post(f"/tickets/{desk.ticket_id}/reply", reply_body(desk))
    assert response.status == 202, await response.text()
    queued = await response.json()
    assert queued["status"] == "queued" and queued["job_id"] is not None
    uuid.UUID(queued["oss_message_id"])
    # Stored at once: the thread shows it as queued, the ticket waits on the customer.
    detail = await (await desk.agent.get(f"/tickets/{desk.ticket_id}")).json()
    mine = [m for m in detail["messages"] if m["message_id"] == queued["message_id"]]
    assert mine[0]["direction"] == "outbound" and mine[0]["outbound_send"]["state"] == "queued"
    assert detail["ticket"]["status"] == "pending"
    assert detail["ticket"]["last_message_direction"] == "outbound"
    assert [e["event_type"] for e in detail["events"]].count("reply_queued") == 1

    await ingest.run_worker()

    sent = ingest.gmail.sent_messages(SUPPORT)
    assert len(sent) == 1
    mail = email.message_from_bytes(sent[0].raw, policy=email.policy.default)
    assert mail["Message-ID"] == f"<{queued['rfc_message_id']}>"
    assert mail["In-Reply-To"] == "<c1@client.example>"
    assert mail["References"] == "<c1@client.example>"
    assert mail["Subject"] == "Re: Printer on fire"
    assert mail["From"].addresses[0].display_name == "Acme Support"
    assert mail["From"].addresses[0].addr_spec == SUPPORT
    assert mail["To"] == CUSTOMER
    assert mail.get_content_type() == "text/plain"
    assert mail["Content-Transfer-Encoding"] == "quoted-printable"
    assert b"\r\n" in sent[0].raw and b"\n" not in sent[0].raw.replace(b"\r\n", b"")
    body = mail.get_content().replace("\r\n", "\n").rstrip("\n")
    assert body == "Grüße — we sent the fire brigade.\nLine two."
    org = db.execute("SELECT organization_id FROM core.tickets").fetchone()["organization_id"]
    number, _ = verify_markers(TEST_SECRET, org, {"x-oss-ticket-id": [mail["X-OSS-Ticket-ID"]]}, [])
    assert number == ticket(db, desk.ticket_id)["number"]
    [state] = outbound(db)
    assert (state["state"], state["gmail_message_id"], state["recovered"]) == (
        "sent",
        sent[0].id,
        False,
    )
    assert len(events(db, desk.ticket_id, "reply_sent")) == 1

    # Workspace journals the sent message: it is an occurrence of the same message.
    await sync(ingest, db, desk.journal_id)
    copies = db.execute(
        "SELECT o.message_id, o.state::text FROM core.message_occurrences o "
        "JOIN core.mailboxes mb ON mb.id = o.mailbox_id WHERE mb.email = %s "
        "ORDER BY o.id",
        [JOURNAL],
    ).fetchall()
    assert len(copies) == 2 and copies[1] == {"message_id": queued["message_id"], "state": "routed"}
    assert db.execute("SELECT count(*) AS n FROM core.tickets").fetchone()["n"] == 1
    assert (
        db.execute(
            "SELECT count(*) AS n FROM core.messages WHERE direction = 'outbound'"
        ).fetchone()["n"]
        == 1
    )
    assert ticket(db, desk.ticket_id)["status"] == "pending"

    # The customer answers, quoting the reply's Message-ID: same ticket, open again.
    ingest.gmail.add_message(
        JOURNAL,
        customer_mail(
            "<c2@client.example>",
            "Re: Printer on fire",
            "Thanks, it is out.",
            in_reply_to=f"<{queued['rfc_message_id']}>",
        ),
    )
    await sync(ingest, db, desk.journal_id)
    answer = db.execute(
        "SELECT tm.ticket_id, tm.stitch_reason FROM core.messages m "
        "JOIN core.ticket_messages tm ON tm.message_id = m.id "
        "WHERE m.rfc_message_id = 'c2@client.example'"
    ).fetchone()
    assert answer == {"ticket_id": desk.ticket_id, "stitch_reason": "in_reply_to"}
    after = ticket(db, desk.ticket_id)
    assert after["status"] == "open" and after["last_message_direction"] == "inbound"
    assert len(ingest.gmail.sent_messages(SUPPORT)) == 1


async def test_a_send_whose_answer_is_lost_is_found_not_sent_again(ingest, db, desk):
    rule = ingest.gmail.inject(FaultRule("send", action="lose_response"))
    response = await desk.agent.post(f"/tickets/{desk.ticket_id}/reply", reply_body(desk))
    assert response.status == 202

    await ingest.run_worker()

    assert rule.fired == 1
    assert len(ingest.gmail.sent_messages(SUPPORT)) == 1
    [state] = outbound(db)
    assert state["state"] == "sent" and state["recovered"] is True
    assert state["attempts"] == 2
    assert state["gmail_message_id"] == ingest.gmail.sent_messages(SUPPORT)[0].id
    [sent_event] = events(db, desk.ticket_id, "reply_sent")
    assert sent_event["data"]["found_after_lost_answer"] is True
    searches = [r for r in ingest.gmail.log if r.kind == "list" and "rfc822msgid" in r.query]
    assert len(searches) == 1


async def test_a_worker_killed_between_gmails_answer_and_the_commit_sends_once(
    ingest, db, db_url, desk, tmp_path
):
    response = await desk.agent.post(f"/tickets/{desk.ticket_id}/reply", reply_body(desk))
    message_id = (await response.json())["message_id"]
    # When Gmail accepts the message, hold the reply's row: the worker gets Gmail's answer,
    # then waits on the row to record it, and is killed there.
    holder: dict = {}
    ready = threading.Event()

    def hold_row(record) -> None:
        if record.kind == "send" and record.status == 200 and "conn" not in holder:
            conn = psycopg.connect(db_url)
            conn.execute(
                "SELECT 1 FROM core.outbound_messages WHERE message_id = %s FOR UPDATE",
                [message_id],
            )
            holder["conn"] = conn
            ready.set()

    ingest.gmail.on_request(hold_row)

    def worker_waits_on_the_row() -> bool:
        if not ready.is_set():
            return False
        row = db.execute(
            "SELECT count(*) AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.query LIKE '%%outbound_sent%%'"
        ).fetchone()
        return row["n"] > 0

    with running_worker(ingest.worker_env(), tmp_path / "worker.log", concurrency=1) as worker:
        kill_when(worker, worker_waits_on_the_row, timeout=60)
    assert ready.is_set()
    holder["conn"].rollback()
    holder["conn"].close()
    assert outbound(db)[0]["state"] == "sending"  # Gmail has it; the database does not know

    await ingest.run_worker(stalled_after=0)

    assert len(ingest.gmail.sent_messages(SUPPORT)) == 1
    [state] = outbound(db)
    assert (state["state"], state["recovered"]) == ("sent", True)
    assert len(events(db, desk.ticket_id, "reply_sent")) == 1


async def test_replies_that_must_not_be_sent_are_refused_and_nothing_is_queued(ingest, db, desk):
    url = f"/tickets/{desk.ticket_id}/reply"
    pending = await desk.admin.post(
        "/tickets/send-identities",
        {"mailbox_id": desk.sender_id, "from_email": "sales@acme.example"},
    )
    unverified = (await pending.json())["id"]
    # Another organisation's verified identity.
    other = db.execute(
        "INSERT INTO core.organizations (name) VALUES ('Other') RETURNING id"
    ).fetchone()["id"]
    other_mailbox = db.execute(
        "INSERT INTO core.mailboxes (organization_id, email) VALUES (%s, 'box@other.example') "
        "RETURNING id",
        [other],
    ).fetchone()["id"]
    foreign = db.execute(
        "INSERT INTO core.send_identities (organization_id, mailbox_id, from_email, status) "
        "VALUES (%s, %s, 'box@other.example', 'verified') RETURNING id",
        [other, other_mailbox],
    ).fetchone()["id"]
    cases = [
        (
            desk.agent,
            reply_body(desk, send_identity_id=unverified),
            422,
            "send_identity_unverified",
        ),
        (
            desk.agent,
            reply_body(desk, send_identity_id=str(foreign)),
            404,
            "send_identity_not_found",
        ),
        (
            desk.agent,
            reply_body(desk, to_emails=[f"c{i}@client.example" for i in range(51)]),
            422,
            "invalid_to_emails",
        ),
        (desk.agent, reply_body(desk, cc_emails=["not an address"]), 422, "invalid_cc_emails"),
        (desk.agent, reply_body(desk, to_emails=["nobody"]), 422, "invalid_to_emails"),
        (desk.agent, reply_body(desk, body_text="  \n "), 422, "invalid_body_text"),
        (desk.agent, reply_body(desk, to_emails=[]), 422, "invalid_to_emails"),
    ]
    cases.append((desk.agent, {**reply_body(desk), "bcc_emails": [CUSTOMER]}, 422, "unknown_field"))
    cases.append(
        (desk.agent, reply_body(desk, send_identity_id="nope"), 422, "invalid_send_identity_id")
    )
    for user, body, status, code in cases:
        response = await user.post(url, body)
        assert (response.status, (await response.json())["code"]) == (status, code), body
    no_csrf = await desk.agent.client.post(url, json=reply_body(desk))
    assert (no_csrf.status, (await no_csrf.json())["code"]) == (403, "csrf_failed")
    disabled = await desk.admin.patch(
        f"/tickets/send-identities/{desk.identity_id}", {"is_enabled": False}
    )
    assert (await disabled.json())["is_enabled"] is False
    refused = await desk.agent.post(url, reply_body(desk))
    assert (refused.status, (await refused.json())["code"]) == (422, "send_identity_disabled")
    listed = await (await desk.agent.get("/tickets/send-identities")).json()
    assert [i["from_email"] for i in listed] == ["sales@acme.example"]

    assert outbound(db) == []
    assert (
        db.execute(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE task_name = 'outbound_send'"
        ).fetchone()["n"]
        == 0
    )
    assert ticket(db, desk.ticket_id)["status"] != "pending"


async def test_a_viewer_cannot_reply(ingest, db, desk, client_factory):
    server = desk.agent.client.server
    viewer = await dev_login(await client_factory(server), "viewer@acme.example", "Acme", "viewer")
    response = await viewer.post(f"/tickets/{desk.ticket_id}/reply", reply_body(desk))
    assert (response.status, (await response.json())["code"]) == (403, "forbidden")
    assert outbound(db) == []


async def test_an_agents_reply_from_gmail_joins_as_outbound_without_reopening(ingest, db, desk):
    db.execute("UPDATE core.tickets SET status = 'resolved' WHERE id = %s", [desk.ticket_id])
    ingest.gmail.add_message(
        JOURNAL,
        customer_mail(
            "<agent-1@acme.example>",
            "Re: Printer on fire",
            "Answered from Gmail.",
            in_reply_to="<c1@client.example>",
            sender=SUPPORT,
        ),
    )
    # An agent writing first to a customer starts a ticket that is not spam.
    ingest.gmail.add_message(
        JOURNAL,
        (
            f"From: {SUPPORT}\r\nTo: newcustomer@elsewhere.example\r\nSubject: Your order\r\n"
            "Message-ID: <agent-2@acme.example>\r\n\r\nIt shipped.\r\n"
        ).encode(),
    )
    await sync(ingest, db, desk.journal_id)

    joined = db.execute(
        "SELECT m.direction, m.classification, tm.ticket_id FROM core.messages m "
        "JOIN core.ticket_messages tm ON tm.message_id = m.id "
        "WHERE m.rfc_message_id = 'agent-1@acme.example'"
    ).fetchone()
    assert joined["direction"] == "outbound" and joined["ticket_id"] == desk.ticket_id
    assert joined["classification"]["reasons"][0]["rule"] == "org_sender"
    assert ticket(db, desk.ticket_id)["status"] == "resolved"
    assert events(db, desk.ticket_id, "reopened") == []
    started = db.execute(
        "SELECT t.status::text, t.requester_email FROM core.tickets t "
        "JOIN core.ticket_messages tm ON tm.ticket_id = t.id JOIN core.messages m "
        "ON m.id = tm.message_id WHERE m.rfc_message_id = 'agent-2@acme.example'"
    ).fetchone()
    # Routed by the rules, never judged by the allowlist (no rule here: it stays new).
    assert started == {"status": "new", "requester_email": "newcustomer@elsewhere.example"}


async def test_an_out_of_office_does_not_reopen_and_a_bounce_fails_the_reply(ingest, db, desk):
    response = await desk.agent.post(f"/tickets/{desk.ticket_id}/reply", reply_body(desk))
    rfc_id = f"<{(await response.json())['rfc_message_id']}>"
    await ingest.run_worker()
    assert outbound(db)[0]["state"] == "sent"

    ingest.gmail.add_message(
        JOURNAL,
        customer_mail(
            "<ooo@client.example>",
            "Out of office: Printer on fire",
            "I am away until Monday.",
            in_reply_to=rfc_id,
            extra="Auto-Submitted: auto-replied\r\n",
        ),
    )
    await sync(ingest, db, desk.journal_id)
    ooo = db.execute(
        "SELECT m.automated, tm.ticket_id FROM core.messages m JOIN core.ticket_messages tm "
        "ON tm.message_id = m.id WHERE m.rfc_message_id = 'ooo@client.example'"
    ).fetchone()
    assert ooo == {"automated": "auto_reply", "ticket_id": desk.ticket_id}
    assert ticket(db, desk.ticket_id)["status"] == "pending"

    boundary = "dsn-boundary"
    bounce = (
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n"
        f"To: {SUPPORT}\r\nSubject: Delivery Status Notification (Failure)\r\n"
        "Message-ID: <dsn-1@mx.google.com>\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
        f"\r\n\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nYour message was not "
        f"delivered.\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; googlemail.com\r\n\r\n"
        f"Final-Recipient: rfc822; {CUSTOMER}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 The email account does not exist\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {SUPPORT}\r\nTo: {CUSTOMER}\r\nMessage-ID: {rfc_id}\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    ingest.gmail.add_message(JOURNAL, bounce)
    await sync(ingest, db, desk.journal_id)

    [state] = outbound(db)
    assert (state["state"], state["failure_kind"]) == ("failed", "bounce")
    assert CUSTOMER in state["failure_reason"] and "5.1.1" in state["failure_reason"]
    [failed] = events(db, desk.ticket_id, "reply_failed")
    assert failed["data"]["kind"] == "bounce"
    dsn = db.execute(
        "SELECT m.automated, tm.ticket_id FROM core.messages m JOIN core.ticket_messages tm "
        "ON tm.message_id = m.id WHERE m.rfc_message_id = 'dsn-1@mx.google.com'"
    ).fetchone()
    assert dsn == {"automated": "bounce", "ticket_id": desk.ticket_id}
    assert ticket(db, desk.ticket_id)["status"] == "pending"
    detail = await (await desk.agent.get(f"/tickets/{desk.ticket_id}")).json()
    mine = [m for m in detail["messages"] if m["outbound_send"] is not None]
    assert mine[0]["outbound_send"]["state"] == "failed"


async def test_a_permanent_refusal_fails_the_reply_at_once(ingest, db, desk):
    ingest.gmail.inject(FaultRule("send", action="status", status=400, times=None))
    response = await desk.agent.post(f"/tickets/{desk.ticket_id}/reply", reply_body(desk))
    assert response.status == 202
    await ingest.run_worker()
    [state] = outbound(db)
    assert (state["state"], state["failure_kind"], state["attempts"]) == ("failed", "send", 1)
    assert "400" in state["failure_reason"]
    assert len(events(db, desk.ticket_id, "reply_failed")) == 1
    assert ingest.gmail.sent_messages(SUPPORT) == []


async def test_verification_asks_gmail_for_the_address_and_the_grant(ingest, db, desk):
    ingest.gmail.add_send_as(SUPPORT, "help@acme.example")
    ingest.gmail.add_send_as(SUPPORT, "sales@acme.example", verification_status="pending")

    async def verify(address: str) -> dict:
        created = await desk.admin.post(
            "/tickets/send-identities", {"mailbox_id": desk.sender_id, "from_email": address}
        )
        identity = await created.json()
        response = await desk.admin.post(f"/tickets/send-identities/{identity['id']}/verify")
        assert response.status == 200, await response.text()
        return await response.json()

    accepted = await verify("help@acme.example")
    assert (accepted["status"], accepted["status_reason"]) == (
        "verified",
        "a send-as alias with verificationStatus accepted",
    )
    pending = await verify("sales@acme.example")
    assert pending["status"] == "failed" and "pending" in pending["status_reason"]
    unknown = await verify("nobody@acme.example")
    assert unknown["status"] == "failed" and "neither" in unknown["status_reason"]
    db.execute(
        "UPDATE core.mailboxes SET granted_scopes = %s WHERE id = %s",
        [SEND_SCOPES[:1], desk.sender_id],
    )
    again = await desk.admin.post(f"/tickets/send-identities/{accepted['id']}/verify")
    body = await again.json()
    assert body["status"] == "failed" and "gmail.send" in body["status_reason"]
    listed = await (await desk.agent.get("/tickets/send-identities")).json()
    assert {i["from_email"]: i["status"] for i in listed} == {
        SUPPORT: "verified",
        "help@acme.example": "failed",
        "sales@acme.example": "failed",
        "nobody@acme.example": "failed",
    }


async def test_a_revoked_grant_fails_the_reply_and_flags_the_mailbox(ingest, db, desk):
    ingest.gmail.revoke_refresh_token(ingest.refresh_tokens[desk.sender_id])
    response = await desk.agent.post(f"/tickets/{desk.ticket_id}/reply", reply_body(desk))
    assert response.status == 202
    await ingest.run_worker()
    [state] = outbound(db)
    assert (state["state"], state["attempts"]) == ("failed", 1)
    assert "GmailReconnectRequired" in state["failure_reason"]
    mailbox = db.execute(
        "SELECT state::text FROM core.mailboxes WHERE id = %s", [desk.sender_id]
    ).fetchone()
    assert mailbox["state"] == "needs_reconnect"
    assert ingest.gmail.sent_messages(SUPPORT) == []


async def test_an_identity_may_sign_the_reply_to_address(ingest, db, desk):
    patched = await desk.admin.patch(
        f"/tickets/send-identities/{desk.identity_id}", {"signed_reply_to": True}
    )
    assert (await patched.json())["signed_reply_to"] is True
    await desk.agent.post(f"/tickets/{desk.ticket_id}/reply", reply_body(desk))
    await ingest.run_worker()
    [sent] = ingest.gmail.sent_messages(SUPPORT)
    mail = email.message_from_bytes(sent.raw, policy=email.policy.default)
    reply_to = mail["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith("support+t") and reply_to.endswith("@acme.example")
    org = db.execute("SELECT organization_id FROM core.tickets").fetchone()["organization_id"]
    number, evidence = verify_markers(TEST_SECRET, org, {}, [("reply-to", reply_to)])
    assert number == ticket(db, desk.ticket_id)["number"]
    assert evidence["markers"][0]["valid"] is True
