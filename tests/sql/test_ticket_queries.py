"""The ticket list's keyset queries use the indexes, as the API role, under row-level security.

api.ticket_list picks one api.ticket_page_* function per filter combination; those are
plain SQL functions, so EXPLAIN of a call shows the inlined query's real plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from kernel.db import API_ROLE

TICKETS_PER_ORG = 2500
FIRST_PAGE = ("infinity", 9223372036854775807)


@pytest.fixture
def seeded(db) -> dict[str, Any]:
    """Two organisations with a few thousand tickets each, spread over statuses, users,
    queues and search words, some merged or hidden; vacuumed and analysed."""
    orgs: dict[str, Any] = {}
    for name in ("Acme", "Globex"):
        org_id = db.execute(
            "INSERT INTO core.organizations (name) VALUES (%s) RETURNING id", [name]
        ).fetchone()["id"]
        users = [
            db.execute(
                "INSERT INTO core.users (email) VALUES (%s) RETURNING id",
                [f"agent{n}@{name.lower()}.example"],
            ).fetchone()["id"]
            for n in range(5)
        ]
        for user_id in users:
            db.execute(
                "INSERT INTO core.memberships (organization_id, user_id, role) "
                "VALUES (%s, %s, 'agent')",
                [org_id, user_id],
            )
        queues = [
            db.execute(
                "INSERT INTO core.queues (organization_id, name) VALUES (%s, %s) RETURNING id",
                [org_id, f"Queue {n}"],
            ).fetchone()["id"]
            for n in range(4)
        ]
        db.execute(
            """
            INSERT INTO core.tickets (organization_id, number, subject, status, requester_email,
                assignee_user_id, assignee_queue_id, hidden, last_activity_at, search)
            SELECT %(org)s, 1000 + g, 'Ticket ' || g,
                   (enum_range(NULL::core.ticket_status))[1 + g %% 6],
                   'customer' || g || '@example.net',
                   CASE WHEN g %% 3 = 0 THEN (%(users)s::uuid[])[1 + g %% 5] END,
                   CASE WHEN g %% 3 = 1 THEN (%(queues)s::uuid[])[1 + g %% 4] END,
                   g %% 97 = 0,
                   timestamptz '2024-01-01' + g * interval '1 minute' + (g %% 7) * interval '1 ms',
                   to_tsvector('simple', 'Ticket ' || g || ' word' || g || ' printer T-' || 1000 + g)
            FROM generate_series(1, %(n)s) g
            """,
            {"org": org_id, "users": users, "queues": queues, "n": TICKETS_PER_ORG},
        )
        db.execute(
            "UPDATE core.tickets SET merged_into_ticket_id = "
            "(SELECT min(id) FROM core.tickets WHERE organization_id = %(org)s) "
            "WHERE organization_id = %(org)s AND number %% 89 = 0",
            {"org": org_id},
        )
        orgs[name] = {"id": str(org_id), "users": users, "queues": queues}
    # VACUUM as autovacuum would: it also flushes the GIN index's fast-update pending list,
    # which right after a bulk insert makes the search index look dearer than it is.
    db.execute("VACUUM ANALYZE core.tickets")
    return orgs


def _as_api_role(db, org_id: str | None) -> None:
    db.execute(f"SET ROLE {API_ROLE}")
    db.execute("SELECT set_config('app.org_id', %s, false)", [org_id or ""])


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _ticket_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of the plan that reads core.tickets or one of its indexes."""
    return [
        node
        for node in _nodes(plan)
        if node.get("Relation Name") == "tickets"
        or str(node.get("Index Name", "")).startswith("tickets_")
    ]


def _variants(org: dict[str, Any]) -> list[tuple[str, list[Any], str]]:
    """(function, filter arguments, the index it must use) for each list query variant."""
    no_filter = [None, None, None, None]
    return [
        ("ticket_page_all", no_filter, "tickets_activity_idx"),
        ("ticket_page_status", ["pending", None, None, None], "tickets_status_activity_idx"),
        (
            "ticket_page_assignee_user",
            [None, None, str(org["users"][2]), None],
            "tickets_assignee_user_activity_idx",
        ),
        (
            "ticket_page_assignee_queue",
            [None, None, None, str(org["queues"][1])],
            "tickets_assignee_queue_activity_idx",
        ),
        ("ticket_page_search", [None, "word1234", None, None], "tickets_search_idx"),
    ]


