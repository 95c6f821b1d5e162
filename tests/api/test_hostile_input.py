"""Hostile input never reaches a 500 (issue 15): one table of input classes, over real HTTP.

Each row is a class of input that once produced a bare 500 or an answer looser than the
OpenAPI document; each is sent to the real app on a real socket (raw bytes where a client
library would refuse to send them) and must get the `{detail, code}` shape, the right
status and the security headers.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field

import pytest

from app.errors import ApiError
from app.push import parse_push
from app.security import SECURITY_HEADERS
from tests.fixtures.api import dev_login

DEEP = 1000  # levels of nesting that overflowed Python's JSON parser


@dataclass(frozen=True)
class Case:
    """One hostile request: `target` is "METHOD path", `body` raw bytes (JSON by default)."""

    name: str
    target: str
    status: int
    code: str | None
    body: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)
    session: bool = True  # send the admin's session cookie
    csrf: bool = True  # send the matching x-csrf-token header
    raw_line: bytes | None = None  # the whole request line, for bytes a URL cannot carry


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


RULE = "/tickets/routing/rules/{rule}"
ALLOWLIST = "/tickets/routing/allowlist/{entry}"

CASES = [
    # 1. NUL in any text value that reaches SQL, with and without a session.
    Case("nul_in_q", "GET /tickets?q=a%00b", 400, "invalid_text"),
    Case("nul_in_status", "GET /tickets?status=open%00", 400, "invalid_text"),
    Case("nul_in_cursor", "GET /tickets?cursor=%00", 400, "invalid_text"),
    Case("nul_in_query_name", "GET /tickets?a%00=1", 400, "invalid_text"),
    Case("nul_in_queue_name", "POST /queues", 400, "invalid_text", _json({"name": "a\0"})),
    Case(
        "nul_in_note",
        "POST /tickets/{ticket}/notes",
        400,
        "invalid_text",
        _json({"body_markdown": "\0"}),
    ),
    Case(
        "nul_in_dev_login",
        "POST /auth/dev/login",
        400,
        "invalid_text",
        _json({"email": "a\0@x.example", "organization_name": "Acme"}),
        session=False,
    ),
    Case(
        "nul_in_json_key",
        "POST /tickets/routing/simulate",
        400,
        "invalid_text",
        _json({"recipient\0": None}),
    ),
    # 2. Deep and large JSON, no session needed.
    Case(
        "deep_json",
        "POST /auth/dev/login",
        400,
        "json_too_deep",
        b"[" * DEEP + b"]" * DEEP,
        session=False,
    ),
    Case(
        "json_at_depth_limit",  # 32 levels parse; the value is then refused for what it is
        "POST /auth/dev/login",
        422,
        "invalid_email",
        b'{"email": ' + b"[" * 31 + b"]" * 31 + b', "organization_name": "Acme"}',
        session=False,
    ),
    Case(
        "deep_json_in_object",
        "POST /tickets/routing/rules",
        400,
        "json_too_deep",
        b'{"name": "r", "action_add_tags": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
    ),
    Case(
        "integer_past_python_digit_limit",
        "POST /tickets/routing/rules",
        400,
        "invalid_json",
        b'{"name": "r", "priority": ' + b"9" * 5000 + b', "action_drop": true}',
    ),
    Case(
        "huge_json", "POST /queues", 413, "payload_too_large", b'{"name": "' + b"a" * 2**21 + b'"}'
    ),
    # 3. Lone surrogates: as a JSON escape, as raw bytes in the body and in the URL.
    Case(
        "surrogate_escape",
        "POST /auth/dev/login",
        400,
        "invalid_text",
        b'{"email": "\\ud800@x.example", "organization_name": "Acme"}',
        session=False,
    ),
    Case(
        "surrogate_bytes_body",
        "POST /queues",
        400,
        "invalid_json",
        b'{"name": "\xed\xa0\x80"}',
    ),
    # Raw in the URL, aiohttp's parser refuses them (400, its own code); percent-encoded,
    # they decode to U+FFFD and are searched for like any text.
    Case(
        "surrogate_bytes_url",
        "GET /tickets",
        400,
        None,
        raw_line=b"GET /tickets?q=\xed\xa0\x80 HTTP/1.1",
    ),
    Case("surrogate_percent_encoded", "GET /tickets?q=%ED%A0%80", 200, None),
    Case(
        "non_utf8_user_agent",
        "POST /auth/dev/login",
        400,
        "invalid_text",
        _json({"email": "a@x.example", "organization_name": "Acme"}),
        headers={"User-Agent": b"\xff\xfe"},
        session=False,
    ),
    # 4. Undecodable tokens are no tokens: 401 and 403, not 500.
    Case(
        "non_utf8_session_cookie",
        "GET /me",
        401,
        None,
        headers={"Cookie": b"oss_session=\xff\xfe\xed\xa0\x80"},
        session=False,
    ),
    Case(
        "non_utf8_csrf_header",
        "POST /queues",
        403,
        "csrf_failed",
        _json({"name": "x"}),
        headers={"x-csrf-token": b"\xff\xfe\xed\xa0\x80"},
        csrf=False,
    ),
    # 5. Search text the tsquery parser once could not stack.
    Case("dashes_in_q", "GET /tickets?q=" + "-" * 40 + "x", 200, None),
    Case("spaced_dashes_in_q", "GET /tickets?q=" + "-%20" * 40 + "x", 200, None),
    Case("dashes_and_parens_in_q", "GET /tickets?q=" + "-(" * 40 + "x", 200, None),
    # 8. Validation as strict as the document.
    Case("simulate_without_body", "POST /tickets/routing/simulate", 422, "invalid_recipient"),
    Case("empty_rule_patch", f"PATCH {RULE}", 422, "no_changes", b"{}"),
    Case("empty_allowlist_patch", f"PATCH {ALLOWLIST}", 422, "no_changes", b"{}"),
    Case("unknown_readiness_scope", "GET /readyz?scope=x", 422, "invalid_scope", session=False),
    Case(
        "empty_assignee_filter", "GET /tickets?assignee_user_id=", 422, "invalid_assignee_user_id"
    ),
    Case(
        "json_as_text_plain",
        "POST /queues",
        415,
        "unsupported_media_type",
        _json({"name": "x"}),
        headers={"Content-Type": b"text/plain"},
    ),
    # 9. A costly glob is refused (runs of * collapse; wildcards are bounded).
    Case(
        "too_many_wildcards",
        "POST /tickets/routing/allowlist",
        422,
        "invalid_pattern",
        _json({"pattern": "*a" * 17}),
    ),
]


@pytest.fixture
async def target(api_server, new_client):
    """The admin's session, CSRF token and ids of a ticket, a rule and an allowlist entry."""
    admin = await dev_login(await new_client(), "admin@acme.example", "Acme")
    rule = await (
        await admin.post("/tickets/routing/rules", json={"name": "r1", "action_set_status": "open"})
    ).json()
    entry = await (
        await admin.post("/tickets/routing/allowlist", json={"pattern": "*@acme.example"})
    ).json()
    cookies = {c.key: c.value for c in admin.client.session.cookie_jar}
    # Without a session, only an anonymous token passes CSRF (and only to sign in).
    anonymous = (await (await (await new_client()).get("/auth/csrf")).json())["csrf_token"]
    return {
        "host": api_server.host,
        "port": api_server.port,
        "cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()).encode(),
        "csrf": admin.csrf.encode(),
        "anonymous_csrf": anonymous.encode(),
        "ids": {"rule": rule["id"], "entry": entry["id"], "ticket": 1},
    }


