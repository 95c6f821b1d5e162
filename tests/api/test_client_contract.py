"""The OSS Ticketing web client's calls, each as the client makes it, on pipeline data.

The client is apps/web of Chasonnnn/OSS-Ticketing-System (its lib/api, lib/tickets.ts,
lib/ops.ts and *Client.tsx components). Each test sends the client's own request (path,
query, body, headers) and checks every field the client reads: present, of its type, null
only where the client allows null. The data is the demo's: its organisation, queues,
allowlist and rules, and the bundled mailbox (60 real messages) through the real pipeline
(fake Gmail, real workers, real PostgreSQL), built once for the module and cloned per test.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cli import demo
from cli.mailbox_admin import register_gmail_mailbox
from devtools.fake_gmail import FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FakeGmail, fake_gmail_in_thread
from kernel import db as kernel_db
from kernel.blobstore import LocalBlobStore
from tests.fixtures.api import ApiUser, api_settings, dev_login
from tests.fixtures.database import _admin, with_database
from tests.worker.test_worker import run_worker_until_idle
from worker.pipeline import Runtime

UI = "http://localhost:3000"  # the client's origin in its normal layout
NULL = type(None)
STATUSES = {"new", "open", "pending", "resolved", "closed", "spam"}


# ------------------------------------------------------------------ pipeline data


class Pipeline:
    """The module's data: the demo organisation after the pipeline, and its fake Gmail."""

    def __init__(self, template: str, blob_dir: Path, gmail_overrides: dict[str, Any]):
        self.template = template
        self.blob_dir = blob_dir
        self.gmail_overrides = gmail_overrides