def _call(function: str, filters: list[Any], after: tuple[str, int], limit: int) -> sql.Composed:
    """`SELECT * FROM api.<function>(...)` with the values as literals, as plans see them."""
    status, q, user_id, queue_id = filters
    # The search also takes the lower end of its activity window: here all of it.
    window = sql.SQL(", '-infinity'") if function == "ticket_page_search" else sql.SQL("")
    return sql.SQL(
        "SELECT * FROM api.{}({}::core.ticket_status, websearch_to_tsquery('simple', {}), "
        "{}::uuid, {}::uuid, {}::timestamptz, {}, {}{})"
    ).format(
        sql.Identifier(function),
        *(sql.Literal(value) for value in (status, q, user_id, queue_id, *after, limit)),
        window,
    )


def _explain(db, statement: sql.Composable) -> dict[str, Any]:
    row = db.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(statement)).fetchone()
    return row["QUERY PLAN"][0]["Plan"]


@pytest.mark.parametrize("variant", range(5), ids=["all", "status", "user", "queue", "q"])
@pytest.mark.parametrize("page", ["first", "after_cursor"])
def test_each_list_variant_uses_its_index_and_never_scans_the_table(db, seeded, variant, page):
    org = seeded["Acme"]
    function, filters, index = _variants(org)[variant]
    after = FIRST_PAGE if page == "first" else ("2024-01-02 12:00:00+00", 1234)
    _as_api_role(db, org["id"])

    plan = _explain(db, _call(function, filters, after, 51))

    scans = _ticket_scans(plan)
    assert scans, plan
    assert not [n for n in _nodes(plan) if n["Node Type"] == "Seq Scan"], plan
    assert {n["Node Type"] for n in scans} <= {
        "Index Scan",
        "Index Only Scan",
        "Bitmap Heap Scan",
        "Bitmap Index Scan",
    }, plan
    assert index in {n.get("Index Name") for n in scans}, plan


@pytest.mark.parametrize("variant", range(5), ids=["all", "status", "user", "queue", "q"])
def test_generic_plans_do_not_scan_the_table_either(db, seeded, variant):
    """Plans cached with parameters (plpgsql reuses them) stay on an index too."""
    org = seeded["Acme"]
    function, filters, _index = _variants(org)[variant]
    _as_api_role(db, org["id"])
    db.execute("SET plan_cache_mode = force_generic_plan")
    window = ", $8" if function == "ticket_page_search" else ""
    db.execute(
        sql.SQL(
            "PREPARE page(core.ticket_status, tsquery, uuid, uuid, timestamptz, bigint, integer, "
            "timestamptz) AS SELECT * FROM api.{}($1, $2, $3, $4, $5, $6, $7" + window + ")"
        ).format(sql.Identifier(function))
    )
    status, q, user_id, queue_id = filters
    execute = sql.SQL(
        "EXECUTE page({}, websearch_to_tsquery('simple', {}), {}, {}, {}, {}, 51, '-infinity')"
    )
    values = (status, q, user_id, queue_id, *FIRST_PAGE)
    plan = _explain(db, execute.format(*(sql.Literal(value) for value in values)))
    assert _ticket_scans(plan), plan
    assert not [n for n in _nodes(plan) if n["Node Type"] == "Seq Scan"], plan


def _nested_plans(db, query: str, params: list[Any]) -> list[str]:
    """The plans auto_explain reports for the statements run inside `query`."""
    plans: list[str] = []

    def collect(diagnostic: psycopg.errors.Diagnostic) -> None:
        if "plan:" in (diagnostic.message_primary or ""):
            plans.append(diagnostic.message_primary)

    db.add_notice_handler(collect)
    try:
        db.execute(query, params)
    finally:
        db.remove_notice_handler(collect)
    return plans


