"""Signed product markers: how a reply names its ticket in a way nobody else can forge.

Two carriers (SPEC 2.5, step 2):

* the `X-OSS-Ticket-ID` header of mail the product sends: `T-1234.<sig>`;
* the reply address: `support+t1234.<sig>@example.com`, which survives mail clients that
  drop custom headers.

`<sig>` is HMAC-SHA256 over (purpose, organisation id, ticket number), keyed with a key
derived from SECRET_KEY, truncated to 80 bits and written in lower-case base32 (16 chars):
address local parts are case-folded on the way (the parser lower-cases addresses), so the
encoding must survive that. A marker signed for another organisation, a forged or truncated
signature, or an unsigned `T-1234` is recorded as evidence and never trusted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid

MARKER_HEADER = "x-oss-ticket-id"
SIGNATURE_CHARS = 16  # 80 bits of base32
_KEY_PURPOSE = b"oss-ticketing/ticket-marker/v1"
_HEADER_MARKER = re.compile(r"^\s*<?\s*T-(\d{1,18})(?:\.([A-Za-z0-9]*))?\s*>?\s*$", re.IGNORECASE)
_ADDRESS_MARKER = re.compile(r"^[^@+]*\+t(\d{1,18})(?:\.([a-z0-9]*))?@", re.IGNORECASE)
# Addresses worth checking for a `+t<number>` token, with the header each came from.
MARKER_ADDRESS_HEADERS = ("to", "cc", "delivered-to", "x-original-to", "x-gm-original-to")


def _marker_key(secret_key: str) -> bytes:
    # A key of its own: the same SECRET_KEY never signs anything else with this key.
    return hmac.new(secret_key.encode(), _KEY_PURPOSE, hashlib.sha256).digest()


def _signature(secret_key: str, organization_id, ticket_number: int) -> str:
    org = str(uuid.UUID(str(organization_id)))  # canonical text: case cannot change the MAC
    message = f"{org}:{int(ticket_number)}".encode()
    digest = hmac.new(_marker_key(secret_key), message, hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:SIGNATURE_CHARS]


def ticket_marker(secret_key: str, organization_id, ticket_number: int) -> str:
    """The `X-OSS-Ticket-ID` header value naming `ticket_number`: `T-1234.<sig>`."""
    return f"T-{int(ticket_number)}.{_signature(secret_key, organization_id, ticket_number)}"


def reply_address(
    secret_key: str, organization_id, ticket_number: int, support_address: str
) -> str:
    """`support_address` with a signed `+t1234.<sig>` tag (any existing `+tag` is replaced)."""
    local, _, domain = support_address.strip().rpartition("@")
    if not local or not domain:
        raise ValueError(f"not an e-mail address: {support_address!r}")
    local = local.split("+", 1)[0]
    signature = _signature(secret_key, organization_id, ticket_number)
    return f"{local}+t{int(ticket_number)}.{signature}@{domain}".lower()


def _check(
    secret_key: str, organization_id, source: str, value: str, number: str, signature: str | None
) -> dict:
    seen = {"source": source, "value": value[:320], "ticket_number": int(number)}
    if not signature:
        return {**seen, "valid": False, "reason": "unsigned"}
    expected = _signature(secret_key, organization_id, int(number))
    if len(signature) != len(expected):
        return {**seen, "valid": False, "reason": "malformed signature"}
    if not hmac.compare_digest(signature.lower(), expected):
        # Forged, or signed for another organisation or another ticket: indistinguishable.
        return {**seen, "valid": False, "reason": "bad signature"}
    return {**seen, "valid": True, "reason": "signature verified"}


def verify_markers(
    secret_key: str,
    organization_id,
    headers: dict[str, list[str]],
    addresses: list[tuple[str, str]] | list[str],
) -> tuple[int | None, dict]:
    """The ticket number a message's markers prove, and the evidence of every marker seen.

    `headers` maps lower-case header names to values; `addresses` are recipient addresses,
    either plain strings or `(source header, address)` pairs. The header marker is checked
    first, then the addresses in order; the first valid marker wins. Evidence is `{}` when
    the message carries no marker at all.
    """
    seen: list[dict] = []
    for value in headers.get(MARKER_HEADER, []):
        match = _HEADER_MARKER.match(value)
        if match:
            seen.append(_check(secret_key, organization_id, "header", value, *match.groups()))
        else:
            seen.append(
                {
                    "source": "header",
                    "value": value[:320],
                    "valid": False,
                    "reason": "not a ticket marker",
                }
            )
    for item in addresses:
        source, address = item if isinstance(item, tuple) else ("address", item)
        match = _ADDRESS_MARKER.match(address or "")
        if match:
            seen.append(_check(secret_key, organization_id, source, address, *match.groups()))
    if not seen:
        return None, {}
    valid = next((marker for marker in seen if marker["valid"]), None)
    number = valid["ticket_number"] if valid else None
    return number, {"markers": seen, "verified_ticket_number": number}
