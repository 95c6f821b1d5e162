"""Queues and the role table: who may do what."""

from __future__ import annotations

import pytest

ROLE_TABLE = [
    # role,     GET /queues, POST /queues
    ("viewer", 200, 403),
    ("agent", 200, 403),
    ("admin", 200, 201),
]


@pytest.mark.parametrize(("role", "list_status", "create_status"), ROLE_TABLE)
async def test_each_role_lists_and_only_admins_create(login, role, list_status, create_status):
    await login("founder@example.com", "Acme")
    user = await login(f"{role}@example.com", "Acme", role=role)

    listed = await user.get("/queues")
    assert listed.status == list_status

    created = await user.post("/queues", json={"name": f"Queue of {role}"})
    assert created.status == create_status
    if create_status == 403:
        body = await created.json()
        assert body["code"] == "forbidden"
        assert "admin" in body["detail"]
        names = [q["name"] for q in (await (await user.get("/queues")).json())]
        assert f"Queue of {role}" not in names


async def test_created_queue_is_listed_with_its_fields(login):
    admin = await login("admin@example.com", "Acme")
    created = await admin.post("/queues", json={"name": " Billing ", "description": "Invoices"})
    edge = await admin.post("/queues", json={"name": "\tvivid v\n"})
    assert (await edge.json())["name"] == "vivid v"  # whitespace trimmed, letters kept
    assert created.status == 201
    queue = await created.json()
    assert queue["name"] == "Billing"  # trimmed
    assert queue["description"] == "Invoices"
    assert set(queue) == {"id", "name", "description", "created_at"}

    listed = await (await admin.get("/queues")).json()
    assert [q["name"] for q in listed] == ["Billing", "vivid v"]
    assert listed[0] == queue


async def test_queue_names_are_unique_per_organisation_case_insensitively(login):
    acme = await login("admin@acme.example", "Acme")
    globex = await login("admin@globex.example", "Globex")
    assert (await acme.post("/queues", json={"name": "Billing"})).status == 201

    duplicate = await acme.post("/queues", json={"name": "BILLING"})
    assert duplicate.status == 409
    assert (await duplicate.json())["code"] == "queue_exists"

    # Another organisation may use the same name.
    assert (await globex.post("/queues", json={"name": "Billing"})).status == 201


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_name"),
        ({"name": ""}, "invalid_name"),
        ({"name": "   "}, "invalid_name"),
        ({"name": "\n\t\r\n"}, "invalid_name"),
        ({"name": "x" * 101}, "invalid_name"),
        ({"name": 42}, "invalid_name"),
        ({"name": "Ok", "description": "d" * 2001}, "invalid_description"),
    ],
)
async def test_queue_validation(login, db, body, code):
    admin = await login("admin@example.com", "Acme")
    response = await admin.post("/queues", json=body)
    assert response.status == 422
    assert (await response.json())["code"] == code
    assert db.execute("SELECT count(*) AS n FROM core.queues").fetchone()["n"] == 0


async def test_queue_creation_is_audited(login, db):
    admin = await login("admin@example.com", "Acme")
    queue = await (await admin.post("/queues", json={"name": "Billing"})).json()
    event = db.execute(
        "SELECT a.action, a.target_id, a.details, u.email FROM core.audit_events a "
        "JOIN core.users u ON u.id = a.actor_user_id WHERE a.action = 'queue.create'"
    ).fetchone()
    assert event == {
        "action": "queue.create",
        "target_id": queue["id"],
        "details": {"name": "Billing"},
        "email": "admin@example.com",
    }


async def test_each_organisation_sees_only_its_queues_over_http(login):
    acme = await login("admin@acme.example", "Acme")
    globex = await login("admin@globex.example", "Globex")
    await acme.post("/queues", json={"name": "Acme only"})
    await globex.post("/queues", json={"name": "Globex only"})
    acme_names = [q["name"] for q in (await (await acme.get("/queues")).json())]
    globex_names = [q["name"] for q in (await (await globex.get("/queues")).json())]
    assert acme_names == ["Acme only"]
    assert globex_names == ["Globex only"]