def test_the_list_plans_a_search_for_its_term_on_every_call(db, seeded):
    """A rare term goes through the GIN index and a common one walks the activity index,
    even after the function has run often enough to cache generic plans."""
    org = seeded["Acme"]
    db.execute("LOAD 'auto_explain'")
    db.execute("SET auto_explain.log_min_duration = 0")
    db.execute("SET auto_explain.log_nested_statements = on")
    _as_api_role(db, org["id"])
    call = "SELECT api.ticket_list(NULL, %s, NULL, NULL, 50, NULL)"
    for _ in range(8):  # past plpgsql's five custom plans
        db.execute(call, ["word1234"])
        db.execute(call, ["printer"])
        db.execute(call, [None])
    db.execute("SET client_min_messages = log")

    def page_plan(q: str | None) -> str:
        """The plan of the page query that answered (a search's widest window)."""
        plans = [p for p in _nested_plans(db, call, [q]) if "ticket_page_" in p]
        assert plans
        return plans[-1]

    assert "tickets_search_idx" in page_plan("word1234")
    common = page_plan("printer")
    assert "tickets_activity_idx" in common and "tickets_search_idx" not in common
    assert "tickets_activity_idx" in page_plan(None)


def test_a_search_widens_its_activity_window_until_the_page_is_full(db, seeded):
    """Matches are looked for 2 days back first, then 16 days, 128 days, then all time;
    the page is the same as one query over all time would give."""
    org = seeded["Acme"]
    _as_api_role(db, org["id"])
    # Ticket activity in the seed is early 2024: move 60 matches into the last few days.
    db.execute("RESET ROLE")
    db.execute(
        "UPDATE core.tickets SET last_activity_at = now() - number * interval '1 minute' "
        "WHERE organization_id = %s AND number BETWEEN 1100 AND 1159",
        [org["id"]],
    )
    _as_api_role(db, org["id"])
    call = "SELECT api.ticket_list(NULL, %s, NULL, NULL, 50, %s) AS page"
    first = db.execute(call, ["printer", None]).fetchone()["page"]
    expected = [
        row["id"]
        for row in db.execute(
            "SELECT id FROM api.listable_tickets WHERE search @@ to_tsquery('simple', 'printer') "
            "ORDER BY last_activity_at DESC, id DESC LIMIT 100"
        )
    ]
    second = db.execute(call, ["printer", first["next_cursor"]]).fetchone()["page"]
    assert [i["id"] for i in first["items"] + second["items"]] == expected


def test_listable_tickets_view_is_scoped_to_the_request_organisation(db, seeded):
    """The view reads core.tickets as its owner, so its WHERE clause is the tenant filter."""
    acme, globex = seeded["Acme"]["id"], seeded["Globex"]["id"]
    expected = db.execute(
        "SELECT count(*) AS n FROM core.tickets WHERE organization_id = %s "
        "AND merged_into_ticket_id IS NULL AND NOT hidden",
        [acme],
    ).fetchone()["n"]
    _as_api_role(db, acme)
    seen = db.execute(
        "SELECT count(*) AS n, count(DISTINCT organization_id) AS orgs, "
        "bool_and(organization_id = %s) AS only_acme FROM api.listable_tickets",
        [acme],
    ).fetchone()
    assert seen == {"n": expected, "orgs": 1, "only_acme": True}
    page = db.execute(
        sql.SQL("SELECT count(*) AS n FROM ({}) page").format(
            _call("ticket_page_all", [None] * 4, FIRST_PAGE, 10_000)
        )
    ).fetchone()["n"]
    assert page == expected
    db.execute("SELECT set_config('app.org_id', %s, false)", [globex])
    assert db.execute(
        "SELECT bool_and(organization_id = %s) AS ok FROM api.listable_tickets", [globex]
    ).fetchone()["ok"]
    db.execute("SELECT set_config('app.org_id', '', false)")
    assert db.execute("SELECT count(*) AS n FROM api.listable_tickets").fetchone()["n"] == 0