async def raw_request(host: str, port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; the status, headers (lower-cased names) and body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _build(case: Case, target: dict) -> bytes:
    method, _, path = case.target.partition(" ")
    line = case.raw_line or f"{method} {path.format(**target['ids'])} HTTP/1.1".encode()
    headers = {
        "Host": b"localhost",
        "Connection": b"close",
        "Content-Type": b"application/json",
    }
    cookies = []
    csrf = target["csrf"] if case.session else target["anonymous_csrf"]
    if case.session:
        cookies.append(target["cookie"])
    elif case.csrf:
        cookies.append(b"oss_csrf=" + csrf)
    if cookies:
        headers["Cookie"] = b"; ".join(cookies)
    if case.csrf:
        headers["x-csrf-token"] = csrf
    headers.update(case.headers)
    body = case.body or b""
    headers["Content-Length"] = str(len(body)).encode()
    head = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers.items())
    return line + b"\r\n" + head + b"\r\n" + body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, code: str | None) -> None:
    """The one error shape, with the security headers and no version disclosure."""
    assert headers["content-type"].startswith("application/json"), (headers, body)
    payload = json.loads(body)
    assert set(payload) == {"detail", "code"} and payload["detail"], payload
    if code is not None:
        assert payload["code"] == code, payload
    for name in SECURITY_HEADERS:
        assert name.lower() in headers, name
    assert headers.get("server") == "oss-ticketing"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_hostile_input(target, case: Case):
    status, headers, body = await raw_request(target["host"], target["port"], _build(case, target))
    assert status == case.status, body[:300]
    if status >= 400:
        assert_json_error(status, headers, body, case.code)


# 7. Requests aiohttp refuses before any middleware runs: still our JSON, with our headers.
PARSER_CASES = {
    "url_too_long": b"GET /tickets?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header_too_long": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "unknown_method": b"FR\x00B /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_bytes_in_header_name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX\x01Y: 1\r\n\r\n",
    "length_and_chunked": (
        b"POST /queues HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "not_http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", PARSER_CASES.values(), ids=list(PARSER_CASES))
async def test_parser_errors_are_json(api_server, request_bytes):
    status, headers, body = await raw_request(api_server.host, api_server.port, request_bytes)
    assert 400 <= status < 500, body[:300]
    assert_json_error(status, headers, body, None)


async def test_server_header_names_no_versions(api_server, new_client):
    client = await new_client()
    response = await client.get("/healthz")
    assert response.headers["Server"] == "oss-ticketing"


# The Pub/Sub push envelope is parsed by its own handler (it is authenticated by a token,
# not a session): the same classes of input are refused there too.
def _push(data: bytes) -> bytes:
    return json.dumps({"message": {"data": base64.b64encode(data).decode()}}).encode()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * DEEP + b"]" * DEEP, 400),
        (_push(b"[" * DEEP + b"]" * DEEP), 400),
        (_push(b'{"emailAddress": "a\\u0000@x.example", "historyId": 1}'), 400),
        (_push(b'{"emailAddress": "a\\ud800@x.example", "historyId": 1}'), 400),
        (_push(b'{"emailAddress": "a@x.example", "historyId": 1' + b"0" * 5000 + b"}"), 400),
    ],
    ids=["deep_envelope", "deep_data", "nul_address", "surrogate_address", "huge_history_id"],
)
def test_push_envelopes_are_refused_with_400(body, status):
    with pytest.raises(ApiError) as refused:
        parse_push(body)
    assert refused.value.status == status
