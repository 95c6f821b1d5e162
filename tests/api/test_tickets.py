"""Tickets through the HTTP API: list/search and paging, detail, PATCH, notes, downloads.

Tickets, messages and attachments are seeded with SQL as the owner (stitching is not under
test here); the API reads them as the logged-in organisation.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from kernel.blobstore import LocalBlobStore, S3BlobStore, content_disposition
from tests.fixtures.api import ApiUser, dev_login
from tests.fixtures.s3 import S3Server
from tests.fixtures.seed import BASE_TIME, Seed

ITEM_KEYS = {
    "id",
    "ticket_code",
    "subject",
    "status",
    "priority",
    "requester_email",
    "requester_name",
    "assignee_user_id",
    "assignee_queue_id",
    "tags",
    "original_recipient",
    "created_at",
    "updated_at",
    "last_message_at",
    "last_activity_at",
    "message_count",
    "last_message_direction",
}


@dataclass
class TicketApi:
    """An API server with a local blob store, and a way to log users into it."""

    server: TestServer
    blobs: LocalBlobStore
    db: psycopg.Connection
    clients: list[TestClient] = field(default_factory=list)

    async def login(self, email: str, organization: str, role: str | None = None) -> ApiUser:
        client = TestClient(self.server)
        await client.start_server()
        self.clients.append(client)
        return await dev_login(client, email, organization, role)

    def seed(self, user: ApiUser) -> Seed:
        return Seed(self.db, user.login["organization"]["id"], self.blobs)


@pytest.fixture
async def tickets_api(api_factory, db, tmp_path: Path) -> AsyncIterator[TicketApi]:
    blob_dir = tmp_path / "blobs"
    server = await api_factory(local_blob_dir=blob_dir)
    api = TicketApi(server, LocalBlobStore(blob_dir), db)
    yield api
    for client in api.clients:
        await client.session.close()


async def _json(response: aiohttp.ClientResponse, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _error_code(response: aiohttp.ClientResponse, status: int) -> str:
    return (await _json(response, status))["code"]


# ------------------------------------------------------------------------------ listing


async def test_list_items_have_the_ticket_shape_newest_activity_first(tickets_api, db):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    queue_id = seed.queue("Billing")
    older = seed.ticket("Older", activity=BASE_TIME, tags=("vip",))
    newer = seed.ticket(
        "Newer", activity=BASE_TIME + timedelta(hours=1), assignee_queue_id=queue_id
    )
    seed.message(newer)
    seed.message(newer, sent_at=BASE_TIME + timedelta(minutes=5))

    page = await _json(await agent.get("/tickets"))

    assert page["next_cursor"] is None
    assert [item["id"] for item in page["items"]] == [newer, older]
    first = page["items"][0]
    assert set(first) == ITEM_KEYS
    number = db.execute("SELECT number FROM core.tickets WHERE id = %s", [newer]).fetchone()
    assert first["ticket_code"] == f"T-{number['number']}"
    assert first["subject"] == "Newer"
    assert first["status"] == "new" and first["priority"] == "normal"
    assert first["requester_email"] == "customer@example.net"
    assert first["requester_name"] == "Casey Customer"
    assert first["assignee_user_id"] is None and first["assignee_queue_id"] == queue_id
    assert first["original_recipient"] == "support@acme.example"
    assert first["message_count"] == 2
    assert datetime.fromisoformat(first["last_activity_at"]) == BASE_TIME + timedelta(hours=1)
    assert page["items"][1]["tags"] == ["vip"]
    assert page["items"][1]["message_count"] == 0


async def test_list_hides_merged_and_hidden_tickets_and_other_organisations(tickets_api):
    acme = await tickets_api.login("agent@acme.example", "Acme")
    globex = await tickets_api.login("agent@globex.example", "Globex")
    seed = tickets_api.seed(acme)
    survivor = seed.ticket("Survivor")
    seed.ticket("Merged away", merged_into=survivor)
    seed.ticket("Dropped by a rule", status="spam", hidden=True)
    tickets_api.seed(globex).ticket("Globex only")

    acme_ids = [i["id"] for i in (await _json(await acme.get("/tickets")))["items"]]
    assert acme_ids == [survivor]
    spam = await _json(await acme.get("/tickets", params={"status": "spam"}))
    assert spam["items"] == []
    globex_subjects = [i["subject"] for i in (await _json(await globex.get("/tickets")))["items"]]
    assert globex_subjects == ["Globex only"]


async def test_each_filter_narrows_the_list(tickets_api, db):
    admin = await tickets_api.login("admin@acme.example", "Acme")
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    agent_id = agent.login["user"]["id"]
    seed = tickets_api.seed(admin)
    queue_id = seed.queue("Billing")
    other_queue = seed.queue("Sales")
    t = {
        "open_mine": seed.ticket(
            status="open", assignee_user_id=agent_id, activity=BASE_TIME + timedelta(minutes=5)
        ),
        "pending_mine": seed.ticket(
            status="pending", assignee_user_id=agent_id, activity=BASE_TIME + timedelta(minutes=4)
        ),
        "open_billing": seed.ticket(
            status="open", assignee_queue_id=queue_id, activity=BASE_TIME + timedelta(minutes=3)
        ),
        "new_sales": seed.ticket(assignee_queue_id=other_queue, activity=BASE_TIME),
    }

    async def ids(**params: str) -> list[int]:
        return [i["id"] for i in (await _json(await agent.get("/tickets", params=params)))["items"]]

    assert await ids(status="open") == [t["open_mine"], t["open_billing"]]
    assert await ids(assignee_user_id=agent_id) == [t["open_mine"], t["pending_mine"]]
    assert await ids(assignee_queue_id=queue_id) == [t["open_billing"]]
    assert await ids(status="pending", assignee_user_id=agent_id) == [t["pending_mine"]]
    assert await ids(status="new", assignee_queue_id=queue_id) == []
    assert await ids(assignee_user_id=str(uuid.uuid4())) == []


async def test_q_searches_subject_requester_code_and_message_bodies(tickets_api, db):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    body_only = seed.ticket("Printer trouble", activity=BASE_TIME + timedelta(minutes=2))
    seed.message(body_only, text_body="The flux capacitor makes a noise since Tuesday.")
    by_requester = seed.ticket("Invoice", requester_email="zelda@hyrule.example")
    other = seed.ticket("Unrelated", activity=BASE_TIME + timedelta(minutes=1))
    seed.message(other, text_body="Nothing to see here.")
    code = "T-" + str(
        db.execute("SELECT number FROM core.tickets WHERE id = %s", [other]).fetchone()["number"]
    )
    # The word is in no subject, requester or code: only the message body carries it.
    assert (
        db.execute(
            "SELECT count(*) AS n FROM core.tickets WHERE subject ILIKE '%%capacitor%%'"
        ).fetchone()["n"]
        == 0
    )

    async def ids(q: str, **params: str) -> list[int]:
        response = await agent.get("/tickets", params={"q": q, **params})
        return [i["id"] for i in (await _json(response))["items"]]

    assert await ids("capacitor") == [body_only]
    assert await ids("Flux Capacitor") == [body_only]
    assert await ids('"noise since"') == [body_only]
    assert await ids("capacitor -noise") == []
    assert await ids("zelda@hyrule.example") == [by_requester]
    assert await ids(code) == [other]
    assert await ids("capacitor", status="open") == []
    assert await ids("nowhere-to-be-found") == []
    assert await ids("!!!") == []  # no lexemes at all


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"limit": "0"}, 422, "invalid_limit"),
        ({"limit": "101"}, 422, "invalid_limit"),
        ({"limit": "-5"}, 422, "invalid_limit"),
        ({"limit": "ten"}, 422, "invalid_limit"),
        ({"limit": "99999999999999"}, 422, "invalid_limit"),
        ({"status": "burning"}, 422, "invalid_status"),
        ({"assignee_user_id": "me"}, 422, "invalid_assignee_user_id"),
        ({"assignee_queue_id": "123"}, 422, "invalid_assignee_queue_id"),
        ({"q": "x" * 501}, 422, "invalid_q"),
        ({"cursor": "not a cursor!"}, 400, "invalid_cursor"),
        ({"cursor": "e30"}, 400, "invalid_cursor"),  # base64url of {}
        ({"cursor": "x" * 1000}, 400, "invalid_cursor"),
    ],
)
async def test_bad_list_parameters_are_refused(tickets_api, params, status, code):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    assert await _error_code(await agent.get("/tickets", params=params), status) == code


async def test_limit_defaults_to_50_and_accepts_1_to_100(tickets_api):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    for n in range(101):
        seed.ticket(f"Ticket {n}", activity=BASE_TIME + timedelta(seconds=n))

    default = await _json(await agent.get("/tickets"))
    assert len(default["items"]) == 50 and default["next_cursor"]
    one = await _json(await agent.get("/tickets", params={"limit": "1"}))
    assert [i["subject"] for i in one["items"]] == ["Ticket 100"]
    hundred = await _json(await agent.get("/tickets", params={"limit": "100"}))
    assert len(hundred["items"]) == 100
    rest = await _json(
        await agent.get("/tickets", params={"limit": "100", "cursor": hundred["next_cursor"]})
    )
    assert [i["subject"] for i in rest["items"]] == ["Ticket 0"]
    assert rest["next_cursor"] is None


async def _walk(user: ApiUser, params: dict[str, str], between_pages: Callable[[], None]):
    seen: list[int] = []
    activities: list[tuple[str, int]] = []
    cursor: str | None = None
    for _ in range(100):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        page = await _json(await user.get("/tickets", params=query))
        seen += [item["id"] for item in page["items"]]
        activities += [(item["last_activity_at"], item["id"]) for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, activities
        between_pages()
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("params", [{"limit": "7"}, {"limit": "4", "status": "open"}])
async def test_paging_walks_every_ticket_once_while_new_tickets_arrive(tickets_api, params):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    expected = set()
    for n in range(40):
        # Three tickets share each activity time: the id breaks the ties across pages.
        ticket_id = seed.ticket(
            f"Ticket {n}",
            activity=BASE_TIME + timedelta(minutes=n // 3),
            status="open" if n % 2 else "new",
        )
        if "status" not in params or n % 2:
            expected.add(ticket_id)
    arrived: list[int] = []

    def new_tickets_arrive() -> None:
        for status in ("open", "new"):
            arrived.append(seed.ticket("Just in", activity=datetime.now(UTC), status=status))

    seen, activities = await _walk(agent, params, new_tickets_arrive)

    assert len(arrived) >= 4  # tickets did arrive while the walk went on
    assert len(seen) == len(set(seen)), "a ticket was listed twice"
    assert set(seen) == expected
    keys = [(datetime.fromisoformat(at), ticket_id) for at, ticket_id in activities]
    assert keys == sorted(keys, reverse=True)


async def test_cursor_only_continues_the_listing_with_the_same_filters(tickets_api):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    for n in range(3):
        seed.ticket(status="open", activity=BASE_TIME + timedelta(minutes=n))
    first = await _json(await agent.get("/tickets", params={"status": "open", "limit": "1"}))
    cursor = first["next_cursor"]
    assert cursor

    async def code(params: dict[str, str]) -> str:
        return await _error_code(await agent.get("/tickets", params=params), 400)

    assert await code({"cursor": cursor}) == "cursor_mismatch"
    assert await code({"cursor": cursor, "status": "new"}) == "cursor_mismatch"
    assert await code({"cursor": cursor, "status": "open", "q": "printer"}) == "cursor_mismatch"
    # The page size may change; the filters may not.
    same = await agent.get("/tickets", params={"status": "open", "limit": "5", "cursor": cursor})
    assert len((await _json(same))["items"]) == 2

    # A cursor whose position was edited but whose filter hash was not still parses.
    decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert set(decoded) == {"t", "id", "f"}
    forged = dict(decoded, t="not a time")
    forged_cursor = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    assert await code({"cursor": forged_cursor, "status": "open"}) == "invalid_cursor"


# ------------------------------------------------------------------------------- detail


async def test_detail_has_messages_attachments_occurrences_events_and_notes(tickets_api, db):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    ticket_id = seed.ticket("Printer on fire")
    reply = seed.message(
        ticket_id,
        text_body="Any news?",
        sent_at=BASE_TIME + timedelta(hours=2),
        stitch_reason="in_reply_to",
        evidence={"in_reply_to": "<m1@example.net>"},
    )
    first = seed.message(ticket_id, text_body="It is on fire.", sent_at=BASE_TIME)
    pdf = seed.attachment(first, b"%PDF-1.4 report", filename="report.pdf")
    seed.occurrence(
        first,
        ticket_id,
        recipient_evidence={"x-gm-original-to": ["support@acme.example"]},
    )
    seed.occurrence(
        reply,
        ticket_id,
        original_recipient="help@acme.example",
        recipient_source="delivered_to",
        recipient_confidence="medium",
    )
    db.execute(
        "INSERT INTO core.ticket_events (organization_id, ticket_id, type, data) "
        "VALUES (%s, %s, 'routed', %s)",
        [seed.org_id, ticket_id, json.dumps({"decision": {"outcome": "no_rule"}})],
    )
    assert (await agent.patch(f"/tickets/{ticket_id}", json={"status": "open"})).status == 200
    assert (
        await agent.post(f"/tickets/{ticket_id}/notes", json={"body_markdown": "Call them"})
    ).status == 201

    detail = await _json(await agent.get(f"/tickets/{ticket_id}"))

    assert set(detail) == {"ticket", "messages", "events", "notes"}
    ticket = detail["ticket"]
    assert set(ticket) >= ITEM_KEYS
    assert ticket["status"] == "open" and ticket["message_count"] == 2
    assert ticket["merged_into_ticket_id"] is None and ticket["hidden"] is False
    assert ticket["human_touched_at"] is not None
    assert [m["message_id"] for m in detail["messages"]] == [first, reply]  # sent order
    message = detail["messages"][0]
    assert message["from_email"] == "customer@example.net"
    assert message["from_name"] == "Casey Customer"
    assert message["to_emails"] == ["support@acme.example"]
    assert message["cc_emails"] == ["boss@example.net"]
    assert message["to"] == [{"name": "Support", "address": "support@acme.example"}]
    assert message["cc"] == [{"name": "", "address": "boss@example.net"}]
    assert message["body_text"] == "It is on fire."
    assert message["direction"] == "inbound"
    assert message["rfc_message_id"].startswith("<m")
    assert message["stitch_reason"] == "new_ticket"
    second = detail["messages"][1]
    assert (second["stitch_reason"], second["stitch_confidence"]) == ("in_reply_to", "medium")
    assert second["stitch_evidence"] == {"in_reply_to": "<m1@example.net>"}
    assert datetime.fromisoformat(second["stitched_at"])
    assert message["attachments"] == [
        {
            "id": pdf,
            "filename": "report.pdf",
            "content_type": "application/pdf",
            "size_bytes": len(b"%PDF-1.4 report"),
            "is_inline": False,
            "content_id": None,
            "download_url": f"/tickets/{ticket_id}/attachments/{pdf}/download",
        }
    ]
    [occurrence] = message["occurrences"]
    assert occurrence["mailbox_email"] == "journal@acme.example"
    assert occurrence["gmail_message_id"] == f"gm-{first}"
    assert occurrence["original_recipient"] == "support@acme.example"
    assert occurrence["original_recipient_source"] == "workspace_header"
    assert occurrence["original_recipient_confidence"] == "high"
    assert occurrence["original_recipient_evidence"] == {
        "x-gm-original-to": ["support@acme.example"]
    }
    assert occurrence["state"] == "routed"
    assert second["occurrences"][0]["original_recipient_source"] == "delivered_to"

    assert [e["event_type"] for e in detail["events"]] == ["routed", "updated", "note_added"]
    assert detail["events"][0]["actor"] is None
    assert detail["events"][1]["actor_user_id"] == agent.login["user"]["id"]
    assert detail["events"][1]["actor"] == {
        "user_id": agent.login["user"]["id"],
        "email": "agent@acme.example",
        "display_name": agent.login["user"]["display_name"],
    }
    [note] = detail["notes"]
    assert note["body_markdown"] == "Call them"
    assert note["author_user_id"] == agent.login["user"]["id"]
    assert note["author"]["email"] == "agent@acme.example"


async def test_cid_images_point_at_the_inline_attachment_download(tickets_api):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    ticket_id = seed.ticket()
    html = (
        '<p>Logo: <img src="cid:logo@acme" alt="logo"> and <img src="CID:chart.png">'
        ' and <img src="cid:missing@x"></p>'
    )
    message = seed.message(ticket_id, html_body=html)
    logo = seed.attachment(
        message, b"PNG1", filename="logo.png", content_type="image/png",
        content_id="logo@acme", disposition="inline", position=0,
    )  # fmt: skip
    chart = seed.attachment(
        message, b"PNG2", filename="chart.png", content_type="image/png",
        content_id="chart.png", disposition="inline", position=1,
    )  # fmt: skip
    # Same content id, but on another message (and not inline): must not be used.
    other = seed.message(ticket_id, html_body='<img src="cid:other@acme">')
    seed.attachment(other, b"PDF", content_id="other@acme", disposition="attachment")

    detail = await _json(await agent.get(f"/tickets/{ticket_id}"))
    bodies = {m["message_id"]: m["body_html_sanitized"] for m in detail["messages"]}

    assert bodies[message] == (
        f'<p>Logo: <img src="/tickets/{ticket_id}/attachments/{logo}/download" alt="logo"> and '
        f'<img src="/tickets/{ticket_id}/attachments/{chart}/download"> and '
        '<img src="cid:missing@x"></p>'
    )
    assert bodies[other] == '<img src="cid:other@acme">'
    image = await agent.get(f"/tickets/{ticket_id}/attachments/{logo}/download")
    assert await image.read() == b"PNG1"


@pytest.mark.parametrize("path", ["/tickets/abc", "/tickets/99999999999999999999", "/tickets/0"])
async def test_unknown_ticket_ids_are_not_found(tickets_api, path):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    assert await _error_code(await agent.get(path), 404) == "ticket_not_found"


async def test_another_organisations_ticket_is_not_found(tickets_api):
    acme = await tickets_api.login("agent@acme.example", "Acme")
    globex = await tickets_api.login("agent@globex.example", "Globex", role="agent")
    ticket_id = tickets_api.seed(acme).ticket()

    assert await _error_code(await globex.get(f"/tickets/{ticket_id}"), 404) == "ticket_not_found"
    patched = await globex.patch(f"/tickets/{ticket_id}", json={"status": "closed"})
    assert await _error_code(patched, 404) == "ticket_not_found"
    noted = await globex.post(f"/tickets/{ticket_id}/notes", json={"body_markdown": "hi"})
    assert await _error_code(noted, 404) == "ticket_not_found"
    assert (await _json(await acme.get(f"/tickets/{ticket_id}")))["ticket"]["status"] == "new"


# -------------------------------------------------------------------------------- PATCH


def _events(db, ticket_id: int, type_: str) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT actor_user_id::text AS actor, data FROM core.ticket_events "
        "WHERE ticket_id = %s AND type = %s ORDER BY id",
        [ticket_id, type_],
    ).fetchall()


@pytest.mark.parametrize(
    "field_name", ["status", "priority", "assignee_user_id", "assignee_queue_id"]
)
async def test_patch_changes_one_field_with_an_event(tickets_api, db, field_name):
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    seed = tickets_api.seed(agent)
    queue_id = seed.queue("Billing")
    ticket_id = seed.ticket(activity=BASE_TIME)
    value = {
        "status": "pending",
        "priority": "urgent",
        "assignee_user_id": agent.login["user"]["id"],
        "assignee_queue_id": queue_id,
    }[field_name]
    before = {"status": "new", "priority": "normal"}.get(field_name)

    item = await _json(await agent.patch(f"/tickets/{ticket_id}", json={field_name: value}))

    assert set(item) == ITEM_KEYS
    assert item[field_name] == value
    [event] = _events(db, ticket_id, "updated")
    assert event["actor"] == agent.login["user"]["id"]
    assert event["data"] == {"before": {field_name: before}, "after": {field_name: value}}
    row = db.execute(
        "SELECT human_touched_at, updated_at, last_activity_at, now() - last_activity_at AS age "
        "FROM core.tickets WHERE id = %s",
        [ticket_id],
    ).fetchone()
    assert row["human_touched_at"] is not None
    assert row["last_activity_at"] > BASE_TIME and row["age"] < timedelta(minutes=1)
    # The change moves the ticket to the top of the list.
    seed.ticket("Older news", activity=BASE_TIME + timedelta(days=1))
    listed = (await _json(await agent.get("/tickets")))["items"]
    assert listed[0]["id"] == ticket_id


async def test_patch_assignees_replace_and_clear_each_other(tickets_api, db):
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    user_id = agent.login["user"]["id"]
    seed = tickets_api.seed(agent)
    queue_id = seed.queue("Billing")
    ticket_id = seed.ticket(assignee_queue_id=queue_id)
    path = f"/tickets/{ticket_id}"

    to_user = await _json(await agent.patch(path, json={"assignee_user_id": user_id}))
    assert (to_user["assignee_user_id"], to_user["assignee_queue_id"]) == (user_id, None)
    back_to_queue = await _json(await agent.patch(path, json={"assignee_queue_id": queue_id}))
    assert (back_to_queue["assignee_user_id"], back_to_queue["assignee_queue_id"]) == (
        None,
        queue_id,
    )
    cleared = await _json(await agent.patch(path, json={"assignee_queue_id": None}))
    assert (cleared["assignee_user_id"], cleared["assignee_queue_id"]) == (None, None)
    events = [e["data"] for e in _events(db, ticket_id, "updated")]
    assert events == [
        {
            "before": {"assignee_user_id": None, "assignee_queue_id": queue_id},
            "after": {"assignee_user_id": user_id, "assignee_queue_id": None},
        },
        {
            "before": {"assignee_user_id": user_id, "assignee_queue_id": None},
            "after": {"assignee_user_id": None, "assignee_queue_id": queue_id},
        },
        {"before": {"assignee_queue_id": queue_id}, "after": {"assignee_queue_id": None}},
    ]
    # Setting what is already there changes nothing and records nothing.
    await _json(await agent.patch(path, json={"assignee_user_id": None, "status": "new"}))
    assert len(_events(db, ticket_id, "updated")) == 3


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, "no_changes"),
        ({"subject": "New subject"}, "unknown_field"),
        ({"status": "burning"}, "invalid_status"),
        ({"status": None}, "invalid_status"),
        ({"status": 3}, "invalid_status"),
        ({"priority": "asap"}, "invalid_priority"),
        ({"assignee_user_id": "me"}, "invalid_assignee_user_id"),
        ({"assignee_queue_id": 7}, "invalid_assignee_queue_id"),
        ({"assignee_user_id": str(uuid.uuid4())}, "assignee_user_not_found"),
        ({"assignee_user_id": "OUTSIDER"}, "assignee_user_not_found"),
        ({"assignee_queue_id": str(uuid.uuid4())}, "assignee_queue_not_found"),
        ({"assignee_queue_id": "OTHER_QUEUE"}, "assignee_queue_not_found"),
        ({"assignee_user_id": "ME", "assignee_queue_id": "QUEUE"}, "conflicting_assignees"),
    ],
)
async def test_patch_refuses_bad_changes(tickets_api, db, changes, code):
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    outsider = await tickets_api.login("outsider@globex.example", "Globex")
    seed = tickets_api.seed(agent)
    placeholders = {
        "ME": agent.login["user"]["id"],
        "QUEUE": seed.queue("Billing"),
        "OUTSIDER": outsider.login["user"]["id"],
        "OTHER_QUEUE": tickets_api.seed(outsider).queue("Globex queue"),
    }
    changes = {k: placeholders.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    ticket_id = seed.ticket()

    response = await agent.patch(f"/tickets/{ticket_id}", json=changes)

    assert await _error_code(response, 422) == code
    assert _events(db, ticket_id, "updated") == []
    row = db.execute(
        "SELECT status, human_touched_at FROM core.tickets WHERE id = %s", [ticket_id]
    ).fetchone()
    assert row == {"status": "new", "human_touched_at": None}


async def test_patch_body_must_be_a_json_object(tickets_api):
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    ticket_id = tickets_api.seed(agent).ticket()
    response = await agent.patch(f"/tickets/{ticket_id}", json=["status", "open"])
    assert await _error_code(response, 400) == "invalid_json"


async def test_viewers_read_but_cannot_change_tickets(tickets_api, db):
    await tickets_api.login("admin@acme.example", "Acme")
    viewer = await tickets_api.login("viewer@acme.example", "Acme", role="viewer")
    ticket_id = tickets_api.seed(viewer).ticket()

    assert (await viewer.get("/tickets")).status == 200
    assert (await viewer.get(f"/tickets/{ticket_id}")).status == 200
    patched = await viewer.patch(f"/tickets/{ticket_id}", json={"status": "closed"})
    assert await _error_code(patched, 403) == "forbidden"
    noted = await viewer.post(f"/tickets/{ticket_id}/notes", json={"body_markdown": "hi"})
    assert await _error_code(noted, 403) == "forbidden"
    assert db.execute("SELECT count(*) AS n FROM core.ticket_events").fetchone()["n"] == 0


async def test_merged_ticket_cannot_be_changed(tickets_api):
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    seed = tickets_api.seed(agent)
    survivor = seed.ticket()
    merged = seed.ticket(merged_into=survivor)
    response = await agent.patch(f"/tickets/{merged}", json={"status": "open"})
    assert await _error_code(response, 409) == "ticket_merged"
    detail = await _json(await agent.get(f"/tickets/{merged}"))
    assert detail["ticket"]["merged_into_ticket_id"] == survivor


# -------------------------------------------------------------------------------- notes


async def test_note_is_created_with_an_event_and_moves_activity(tickets_api, db):
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    ticket_id = tickets_api.seed(agent).ticket(activity=BASE_TIME)

    response = await agent.post(
        f"/tickets/{ticket_id}/notes", json={"body_markdown": "  Called them.  "}
    )

    note = await _json(response, 201)
    assert set(note) == {
        "id",
        "ticket_id",
        "author_user_id",
        "author",
        "body_markdown",
        "body_html_sanitized",
        "created_at",
        "updated_at",
    }
    assert note["ticket_id"] == ticket_id and note["body_markdown"] == "Called them."
    assert note["body_html_sanitized"] is None and note["updated_at"] == note["created_at"]
    assert note["author"]["user_id"] == agent.login["user"]["id"]
    [event] = _events(db, ticket_id, "note_added")
    assert event == {"actor": agent.login["user"]["id"], "data": {"note_id": note["id"]}}
    activity = db.execute(
        "SELECT last_activity_at FROM core.tickets WHERE id = %s", [ticket_id]
    ).fetchone()["last_activity_at"]
    assert activity > BASE_TIME


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"body_markdown": ""}, 422, "invalid_body_markdown"),
        ({"body_markdown": "   \n "}, 422, "invalid_body_markdown"),
        ({"body_markdown": "x" * 20001}, 422, "invalid_body_markdown"),
        ({}, 422, "invalid_body_markdown"),
        ({"body_markdown": 42}, 422, "invalid_body_markdown"),
        ({"body": "the old field"}, 422, "unknown_field"),
    ],
)
async def test_bad_notes_are_refused(tickets_api, db, body, status, code):
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    ticket_id = tickets_api.seed(agent).ticket()
    response = await agent.post(f"/tickets/{ticket_id}/notes", json=body)
    assert await _error_code(response, status) == code
    assert db.execute("SELECT count(*) AS n FROM core.ticket_notes").fetchone()["n"] == 0


async def test_longest_note_is_accepted(tickets_api):
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    ticket_id = tickets_api.seed(agent).ticket()
    response = await agent.post(f"/tickets/{ticket_id}/notes", json={"body_markdown": "y" * 20000})
    assert len((await _json(response, 201))["body_markdown"]) == 20000


# ---------------------------------------------------------------------------- downloads

NASTY_FILENAME = 'in"voice\r\nSet-Cookie: x=1;\u202egnp.exe/..\\évil.pdf'


async def test_local_download_streams_the_bytes_with_safe_headers(tickets_api):
    agent = await tickets_api.login("viewer@acme.example", "Acme", role="viewer")
    seed = tickets_api.seed(agent)
    ticket_id = seed.ticket()
    message = seed.message(ticket_id)
    data = bytes(range(256)) * 4096  # 1 MiB, several chunks
    attachment = seed.attachment(
        message, data, filename=NASTY_FILENAME, content_type="text/html\r\nX-Evil: 1"
    )

    response = await agent.get(f"/tickets/{ticket_id}/attachments/{attachment}/download")

    assert response.status == 200
    assert await response.read() == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    disposition = response.headers["Content-Disposition"]
    assert disposition == content_disposition(NASTY_FILENAME)
    assert disposition.startswith('attachment; filename="')
    assert not any(c in disposition for c in "\r\n\u202e\\/")
    assert "X-Evil" not in response.headers and "Set-Cookie" not in response.headers


async def test_download_keeps_a_plain_content_type(tickets_api):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    ticket_id = seed.ticket()
    attachment = seed.attachment(seed.message(ticket_id), b"%PDF-1.7", filename="a.pdf")
    response = await agent.get(f"/tickets/{ticket_id}/attachments/{attachment}/download")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert await response.read() == b"%PDF-1.7"


async def test_download_is_scoped_to_the_ticket_and_organisation(tickets_api):
    acme = await tickets_api.login("agent@acme.example", "Acme")
    globex = await tickets_api.login("agent@globex.example", "Globex")
    seed = tickets_api.seed(acme)
    ticket_id = seed.ticket()
    other_ticket = seed.ticket("Other")
    attachment = seed.attachment(seed.message(ticket_id), b"secret")
    path = f"/tickets/{ticket_id}/attachments/{attachment}/download"

    assert await _error_code(await globex.get(path), 404) == "attachment_not_found"
    wrong_ticket = f"/tickets/{other_ticket}/attachments/{attachment}/download"
    assert await _error_code(await acme.get(wrong_ticket), 404) == "attachment_not_found"
    bad_id = f"/tickets/{ticket_id}/attachments/x1/download"
    assert await _error_code(await acme.get(bad_id), 404) == "attachment_not_found"
    assert (await acme.get(path)).status == 200


async def test_download_of_a_missing_blob_is_not_found(tickets_api, db):
    agent = await tickets_api.login("agent@acme.example", "Acme")
    seed = tickets_api.seed(agent)
    ticket_id = seed.ticket()
    attachment = seed.attachment(seed.message(ticket_id), b"gone soon")
    tickets_api.blobs.path_for(
        db.execute("SELECT blob_key FROM core.attachments WHERE id = %s", [attachment]).fetchone()[
            "blob_key"
        ]
    ).unlink()
    response = await agent.get(f"/tickets/{ticket_id}/attachments/{attachment}/download")
    assert await _error_code(response, 404) == "attachment_content_missing"


async def test_s3_download_redirects_to_a_presigned_url(
    api_factory, db, s3_server: S3Server, s3_store: S3BlobStore
):
    server = await api_factory(
        blob_store="s3",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,
        s3_bucket=s3_store.bucket,
        attachment_download_url_ttl_seconds=120,
    )
    client = TestClient(server)
    await client.start_server()
    try:
        agent = await dev_login(client, "agent@acme.example", "Acme")
        seed = Seed(db, agent.login["organization"]["id"], s3_store)
        ticket_id = seed.ticket()
        data = b"quarterly numbers " * 1000
        attachment = seed.attachment(
            seed.message(ticket_id), data, filename="Q1 résumé.pdf", content_type="application/pdf"
        )

        response = await agent.get(
            f"/tickets/{ticket_id}/attachments/{attachment}/download", allow_redirects=False
        )

        assert response.status == 307
        location = response.headers["Location"]
        assert location.startswith(s3_server.endpoint_url + "/" + s3_store.bucket + "/sha256/")
        assert "X-Amz-Expires=120" in location
        # The browser follows the redirect without our cookies: the signature is the grant.
        async with aiohttp.ClientSession() as browser, browser.get(location) as fetched:
            assert fetched.status == 200
            assert await fetched.read() == data
            assert fetched.headers["Content-Disposition"] == content_disposition("Q1 résumé.pdf")
            assert fetched.headers["Content-Type"] == "application/pdf"
        globex = await dev_login(client, "agent@globex.example", "Globex")
        denied = await globex.get(
            f"/tickets/{ticket_id}/attachments/{attachment}/download", allow_redirects=False
        )
        assert await _error_code(denied, 404) == "attachment_not_found"
    finally:
        await client.session.close()


async def test_blob_store_is_created_from_settings(api_factory, tmp_path: Path):
    from app.http import BLOBS

    server = await api_factory(local_blob_dir=tmp_path / "store")
    store = server.app[BLOBS]
    assert isinstance(store, LocalBlobStore) and store.root == tmp_path / "store"


async def test_a_path_without_parameters_refuses_its_undeclared_methods(tickets_api):
    """PATCH /tickets/saved-views is no PATCH of a ticket named "saved-views": 405."""
    agent = await tickets_api.login("agent@acme.example", "Acme", role="agent")
    response = await agent.patch("/tickets/saved-views", json={"name": "x"})
    assert await _error_code(response, 405) == "method_not_allowed"
    assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}
