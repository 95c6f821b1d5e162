"""The organisation's own mail domains (admin): what makes a sender the organisation's."""

from __future__ import annotations

import pytest

PATH = "/organization/mail-domains"


@pytest.fixture
async def acme(login):
    admin = await login("admin@acme.example", "Acme")
    agent = await login("agent@acme.example", "Acme", role="agent")
    return admin, agent


def org_reason(db, organization_id: str, address: str) -> str | None:
    return db.execute(
        "SELECT logic.org_address_reason(%s, %s) AS reason", [organization_id, address]
    ).fetchone()["reason"]


async def test_admin_sets_the_domains_that_make_a_sender_the_organisations(acme, login, db):
    admin, _ = acme
    org = admin.login["organization"]["id"]
    assert org_reason(db, org, "colleague@acme.example") is None
    response = await admin.put(
        PATH, {"domains": [" Acme.example ", "mail.acme.example", "acme.example"]}
    )
    assert response.status == 200, await response.text()
    assert await response.json() == {"domains": ["acme.example", "mail.acme.example"]}
    assert await (await admin.get(PATH)).json() == {
        "domains": ["acme.example", "mail.acme.example"]
    }
    assert org_reason(db, org, "colleague@acme.example") == "sender domain is the organisation's"
    # Exactly the list sent: a domain left out is removed.
    await admin.put(PATH, {"domains": ["mail.acme.example"]})
    assert org_reason(db, org, "colleague@acme.example") is None
    audit = db.execute(
        "SELECT details FROM core.audit_events WHERE action = 'organization.mail_domains_changed' "
        "ORDER BY id"
    ).fetchall()
    assert [a["details"]["to"] for a in audit] == [
        ["acme.example", "mail.acme.example"],
        ["mail.acme.example"],
    ]
    # Another organisation sees none of them.
    other = await login("admin@globex.example", "Globex")
    assert await (await other.get(PATH)).json() == {"domains": []}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"domains": "acme.example"}, "invalid_domains"),
        ({"domains": ["no-dot"]}, "invalid_domains"),
        ({"domains": ["acme.example", 7]}, "invalid_domains"),
        ({"domains": [f"d{n}.example" for n in range(51)]}, "invalid_domains"),
        ({}, "invalid_domains"),
        ({"domains": [], "extra": 1}, "unknown_field"),
    ],
)
async def test_bad_lists_are_refused_and_change_nothing(acme, body, code):
    admin, _ = acme
    await admin.put(PATH, {"domains": ["acme.example"]})
    response = await admin.put(PATH, body)
    assert response.status == 422
    assert (await response.json())["code"] == code
    assert await (await admin.get(PATH)).json() == {"domains": ["acme.example"]}


async def test_only_admins_see_or_set_the_domains(acme):
    admin, agent = acme
    assert (await agent.get(PATH)).status == 403
    refused = await agent.put(PATH, {"domains": ["acme.example"]})
    assert refused.status == 403
    no_csrf = await admin.client.put(PATH, json={"domains": ["acme.example"]})
    assert no_csrf.status == 403
    assert await (await admin.get(PATH)).json() == {"domains": []}
