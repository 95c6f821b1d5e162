"""Routing in SQL: logic.glob_match and logic.route_decision, the one source of truth."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.types.json import Jsonb

from kernel.db import API_ROLE
from tests.fixtures import seed


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("support@acme.com", "support@acme.com", True),
        ("support@acme.com", "SUPPORT@Acme.COM", True),  # case-insensitive both ways
        ("SUPPORT@*", "support@acme.com", True),
        ("*@acme.com", "billing@acme.com", True),
        ("*@acme.com", "billing@acme.com.evil.org", False),  # anchored at the end
        ("support@*", "my-support@acme.com", False),  # anchored at the start
        ("*", "anything@at.all", True),
        ("*", "", True),
        ("?@acme.com", "a@acme.com", True),
        ("?@acme.com", "ab@acme.com", False),
        ("?@acme.com", "@acme.com", False),
        ("s*t@*.com", "support@acme.com", True),
        # Everything but * and ? is literal: regular-expression metacharacters included.
        ("support@acme.com", "support@acmeXcom", False),
        ("a+b@acme.com", "a+b@acme.com", True),
        ("a+b@acme.com", "aab@acme.com", False),
        ("(x)|y@z", "(x)|y@z", True),
        ("(x)|y@z", "y@z", False),
        ("[ab]@z", "[ab]@z", True),
        ("[ab]@z", "a@z", False),
        ("^a$@z", "^a$@z", True),
        ("a{2}@z", "aa@z", False),
        ("a\\d@z", "a\\d@z", True),
        ("a\\d@z", "a1@z", False),
        ("a%b_c@z", "a%b_c@z", True),  # LIKE wildcards are literal too
        ("a%b_c@z", "axbyc@z", False),
        ("a.*@z", "a.bc@z", True),
        ("a.*@z", "abc@z", False),
        (None, "a@z", False),
        ("*", None, False),
    ],
)
def test_glob_match(db, pattern, value, expected):
    row = db.execute("SELECT logic.glob_match(%s, %s) AS m", [pattern, value]).fetchone()
    assert row["m"] is expected


def test_glob_match_is_immutable(db):
    volatility = db.execute(
        "SELECT provolatile FROM pg_proc WHERE oid = 'logic.glob_match(text, text)'::regprocedure"
    ).fetchone()["provolatile"]
    assert volatility == "i"


# ---------------------------------------------------------------- route_decision


def _queue(db, org: str, name: str) -> str:
    return str(
        db.execute(
            "INSERT INTO core.queues (organization_id, name) VALUES (%s, %s) RETURNING id",
            [org, name],
        ).fetchone()["id"]
    )


def _allow(db, org: str, pattern: str, enabled: bool = True) -> None:
    db.execute(
        "INSERT INTO core.routing_allowlist (organization_id, pattern, enabled) VALUES (%s, %s, %s)",
        [org, pattern, enabled],
    )


def _rule(db, org: str, name: str, **columns: Any) -> str:
    columns = {"organization_id": org, "name": name, **columns}
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    return str(
        db.execute(
            f"INSERT INTO core.routing_rules ({names}) VALUES ({marks}) RETURNING id",
            list(columns.values()),
        ).fetchone()["id"]
    )


def _decide(db, org: str, recipient, sender="customer@client.org", direction="inbound"):
    return db.execute(
        "SELECT logic.route_decision(%s, %s, %s, %s) AS d", [org, recipient, sender, direction]
    ).fetchone()["d"]


# Each case: allowlist patterns [(pattern, enabled)], rules [(name, columns)], the message
# (recipient, sender, direction) and what the decision must say (outcome, rule name, status).
DECISION_CASES = [
    pytest.param(
        [],
        [],
        ("support@acme.com", "a@b.org", "inbound"),
        ("auto_spam", None, "spam"),
        id="empty allowlist is spam",
    ),
    pytest.param(
        [("support@acme.com", True)],
        [("all", {"set_status": "open"})],
        (None, "a@b.org", "inbound"),
        ("auto_spam", None, "spam"),
        id="unknown recipient is spam",
    ),
    pytest.param(
        [("*", True)],
        [],
        ("", "a@b.org", "inbound"),
        ("auto_spam", None, "spam"),
        id="blank recipient is unknown even with a catch-all pattern",
    ),
    pytest.param(
        [("support@acme.com", False)],
        [],
        ("support@acme.com", "a@b.org", "inbound"),
        ("auto_spam", None, "spam"),
        id="disabled pattern is ignored",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [],
        ("Support@ACME.com", "a@b.org", "inbound"),
        ("no_rule", None, None),
        id="allowlisted without rules",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("off", {"enabled": False, "set_status": "open"})],
        ("support@acme.com", "a@b.org", "inbound"),
        ("no_rule", None, None),
        id="disabled rule is ignored",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [
            ("low", {"priority": 50, "set_status": "pending"}),
            ("high", {"priority": 10, "set_status": "open"}),
        ],
        ("support@acme.com", "a@b.org", "inbound"),
        ("rule", "high", "open"),
        id="lowest priority number wins",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [
            ("b", {"id": "00000000-0000-0000-0000-00000000000b", "set_status": "pending"}),
            ("a", {"id": "00000000-0000-0000-0000-00000000000a", "set_status": "open"}),
        ],
        ("support@acme.com", "a@b.org", "inbound"),
        ("rule", "a", "open"),
        id="equal priority falls back to id",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [
            ("billing", {"priority": 1, "recipient_pattern": "billing@*", "set_status": "pending"}),
            ("rest", {"priority": 2, "set_status": "open"}),
        ],
        ("support@acme.com", "a@b.org", "inbound"),
        ("rule", "rest", "open"),
        id="recipient pattern not matching",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("billing", {"recipient_pattern": "BILLING@*", "set_status": "pending"})],
        ("billing@acme.com", "a@b.org", "inbound"),
        ("rule", "billing", "pending"),
        id="recipient pattern matching",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("vip", {"sender_domain_pattern": "*.bigco.com", "set_status": "open"})],
        ("support@acme.com", "ceo@eu.bigco.com", "inbound"),
        ("rule", "vip", "open"),
        id="sender domain pattern matching",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("vip", {"sender_domain_pattern": "*.bigco.com", "set_status": "open"})],
        ("support@acme.com", "ceo@bigco.com.evil.org", "inbound"),
        ("no_rule", None, None),
        id="sender domain pattern not matching",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("vip", {"sender_domain_pattern": "*", "set_status": "open"})],
        ("support@acme.com", None, "inbound"),
        ("no_rule", None, None),
        id="unknown sender matches no sender condition",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("boss", {"sender_email_pattern": "ceo@*", "auto_close": True})],
        ("support@acme.com", "CEO@bigco.com", "inbound"),
        ("rule", "boss", "closed"),
        id="sender email pattern and auto close",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("boss", {"sender_email_pattern": "ceo@*", "auto_close": True})],
        ("support@acme.com", "cfo@bigco.com", "inbound"),
        ("no_rule", None, None),
        id="sender email pattern not matching",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("out", {"direction": "outbound", "set_status": "pending"})],
        ("support@acme.com", "a@b.org", "inbound"),
        ("no_rule", None, None),
        id="direction not matching",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("out", {"direction": "outbound", "set_status": "pending"})],
        ("support@acme.com", "a@b.org", "outbound"),
        ("rule", "out", "pending"),
        id="direction matching",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [
            (
                "both",
                {
                    "recipient_pattern": "sales@*",
                    "sender_domain_pattern": "b.org",
                    "set_status": "open",
                },
            )
        ],
        ("support@acme.com", "a@b.org", "inbound"),
        ("no_rule", None, None),
        id="conditions are ANDed",
    ),
    pytest.param(
        [("*@acme.com", True)],
        [("junk", {"sender_domain_pattern": "spam.example", "drop_message": True})],
        ("support@acme.com", "x@spam.example", "inbound"),
        ("dropped", "junk", "spam"),
        id="drop",
    ),
]


@pytest.mark.parametrize(("allowlist", "rules", "message", "expected"), DECISION_CASES)
def test_route_decision(db, allowlist, rules, message, expected):
    org = seed.organization(db)
    for pattern, enabled in allowlist:
        _allow(db, org, pattern, enabled)
    for name, columns in rules:
        _rule(db, org, name, **columns)

    decision = _decide(db, org, *message)

    outcome, rule_name, status = expected
    assert decision["outcome"] == outcome
    assert decision["allowlisted"] is (outcome != "auto_spam")
    assert (decision["rule"] or {}).get("name") == rule_name
    assert decision["status"] == status
    if outcome == "auto_spam":
        assert decision["rule"] is None and decision["actions"] is None


def test_decision_names_rule_version_conditions_and_actions(db):
    org = seed.organization(db)
    queue = _queue(db, org, "Billing")
    _allow(db, org, "*@acme.com")
    rule_id = _rule(
        db,
        org,
        "Billing mail",
        priority=7,
        version=3,
        recipient_pattern="billing@*",
        direction="inbound",
        assign_queue_id=queue,
        set_status="open",
        add_tags=["billing", "money"],
    )

    decision = _decide(db, org, " Billing@Acme.com ", "Jane@Client.ORG")

    assert decision == {
        "input": {
            "recipient": "billing@acme.com",
            "sender": "jane@client.org",
            "sender_domain": "client.org",
            "direction": "inbound",
        },
        "allowlisted": True,
        "allowlist_entry": {"id": decision["allowlist_entry"]["id"], "pattern": "*@acme.com"},
        "rule": {"id": rule_id, "name": "Billing mail", "version": 3, "priority": 7},
        "matched_conditions": {
            "recipient_pattern": {"pattern": "billing@*", "value": "billing@acme.com"},
            "direction": {"pattern": "inbound", "value": "inbound"},
        },
        "actions": {
            "assign_queue_id": queue,
            "assign_user_id": None,
            "set_status": "open",
            "auto_close": False,
            "drop": False,
            "add_tags": ["billing", "money"],
        },
        "skipped_actions": [],
        "outcome": "rule",
        "status": "open",
    }


def test_decision_reads_only_its_organisation(db):
    acme = seed.organization(db, "Acme")
    globex = seed.organization(db, "Globex")
    _allow(db, globex, "*")
    _rule(db, globex, "globex rule", set_status="open")
    assert _decide(db, acme, "support@acme.com")["outcome"] == "auto_spam"
    assert _decide(db, globex, "support@acme.com")["rule"]["name"] == "globex rule"


def test_decision_under_the_api_role_matches_the_owner(db):
    org = seed.organization(db)
    _allow(db, org, "support@*")
    _rule(db, org, "vip", sender_domain_pattern="bigco.com", set_status="open")
    as_owner = _decide(db, org, "support@acme.com", "ceo@bigco.com")

    db.execute(f"SET ROLE {API_ROLE}")
    db.execute("SELECT set_config('app.org_id', %s, false)", [org])
    assert _decide(db, org, "support@acme.com", "ceo@bigco.com") == as_owner
    # RLS: with another organisation's context the API role sees no configuration at all.
    db.execute(
        "SELECT set_config('app.org_id', %s, false)", ["00000000-0000-0000-0000-000000000001"]
    )
    assert _decide(db, org, "support@acme.com", "ceo@bigco.com")["outcome"] == "auto_spam"


def test_assignee_who_left_is_skipped(db):
    org = seed.organization(db)
    user = db.execute(
        "INSERT INTO core.users (email) VALUES ('gone@acme.com') RETURNING id"
    ).fetchone()["id"]
    _allow(db, org, "*")
    _rule(db, org, "to gone", assign_user_id=user, add_tags=["x"])
    decision = _decide(db, org, "support@acme.com")
    assert decision["outcome"] == "rule"
    assert decision["actions"]["assign_user_id"] is None
    assert decision["skipped_actions"] == ["assign_user_id"]


@pytest.mark.parametrize(
    ("before", "decision", "after"),
    [
        (
            {"status": "new", "tags": ["a"], "hidden": False},
            {"outcome": "auto_spam", "status": "spam"},
            {"status": "spam", "tags": ["a"], "hidden": False},
        ),
        (
            {"status": "new", "tags": [], "hidden": False},
            {"outcome": "no_rule", "status": None},
            {"status": "new", "tags": [], "hidden": False},
        ),
        (
            {"status": "new", "assignee_queue_id": None, "tags": ["b", "a"], "hidden": False},
            {
                "outcome": "rule",
                "status": "pending",
                "actions": {"assign_queue_id": "q1", "add_tags": ["a", "c"], "drop": False},
            },
            {
                "status": "pending",
                "assignee_queue_id": "q1",
                "tags": ["b", "a", "c"],
                "hidden": False,
            },
        ),
        (
            {"status": "new", "tags": [], "hidden": False},
            {"outcome": "dropped", "status": "spam", "actions": {"drop": True, "add_tags": []}},
            {"status": "spam", "tags": [], "hidden": True},
        ),
    ],
)
def test_routing_effect(db, before, decision, after):
    result = db.execute(
        "SELECT logic.routing_effect(%s, %s) AS after", [Jsonb(decision), Jsonb(before)]
    ).fetchone()["after"]
    assert result == after


# ------------------------------------------------------ glob cost (issue 15, defect 9)


@pytest.mark.parametrize(
    ("pattern", "compiled"),
    [
        ("*" * 320, "^.*$"),
        ("a**b***c", "^a.*b.*c$"),
        ("*?*", "^.*..*$"),
        ("a.b+*@x", "^a\\.b\\+.*@x$"),
    ],
)
def test_glob_compiles_a_run_of_stars_to_one(db, pattern, compiled):
    # The regular expression's size, not a timing, is the cost measure: runs collapse.
    row = db.execute("SELECT logic.glob_regex(%s) AS r", [pattern]).fetchone()
    assert row["r"] == compiled


def test_a_long_run_of_stars_still_matches_like_one(db):
    row = db.execute(
        "SELECT logic.glob_match(%s, 'x@acme.example') AS m", ["*" * 320 + "@acme.example"]
    ).fetchone()
    assert row["m"] is True
