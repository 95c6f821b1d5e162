"""Member management, invitations, the audit trail and the user's own sessions."""

from __future__ import annotations

import pytest


@pytest.fixture
async def acme(login):
    """Acme with an admin, an agent and a viewer (development login)."""
    admin = await login("admin@acme.example", "Acme")
    agent = await login("agent@acme.example", "Acme", role="agent")
    viewer = await login("viewer@acme.example", "Acme", role="viewer")
    return admin, agent, viewer


def user_id(user) -> str:
    return user.login["user"]["id"]


@pytest.mark.parametrize("who", ["agent", "viewer"])
async def test_only_admins_manage_members_and_invitations(acme, who):
    admin, agent, viewer = acme
    caller = {"agent": agent, "viewer": viewer}[who]
    invitation = await (await admin.post("/invitations", json={"email": "x@acme.example"})).json()
    attempts = [
        await caller.get("/members"),
        await caller.patch(f"/members/{user_id(viewer)}", json={"role": "agent"}),
        await caller.delete(f"/members/{user_id(viewer)}"),
        await caller.get("/invitations"),
        await caller.post("/invitations", json={"email": "y@acme.example"}),
        await caller.delete(f"/invitations/{invitation['id']}"),
        await caller.get("/audit-events"),
    ]
    assert [r.status for r in attempts] == [403] * len(attempts)
    assert {(await r.json())["code"] for r in attempts} == {"forbidden"}
    # Nothing changed.
    members = (await (await admin.get("/members")).json())["items"]
    assert {m["email"]: m["role"] for m in members}["viewer@acme.example"] == "viewer"
    assert len((await (await admin.get("/invitations")).json())["items"]) == 1


async def test_admin_lists_changes_and_removes_members(acme, db):
    admin, agent, viewer = acme
    members = (await (await admin.get("/members")).json())["items"]
    assert [(m["email"], m["role"]) for m in members] == [
        ("admin@acme.example", "admin"),
        ("agent@acme.example", "agent"),
        ("viewer@acme.example", "viewer"),
    ]
    promoted = await admin.patch(f"/members/{user_id(viewer)}", json={"role": "agent"})
    assert promoted.status == 200
    assert (await promoted.json())["role"] == "agent"
    assert (await viewer.post("/queues", json={"name": "Viewers no more"})).status == 403  # admin
    assert (await (await viewer.get("/me")).json())["role"] == "agent"

    bad = await admin.patch(f"/members/{user_id(viewer)}", json={"role": "owner"})
    assert (bad.status, (await bad.json())["code"]) == (422, "invalid_role")
    empty = await admin.patch(f"/members/{user_id(viewer)}", json={})
    assert (empty.status, (await empty.json())["code"]) == (422, "no_changes")
    unknown = await admin.patch(
        "/members/00000000-0000-0000-0000-000000000000", json={"role": "agent"}
    )
    assert (unknown.status, (await unknown.json())["code"]) == (404, "member_not_found")

    # A removed member's session stops on its next request.
    assert (await agent.get("/queues")).status == 200
    removed = await admin.delete(f"/members/{user_id(agent)}")
    assert removed.status == 204
    after = await agent.get("/queues")
    assert after.status == 401
    live = db.execute(
        "SELECT count(*) AS n FROM core.sessions s JOIN core.users u ON u.id = s.user_id "
        "WHERE u.email = 'agent@acme.example' AND s.revoked_at IS NULL"
    ).fetchone()["n"]
    assert live == 0
    again = await admin.delete(f"/members/{user_id(agent)}")
    assert again.status == 404

    actions = [e["action"] for e in (await (await admin.get("/audit-events")).json())["items"]]
    assert actions[:2] == ["member.removed", "member.role_changed"]


