"""Signed ticket markers: sign, verify, and refuse forged, unsigned, truncated or foreign ones."""

from __future__ import annotations

import uuid

import pytest

from kernel.markers import reply_address, ticket_marker, verify_markers

SECRET = "a-test-secret-that-is-long-enough-0123456789"
ORG = uuid.UUID("11111111-2222-3333-4444-555555555555")
OTHER_ORG = uuid.UUID("99999999-2222-3333-4444-555555555555")
SIGNED = ticket_marker(SECRET, ORG, 1234)
SIG = SIGNED.split(".", 1)[1]


def test_marker_and_reply_address_shapes():
    assert SIGNED.startswith("T-1234.") and len(SIG) == 16
    assert reply_address(SECRET, ORG, 1234, "Support+old@Example.com") == (
        f"support+t1234.{SIG}@example.com"
    )
    # Canonical org text: upper-case UUID text signs the same.
    assert ticket_marker(SECRET, str(ORG).upper(), 1234) == SIGNED
    with pytest.raises(ValueError):
        reply_address(SECRET, ORG, 1, "no-at-sign")


@pytest.mark.parametrize(
    ("headers", "addresses", "number", "reasons"),
    [
        ({"x-oss-ticket-id": [SIGNED]}, [], 1234, ["signature verified"]),
        ({"x-oss-ticket-id": [SIGNED.lower()]}, [], 1234, ["signature verified"]),
        ({}, [f"support+t1234.{SIG}@example.com"], 1234, ["signature verified"]),
        (
            {},
            [("delivered-to", f"SUPPORT+T1234.{SIG.upper()}@example.com")],
            1234,
            ["signature verified"],
        ),
        ({"x-oss-ticket-id": ["T-1234.aaaaaaaaaaaaaaaa"]}, [], None, ["bad signature"]),
        ({"x-oss-ticket-id": [f"T-1235.{SIG}"]}, [], None, ["bad signature"]),  # other ticket
        (
            {"x-oss-ticket-id": [ticket_marker(SECRET, OTHER_ORG, 1234)]},
            [],
            None,
            ["bad signature"],
        ),
        (
            {"x-oss-ticket-id": [ticket_marker("another-secret", ORG, 1234)]},
            [],
            None,
            ["bad signature"],
        ),
        ({"x-oss-ticket-id": [SIGNED[:-3]]}, [], None, ["malformed signature"]),  # truncated
        (
            {"x-oss-ticket-id": ["T-1234"]},
            ["support+t1234@example.com"],
            None,
            ["unsigned", "unsigned"],
        ),
        ({"x-oss-ticket-id": ["hello"]}, [], None, ["not a ticket marker"]),
        # A forged marker next to a valid one: the valid one wins, the forgery stays evidence.
        (
            {"x-oss-ticket-id": ["T-9.aaaaaaaaaaaaaaaa"]},
            [f"s+t1234.{SIG}@example.com"],
            1234,
            ["bad signature", "signature verified"],
        ),
    ],
)
def test_verify_markers(headers, addresses, number, reasons):
    verified, evidence = verify_markers(SECRET, ORG, headers, addresses)
    assert verified == number
    assert [marker["reason"] for marker in evidence["markers"]] == reasons
    assert evidence["verified_ticket_number"] == number
    assert [m["valid"] for m in evidence["markers"]] == [r == "signature verified" for r in reasons]


def test_no_marker_no_evidence():
    assert verify_markers(SECRET, ORG, {"subject": ["hi"]}, ["support@example.com"]) == (None, {})