@pytest.fixture(scope="module")
def pipeline(pg_server_url, template_database, tmp_path_factory) -> Iterator[Pipeline]:
    """The demo's organisation and mailbox through the real pipeline, in a database kept as
    the template of this module's tests; a near-duplicate makes a collision group and a
    worker ping for no ping fails for the DLQ."""
    name = f"tk_contract_{uuid.uuid4().hex[:10]}"
    _admin(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    url = with_database(pg_server_url, name)
    blob_dir = tmp_path_factory.mktemp("contract-blobs")
    gmail = FakeGmail(seed=13)
    gmail.add_eml_dir(demo.JOURNAL_EMAIL, demo.MAILBOX_DIR)
    # The same message again under another Message-ID: not provably the same mail, so the
    # two share a collision group.
    original = (demo.MAILBOX_DIR / "notmuch-01.eml").read_bytes()
    gmail.add_message(
        demo.JOURNAL_EMAIL,
        original.replace(b"Message-ID: <", b"Message-ID: <resent-", 1).replace(
            b"Message-Id: <", b"Message-Id: <resent-", 1
        ),
    )
    try:
        with fake_gmail_in_thread(gmail) as server:
            settings = demo.with_fake_gmail(
                api_settings(local_blob_dir=blob_dir), server.base_url, server.token_uri
            )
            demo.seed_organization(url)
            mailbox = register_gmail_mailbox(
                settings,
                url,
                organization=demo.ORGANIZATION,
                email=demo.JOURNAL_EMAIL,
                refresh_token=gmail.issue_refresh_token(demo.JOURNAL_EMAIL),
            )
            runtime = Runtime(settings=settings, blobs=LocalBlobStore(blob_dir))
            try:
                asyncio.run(
                    demo.run_pipeline(url, mailbox["mailbox_id"], 61, io.StringIO(), runtime)
                )
            finally:
                runtime.close()
            with kernel_db.connect(url, "test") as conn:
                job = conn.execute(
                    "SELECT logic.enqueue('worker_ping', '{\"ping_id\": 424242}') AS id"
                ).fetchone()["id"]
                conn.commit()
            asyncio.run(run_worker_until_idle(url))
            with kernel_db.connect(url, "test") as conn:
                # A ping names no mailbox: its failure is attributed to the organisation's.
                conn.execute(
                    "UPDATE core.job_failures SET organization_id = m.organization_id, "
                    "mailbox_id = m.id FROM core.mailboxes m WHERE m.id = %s AND job_id = %s",
                    [mailbox["mailbox_id"], job],
                )
                conn.commit()
            overrides = {
                "gmail_api_base_url": server.base_url,
                "google_token_uri": server.token_uri,
                "google_auth_uri": server.base_url + "o/oauth2/v2/auth",
                "google_client_id": FAKE_CLIENT_ID,
                "google_client_secret": FAKE_CLIENT_SECRET,
            }
            yield Pipeline(name, blob_dir, overrides)
    finally:
        _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_server_url, pipeline: Pipeline) -> Iterator[str]:
    """This test's copy of the pipeline database."""
    name = f"tk_t_{uuid.uuid4().hex[:12]}"
    _admin(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{pipeline.template}"')
    try:
        yield with_database(pg_server_url, name)
    finally:
        _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def server(api_factory, pipeline: Pipeline) -> TestServer:
    return await api_factory(local_blob_dir=pipeline.blob_dir, **pipeline.gmail_overrides)


@pytest.fixture
async def admin(server, client_factory) -> ApiUser:
    """The demo's admin, signed in as the client does (GET /auth/csrf, dev login)."""
    return await dev_login(await client_factory(server), demo.ADMIN_EMAIL, demo.ORGANIZATION)


@pytest.fixture
async def browser(server, client_factory) -> AsyncIterator[TestClient]:
    yield await client_factory(server)


# ------------------------------------------------------------------ what the client reads


def reads(value: Any, fields: dict[str, type | tuple[type, ...]], where: str = "") -> None:
    """`value` has each field of `fields` with a value of its type(s); NULL where allowed.

    Integers count as str-able ids only where the client's field says `id` (it turns them
    into strings in URLs); everything else must be exactly of the listed types.
    """
    assert isinstance(value, dict), f"{where}: {value!r} is not an object"
    for name, types in fields.items():
        assert name in value, f"{where}.{name} missing (has {sorted(value)})"
        allowed = types if isinstance(types, tuple) else (types,)
        got = value[name]
        ok = any(
            got is None if t is NULL else isinstance(got, t) and not (t is int and got is True)
            for t in allowed
        )
        assert ok, f"{where}.{name} = {got!r} is not {allowed}"


ID = (str, int)  # the client treats ids as strings; integers work in its paths
TICKET_ITEM = {
    "id": ID,
    "ticket_code": str,
    "status": str,
    "priority": str,
    "subject": (str, NULL),
    "requester_email": (str, NULL),
    "requester_name": (str, NULL),
    "assignee_user_id": (str, NULL),
    "assignee_queue_id": (str, NULL),
    "created_at": str,
    "updated_at": str,
    "last_message_at": (str, NULL),
    "last_activity_at": (str, NULL),
}


async def ok(response, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    if status == 204:
        assert await response.read() == b""
        return None
    assert response.content_type == "application/json"
    return await response.json()


async def csrf_of(user: ApiUser) -> str:
    """What the client does before every mutation: GET /auth/csrf."""
    body = await ok(await user.get("/auth/csrf"))
    reads(body, {"csrf_token": str}, "csrf")
    return body["csrf_token"]


async def mutate(user: ApiUser, method: str, path: str, body: Any = None):
    """A mutation as apiFetchJson sends it: fresh CSRF header, JSON body, credentials."""
    headers = {"x-csrf-token": await csrf_of(user), "accept": "application/json"}
    if body is not None:
        headers["content-type"] = "application/json"
    return await user.client.request(method, path, json=body, headers=headers)


def _routed_ticket(db, with_attachment: bool = False) -> int:
    """A ticket a rule routed (in a queue), optionally one whose messages carry attachments."""
    row = db.execute(
        "SELECT t.id FROM core.tickets t WHERE t.assignee_queue_id IS NOT NULL "
        + (
            "AND EXISTS (SELECT 1 FROM core.ticket_messages tm JOIN core.attachments a "
            "ON a.message_id = tm.message_id WHERE tm.ticket_id = t.id) "
            if with_attachment
            else ""
        )
        + "ORDER BY t.message_count DESC, t.id LIMIT 1"
    ).fetchone()
    assert row is not None, "the pipeline routed no such ticket"
    return row["id"]


# ------------------------------------------------------------------ session


async def test_me(admin):
    me = await ok(await admin.get("/me", headers={"accept": "application/json"}))
    reads(me, {"user": dict, "organization": dict, "role": str}, "me")
    reads(me["user"], {"id": str, "email": str, "display_name": (str, NULL)}, "me.user")
    reads(me["organization"], {"id": str, "name": str}, "me.organization")
    assert me["role"] == "admin" and me["organization"]["name"] == demo.ORGANIZATION


async def test_signed_out_me_is_401_with_a_detail(browser):
    response = await browser.get("/me", headers={"accept": "application/json"})
    body = await response.json()
    assert response.status == 401
    reads(body, {"detail": str}, "error")


async def test_dev_login_and_logout(browser):
    csrf = (await ok(await browser.get("/auth/csrf")))["csrf_token"]
    login = await ok(
        await browser.post(
            "/auth/dev/login",
            json={"email": "agent@demo.example", "organization_name": demo.ORGANIZATION},
            headers={"x-csrf-token": csrf},
        )
    )
    reads(login, {"user": dict, "organization": dict, "role": str, "csrf_token": str}, "login")
    assert {c.key for c in browser.session.cookie_jar} >= {"oss_session", "oss_csrf"}
    csrf = (await ok(await browser.get("/auth/csrf")))["csrf_token"]
    await ok(await browser.post("/auth/logout", headers={"x-csrf-token": csrf}))
    assert (await browser.get("/me")).status == 401


# ------------------------------------------------------------------ tickets


async def test_ticket_list_first_page_as_the_inbox_asks(admin, db):
    page = await ok(await admin.get("/tickets?limit=20"))
    reads(page, {"items": list, "next_cursor": (str, NULL)}, "page")
    assert len(page["items"]) == 20 and page["next_cursor"]
    for item in page["items"]:
        reads(item, TICKET_ITEM, f"item {item.get('id')}")
        assert item["status"] in STATUSES
        assert item["ticket_code"].startswith("T-")
    # The inbox shows "From: <requester_email>": the pipeline knows every routed sender.
    assert all(item["requester_email"] for item in page["items"])
    routed = [i for i in page["items"] if i["assignee_queue_id"]]
    assert routed, "a rule assigned queues to some of the newest tickets"


async def test_ticket_list_search_status_and_paging(admin):
    first = await ok(await admin.get("/tickets?limit=20&status=open"))
    assert first["items"] and all(i["status"] == "open" for i in first["items"])
    rest = (
        await ok(
            await admin.get(
                "/tickets",
                params={"limit": "20", "status": "open", "cursor": first["next_cursor"] or ""},
            )
        )
        if first["next_cursor"]
        else {"items": []}
    )
    seen = [i["id"] for i in first["items"] + rest["items"]]
    assert len(seen) == len(set(seen))
    found = await ok(await admin.get("/tickets?limit=20&q=notmuch"))
    assert found["items"]
    for item in found["items"]:
        reads(item, TICKET_ITEM, "search item")
    code = first["items"][0]["ticket_code"]
    by_code = await ok(await admin.get("/tickets", params={"limit": "20", "q": code}))
    assert [i["ticket_code"] for i in by_code["items"]] == [code]


async def test_ticket_detail(admin, db):
    ticket_id = _routed_ticket(db, with_attachment=True)
    detail = await ok(await admin.get(f"/tickets/{ticket_id}"))
    reads(detail, {"ticket": dict, "messages": list, "events": list, "notes": list}, "detail")
    reads(detail["ticket"], TICKET_ITEM, "ticket")
    assert detail["ticket"]["id"] == ticket_id and detail["messages"]
    attachments = 0
    for message in detail["messages"]:
        reads(
            message,
            {
                "message_id": ID,
                "collision_group_id": (str, int, NULL),
                "stitched_at": str,
                "stitch_reason": str,
                "stitch_confidence": str,
                "direction": str,
                "rfc_message_id": (str, NULL),
                "date_header": (str, NULL),
                "subject": (str, NULL),
                "from_email": (str, NULL),
                "to_emails": list,
                "cc_emails": list,
                "snippet": (str, NULL),
                "body_text": (str, NULL),
                "body_html_sanitized": (str, NULL),
                "attachments": list,
                "occurrences": list,
            },
            "message",
        )
        assert all(isinstance(e, str) for e in message["to_emails"] + message["cc_emails"])
        assert message["body_text"] or message["body_html_sanitized"] or message["snippet"]
        for attachment in message["attachments"]:
            attachments += 1
            reads(
                attachment,
                {
                    "id": ID,
                    "filename": (str, NULL),
                    "content_type": (str, NULL),
                    "size_bytes": int,
                    "is_inline": bool,
                    "content_id": (str, NULL),
                },
                "attachment",
            )
        assert message["occurrences"]
        for occurrence in message["occurrences"]:
            reads(
                occurrence,
                {
                    "id": ID,
                    "mailbox_id": str,
                    "gmail_message_id": str,
                    "state": str,
                    "original_recipient": (str, NULL),
                    "original_recipient_source": str,
                    "original_recipient_confidence": str,
                    "original_recipient_evidence": dict,
                    "routed_at": (str, NULL),
                    "parse_error": (str, NULL),
                    "stitch_error": (str, NULL),
                    "route_error": (str, NULL),
                },
                "occurrence",
            )
            assert occurrence["state"] == "routed" and occurrence["original_recipient"]
    assert attachments
    assert detail["events"]
    for event in detail["events"]:
        reads(
            event,
            {
                "id": ID,
                "actor_user_id": (str, NULL),
                "event_type": str,
                "created_at": str,
                "event_data": dict,
            },
            "event",
        )
    assert "routed" in {e["event_type"] for e in detail["events"]}


async def test_ticket_detail_of_an_unknown_ticket_is_404(admin):
    response = await admin.get("/tickets/999999999")
    assert response.status == 404
    reads(await response.json(), {"detail": str}, "error")


async def test_attachment_download_link(admin, db):
    ticket_id = _routed_ticket(db, with_attachment=True)
    detail = await ok(await admin.get(f"/tickets/{ticket_id}"))
    attachment = next(a for m in detail["messages"] for a in m["attachments"])
    response = await admin.get(f"/tickets/{ticket_id}/attachments/{attachment['id']}/download")
    assert response.status == 200
    assert len(await response.read()) == attachment["size_bytes"]


async def test_ticket_update_as_the_controls_send_it(admin, db):
    ticket_id = _routed_ticket(db)
    queues = await ok(await admin.get("/queues"))
    other = next(
        q["id"]
        for q in queues
        if q["id"]
        != db.execute(
            "SELECT assignee_queue_id::text AS q FROM core.tickets WHERE id = %s", [ticket_id]
        ).fetchone()["q"]
    )
    for payload, expected_queue in (
        ({"status": "pending", "priority": "high"}, ...),  # keep the assignee
        ({"status": "pending", "priority": "high", "assignee_queue_id": other}, other),
        ({"status": "resolved", "priority": "low", "assignee_queue_id": None}, None),
    ):
        updated = await ok(await mutate(admin, "PATCH", f"/tickets/{ticket_id}", payload))
        reads(updated, TICKET_ITEM, "updated")
        assert (updated["status"], updated["priority"]) == (payload["status"], payload["priority"])
        if expected_queue is not ...:
            assert updated["assignee_queue_id"] == expected_queue
    after = await ok(await admin.get(f"/tickets/{ticket_id}"))
    assert after["ticket"]["status"] == "resolved" and after["ticket"]["assignee_queue_id"] is None


async def test_add_note(admin, db):
    ticket_id = _routed_ticket(db)
    note = await ok(
        await mutate(
            admin, "POST", f"/tickets/{ticket_id}/notes", {"body_markdown": "Called the customer."}
        ),
        201,
    )
    shape = {
        "id": ID,
        "author_user_id": (str, NULL),
        "body_markdown": str,
        "body_html_sanitized": (str, NULL),
        "created_at": str,
        "updated_at": str,
    }
    reads(note, shape, "note")
    [listed] = (await ok(await admin.get(f"/tickets/{ticket_id}")))["notes"]
    reads(listed, shape, "detail note")
    assert listed["body_markdown"] == "Called the customer."
    assert listed["author_user_id"] == admin.login["user"]["id"]
    # The old field is no field of this contract.
    refused = await mutate(admin, "POST", f"/tickets/{ticket_id}/notes", {"body": "x"})
    assert refused.status == 422 and (await refused.json())["code"] == "unknown_field"


async def test_queues(admin):
    queues = await ok(await admin.get("/queues"))
    assert isinstance(queues, list) and {q["name"] for q in queues} >= {"Mailing list"}
    for queue in queues:
        reads(queue, {"id": str, "name": str, "created_at": str}, "queue")


# ------------------------------------------------------------------ saved views


async def test_saved_views(admin, db):
    assert await ok(await admin.get("/tickets/saved-views")) == []
    queue_id = (await ok(await admin.get("/queues")))[0]["id"]
    filters = {"q": "notmuch", "status": "open", "assignee_queue_id": queue_id, "limit": 20}
    view = await ok(
        await mutate(
            admin, "POST", "/tickets/saved-views", {"name": "Open list mail", "filters": filters}
        ),
        201,
    )
    reads(view, {"id": str, "name": str, "filters": dict}, "view")
    assert view["filters"] == filters
    # Its filters give the listing they name.
    page = await ok(await admin.get("/tickets", params={k: str(v) for k, v in filters.items()}))
    assert all(i["status"] == "open" and i["assignee_queue_id"] == queue_id for i in page["items"])
    listed = await ok(await admin.get("/tickets/saved-views"))
    assert listed == [view]
    # Each user sees only their own.
    other = await dev_login(admin.client, "agent@demo.example", demo.ORGANIZATION)
    assert await ok(await other.get("/tickets/saved-views")) == []
    other = await dev_login(admin.client, demo.ADMIN_EMAIL, demo.ORGANIZATION)
    for bad, code in (
        ({"name": "x", "filters": {"status": "archived"}}, "invalid_status"),
        ({"name": "x", "filters": {"limit": 500}}, "invalid_limit"),
        ({"name": "x", "filters": {"assignee_user_id": "me"}}, "invalid_assignee_user_id"),
        ({"name": "x", "filters": {"sort": "asc"}}, "unknown_field"),
        ({"name": "open list MAIL", "filters": {}}, "saved_view_exists"),
    ):
        response = await mutate(other, "POST", "/tickets/saved-views", bad)
        assert response.status in (409, 422) and (await response.json())["code"] == code
    await ok(await mutate(other, "DELETE", f"/tickets/saved-views/{view['id']}"), 204)
    assert await ok(await other.get("/tickets/saved-views")) == []


# ------------------------------------------------------------------ mailboxes


async def test_mailboxes_and_connectivity(admin):
    mailboxes = await ok(await admin.get("/mailboxes"))
    assert isinstance(mailboxes, list)
    for mailbox in mailboxes:
        reads(
            mailbox,
            {
                "id": str,
                "purpose": str,
                "provider": str,
                "email_address": str,
                "gmail_profile_email": (str, NULL),
                "is_enabled": bool,
                "created_at": str,
                "updated_at": str,
            },
            "mailbox",
        )
    [journal] = [m for m in mailboxes if m["purpose"] == "journal" and m["provider"] == "gmail"]
    assert journal["email_address"] == demo.JOURNAL_EMAIL
    connectivity = await ok(await admin.get(f"/mailboxes/{journal['id']}/connectivity"))
    reads(
        connectivity,
        {"status": str, "profile_email": (str, NULL), "scopes": list, "error": (str, NULL)},
        "connectivity",
    )
    assert connectivity["status"] == "connected" and connectivity["error"] is None
    assert connectivity["profile_email"] == demo.JOURNAL_EMAIL and connectivity["scopes"]


async def test_oauth_start_and_the_browser_callback(admin):
    start = await ok(await mutate(admin, "POST", "/mailboxes/gmail/journal/oauth/start"))
    reads(start, {"authorization_url": str}, "start")
    state = parse_qs(urlsplit(start["authorization_url"]).query)["state"][0]
    # Google sends the browser back without a code when consent is refused.
    response = await admin.get(
        "/mailboxes/gmail/oauth/callback",
        params={"state": state, "error": "access_denied"},
        headers={"accept": "text/html"},
        allow_redirects=False,
    )
    assert response.status in (302, 303)
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (f"{UI}/mailboxes/connected")
    assert parse_qs(location.query)["error"] == ["oauth_access_denied"]


async def test_sync_controls_of_the_ops_page(admin, db):
    mailbox_id = db.execute("SELECT id::text FROM core.mailboxes").fetchone()["id"]
    base = f"/mailboxes/{mailbox_id}/sync"
    await ok(await mutate(admin, "POST", f"{base}/pause?minutes=30"))
    paused = (await ok(await admin.get("/ops/mailboxes/sync")))["items"][0]
    assert paused["paused_until"] is not None
    await ok(await mutate(admin, "POST", f"{base}/resume"))
    assert (await ok(await admin.get("/ops/mailboxes/sync")))["items"][0]["paused_until"] is None
    await ok(await mutate(admin, "POST", f"{base}/history"), 202)
    queued = (await ok(await admin.get("/ops/mailboxes/sync")))["items"][0]
    assert queued["queued_jobs_by_type"].get("mailbox_history_sync") == 1
    response = await mutate(admin, "POST", f"{base}/backfill")
    assert response.status in (202, 409)  # 409: a history sync waits; the client shows detail
    reads(await response.json(), {} if response.status == 202 else {"detail": str}, "backfill")


# ------------------------------------------------------------------ routing admin


async def test_allowlist_read_create_toggle_delete(admin):
    entries = await ok(await admin.get("/tickets/routing/allowlist"))
    assert isinstance(entries, list) and entries
    shape = {"id": str, "pattern": str, "is_enabled": bool, "created_at": str}
    for entry in entries:
        reads(entry, shape, "entry")
    created = await ok(
        await mutate(
            admin,
            "POST",
            "/tickets/routing/allowlist",
            {"pattern": "help@somenet.foo", "is_enabled": True},
        ),
        201,
    )
    reads(created, shape, "created")
    toggled = await ok(
        await mutate(
            admin, "PATCH", f"/tickets/routing/allowlist/{created['id']}", {"is_enabled": False}
        )
    )
    assert toggled["is_enabled"] is False
    await ok(await mutate(admin, "DELETE", f"/tickets/routing/allowlist/{created['id']}"), 204)
    assert created["id"] not in {
        e["id"] for e in await ok(await admin.get("/tickets/routing/allowlist"))
    }


RULE_FIELDS = {
    "id": str,
    "name": str,
    "is_enabled": bool,
    "priority": int,
    "match_recipient_pattern": (str, NULL),
    "match_sender_domain_pattern": (str, NULL),
    "match_sender_email_pattern": (str, NULL),
    "match_direction": (str, NULL),
    "action_assign_queue_id": (str, NULL),
    "action_assign_user_id": (str, NULL),
    "action_set_status": (str, NULL),
    "action_drop": bool,
    "action_auto_close": bool,
    "created_at": str,
    "updated_at": str,
}


async def test_rules_read_create_toggle_delete(admin):
    rules = await ok(await admin.get("/tickets/routing/rules"))
    assert isinstance(rules, list) and [r["name"] for r in rules] == [
        "Mailing list",
        "Customer somenet.foo",
    ]
    for rule in rules:
        reads(rule, RULE_FIELDS, "rule")
    queue_id = rules[0]["action_assign_queue_id"]
    body = {
        "name": "Bounces",
        "is_enabled": True,
        "priority": 5,
        "match_recipient_pattern": None,
        "match_sender_domain_pattern": "gmail.com",
        "match_sender_email_pattern": "mailer-daemon@*",
        "match_direction": "inbound",
        "action_assign_queue_id": queue_id,
        "action_assign_user_id": None,
        "action_set_status": None,
        "action_drop": False,
        "action_auto_close": True,
    }
    created = await ok(await mutate(admin, "POST", "/tickets/routing/rules", body), 201)
    reads(created, RULE_FIELDS, "created")
    assert {k: created[k] for k in body} == body
    toggled = await ok(
        await mutate(
            admin, "PATCH", f"/tickets/routing/rules/{created['id']}", {"is_enabled": False}
        )
    )
    assert toggled["is_enabled"] is False and toggled["action_auto_close"] is True
    await ok(await mutate(admin, "DELETE", f"/tickets/routing/rules/{created['id']}"), 204)
    assert len(await ok(await admin.get("/tickets/routing/rules"))) == 2


async def test_simulator_as_the_ops_page_asks(admin):
    shape = {
        "allowlisted": bool,
        "would_mark_spam": bool,
        "matched_rule": (dict, NULL),
        "applied_actions": dict,
        "explanation": str,
    }
    actions = {
        "assign_queue_id": (str, NULL),
        "assign_user_id": (str, NULL),
        "set_status": (str, NULL),
        "drop": bool,
        "auto_close": bool,
    }
    routed = await ok(
        await mutate(
            admin,
            "POST",
            "/tickets/routing/simulate",
            {
                "recipient": "redmine@somenet.foo",
                "sender_email": "jsmith@somenet.foo",
                "direction": "inbound",
            },
        )
    )
    reads(routed, shape, "simulation")
    reads(routed["applied_actions"], actions, "applied_actions")
    reads(routed["matched_rule"], {"name": str, "priority": int}, "matched_rule")
    assert routed["allowlisted"] and not routed["would_mark_spam"]
    assert routed["matched_rule"]["name"] == "Customer somenet.foo"
    assert routed["applied_actions"]["set_status"] == "open"
    assert "Customer somenet.foo" in routed["explanation"]
    spam = await ok(
        await mutate(
            admin,
            "POST",
            "/tickets/routing/simulate",
            {
                "recipient": "someone@else.example",
                "sender_email": "a@b.example",
                "direction": "inbound",
            },
        )
    )
    reads(spam, shape, "spam simulation")
    assert spam["would_mark_spam"] and spam["matched_rule"] is None and spam["explanation"]


# ------------------------------------------------------------------ ops page


async def test_ops_metrics_overview(admin):
    overview = await ok(await admin.get("/ops/metrics/overview"))
    reads(
        overview,
        {
            "queued_jobs": int,
            "running_jobs": int,
            "failed_jobs_24h": int,
            "mailbox_count": int,
            "paused_mailbox_count": int,
            "avg_sync_lag_seconds": (int, float, NULL),
        },
        "overview",
    )
    assert overview["mailbox_count"] == 1 and overview["failed_jobs_24h"] == 1


async def test_ops_mailbox_sync(admin):
    page = await ok(await admin.get("/ops/mailboxes/sync"))
    [row] = page["items"]
    reads(
        row,
        {
            "mailbox_id": str,
            "email_address": str,
            "provider": str,
            "purpose": str,
            "is_enabled": bool,
            "paused_until": (str, NULL),
            "pause_reason": (str, NULL),
            "gmail_history_id": (int, NULL),
            "last_full_sync_at": (str, NULL),
            "last_incremental_sync_at": (str, NULL),
            "last_sync_error": (str, NULL),
            "sync_lag_seconds": (int, NULL),
            "queued_jobs_by_type": dict,
            "running_jobs_by_type": dict,
            "failed_jobs_last_24h": int,
        },
        "sync row",
    )
    assert all(isinstance(n, int) for n in row["queued_jobs_by_type"].values())
    assert row["email_address"] == demo.JOURNAL_EMAIL and row["gmail_history_id"]
    assert row["last_full_sync_at"] is not None  # the backfill completed


async def test_ops_collisions_and_backfill(admin, db):
    page = await ok(await admin.get("/ops/messages/collisions?limit=50"))
    assert page["items"], "the resent message shares a collision group with its original"
    for group in page["items"]:
        reads(
            group,
            {
                "collision_group_id": (str, int),
                "message_count": int,
                "first_seen_at": str,
                "last_seen_at": str,
                "sample_message_ids": list,
            },
            "group",
        )
        assert len(group["sample_message_ids"]) == min(group["message_count"], 5)
    shape = {"fingerprints_scanned": int, "groups_updated": int, "messages_updated": int}
    # Groups the stitching did not record (as before collision tracking) are rebuilt.
    db.execute("UPDATE core.messages SET collision_group_id = NULL")
    db.execute("DELETE FROM core.collision_groups")
    rebuilt = await ok(await mutate(admin, "POST", "/ops/messages/collisions/backfill"))
    reads(rebuilt, shape, "backfill")
    assert rebuilt["fingerprints_scanned"] > 0
    assert rebuilt["groups_updated"] == len(page["items"])
    assert rebuilt["messages_updated"] == sum(g["message_count"] for g in page["items"])
    again = await ok(await mutate(admin, "POST", "/ops/messages/collisions/backfill"))
    assert again == {**rebuilt, "groups_updated": 0, "messages_updated": 0}
    after = await ok(await admin.get("/ops/messages/collisions?limit=50"))
    assert sorted(g["message_count"] for g in after["items"]) == sorted(
        g["message_count"] for g in page["items"]
    )


async def test_ops_dlq_and_replay(admin):
    page = await ok(await admin.get("/ops/jobs/dlq?limit=50"))
    [job] = page["items"]
    reads(
        job,
        {
            "id": ID,
            "type": str,
            "status": str,
            "attempts": int,
            "max_attempts": int,
            "last_error": (str, NULL),
            "run_at": str,
            "updated_at": str,
        },
        "dlq job",
    )
    assert job["type"] == "worker_ping" and job["status"] == "failed"
    assert job["attempts"] <= job["max_attempts"] and "424242" in job["last_error"]
    replayed = await mutate(admin, "POST", f"/ops/jobs/{job['id']}/replay")
    assert replayed.status == 202
    [after] = (await ok(await admin.get("/ops/jobs/dlq?limit=50")))["items"]
    assert after["status"] == "replayed"


# ------------------------------------------------------------------ CORS


async def test_cors_preflight_and_answers_for_the_ui_origin(admin, browser):
    for method, path in (
        ("POST", "/tickets/1/notes"),
        ("PATCH", "/tickets/routing/rules/" + str(uuid.uuid4())),
        ("DELETE", "/tickets/saved-views/" + str(uuid.uuid4())),
        ("GET", "/tickets"),
    ):
        preflight = await browser.options(
            path,
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type,x-csrf-token",
            },
        )
        assert preflight.status == 204, path
        assert preflight.headers["Access-Control-Allow-Origin"] == UI
        assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
        assert method in preflight.headers["Access-Control-Allow-Methods"].split(", ")
        allowed = preflight.headers["Access-Control-Allow-Headers"].split(", ")
        assert {"content-type", "x-csrf-token"} <= set(allowed)
        assert "Origin" in preflight.headers.getall("Vary")
    answer = await admin.get("/tickets?limit=1", headers={"Origin": UI})
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == UI
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in answer.headers.getall("Vary")
    # Errors too, so that the client can read `detail`.
    refused = await browser.get("/me", headers={"Origin": UI})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == UI


async def test_cors_says_nothing_to_other_origins(admin, browser):
    evil = "http://evil.example"
    preflight = await browser.options(
        "/tickets/routing/simulate",
        headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
    )
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
    answer = await admin.get("/tickets?limit=1", headers={"Origin": evil})
    assert answer.status == 200
    assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
    # An unknown path has no operation to allow.
    unknown = await browser.options(
        "/nowhere", headers={"Origin": UI, "Access-Control-Request-Method": "GET"}
    )
    assert unknown.status == 404
