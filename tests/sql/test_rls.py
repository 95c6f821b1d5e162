"""Row-level security: the API role sees one organisation, whatever the query says."""

from __future__ import annotations

import psycopg
import pytest

from kernel.db import API_ROLE


def _seed_two_organisations(db) -> dict[str, str]:
    orgs = {}
    for name in ("Acme", "Globex"):
        org_id = db.execute(
            "INSERT INTO core.organizations (name) VALUES (%s) RETURNING id", [name]
        ).fetchone()["id"]
        db.execute(
            "INSERT INTO core.queues (organization_id, name) VALUES (%s, %s), (%s, %s)",
            [org_id, f"{name} billing", org_id, f"{name} sales"],
        )
        orgs[name] = str(org_id)
    return orgs


def _as_api_role(db, org_id: str | None):
    db.execute(f"SET ROLE {API_ROLE}")
    db.execute("SELECT set_config('app.org_id', %s, false)", [org_id or ""])


def test_api_role_cannot_bypass_rls_even_for_a_superuser_login(db):
    login_is_superuser = db.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()["rolsuper"]
    api_role = db.execute(
        "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = %s", [API_ROLE]
    ).fetchone()
    assert api_role == {"rolsuper": False, "rolbypassrls": False, "rolcanlogin": False}
    if login_is_superuser:
        # The login itself would see everything; SET ROLE is what confines the API.
        orgs = _seed_two_organisations(db)
        assert db.execute("SELECT count(*) AS n FROM core.queues").fetchone()["n"] == 4
        _as_api_role(db, orgs["Globex"])
        assert db.execute("SELECT count(*) AS n FROM core.queues").fetchone()["n"] == 2


def test_query_without_org_filter_sees_only_its_organisation(db):
    orgs = _seed_two_organisations(db)
    _as_api_role(db, orgs["Globex"])
    names = [row["name"] for row in db.execute("SELECT name FROM core.queues ORDER BY name")]
    assert names == ["Globex billing", "Globex sales"]
    visible_orgs = [row["name"] for row in db.execute("SELECT name FROM core.organizations")]
    assert visible_orgs == ["Globex"]


def test_no_organisation_set_means_no_rows(db):
    _seed_two_organisations(db)
    _as_api_role(db, None)
    assert db.execute("SELECT count(*) AS n FROM core.queues").fetchone()["n"] == 0
    assert db.execute("SELECT count(*) AS n FROM core.organizations").fetchone()["n"] == 0


def test_writes_into_another_organisation_are_refused(db):
    orgs = _seed_two_organisations(db)
    _as_api_role(db, orgs["Globex"])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        db.execute(
            "INSERT INTO core.queues (organization_id, name) VALUES (%s, 'sneaky')", [orgs["Acme"]]
        )
    # Updates and deletes cannot reach the other organisation's rows at all.
    assert db.execute("UPDATE core.queues SET name = name || '!' RETURNING id").rowcount == 2
    assert db.execute("DELETE FROM core.queues WHERE name LIKE 'Acme%'").rowcount == 0


def test_api_role_has_no_access_to_sessions(db):
    _as_api_role(db, None)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SELECT * FROM core.sessions")


async def test_api_pool_connections_run_as_the_api_role(api_server):
    """The connections the API really uses are the confined role, not the login user."""
    from app.http import POOL

    async with api_server.app[POOL].connection() as conn:
        row = await (
            await conn.execute("SELECT current_user AS role, session_user AS login")
        ).fetchone()
        app_name = await (await conn.execute("SHOW application_name")).fetchone()
    assert row["role"] == API_ROLE
    assert row["login"] != API_ROLE
    assert app_name["application_name"] == "api"
