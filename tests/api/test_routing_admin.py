"""Routing over HTTP: allowlist and rule administration, the simulator, and the worker step.

The simulator and the worker must agree: both call logic.route_decision, and a test below
routes real tickets with worker.route_occurrences and compares them with the simulation.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.fixtures import seed
from tests.fixtures.api import ApiUser

ALLOWLIST = "/tickets/routing/allowlist"
RULES = "/tickets/routing/rules"
SIMULATE = "/tickets/routing/simulate"

Login = Callable[..., Awaitable[ApiUser]]


async def _ok(response, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json() if status != 204 else None


async def _error(response, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["code"] == code, body
    assert body["detail"]
    return body


async def _queue(user: ApiUser, name: str) -> str:
    return (await _ok(await user.post("/queues", json={"name": name}), 201))["id"]


# ------------------------------------------------------------------------ roles


ADMIN_ROUTES = [
    ("get", ALLOWLIST, None),
    ("post", ALLOWLIST, {"pattern": "support@*"}),
    ("patch", f"{ALLOWLIST}/{uuid.uuid4()}", {"is_enabled": False}),
    ("delete", f"{ALLOWLIST}/{uuid.uuid4()}", None),
    ("get", RULES, None),
    ("post", RULES, {"name": "r", "action_set_status": "open"}),
    ("patch", f"{RULES}/{uuid.uuid4()}", {"is_enabled": False}),
    ("delete", f"{RULES}/{uuid.uuid4()}", None),
]


@pytest.mark.parametrize("role", ["viewer", "agent"])
@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_routing_admin_is_for_admins_only(login, db, role, method, path, body):
    await login("founder@acme.example", "Acme")
    user = await login(f"{role}@acme.example", "Acme", role=role)
    kwargs = {"json": body} if body is not None else {}
    await _error(await getattr(user, method)(path, **kwargs), 403, "forbidden")
    configured = db.execute(
        "SELECT (SELECT count(*) FROM core.routing_allowlist) "
        "+ (SELECT count(*) FROM core.routing_rules) AS n"
    ).fetchone()["n"]
    assert configured == 0


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("agent", 200), ("admin", 200)])
async def test_simulator_is_for_agents_and_admins(login, role, status):
    await login("founder@acme.example", "Acme")
    user = await login(f"{role}@acme.example", "Acme", role=role)
    response = await user.post(
        SIMULATE, json={"recipient": "a@acme.example", "sender_email": "c@x.org"}
    )
    assert response.status == status, await response.text()


# --------------------------------------------------------------------- allowlist


async def test_allowlist_crud(login, db):
    admin = await login("admin@acme.example", "Acme")
    assert await _ok(await admin.get(ALLOWLIST)) == []

    created = await _ok(
        await admin.post(ALLOWLIST, json={"pattern": " Support@ACME.example "}), 201
    )
    assert created["pattern"] == "support@acme.example"
    assert created["is_enabled"] is True
    assert set(created) == {"id", "pattern", "is_enabled", "created_at", "updated_at"}
    second = await _ok(
        await admin.post(ALLOWLIST, json={"pattern": "*@help.acme.example", "is_enabled": False}),
        201,
    )
    listed = await _ok(await admin.get(ALLOWLIST))
    assert [e["pattern"] for e in listed] == [
        "*@help.acme.example",
        "support@acme.example",
    ]

    updated = await _ok(await admin.patch(f"{ALLOWLIST}/{second['id']}", json={"is_enabled": True}))
    assert updated["is_enabled"] is True
    assert updated["pattern"] == "*@help.acme.example"  # untouched field kept
    renamed = await _ok(
        await admin.patch(f"{ALLOWLIST}/{second['id']}", json={"pattern": "help@*"})
    )
    assert renamed["pattern"] == "help@*" and renamed["is_enabled"] is True

    await _ok(await admin.delete(f"{ALLOWLIST}/{created['id']}"), 204)
    listed = await _ok(await admin.get(ALLOWLIST))
    assert [e["id"] for e in listed] == [second["id"]]
    await _error(
        await admin.delete(f"{ALLOWLIST}/{created['id']}"), 404, "allowlist_entry_not_found"
    )

    actions = [
        r["action"]
        for r in db.execute(
            "SELECT action FROM core.audit_events WHERE target_type = 'routing_allowlist' ORDER BY id"
        )
    ]
    assert actions == [
        "routing_allowlist.create",
        "routing_allowlist.create",
        "routing_allowlist.update",
        "routing_allowlist.update",
        "routing_allowlist.delete",
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_pattern"),
        ({"pattern": None}, "invalid_pattern"),
        ({"pattern": ""}, "invalid_pattern"),
        ({"pattern": "   "}, "invalid_pattern"),
        ({"pattern": 7}, "invalid_pattern"),
        ({"pattern": "a" * 310 + "@acme.example"}, "invalid_pattern"),
        ({"pattern": "sup port@acme.example"}, "invalid_pattern"),
        ({"pattern": "support@acme.example\n"}, "invalid_pattern"),
        ({"pattern": "support\t@acme.example"}, "invalid_pattern"),
        ({"pattern": "[st]upport@acme.example"}, "invalid_pattern"),
        ({"pattern": "{a,b}@acme.example"}, "invalid_pattern"),
        ({"pattern": "a\\*@acme.example"}, "invalid_pattern"),
        ({"pattern": "a@acme.example", "is_enabled": "yes"}, "invalid_is_enabled"),
        ({"pattern": "a@acme.example", "enabled": True}, "unknown_field"),
        ({"pattern": "a@acme.example", "enabld": True}, "unknown_field"),
    ],
)
async def test_allowlist_validation(login, db, body, code):
    admin = await login("admin@acme.example", "Acme")
    await _error(await admin.post(ALLOWLIST, json=body), 422, code)
    assert db.execute("SELECT count(*) AS n FROM core.routing_allowlist").fetchone()["n"] == 0


async def test_allowlist_patch_is_validated_too(login):
    admin = await login("admin@acme.example", "Acme")
    entry = await _ok(await admin.post(ALLOWLIST, json={"pattern": "a@acme.example"}), 201)
    await _error(
        await admin.patch(f"{ALLOWLIST}/{entry['id']}", json={"pattern": "a b"}),
        422,
        "invalid_pattern",
    )
    await _error(
        await admin.patch(f"{ALLOWLIST}/{entry['id']}", json={"colour": "red"}),
        422,
        "unknown_field",
    )
    listed = await _ok(await admin.get(ALLOWLIST))
    assert listed == [entry]


async def test_allowlist_duplicates_conflict_case_insensitively(login):
    acme = await login("admin@acme.example", "Acme")
    globex = await login("admin@globex.example", "Globex")
    await _ok(await acme.post(ALLOWLIST, json={"pattern": "support@*"}), 201)
    other = await _ok(await acme.post(ALLOWLIST, json={"pattern": "sales@*"}), 201)
    await _error(
        await acme.post(ALLOWLIST, json={"pattern": "SUPPORT@*"}), 409, "allowlist_pattern_exists"
    )
    await _error(
        await acme.patch(f"{ALLOWLIST}/{other['id']}", json={"pattern": "Support@*"}),
        409,
        "allowlist_pattern_exists",
    )
    # Another organisation may use the same pattern.
    await _ok(await globex.post(ALLOWLIST, json={"pattern": "support@*"}), 201)


async def test_allowlist_of_another_organisation_is_not_found(login):
    acme = await login("admin@acme.example", "Acme")
    globex = await login("admin@globex.example", "Globex")
    entry = await _ok(await acme.post(ALLOWLIST, json={"pattern": "support@*"}), 201)
    path = f"{ALLOWLIST}/{entry['id']}"
    await _error(
        await globex.patch(path, json={"is_enabled": False}), 404, "allowlist_entry_not_found"
    )
    await _error(await globex.delete(path), 404, "allowlist_entry_not_found")
    assert (await _ok(await globex.get(ALLOWLIST))) == []
    await _error(
        await acme.patch(f"{ALLOWLIST}/not-a-uuid", json={}), 404, "allowlist_entry_not_found"
    )
    assert (await _ok(await acme.get(ALLOWLIST))) == [entry]


# ------------------------------------------------------------------------- rules


async def test_rule_crud_and_versions(login, db):
    admin = await login("admin@acme.example", "Acme")
    billing = await _queue(admin, "Billing")
    created = await _ok(
        await admin.post(
            RULES,
            json={
                "name": "Billing",
                "priority": 10,
                "match_recipient_pattern": "Billing@*",
                "match_direction": "inbound",
                "action_assign_queue_id": billing,
                "action_set_status": "open",
                "action_add_tags": ["Billing", "money", "billing"],
            },
        ),
        201,
    )
    assert created["version"] == 1
    assert created["is_enabled"] is True
    assert {k: v for k, v in created.items() if k.startswith(("match_", "action_"))} == {
        "match_recipient_pattern": "billing@*",
        "match_direction": "inbound",
        "match_sender_domain_pattern": None,
        "match_sender_email_pattern": None,
        "action_assign_queue_id": billing,
        "action_assign_user_id": None,
        "action_set_status": "open",
        "action_auto_close": False,
        "action_drop": False,
        "action_add_tags": ["billing", "money"],
    }
    catch_all = await _ok(
        await admin.post(RULES, json={"name": "Everything else", "action_add_tags": ["triage"]}),
        201,
    )
    assert catch_all["priority"] == 100
    assert {k: v for k, v in catch_all.items() if k.startswith("match_")} == {
        "match_recipient_pattern": None,
        "match_direction": None,
        "match_sender_domain_pattern": None,
        "match_sender_email_pattern": None,
    }

    listed = await _ok(await admin.get(RULES))
    assert [r["name"] for r in listed] == ["Billing", "Everything else"]

    # Merge patch: only what is sent changes; null clears a condition; version goes up.
    patched = await _ok(
        await admin.patch(
            f"{RULES}/{created['id']}",
            json={
                "priority": 200,
                "match_direction": None,
                "action_set_status": None,
                "action_auto_close": True,
            },
        )
    )
    assert patched["version"] == 2
    assert patched["priority"] == 200
    assert patched["match_recipient_pattern"] == "billing@*"
    assert patched["match_direction"] is None
    assert patched["action_auto_close"] is True
    assert patched["action_set_status"] is None
    assert patched["action_assign_queue_id"] == billing
    toggled = await _ok(await admin.patch(f"{RULES}/{created['id']}", json={"is_enabled": False}))
    assert toggled["version"] == 3 and toggled["is_enabled"] is False

    listed = await _ok(await admin.get(RULES))
    assert [r["name"] for r in listed] == ["Everything else", "Billing"]

    await _ok(await admin.delete(f"{RULES}/{catch_all['id']}"), 204)
    await _error(await admin.delete(f"{RULES}/{catch_all['id']}"), 404, "rule_not_found")
    assert [r["id"] for r in (await _ok(await admin.get(RULES)))] == [created["id"]]

    audit = db.execute(
        "SELECT action, details FROM core.audit_events WHERE target_type = 'routing_rule' "
        "ORDER BY id"
    ).fetchall()
    assert [a["action"] for a in audit] == [
        "routing_rule.create",
        "routing_rule.create",
        "routing_rule.update",
        "routing_rule.update",
        "routing_rule.delete",
    ]
    assert audit[3]["details"]["version"] == 3


async def test_rule_may_assign_a_member(login):
    admin = await login("admin@acme.example", "Acme")
    agent = await login("agent@acme.example", "Acme", role="agent")
    rule = await _ok(
        await admin.post(
            RULES, json={"name": "To Ann", "action_assign_user_id": agent.login["user"]["id"]}
        ),
        201,
    )
    assert rule["action_assign_user_id"] == agent.login["user"]["id"]


_SET_OPEN = {"action_set_status": "open"}


def _rule_body(actions: dict[str, Any] | None = _SET_OPEN, **overrides: Any) -> dict[str, Any]:
    """A rule body: `actions` (action_* fields) replace the default action."""
    return {"name": "Rule", **(actions or {}), **overrides}


RULE_VALIDATION = [
    (_rule_body(name=None), "invalid_name"),
    (_rule_body(name="  "), "invalid_name"),
    (_rule_body(name="x" * 201), "invalid_name"),
    (_rule_body(name=5), "invalid_name"),
    (_rule_body(priority=-1), "invalid_priority"),
    (_rule_body(priority=10001), "invalid_priority"),
    (_rule_body(priority=1.5), "invalid_priority"),
    (_rule_body(priority="1"), "invalid_priority"),
    (_rule_body(is_enabled="true"), "invalid_is_enabled"),
    (_rule_body(enabled=True), "unknown_field"),
    (_rule_body(colour="red"), "unknown_field"),
    (_rule_body(**{"match_recipient": "a@*"}), "unknown_field"),
    (_rule_body(actions={"action_set_status": "open", "action_assign": "x"}), "unknown_field"),
    (_rule_body(conditions={"recipient_pattern": "a@*"}), "unknown_field"),  # nested: refused
    (_rule_body(actions={"actions": {"set_status": "open"}}), "unknown_field"),
    (_rule_body(**{"match_recipient_pattern": ""}), "invalid_match_recipient_pattern"),
    (_rule_body(**{"match_recipient_pattern": "a b@*"}), "invalid_match_recipient_pattern"),
    (_rule_body(**{"match_recipient_pattern": "x" * 321}), "invalid_match_recipient_pattern"),
    (_rule_body(**{"match_recipient_pattern": "[a]@*"}), "invalid_match_recipient_pattern"),
    (
        _rule_body(**{"match_sender_domain_pattern": "a@b.com"}),
        "invalid_match_sender_domain_pattern",
    ),
    (
        _rule_body(**{"match_sender_domain_pattern": "{a}.com"}),
        "invalid_match_sender_domain_pattern",
    ),
    (_rule_body(**{"match_sender_email_pattern": " "}), "invalid_match_sender_email_pattern"),
    (_rule_body(**{"match_sender_email_pattern": 3}), "invalid_match_sender_email_pattern"),
    (_rule_body(**{"match_direction": "sideways"}), "invalid_match_direction"),
    (_rule_body(actions={}), "rule_has_no_actions"),
    (
        _rule_body(
            actions={"action_auto_close": False, "action_drop": False, "action_add_tags": []}
        ),
        "rule_has_no_actions",
    ),
    (_rule_body(actions=None), "rule_has_no_actions"),
    (_rule_body(actions={"action_set_status": "later"}), "invalid_action_set_status"),
    (_rule_body(actions={"action_auto_close": "yes"}), "invalid_action_auto_close"),
    (_rule_body(actions={"action_drop": 1}), "invalid_action_drop"),
    (
        _rule_body(actions={"action_set_status": "open", "action_auto_close": True}),
        "conflicting_status_actions",
    ),
    (
        _rule_body(actions={"action_drop": True, "action_auto_close": True}),
        "conflicting_status_actions",
    ),
    (_rule_body(actions={"action_add_tags": "vip"}), "invalid_action_add_tags"),
    (_rule_body(actions={"action_add_tags": [""]}), "invalid_action_add_tags"),
    (_rule_body(actions={"action_add_tags": ["two words"]}), "invalid_action_add_tags"),
    (_rule_body(actions={"action_add_tags": [1]}), "invalid_action_add_tags"),
    (_rule_body(actions={"action_add_tags": ["t" * 51]}), "invalid_action_add_tags"),
    (
        _rule_body(actions={"action_add_tags": [f"t{i}" for i in range(21)]}),
        "invalid_action_add_tags",
    ),
    (_rule_body(actions={"action_assign_queue_id": "nope"}), "invalid_action_assign_queue_id"),
    (_rule_body(actions={"action_assign_user_id": 12}), "invalid_action_assign_user_id"),
    (_rule_body(actions={"action_assign_queue_id": str(uuid.uuid4())}), "unknown_queue"),
    (_rule_body(actions={"action_assign_user_id": str(uuid.uuid4())}), "unknown_user"),
]


@pytest.mark.parametrize(("body", "code"), RULE_VALIDATION)
async def test_rule_validation(login, db, body, code):
    admin = await login("admin@acme.example", "Acme")
    await _error(await admin.post(RULES, json=body), 422, code)
    assert db.execute("SELECT count(*) AS n FROM core.routing_rules").fetchone()["n"] == 0


async def test_rule_references_must_belong_to_the_organisation(login):
    acme = await login("admin@acme.example", "Acme")
    globex = await login("admin@globex.example", "Globex")
    globex_queue = await _queue(globex, "Globex billing")
    acme_queue = await _queue(acme, "Acme billing")
    both = {"action_assign_queue_id": acme_queue, "action_assign_user_id": acme.login["user"]["id"]}
    await _error(
        await acme.post(RULES, json=_rule_body(actions=both)), 422, "conflicting_assignees"
    )
    await _error(
        await acme.post(RULES, json=_rule_body(actions={"action_assign_queue_id": globex_queue})),
        422,
        "unknown_queue",
    )
    await _error(
        await acme.post(
            RULES, json=_rule_body(actions={"action_assign_user_id": globex.login["user"]["id"]})
        ),
        422,
        "unknown_user",
    )


async def test_rule_patch_is_validated_as_a_whole(login, db):
    admin = await login("admin@acme.example", "Acme")
    queue = await _queue(admin, "Billing")
    rule = await _ok(
        await admin.post(RULES, json=_rule_body(actions={"action_assign_queue_id": queue})), 201
    )
    path = f"{RULES}/{rule['id']}"
    # Adding a user to a rule that assigns a queue would assign both.
    await _error(
        await admin.patch(path, json={"action_assign_user_id": admin.login["user"]["id"]}),
        422,
        "conflicting_assignees",
    )
    # Removing the only action leaves none.
    await _error(
        await admin.patch(path, json={"action_assign_queue_id": None}),
        422,
        "rule_has_no_actions",
    )
    await _error(await admin.patch(path, json={"priority": 20000}), 422, "invalid_priority")
    await _error(await admin.patch(path, json={"nmae": "typo"}), 422, "unknown_field")
    stored = db.execute(
        "SELECT version, assign_queue_id::text AS q FROM core.routing_rules"
    ).fetchone()
    assert stored == {"version": 1, "q": queue}


async def test_rule_names_conflict_case_insensitively(login):
    acme = await login("admin@acme.example", "Acme")
    globex = await login("admin@globex.example", "Globex")
    await _ok(await acme.post(RULES, json=_rule_body(name="VIP")), 201)
    other = await _ok(await acme.post(RULES, json=_rule_body(name="Other")), 201)
    await _error(await acme.post(RULES, json=_rule_body(name="vip")), 409, "rule_name_exists")
    await _error(
        await acme.patch(f"{RULES}/{other['id']}", json={"name": "Vip"}), 409, "rule_name_exists"
    )
    await _ok(await globex.post(RULES, json=_rule_body(name="VIP")), 201)


async def test_rule_of_another_organisation_is_not_found(login):
    acme = await login("admin@acme.example", "Acme")
    globex = await login("admin@globex.example", "Globex")
    rule = await _ok(await acme.post(RULES, json=_rule_body()), 201)
    path = f"{RULES}/{rule['id']}"
    await _error(await globex.patch(path, json={"is_enabled": False}), 404, "rule_not_found")
    await _error(await globex.delete(path), 404, "rule_not_found")
    assert (await _ok(await globex.get(RULES))) == []
    await _error(await acme.delete(f"{RULES}/12"), 404, "rule_not_found")
    assert (await _ok(await acme.get(RULES))) == [rule]


# --------------------------------------------------------------------- simulator


async def test_simulator_explains_allowlist_rules_and_actions(login):
    admin = await login("admin@acme.example", "Acme")
    agent = await login("agent@acme.example", "Acme", role="agent")
    billing = await _queue(admin, "Billing")
    await _ok(await admin.post(ALLOWLIST, json={"pattern": "*@acme.example"}), 201)
    await _ok(
        await admin.post(
            RULES,
            json={
                "name": "VIP",
                "priority": 1,
                "match_sender_domain_pattern": "bigco.com",
                "action_set_status": "open",
            },
        ),
        201,
    )
    billing_rule = await _ok(
        await admin.post(
            RULES,
            json={
                "name": "Billing",
                "priority": 5,
                "match_recipient_pattern": "billing@*",
                "action_assign_queue_id": billing,
                "action_set_status": "pending",
                "action_add_tags": ["money"],
            },
        ),
        201,
    )

    result = await _ok(
        await agent.post(
            SIMULATE, json={"recipient": "Billing@acme.example", "sender_email": "jo@client.org"}
        )
    )
    assert result["outcome"] == "rule"
    assert result["allowlisted"] is True
    assert result["rule"] == {
        "id": billing_rule["id"],
        "name": "Billing",
        "version": 1,
        "priority": 5,
    }
    assert result["matched_conditions"] == {
        "recipient_pattern": {"pattern": "billing@*", "value": "billing@acme.example"}
    }
    assert result["actions"]["assign_queue_id"] == billing
    # The web client's reading of the same decision.
    assert result["would_mark_spam"] is False
    assert result["matched_rule"] == {"id": billing_rule["id"], "name": "Billing", "priority": 5}
    assert result["applied_actions"] == {
        "assign_queue_id": billing,
        "assign_user_id": None,
        "set_status": "pending",
        "drop": False,
        "auto_close": False,
        "add_tags": ["money"],
    }
    assert result["new_ticket"]["after"] == {
        "status": "pending",
        "assignee_queue_id": billing,
        "assignee_user_id": None,
        "tags": ["money"],
        "hidden": False,
    }
    explanation = result["explanation_steps"]
    assert result["explanation"] == " ".join(explanation)
    assert (
        explanation[0]
        == 'The recipient "billing@acme.example" is allowlisted by pattern "*@acme.example".'
    )
    assert explanation[1] == (
        'Rule "VIP" (priority 1) does not apply: sender domain "client.org" '
        'does not match "bigco.com".'
    )
    assert explanation[2] == (
        'Rule "Billing" (priority 5, version 1) fires: recipient '
        '"billing@acme.example" matches "billing@*".'
    )
    assert explanation[3] == 'It assigns queue "Billing", sets status pending, adds tags money.'


async def test_simulator_explains_spam_and_no_rule(login):
    admin = await login("admin@acme.example", "Acme")
    spam = await _ok(
        await admin.post(SIMULATE, json={"recipient": "x@acme.example", "sender_email": "a@b.org"})
    )
    assert spam["outcome"] == "auto_spam" and spam["status"] == "spam"
    assert spam["new_ticket"]["after"]["status"] == "spam"
    assert any("matches no enabled allowlist pattern" in s for s in spam["explanation_steps"])
    assert "matches no enabled allowlist pattern" in spam["explanation"]
    assert spam["would_mark_spam"] is True and spam["matched_rule"] is None

    unknown = await _ok(
        await admin.post(SIMULATE, json={"recipient": None, "sender_email": "a@b.org"})
    )
    assert unknown["outcome"] == "auto_spam" and unknown["input"]["recipient"] is None
    assert "unknown" in unknown["explanation_steps"][0]

    await _ok(await admin.post(ALLOWLIST, json={"pattern": "*@acme.example"}), 201)
    none = await _ok(
        await admin.post(
            SIMULATE,
            json={
                "recipient": "x@acme.example",
                "sender_email": "a@b.org",
                "direction": "outbound",
            },
        )
    )
    assert none["outcome"] == "no_rule" and none["input"]["direction"] == "outbound"
    assert none["new_ticket"]["after"] == none["new_ticket"]["before"]
    assert none["explanation_steps"][-1].startswith("No enabled rule matches")
    assert none["would_mark_spam"] is False and none["matched_rule"] is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"recipient": "not an address", "sender_email": "a@b.org"}, "invalid_recipient"),
        ({"recipient": 5}, "invalid_recipient"),
        ({"recipient": "a@acme.example", "sender_email": "nobody"}, "invalid_sender_email"),
        (
            {"recipient": "a@acme.example", "sender_email": None, "direction": "up"},
            "invalid_direction",
        ),
        ({}, "invalid_recipient"),
        ({"recipient": "a@acme.example"}, "invalid_sender_email"),
        ({"recipient": "a@acme.example", "sender": "a@b.org"}, "unknown_field"),
        ({"recipient": "a@acme.example", "to": "x"}, "unknown_field"),
    ],
)
async def test_simulator_validation(login, body, code):
    agent = await login("agent@acme.example", "Acme")
    await _error(await agent.post(SIMULATE, json=body), 422, code)


# ------------------------------------------- the worker step agrees with the simulator


def _mailbox(db, org: str) -> str:
    return str(
        db.execute(
            "INSERT INTO core.mailboxes (organization_id, email) VALUES (%s, 'journal@acme.example') "
            "ON CONFLICT (organization_id, email) DO UPDATE SET email = excluded.email RETURNING id",
            [org],
        ).fetchone()["id"]
    )


def _stitched_occurrence(
    db,
    org: str,
    recipient: str | None,
    sender: str | None,
    *,
    ticket_id: int | None = None,
    direction: str = "inbound",
    minted: bool = False,
    source: str | None = None,
) -> tuple[int, int]:
    """A message and its occurrence as stitching leaves them: linked to a ticket, 'stitched'.

    Without ticket_id, a new unrouted ticket is created for it (the first message)."""
    tag = uuid.uuid4().hex
    message_id = db.execute(
        "INSERT INTO core.messages (organization_id, strict_signature, loose_fingerprint, "
        "direction, minted_by_product, from_address, subject) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'Help') RETURNING id",
        [org, tag, tag, direction, minted, sender],
    ).fetchone()["id"]
    if ticket_id is None:
        ticket_id = db.execute(
            "INSERT INTO core.tickets (organization_id, number, subject, requester_email, "
            "original_recipient) VALUES (%s, (SELECT coalesce(max(number), 999) + 1 "
            "FROM core.tickets WHERE organization_id = %s), 'Help', %s, %s) RETURNING id",
            [org, org, sender, recipient],
        ).fetchone()["id"]
        reason = "new_ticket"
    else:
        reason = "in_reply_to"
    db.execute(
        "INSERT INTO core.ticket_messages (message_id, organization_id, ticket_id, stitch_reason, "
        "stitch_confidence) VALUES (%s, %s, %s, %s, 'low')",
        [message_id, org, ticket_id, reason],
    )
    occurrence_id = db.execute(
        "INSERT INTO core.message_occurrences (organization_id, mailbox_id, gmail_message_id, "
        "state, message_id, ticket_id, original_recipient, recipient_source, stitched_at) "
        "VALUES (%s, %s, %s, 'stitched', %s, %s, %s, %s, now()) RETURNING id",
        [
            org,
            _mailbox(db, org),
            tag,
            message_id,
            ticket_id,
            recipient,
            source or ("workspace_header" if recipient else "unknown"),
        ],
    ).fetchone()["id"]
    return occurrence_id, ticket_id


def _route(db, occurrence_ids: list[int]) -> dict[str, Any]:
    return db.execute("SELECT worker.route_occurrences(%s) AS r", [occurrence_ids]).fetchone()["r"]


def _ticket(db, ticket_id: int) -> dict[str, Any]:
    return db.execute(
        "SELECT status::text, assignee_queue_id::text, assignee_user_id::text, tags, hidden, "
        "routed_at IS NOT NULL AS routed FROM core.tickets WHERE id = %s",
        [ticket_id],
    ).fetchone()


def _events(db, ticket_id: int) -> list[dict[str, Any]]:
    return db.execute(
        "SELECT type, data FROM core.ticket_events WHERE ticket_id = %s ORDER BY id", [ticket_id]
    ).fetchall()


# (recipient, sender, direction): one message for each routing outcome.
WORKER_CASES = [
    pytest.param("billing@acme.example", "jo@client.org", "inbound", "rule", id="queue rule"),
    pytest.param("support@acme.example", "ceo@bigco.com", "inbound", "rule", id="user rule"),
    pytest.param("support@acme.example", "x@spam.example", "inbound", "dropped", id="drop"),
    pytest.param("support@acme.example", "jo@client.org", "inbound", "no_rule", id="no rule"),
    pytest.param(
        "someone@elsewhere.example", "jo@client.org", "inbound", "auto_spam", id="not allowlisted"
    ),
    pytest.param(None, "jo@client.org", "inbound", "auto_spam", id="unknown recipient"),
    pytest.param("support@acme.example", "jo@client.org", "outbound", "rule", id="outbound"),
]


@pytest.mark.parametrize(("recipient", "sender", "direction", "outcome"), WORKER_CASES)
async def test_worker_applies_what_the_simulator_predicts(
    login, db, recipient, sender, direction, outcome
):
    admin = await login("admin@acme.example", "Acme")
    agent = await login("agent@acme.example", "Acme", role="agent")
    billing = await _queue(admin, "Billing")
    await _ok(await admin.post(ALLOWLIST, json={"pattern": "*@acme.example"}), 201)
    for rule in [
        {
            "name": "Billing",
            "priority": 1,
            "match_recipient_pattern": "billing@*",
            "action_assign_queue_id": billing,
            "action_set_status": "open",
            "action_add_tags": ["money"],
        },
        {
            "name": "VIP",
            "priority": 2,
            "match_sender_domain_pattern": "bigco.com",
            "action_assign_user_id": agent.login["user"]["id"],
            "action_add_tags": ["vip"],
        },
        {
            "name": "Junk",
            "priority": 3,
            "match_sender_email_pattern": "*@spam.example",
            "action_drop": True,
        },
        {
            "name": "Outgoing",
            "priority": 4,
            "match_direction": "outbound",
            "action_auto_close": True,
        },
    ]:
        await _ok(await admin.post(RULES, json=rule), 201)

    body = {"recipient": recipient, "sender_email": sender, "direction": direction}
    simulated = await _ok(await agent.post(SIMULATE, json=body))
    assert simulated["outcome"] == outcome

    occurrence_id, ticket_id = _stitched_occurrence(
        db, seed.org_id(admin), recipient, sender, direction=direction
    )
    result = _route(db, [occurrence_id])
    assert result["routed_tickets"] == [ticket_id]

    after = simulated["new_ticket"]["after"]
    ticket = _ticket(db, ticket_id)
    assert ticket == {
        "status": after["status"],
        "assignee_queue_id": after["assignee_queue_id"],
        "assignee_user_id": after["assignee_user_id"],
        "tags": after["tags"],
        "hidden": after["hidden"],
        "routed": True,
    }

    events = _events(db, ticket_id)
    routed = [e for e in events if e["type"] == "routed"]
    assert len(routed) == 1
    # The decision the worker recorded, without what the simulator adds to it.
    web_client_reading = (
        "would_mark_spam",
        "matched_rule",
        "applied_actions",
        "explanation",
        "explanation_steps",
        "new_ticket",
    )
    simulated_decision = {k: v for k, v in simulated.items() if k not in web_client_reading}
    assert routed[0]["data"]["decision"] == simulated_decision
    assert routed[0]["data"]["before"] == simulated["new_ticket"]["before"]
    assert routed[0]["data"]["after"] == after
    assert routed[0]["data"]["occurrence_id"] == occurrence_id
    marker_events = sorted(e["type"] for e in events if e["type"] != "routed")
    assert marker_events == ([outcome] if outcome in ("auto_spam", "dropped") else [])

    occurrence = db.execute(
        "SELECT state::text, routed_at IS NOT NULL AS stamped "
        "FROM core.message_occurrences WHERE id = %s",
        [occurrence_id],
    ).fetchone()
    assert occurrence == {"state": "routed", "stamped": True}


async def test_recipient_from_unknown_source_is_not_allowlisted(login, db):
    admin = await login("admin@acme.example", "Acme")
    await _ok(await admin.post(ALLOWLIST, json={"pattern": "*"}), 201)
    occurrence_id, ticket_id = _stitched_occurrence(
        db, seed.org_id(admin), "support@acme.example", "jo@client.org", source="unknown"
    )
    _route(db, [occurrence_id])
    assert _ticket(db, ticket_id)["status"] == "spam"
    routed = _events(db, ticket_id)[0]
    assert routed["data"]["decision"]["input"]["recipient"] is None


async def test_routing_is_idempotent(login, db):
    admin = await login("admin@acme.example", "Acme")
    await _ok(await admin.post(ALLOWLIST, json={"pattern": "*@acme.example"}), 201)
    occurrence_id, ticket_id = _stitched_occurrence(
        db, seed.org_id(admin), "support@acme.example", "jo@client.org"
    )
    first = _route(db, [occurrence_id])
    again = _route(db, [occurrence_id])
    assert first == {
        "routed": 1,
        "routed_tickets": [ticket_id],
        "tickets_unchanged": 0,
        "skipped": 0,
    }
    assert again == {"routed": 0, "routed_tickets": [], "tickets_unchanged": 0, "skipped": 1}
    assert [e["type"] for e in _events(db, ticket_id)] == ["routed"]


async def test_follow_up_from_unknown_sender_does_not_spam_an_open_ticket(login, db):
    admin = await login("admin@acme.example", "Acme")
    org = seed.org_id(admin)
    await _ok(await admin.post(ALLOWLIST, json={"pattern": "support@acme.example"}), 201)
    await _ok(await admin.post(RULES, json=_rule_body(name="Open all")), 201)
    first, ticket_id = _stitched_occurrence(db, org, "support@acme.example", "jo@client.org")
    _route(db, [first])
    assert _ticket(db, ticket_id)["status"] == "open"

    # A reply copied to someone new, delivered to an address that is not allowlisted.
    follow_up, _ = _stitched_occurrence(
        db, org, "stranger@elsewhere.example", "new@unknown.org", ticket_id=ticket_id
    )
    # The product's own outbound reply, journaled back.
    outbound, _ = _stitched_occurrence(
        db,
        org,
        "jo@client.org",
        "support@acme.example",
        ticket_id=ticket_id,
        direction="outbound",
        minted=True,
    )
    result = _route(db, [follow_up, outbound])

    assert result == {"routed": 2, "routed_tickets": [], "tickets_unchanged": 2, "skipped": 0}
    assert _ticket(db, ticket_id)["status"] == "open"
    assert [e["type"] for e in _events(db, ticket_id)] == ["routed"]
    states = {
        r["state"]
        for r in db.execute(
            "SELECT state::text FROM core.message_occurrences WHERE id = ANY(%s)",
            [[follow_up, outbound]],
        )
    }
    assert states == {"routed"}


async def test_ticket_a_human_touched_is_not_routed(login, db):
    admin = await login("admin@acme.example", "Acme")
    org = seed.org_id(admin)
    occurrence_id, ticket_id = _stitched_occurrence(
        db, org, "nobody@elsewhere.example", "jo@client.org"
    )
    db.execute(
        "UPDATE core.tickets SET status = 'pending', human_touched_at = now() WHERE id = %s",
        [ticket_id],
    )

    result = _route(db, [occurrence_id])

    assert result["routed_tickets"] == [] and result["tickets_unchanged"] == 1
    ticket = _ticket(db, ticket_id)
    assert ticket["status"] == "pending" and ticket["routed"] is False
    assert _events(db, ticket_id) == []


async def test_explicit_reroute_applies_todays_rules(login, db):
    admin = await login("admin@acme.example", "Acme")
    agent = await login("agent@acme.example", "Acme", role="agent")
    viewer = await login("viewer@acme.example", "Acme", role="viewer")
    org = seed.org_id(admin)
    occurrence_id, ticket_id = _stitched_occurrence(
        db, org, "support@acme.example", "jo@client.org"
    )
    _route(db, [occurrence_id])
    assert _ticket(db, ticket_id)["status"] == "spam"  # nothing allowlisted yet

    await _ok(await admin.post(ALLOWLIST, json={"pattern": "support@*"}), 201)
    await _ok(await admin.post(RULES, json=_rule_body(name="Open all")), 201)
    await _error(await viewer.post(f"/tickets/{ticket_id}/reroute"), 403, "forbidden")
    result = await _ok(await agent.post(f"/tickets/{ticket_id}/reroute"))

    assert result["decision"]["outcome"] == "rule"
    assert result["before"]["status"] == "spam" and result["after"]["status"] == "open"
    assert _ticket(db, ticket_id)["status"] == "open"
    rerouted = _events(db, ticket_id)[-1]
    assert rerouted["type"] == "routed" and rerouted["data"]["trigger"] == "reroute"

    globex = await login("admin@globex.example", "Globex")
    await _error(await globex.post(f"/tickets/{ticket_id}/reroute"), 404, "ticket_not_found")
    await _error(await agent.post("/tickets/abc/reroute"), 404, "ticket_not_found")


async def test_allowlist_patterns_are_bounded_and_runs_of_stars_stored_as_one(login):
    admin = await login("admin@acme.example", "Acme")
    entry = await _ok(await admin.post(ALLOWLIST, json={"pattern": "*" * 320}), 201)
    assert entry["pattern"] == "*"
    entry = await _ok(await admin.post(ALLOWLIST, json={"pattern": "a**b?*@acme.example"}), 201)
    assert entry["pattern"] == "a*b?*@acme.example"
    sixteen = "".join(f"{n}*" for n in range(16))
    await _ok(await admin.post(ALLOWLIST, json={"pattern": sixteen}), 201)
    body = await _error(
        await admin.post(ALLOWLIST, json={"pattern": sixteen + "?"}), 422, "invalid_pattern"
    )
    assert "16 wildcards" in body["detail"]


async def test_rule_version_moves_only_when_something_changes(login):
    admin = await login("admin@acme.example", "Acme")
    rule = await _ok(await admin.post(RULES, json={"name": "r", "action_set_status": "open"}), 201)
    same = await _ok(await admin.patch(f"{RULES}/{rule['id']}", json={"name": "r"}))
    assert same["version"] == rule["version"]
    await _error(await admin.patch(f"{RULES}/{rule['id']}", json={}), 422, "no_changes")
    changed = await _ok(await admin.patch(f"{RULES}/{rule['id']}", json={"name": "r2"}))
    assert changed["version"] == rule["version"] + 1