async def test_the_last_admin_can_be_neither_demoted_nor_removed(acme, db):
    admin, agent, _viewer = acme
    demote = await admin.patch(f"/members/{user_id(admin)}", json={"role": "agent"})
    assert demote.status == 409
    assert (await demote.json())["code"] == "last_admin"
    remove = await admin.delete(f"/members/{user_id(admin)}")
    assert (remove.status, (await remove.json())["code"]) == (409, "last_admin")
    # The database itself refuses, whoever asks.
    with pytest.raises(Exception, match="at least one admin"):
        db.execute("UPDATE core.memberships SET role = 'agent' WHERE role = 'admin'")

    # With a second admin, the first may step down.
    assert (await admin.patch(f"/members/{user_id(agent)}", json={"role": "admin"})).status == 200
    assert (await admin.patch(f"/members/{user_id(admin)}", json={"role": "viewer"})).status == 200
    assert (await (await admin.get("/me")).json())["role"] == "viewer"


async def test_invitations_are_created_listed_replaced_and_withdrawn(acme):
    admin, _agent, _viewer = acme
    created = await admin.post(
        "/invitations", json={"email": " Zoe@Acme.example ", "role": "viewer"}
    )
    assert created.status == 201, await created.text()
    zoe = await created.json()
    assert (zoe["email"], zoe["role"], zoe["accepted_at"]) == ("zoe@acme.example", "viewer", None)
    assert zoe["invited_by"] == user_id(admin)

    replaced = await (await admin.post("/invitations", json={"email": "zoe@acme.example"})).json()
    listed = (await (await admin.get("/invitations")).json())["items"]
    assert [(i["id"], i["role"]) for i in listed] == [(replaced["id"], "agent")]

    member = await admin.post("/invitations", json={"email": "agent@acme.example"})
    assert (member.status, (await member.json())["code"]) == (409, "already_a_member")
    invalid = await admin.post("/invitations", json={"email": "nope"})
    assert (invalid.status, (await invalid.json())["code"]) == (422, "invalid_email")

    assert (await admin.delete(f"/invitations/{replaced['id']}")).status == 204
    assert (await (await admin.get("/invitations")).json())["items"] == []
    gone = await admin.delete(f"/invitations/{replaced['id']}")
    assert (gone.status, (await gone.json())["code"]) == (404, "invitation_not_found")


async def test_audit_events_page_with_a_cursor(acme):
    admin, _agent, _viewer = acme
    for n in range(5):
        await admin.post("/invitations", json={"email": f"p{n}@acme.example"})
    seen: list[int] = []
    cursor = None
    while True:
        query = "/audit-events?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await admin.get(query)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) >= 8  # 3 logins + 5 invitations
    bad = await admin.get("/audit-events?cursor=abc")
    assert (bad.status, (await bad.json())["code"]) == (400, "invalid_cursor")


async def test_my_sessions_sign_out_elsewhere_and_everywhere(login, db):
    here = await login("alice@example.com", "Acme")
    elsewhere = await login("alice@example.com", "Acme")
    other_org = await login("alice@example.com", "Globex")
    bob = await login("bob@example.com", "Acme")

    sessions = (await (await here.get("/me/sessions")).json())["items"]
    assert len(sessions) == 3
    assert [s["current"] for s in sessions].count(True) == 1
    current = next(s for s in sessions if s["current"])
    assert current["id"] == here.login["session"]["id"]

    # Another user's session is not mine to end.
    foreign = await here.delete(f"/me/sessions/{bob.login['session']['id']}")
    assert (foreign.status, (await foreign.json())["code"]) == (404, "session_not_found")
    assert (await bob.get("/me")).status == 200

    ended = await here.delete(f"/me/sessions/{elsewhere.login['session']['id']}")
    assert ended.status == 204
    assert (await elsewhere.get("/me")).status == 401
    assert (await here.get("/me")).status == 200

    everywhere = await here.post("/auth/logout-all")
    assert everywhere.status == 200
    assert (await everywhere.json())["revoked"] == 2
    assert (await here.get("/me")).status == 401
    assert (await other_org.get("/me")).status == 401
    assert (await bob.get("/me")).status == 200
