"""Rules defined once in logic (sql/logic/05_rules.sql) and mirrored where Python checks first."""

from __future__ import annotations

import re

import pytest

from app import openapi

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


def test_the_openapi_login_schema_mirrors_the_email_rule(db):
    rule = db.execute(
        "SELECT logic.email_address_pattern() AS pattern, logic.max_email_length() AS max"
    ).fetchone()
    email = openapi.SCHEMAS["DevLoginRequest"]["properties"]["email"]
    # The document allows the spaces SQL trims around the address.
    assert email["pattern"] == "^ *" + rule["pattern"][1:-1] + " *$"
    assert email["maxLength"] == rule["max"]
    python = re.compile(email["pattern"])
    for address, valid in ADDRESSES:
        assert (bool(python.match(address)) and len(address) <= email["maxLength"]) is valid
