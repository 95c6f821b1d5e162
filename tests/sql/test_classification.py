"""logic.classify_message: direction, auto-reply and delivery report from stored headers, with
the reasons recorded as evidence; the reply subject rule."""

from __future__ import annotations

import pytest
from psycopg.types.json import Jsonb

from tests.fixtures.seed import mailbox, organization


@pytest.fixture
def acme(db) -> str:
    org = organization(db)
    box = mailbox(db, org, "support@acme.example")
    db.execute(
        "INSERT INTO core.send_identities (organization_id, mailbox_id, from_email) "
        "VALUES (%s, %s, 'support@acme.example')",
        [org, box],
    )
    db.execute(
        "INSERT INTO core.organization_mail_domains (organization_id, domain) "
        "VALUES (%s, 'staff.acme.example')",
        [org],
    )
    return org


def classify(db, org: str, sender: str, headers: dict, evidence: dict | None = None) -> dict:
    return db.execute(
        "SELECT logic.classify_message(%s, %s, %s, %s) AS c",
        [org, sender, Jsonb(headers), Jsonb(evidence or {})],
    ).fetchone()["c"]


@pytest.mark.parametrize(
    ("sender", "direction", "rule"),
    [
        ("support@acme.example", "outbound", "org_sender"),
        ("SUPPORT@Acme.Example", "outbound", "org_sender"),
        ("jo@staff.acme.example", "outbound", "org_sender"),
        ("jo@acme.example", "inbound", None),  # not an identity, not a configured domain
        ("casey@client.example", "inbound", None),
        (None, "inbound", None),
    ],
)
def test_the_organisations_own_mail_is_outbound(db, acme, sender, direction, rule):
    result = classify(db, acme, sender, {})
    assert result["direction"] == direction
    assert [r["rule"] for r in result["reasons"]] == ([rule] if rule else [])


@pytest.mark.parametrize(
    ("headers", "automated", "rule"),
    [
        ({"auto-submitted": ["auto-replied"]}, "auto_reply", "auto_submitted"),
        ({"auto-submitted": ["auto-generated; owner=x"]}, "auto_reply", "auto_submitted"),
        ({"auto-submitted": ["No"]}, None, None),
        ({"precedence": ["bulk"]}, "auto_reply", "precedence"),
        ({"precedence": [" Junk "]}, "auto_reply", "precedence"),
        ({"precedence": ["list"]}, "auto_reply", "precedence"),
        ({"precedence": ["first-class"]}, None, None),
        ({"x-autoreply": ["yes"]}, "auto_reply", "autoresponder_header"),
        ({"x-autorespond": ["1"]}, "auto_reply", "autoresponder_header"),
        ({"x-auto-response-suppress": ["All"]}, "auto_reply", "autoresponder_header"),
        ({"x-auto-response-suppress": ["DR, RN"]}, None, None),
        (
            {"content-type": ['multipart/report; report-type="delivery-status"; boundary=x']},
            "bounce",
            "delivery_report",
        ),
        ({"content-type": ["multipart/report; report-type=disposition-notification"]}, None, None),
        ({}, None, None),
    ],
)
def test_machines_are_recognised_from_their_headers(db, acme, headers, automated, rule):
    result = classify(db, acme, "casey@client.example", headers)
    assert result["automated"] == automated
    assert [r["rule"] for r in result["reasons"]] == ([rule] if rule else [])


def test_a_parsed_delivery_report_is_a_bounce_whatever_its_headers(db, acme):
    result = classify(db, acme, "mailer-daemon@x.example", {}, {"delivery_report": {}})
    assert result["automated"] == "bounce"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Printer on fire", "Re: Printer on fire"),
        ("Re: Printer on fire", "Re: Printer on fire"),
        ("RE: re:Re[2]: Printer", "Re: Printer"),
        ("  Fwd: Printer ", "Re: Fwd: Printer"),
    ],
)
def test_a_reply_subject_has_one_re(db, subject, expected):
    assert db.execute("SELECT logic.reply_subject(%s) AS s", [subject]).fetchone()["s"] == expected


def test_the_allowlist_spams_only_inbound_mail(db, acme):
    def decide(direction: str) -> dict:
        return db.execute(
            "SELECT logic.route_decision(%s, 'casey@client.example', 'support@acme.example', %s)"
            " AS d",
            [acme, direction],
        ).fetchone()["d"]

    inbound, outbound = decide("inbound"), decide("outbound")
    assert (inbound["outcome"], inbound["status"]) == ("auto_spam", "spam")
    assert (outbound["outcome"], outbound["status"]) == ("no_rule", None)
    assert outbound["allowlisted"] is False
