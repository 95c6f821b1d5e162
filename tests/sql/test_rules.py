"""Rules defined once in logic (sql/logic/) and mirrored where Python checks or reports them."""

from __future__ import annotations

import re

import psycopg
import pytest

from app import apidoc, openapi

ADDRESSES = [
    ("agent@example.com", True),
    ("a.b+c@sub.example.org", True),
    ("a@b", False),  # no dot in the domain
    ("a@@b.com", False),
    ("a b@example.com", False),
    ("a@exa mple.com", False),
    ("@example.com", False),
    ("agent@", False),
    ("", False),
    ("x" * 308 + "@example.com", True),  # 320 characters
    ("x" * 309 + "@example.com", False),
]


@pytest.mark.parametrize(("address", "valid"), ADDRESSES)
def test_email_address_rule(db, address, valid):
    row = db.execute("SELECT logic.is_email_address(%s) AS ok", [address]).fetchone()
    assert row["ok"] is valid


def test_the_openapi_email_schema_mirrors_the_email_rule(db):
    rule = db.execute(
        "SELECT logic.email_address_pattern() AS pattern, logic.max_email_length() AS max"
    ).fetchone()
    email = apidoc.EMAIL
    assert openapi.SCHEMAS["DevLoginRequest"]["properties"]["email"] is email
    # The document allows the spaces SQL trims around the address.
    assert email["pattern"] == "^ *" + rule["pattern"][1:-1] + " *$"
    assert email["maxLength"] == rule["max"]
    python = re.compile(email["pattern"])
    for address, valid in ADDRESSES:
        assert (bool(python.match(address)) and len(address) <= email["maxLength"]) is valid


@pytest.mark.parametrize("type_name", sorted(apidoc.DATABASE_ENUMS))
def test_the_documents_enums_are_the_databases(db, type_name):
    row = db.execute(
        f"SELECT enum_range(NULL::core.{type_name})::text[] AS labels"  # names from a fixed map
    ).fetchone()
    assert tuple(row["labels"]) == apidoc.DATABASE_ENUMS[type_name]


@pytest.mark.parametrize(
    "domain",
    [
        "acme.example",
        " Mail.Acme.Example ",
        "a-b.c1.example",
        "x.y",
        ".",
        "nodot",
        "-a.example",
        "a-.example",
        "acme.123",
        "a..example",
        "acme.example.",
        "a" * 64 + ".example",
        "a" * 63 + ".example",
        "ac me.example",
        "acme_x.example",
    ],
)
def test_the_openapi_domain_schema_agrees_with_the_domain_rule(db, domain):
    sql = db.execute("SELECT logic.is_domain_name(lower(btrim(%s))) AS ok", [domain]).fetchone()[
        "ok"
    ]
    python = bool(re.match(apidoc.DOMAIN["pattern"], domain)) and len(domain) <= 253
    assert python is sql


def test_the_documents_input_limits_are_the_databases(db):
    row = db.execute("SELECT logic.input_limits() AS limits").fetchone()
    assert row["limits"] == apidoc.INPUT_LIMITS


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("logic.max_length(repeat('x', 20001), 'body', 'note_body')", "invalid_body"),
        ("logic.page_size(101, 'ticket_page')", "invalid_limit"),
        ("logic.page_size(0, 'ops_page')", "invalid_limit"),
        ("logic.valid_glob(repeat('*a', 17), 'pattern')", "invalid_pattern"),
    ],
)
def test_a_value_past_its_input_limit_is_refused(db, call, code):
    with pytest.raises(psycopg.Error) as caught:
        db.execute(f"SELECT {call}")
    assert caught.value.sqlstate == "TK422"
    assert caught.value.diag.message_detail == code


def test_values_at_their_input_limits_pass(db):
    row = db.execute(
        "SELECT logic.max_length(repeat('x', 20000), 'body', 'note_body') IS NOT NULL AS note,"
        " logic.page_size(NULL, 'ticket_page') AS default_page,"
        " logic.page_size(200, 'ops_page') AS ops_page,"
        " logic.valid_glob(repeat('*a', 16), 'pattern') IS NOT NULL AS glob"
    ).fetchone()
    assert row == {"note": True, "default_page": 50, "ops_page": 200, "glob": True}


def test_an_unknown_limit_name_is_a_programming_error(db):
    with pytest.raises(Exception, match="no input limit named nope"):
        db.execute("SELECT logic.input_limit('nope')")


JOURNAL = "journal@corp.example"
RECIPIENT_CASES = [
    [("X-Gm-Original-To", "Sales@Corp.example"), ("Delivered-To", "other@corp.example")],
    [("Delivered-To", JOURNAL), ("Delivered-To", "Support@Corp.example")],
    [("Delivered-To", "JOURNAL@Corp.Example"), ("Delivered-To", "help@corp.example")],
    [("Delivered-To", JOURNAL), ("X-Original-To", "billing@corp.example")],
    [("Delivered-To", JOURNAL)],
    [("To", "Team <TEAM@corp.example>, b@corp.example")],
    [("To", "undisclosed-recipients:;"), ("Cc", "cc-person@corp.example")],
    [("Envelope-To", "env@corp.example"), ("Original-Recipient", "rfc822; o@corp.example")],
    [("Delivered-To", "a@corp.example"), ("X-Gm-Original-To", "gm@corp.example")],
    [],
]


@pytest.mark.parametrize("journal", [JOURNAL, " <Journal@Corp.Example> ", None])
@pytest.mark.parametrize("headers", RECIPIENT_CASES)
def test_the_parser_mirrors_the_original_recipient_choice(db, headers, journal):
    from psycopg.types.json import Jsonb

    from worker.mime import parse_message

    lines = [f"{name}: {value}" for name, value in [("From", "a@b.example"), *headers]]
    raw = ("\r\n".join([*lines, "Subject: x", "", "body", ""])).encode()
    evidence = parse_message(raw, journal_address=journal).recipient_evidence
    row = db.execute(
        "SELECT * FROM logic.original_recipient(%s, %s)", [Jsonb(evidence.candidates), journal]
    ).fetchone()
    assert (row["original_recipient"], row["source"], row["confidence"]) == (
        evidence.original_recipient,
        evidence.source,
        evidence.confidence,
    )