def test_list_pages_match_the_tables_order_under_rls(db, seeded):
    """End to end through api.ticket_list: a filtered walk returns exactly the rows SQL says."""
    org = seeded["Acme"]
    queue_id = str(org["queues"][3])
    expected = [
        row["id"]
        for row in db.execute(
            "SELECT id FROM core.tickets WHERE organization_id = %s AND assignee_queue_id = %s "
            "AND status = 'open' AND merged_into_ticket_id IS NULL AND NOT hidden "
            "ORDER BY last_activity_at DESC, id DESC",
            [org["id"], queue_id],
        )
    ]
    assert len(expected) > 30
    _as_api_role(db, org["id"])
    seen: list[int] = []
    cursor = None
    while True:
        page = db.execute(
            "SELECT api.ticket_list('open', NULL, NULL, %s::text, 30, %s) AS page",
            [queue_id, cursor],
        ).fetchone()["page"]
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected


def test_ops_ticket_routing_shows_each_routing_decision(db):
    org_id = db.execute(
        "INSERT INTO core.organizations (name) VALUES ('Acme') RETURNING id"
    ).fetchone()["id"]
    ticket_id = db.execute(
        "INSERT INTO core.tickets (organization_id, number, status) "
        "VALUES (%s, 1042, 'spam') RETURNING id",
        [org_id],
    ).fetchone()["id"]
    decision = {
        "outcome": "auto_spam",
        "allowlisted": False,
        "input": {"recipient": "sales@acme.example", "sender": "x@spam.example"},
        "rule": None,
        "actions": None,
    }
    db.execute(
        "INSERT INTO core.ticket_events (organization_id, ticket_id, type, data) VALUES "
        "(%s, %s, 'routed', %s), (%s, %s, 'auto_spam', '{}')",
        [
            org_id,
            ticket_id,
            Jsonb({"decision": decision, "before": {"status": "new"}, "after": {"status": "spam"}}),
            org_id,
            ticket_id,
        ],
    )
    rows = db.execute(
        "SELECT ticket_code, status, outcome, allowlisted, recipient, sender, before, after "
        "FROM ops.ticket_routing WHERE ticket_id = %s",
        [ticket_id],
    ).fetchall()
    assert rows == [
        {
            "ticket_code": "T-1042",
            "status": "spam",
            "outcome": "auto_spam",
            "allowlisted": False,
            "recipient": "sales@acme.example",
            "sender": "x@spam.example",
            "before": {"status": "new"},
            "after": {"status": "spam"},
        }
    ]


def test_a_recent_window_is_searched_in_the_recent_index(db, seeded):
    """The first windows of a search lie within the recent-search index's range, so a rare
    term is looked up there; a window reaching further back uses the index of all tickets."""
    org = seeded["Acme"]
    # 2,000 tickets active within the last two days, word1150 among them.
    db.execute(
        "UPDATE core.tickets SET last_activity_at = now() - number * interval '1 minute' "
        "WHERE organization_id = %s AND number BETWEEN 1001 AND 3000",
        [org["id"]],
    )
    db.execute("VACUUM ANALYZE core.tickets")
    db.execute("LOAD 'auto_explain'")
    db.execute("SET auto_explain.log_min_duration = 0")
    db.execute("SET auto_explain.log_nested_statements = on")
    _as_api_role(db, org["id"])
    db.execute("SET client_min_messages = log")

    plans = [
        p
        for p in _nested_plans(
            db, "SELECT api.ticket_list(NULL, 'word1150', NULL, NULL, 50, NULL)", []
        )
        if "ticket_page_" in p
    ]
    # The only match is in the first window; the search widens past it to fill the page.
    assert "tickets_search_since_" in plans[0], plans[0]
    assert "tickets_search_since_" not in plans[-1] and "tickets_search_idx" in plans[-1]
    page = db.execute(
        "SELECT api.ticket_list(NULL, 'word1150', NULL, NULL, 50, NULL) AS page"
    ).fetchone()["page"]
    assert [item["ticket_code"] for item in page["items"]] == ["T-2150"]
