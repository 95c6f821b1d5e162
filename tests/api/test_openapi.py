"""GET /openapi.json: the document is valid, complete and true.

- Coverage: every route of the running app (its router, not a list kept here) is documented
  with the same method and path template, and every documented operation is routed.
- Structure: checked by hand (openapi-spec-validator is not a dependency of the project):
  required top-level keys, responses on every operation, unique operationIds, every `$ref`
  resolves, path parameters declared exactly.
- Conventions: error responses, CSRF header on non-GET, minimum role per operation, `items`
  on list endpoints.
- Truth: real responses of the API, through a session, conform to the documented schemas.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from app import openapi
from app.server import _UNLIMITED_PATHS, ROUTES, create_app
from devtools.fake_pubsub import envelope_for
from kernel.blobstore import LocalBlobStore
from tests.fixtures.api import ApiUser, api_settings, dev_login
from tests.fixtures.seed import Seed

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CSRF_REF = "#/components/parameters/CsrfToken"
# The paths the app serves outside ROUTES: /metrics when ENABLE_PROMETHEUS_METRICS.
EXTRA_PATHS = {("GET", "/metrics")}
# Lists the web client reads as {items: [...]} and as bare arrays (its contract).
LIST_ENDPOINTS = {
    "/tickets",
    "/ops/mailboxes/sync",
    "/ops/messages/collisions",
    "/ops/jobs/dlq",
}
ARRAY_ENDPOINTS = {
    "/queues",
    "/mailboxes",
    "/tickets/routing/allowlist",
    "/tickets/routing/rules",
    "/tickets/saved-views",
}
# Operations that never touch the database, hence never answer 503.
NO_DATABASE = {"/healthz", "/auth/csrf", "/openapi.json"}


def _operations(doc: dict[str, Any]):
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise KeyError(ref)
        node = node[part]
    return node


def _deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _resolve(doc, node["$ref"])
    return node


def _refs(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def structural_problems(doc: dict[str, Any]) -> list[str]:
    """What makes `doc` an invalid OpenAPI 3.1 document, as far as this project uses it."""
    problems: list[str] = []
    for key in ("openapi", "info", "paths", "components"):
        if key not in doc:
            problems.append(f"missing top-level {key}")
    if not re.fullmatch(r"3\.(0\.3|1\.\d+)", str(doc.get("openapi", ""))):
        problems.append(f"unexpected openapi version {doc.get('openapi')!r}")
    for key in ("title", "version"):
        if not isinstance(doc.get("info", {}).get(key), str):
            problems.append(f"info.{key} missing")
    schemes = doc.get("components", {}).get("securitySchemes", {})
    for requirement in doc.get("security", []):
        problems += [f"unknown security scheme {n}" for n in requirement if n not in schemes]
    for ref in _refs(doc):
        try:
            _resolve(doc, ref)
        except KeyError:
            problems.append(f"unresolved $ref {ref}")
    operation_ids: set[str] = set()
    for path, item in doc.get("paths", {}).items():
        if not path.startswith("/"):
            problems.append(f"path {path} does not start with /")
        template_params = set(re.findall(r"\{([^}]+)\}", path))
        for method in item:
            if method not in METHODS and method not in ("parameters", "summary", "description"):
                problems.append(f"{path}: unknown key {method}")
        for method, operation in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            op_id = operation.get("operationId")
            if not isinstance(op_id, str) or not op_id:
                problems.append(f"{where}: no operationId")
            elif op_id in operation_ids:
                problems.append(f"{where}: duplicate operationId {op_id}")
            else:
                operation_ids.add(op_id)
            responses = operation.get("responses")
            if not isinstance(responses, dict) or not responses:
                problems.append(f"{where}: no responses")
                continue
            for status, response in responses.items():
                if status != "default" and not re.fullmatch(r"[1-5](\d\d|XX)", status):
                    problems.append(f"{where}: bad status {status}")
                try:
                    if "description" not in _deref(doc, response):
                        problems.append(f"{where} {status}: response without description")
                except KeyError:
                    pass  # reported as an unresolved $ref
            for requirement in operation.get("security", []):
                problems += [
                    f"{where}: unknown scheme {n}" for n in requirement if n not in schemes
                ]
            declared_path_params: set[str] = set()
            seen: set[tuple[str, str]] = set()
            for parameter in operation.get("parameters", []) + item.get("parameters", []):
                try:
                    parameter = _deref(doc, parameter)
                except KeyError:
                    continue
                name, location = parameter.get("name"), parameter.get("in")
                if location not in ("path", "query", "header", "cookie") or not name:
                    problems.append(f"{where}: bad parameter {parameter}")
                    continue
                if (name, location) in seen:
                    problems.append(f"{where}: parameter {name} in {location} twice")
                seen.add((name, location))
                if "schema" not in parameter and "content" not in parameter:
                    problems.append(f"{where}: parameter {name} has no schema")
                if location == "path":
                    declared_path_params.add(name)
                    if parameter.get("required") is not True:
                        problems.append(f"{where}: path parameter {name} not required")
            if declared_path_params != template_params:
                problems.append(
                    f"{where}: path parameters declared {sorted(declared_path_params)}, "
                    f"template has {sorted(template_params)}"
                )
            body = operation.get("requestBody")
            if body is not None and not _deref(doc, body).get("content"):
                problems.append(f"{where}: requestBody without content")
    return problems


# ------------------------------------------------------------------ the document itself


def test_document_is_structurally_valid():
    assert structural_problems(openapi.document()) == []


def test_document_validates_against_the_openapi_31_schema():
    from openapi_spec_validator import validate

    validate(openapi.document())  # raises with the first violation


def test_structural_check_catches_broken_documents():
    doc = openapi.document()
    broken = copy.deepcopy(doc)
    broken["paths"]["/tickets/{ticket_id}"]["get"]["parameters"] = []
    broken["paths"]["/me"]["get"]["responses"] = {}
    broken["paths"]["/queues"]["post"]["requestBody"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchThing"
    }
    broken["paths"]["/queues"]["get"]["operationId"] = "getMe"
    del broken["info"]
    problems = "\n".join(structural_problems(broken))
    assert "GET /tickets/{ticket_id}: path parameters declared [], template has ['ticket_id']" in (
        problems
    )
    assert "GET /me: no responses" in problems
    assert "unresolved $ref #/components/schemas/NoSuchThing" in problems
    assert "duplicate operationId getMe" in problems
    assert "missing top-level info" in problems


def test_every_referenced_schema_exists_and_every_schema_is_used():
    doc = openapi.document()
    schemas = doc["components"]["schemas"]
    referenced = {
        ref.rsplit("/", 1)[1] for ref in _refs(doc) if ref.startswith("#/components/schemas/")
    }
    assert referenced - set(schemas) == set()
    # A schema nobody references is a shape that drifted away from every operation.
    assert set(schemas) - referenced == set()
    for name in ("Ticket", "TicketDetail", "Message", "Attachment", "Event", "Note", "Queue"):
        assert name in schemas
    for name in ("Mailbox", "SyncStatus", "AllowlistEntry", "Rule", "RoutingDecision", "Me"):
        assert name in schemas
    assert schemas["Error"]["required"] == ["detail", "code"]


def test_every_operation_declares_its_errors_role_and_csrf():
    doc = openapi.document()
    roles = {(route.method, route.path): route.min_role for route in ROUTES}
    csrf_checked = {(route.method, route.path): route.csrf for route in ROUTES}
    roles[("GET", "/metrics")] = None
    responses = doc["components"]["responses"]
    for method, path, operation in _operations(doc):
        where = f"{method} {path}"
        min_role = roles[(method, path)]
        declared = operation["responses"]
        assert operation["x-min-role"] == min_role, where
        if min_role is None:
            assert operation.get("security") == [], f"{where} needs no session"
            assert "Minimum role" not in operation["description"], where
        else:
            assert "security" not in operation, f"{where} uses the session cookie"
            assert f"Minimum role: {min_role}." in operation["description"], where

        expected = {"default"}
        if min_role is not None:
            expected.add("401")
        needs_csrf = method != "GET" and csrf_checked.get((method, path), True)
        if min_role in ("agent", "admin") or needs_csrf:
            expected.add("403")  # role, or csrf_failed
        if path not in _UNLIMITED_PATHS:
            expected.add("429")
        if "{" in path:
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"400", "422"}  # invalid_json, invalid field values
        if path not in NO_DATABASE:
            expected.add("503")
        missing = expected - set(declared)
        assert not missing, f"{where} does not declare {sorted(missing)}"
        for status, response in declared.items():
            if status.startswith(("4", "5")) or status == "default":
                assert set(response) == {"$ref"}, f"{where} {status}: use a shared response"
                shared = _resolve(doc, response["$ref"])
                assert shared in responses.values()
                assert shared["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }

        csrf = [p for p in operation.get("parameters", []) if p.get("$ref") == CSRF_REF]
        if not needs_csrf:
            assert csrf == [], f"{where} needs no CSRF token"
        else:
            assert len(csrf) == 1, f"{where} must declare the x-csrf-token header"
    csrf_parameter = doc["components"]["parameters"]["CsrfToken"]
    assert csrf_parameter["name"] == "x-csrf-token"
    assert csrf_parameter["in"] == "header" and csrf_parameter["required"] is True
    assert doc["components"]["securitySchemes"]["session"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "oss_session",
        "description": "Session cookie set by login (HttpOnly).",
    }


def test_list_endpoints_document_items():
    doc = openapi.document()
    paged = {path for method, path, _ in _operations(doc) if method == "GET"} & LIST_ENDPOINTS
    assert paged == LIST_ENDPOINTS
    for path in LIST_ENDPOINTS:
        media = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        schema = _deref(doc, media["schema"])
        assert schema["type"] == "object" and "items" in schema["required"], path
        assert schema["properties"]["items"]["type"] == "array", path
        assert "items" in media["example"], path
    for path in ARRAY_ENDPOINTS:
        media = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        schema = _deref(doc, media["schema"])
        assert schema["type"] == "array" and "$ref" in schema["items"], path
        assert media["example"] == [], path
    ticket_page = _deref(
        doc,
        doc["paths"]["/tickets"]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ],
    )
    assert {"items", "next_cursor"} <= set(ticket_page["required"])


# ------------------------------------------------------------------ routes ↔ document


def _routed(app) -> set[tuple[str, str]]:
    """(method, path template) of every route of the app, HEAD and internals left out."""
    operations = set()
    for route in app.router.routes():
        resource = route.resource
        if route.method in ("HEAD", "*") or resource is None:
            continue
        operations.add((route.method, resource.canonical))
    return operations


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for method, path, _ in _operations(doc)}


async def test_routes_and_documented_operations_are_the_same(api_factory):
    # Every optional route on: metrics, and the push webhook.
    server = await api_factory(enable_prometheus_metrics=True, gmail_push_token="push-secret")
    routed = _routed(server.app)
    documented = _documented(openapi.document())
    assert routed - documented == set(), "routes without documentation"
    assert documented - routed == set(), "documented operations that are not routed"
    assert routed == {(r.method, r.path) for r in ROUTES} | EXTRA_PATHS
    assert ("GET", "/openapi.json") in routed


def test_coverage_check_fails_when_a_route_is_undocumented(db_url, tmp_path: Path):
    # The app as create_app builds it (not started: the router is still open), plus a route
    # added without documentation, as a new handler module would add one.
    settings = api_settings(
        local_blob_dir=tmp_path, enable_prometheus_metrics=True, gmail_push_token="push-secret"
    )
    app = create_app(settings, db_url)

    async def undocumented(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_route("GET", "/tickets/{ticket_id}/undocumented", undocumented)
    assert _routed(app) - _documented(openapi.document()) == {
        ("GET", "/tickets/{ticket_id}/undocumented")
    }
    # ... and a documented operation nobody routes is caught the other way round.
    doc = openapi.document()
    doc["paths"]["/tickets/{ticket_id}"]["delete"] = doc["paths"]["/tickets/{ticket_id}"]["get"]
    assert _documented(doc) - _routed(app) == {("DELETE", "/tickets/{ticket_id}")}


async def test_openapi_json_is_served_without_a_session(api_factory):
    server = await api_factory(session_cookie_name="helpdesk_session")
    client = TestClient(server)
    await client.start_server()
    try:
        response = await client.get("/openapi.json")
        assert response.status == 200
        assert response.content_type == "application/json"
        served = await response.json()
    finally:
        await client.session.close()
    assert structural_problems(served) == []
    assert served["components"]["securitySchemes"]["session"]["name"] == "helpdesk_session"
    expected = openapi.document()
    expected["components"]["securitySchemes"]["session"]["name"] = "helpdesk_session"
    assert served == expected


# ------------------------------------------------------------------ real responses conform


def conformance_errors(doc: dict[str, Any], value: Any, schema: Any, at: str = "$") -> list[str]:
    """A small JSON Schema checker for the keywords this document uses."""
    schema = _deref(doc, schema)
    errors: list[str] = []
    if "allOf" in schema:
        for part in schema["allOf"]:
            errors += conformance_errors(doc, value, part, at)
    if "anyOf" in schema and not any(
        not conformance_errors(doc, value, part, at) for part in schema["anyOf"]
    ):
        errors.append(f"{at}: matches none of anyOf")
    if "oneOf" in schema:
        matching = [p for p in schema["oneOf"] if not conformance_errors(doc, value, p, at)]
        if len(matching) != 1:
            errors.append(f"{at}: matches {len(matching)} of oneOf")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{at}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} not in {schema['enum']}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
        }
        if not any(checks[t](value) for t in types):
            return [*errors, f"{at}: {value!r} is not {types}"]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{at}: missing {name}")
        for name, item in value.items():
            if name in properties:
                errors += conformance_errors(doc, item, properties[name], f"{at}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{at}: undocumented property {name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += conformance_errors(
                    doc, item, schema["additionalProperties"], f"{at}.{name}"
                )
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += conformance_errors(doc, item, schema["items"], f"{at}[{index}]")
    return errors


def test_conformance_checker_rejects_wrong_shapes():
    doc = openapi.document()
    ticket = {"$ref": "#/components/schemas/Ticket"}
    assert conformance_errors(doc, {"id": 1}, ticket)  # required properties missing
    error = {"$ref": "#/components/schemas/Error"}
    assert conformance_errors(doc, {"detail": "x", "code": "y"}, error) == []
    assert conformance_errors(doc, {"detail": "x", "code": 3}, error) == [
        "$.code: 3 is not ['string']"
    ]
    status = {"$ref": "#/components/schemas/TicketStatus"}
    assert conformance_errors(doc, "archived", status)


class Checker:
    """Calls the API and checks each answer against the documented operation."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.checked: set[tuple[str, str]] = set()

    async def check(self, response: ClientResponse, method: str, template: str, status: int) -> Any:
        body = await response.read()
        assert response.status == status, f"{method} {template}: {response.status} {body[:300]!r}"
        operation = self.doc["paths"][template][method.lower()]
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} {template}: status {status} not documented"
        documented = _deref(self.doc, documented)
        content = documented.get("content", {})
        self.checked.add((method, template))
        if "application/json" in content:
            assert response.content_type == "application/json"
            value = await response.json()
            errors = conformance_errors(self.doc, value, content["application/json"]["schema"])
            assert errors == [], f"{method} {template} {status}: {errors}"
            return value
        if content:
            assert any(media == "*/*" or media == response.content_type for media in content), (
                f"{method} {template}: {response.content_type} not documented"
            )
        else:
            assert body == b"", f"{method} {template}: undocumented body"
        return body


async def test_real_responses_conform_to_the_document(
    api_factory, client_factory, db, tmp_path: Path
):
    doc = openapi.document()
    blob_dir = tmp_path / "blobs"
    server = await api_factory(
        local_blob_dir=blob_dir, enable_prometheus_metrics=True, gmail_push_token="push-secret"
    )
    anonymous = TestClient(server)
    await anonymous.start_server()
    client = TestClient(server)
    await client.start_server()
    c = Checker(doc)
    try:
        await c.check(await anonymous.get("/healthz"), "GET", "/healthz", 200)
        await c.check(await anonymous.get("/readyz"), "GET", "/readyz", 200)
        push = envelope_for("journal@nowhere.example", 12345)
        hook = "/webhooks/gmail/pubsub"
        await c.check(
            await anonymous.post(hook + "?token=push-secret", json=push), "POST", hook, 204
        )
        await c.check(await anonymous.post(hook + "?token=wrong", json=push), "POST", hook, 401)
        await c.check(await anonymous.get("/auth/csrf"), "GET", "/auth/csrf", 200)
        await c.check(await anonymous.get("/openapi.json"), "GET", "/openapi.json", 200)
        await c.check(await anonymous.get("/metrics"), "GET", "/metrics", 200)
        await c.check(await anonymous.get("/me"), "GET", "/me", 401)
        # dev login through the helper, then its answer checked like any other.
        admin: ApiUser = await dev_login(client, "ada@acme.example", "Acme OpenAPI")
        login_schema = doc["paths"]["/auth/dev/login"]["post"]["responses"]["200"]
        assert (
            conformance_errors(
                doc, admin.login, login_schema["content"]["application/json"]["schema"]
            )
            == []
        )
        c.checked.add(("POST", "/auth/dev/login"))
        org_id = admin.login["organization"]["id"]

        await c.check(await admin.get("/me"), "GET", "/me", 200)
        await c.check(
            await admin.post("/auth/switch-org", {"organization_id": org_id}),
            "POST",
            "/auth/switch-org",
            200,
        )
        await c.check(
            await admin.post("/auth/switch-org", {"organization_id": "nope"}),
            "POST",
            "/auth/switch-org",
            422,
        )
        await c.check(
            await admin.client.post("/queues", json={"name": "x"}), "POST", "/queues", 403
        )
        queue = await c.check(
            await admin.post("/queues", {"name": "Billing"}), "POST", "/queues", 201
        )
        await c.check(await admin.post("/queues", {"name": "billing"}), "POST", "/queues", 409)
        listed = await c.check(await admin.get("/queues"), "GET", "/queues", 200)
        assert listed == [queue]

        # Tickets, seeded as the owner (stitching is not under test here).
        seed = Seed(db, org_id, LocalBlobStore(blob_dir))
        ticket_id = seed.ticket(tags=("vip",))
        message_id = seed.message(ticket_id, html_body='<p>Hi</p><img src="cid:logo">')
        attachment_id = seed.attachment(message_id, b"%PDF-1.4 fake", content_id="logo")
        seed.occurrence(message_id, ticket_id)
        page = await c.check(await admin.get("/tickets?limit=1"), "GET", "/tickets", 200)
        assert [t["id"] for t in page["items"]] == [ticket_id]
        await c.check(await admin.get("/tickets?limit=0"), "GET", "/tickets", 422)
        await c.check(await admin.get("/tickets?cursor=zz"), "GET", "/tickets", 400)
        await c.check(
            await admin.patch(f"/tickets/{ticket_id}", {"status": "open", "priority": "high"}),
            "PATCH",
            "/tickets/{ticket_id}",
            200,
        )
        await c.check(
            await admin.patch(f"/tickets/{ticket_id}", {"owner": "me"}),
            "PATCH",
            "/tickets/{ticket_id}",
            422,
        )
        await c.check(
            await admin.post(f"/tickets/{ticket_id}/notes", {"body_markdown": "Called back."}),
            "POST",
            "/tickets/{ticket_id}/notes",
            201,
        )
        detail = await c.check(
            await admin.get(f"/tickets/{ticket_id}"), "GET", "/tickets/{ticket_id}", 200
        )
        assert detail["messages"][0]["attachments"][0]["id"] == attachment_id
        assert detail["messages"][0]["occurrences"] and detail["notes"] and detail["events"]
        await c.check(await admin.get("/tickets/999999"), "GET", "/tickets/{ticket_id}", 404)
        view = await c.check(
            await admin.post(
                "/tickets/saved-views", {"name": "Open", "filters": {"status": "open", "q": None}}
            ),
            "POST",
            "/tickets/saved-views",
            201,
        )
        await c.check(
            await admin.post("/tickets/saved-views", {"name": "x", "filters": {"status": "done"}}),
            "POST",
            "/tickets/saved-views",
            422,
        )
        views = await c.check(
            await admin.get("/tickets/saved-views"), "GET", "/tickets/saved-views", 200
        )
        assert views == [view]
        await c.check(
            await admin.delete(f"/tickets/saved-views/{view['id']}"),
            "DELETE",
            "/tickets/saved-views/{saved_view_id}",
            204,
        )
        download = f"/tickets/{ticket_id}/attachments/{attachment_id}/download"
        template = "/tickets/{ticket_id}/attachments/{attachment_id}/download"
        assert await c.check(await admin.get(download), "GET", template, 200) == b"%PDF-1.4 fake"

        # Mailboxes: the one the seed created.
        mailboxes = await c.check(await admin.get("/mailboxes"), "GET", "/mailboxes", 200)
        mailbox_id = mailboxes[0]["id"]
        base = f"/mailboxes/{mailbox_id}"
        await c.check(
            await admin.get(f"{base}/connectivity"),
            "GET",
            "/mailboxes/{mailbox_id}/connectivity",
            200,
        )
        await c.check(
            await admin.get(f"{base}/sync/status"),
            "GET",
            "/mailboxes/{mailbox_id}/sync/status",
            200,
        )
        await c.check(
            await admin.post(f"{base}/sync/pause?minutes=5"),
            "POST",
            "/mailboxes/{mailbox_id}/sync/pause",
            200,
        )
        await c.check(
            await admin.post(f"{base}/sync/pause?minutes=0"),
            "POST",
            "/mailboxes/{mailbox_id}/sync/pause",
            422,
        )
        await c.check(
            await admin.post(f"{base}/sync/resume"),
            "POST",
            "/mailboxes/{mailbox_id}/sync/resume",
            200,
        )
        await c.check(
            await admin.post(f"{base}/sync/backfill"),
            "POST",
            "/mailboxes/{mailbox_id}/sync/backfill",
            202,
        )
        await c.check(
            await admin.post(f"{base}/sync/history"),
            "POST",
            "/mailboxes/{mailbox_id}/sync/history",
            409,  # no history cursor before the first backfill
        )
        await c.check(
            await admin.post("/mailboxes/gmail/journal/oauth/start"),
            "POST",
            "/mailboxes/gmail/journal/oauth/start",
            503,  # no Google OAuth client configured in tests
        )
        callback = "/mailboxes/gmail/oauth/callback?state=unknown&code=x"
        await c.check(
            await admin.client.get(callback, headers={"Accept": "application/json"}),
            "GET",
            "/mailboxes/gmail/oauth/callback",
            400,
        )
        await c.check(
            await admin.client.get(
                callback, headers={"Accept": "text/html"}, allow_redirects=False
            ),
            "GET",
            "/mailboxes/gmail/oauth/callback",
            303,
        )

        # Send identities and a reply (verifying asks Gmail: no OAuth client here, 503).
        identity = await c.check(
            await admin.post(
                "/tickets/send-identities",
                {"mailbox_id": mailbox_id, "from_email": "support@acme.example"},
            ),
            "POST",
            "/tickets/send-identities",
            201,
        )
        one = f"/tickets/send-identities/{identity['id']}"
        await c.check(
            await admin.post(f"{one}/verify"),
            "POST",
            "/tickets/send-identities/{send_identity_id}/verify",
            503,
        )
        reply = {
            "send_identity_id": identity["id"],
            "to_emails": ["casey@example.net"],
            "subject": "Printer",
            "body_text": "On it.",
        }
        reply_path = "/tickets/{ticket_id}/reply"
        await c.check(
            await admin.post(f"/tickets/{ticket_id}/reply", reply), "POST", reply_path, 422
        )
        db.execute(
            "UPDATE core.send_identities SET status = 'verified' WHERE id = %s", [identity["id"]]
        )
        await c.check(
            await admin.post(f"/tickets/{ticket_id}/reply", reply), "POST", reply_path, 202
        )
        replied = await c.check(
            await admin.get(f"/tickets/{ticket_id}"), "GET", "/tickets/{ticket_id}", 200
        )
        assert [m["outbound_send"]["state"] for m in replied["messages"] if m["outbound_send"]] == [
            "queued"
        ]
        await c.check(
            await admin.get("/tickets/send-identities"), "GET", "/tickets/send-identities", 200
        )
        await c.check(
            await admin.patch(one, {"from_name": "Acme Support"}),
            "PATCH",
            "/tickets/send-identities/{send_identity_id}",
            200,
        )
        await c.check(
            await admin.delete(one), "DELETE", "/tickets/send-identities/{send_identity_id}", 204
        )

        # Routing administration, simulator and re-route.
        entry = await c.check(
            await admin.post("/tickets/routing/allowlist", {"pattern": "support@acme.example"}),
            "POST",
            "/tickets/routing/allowlist",
            201,
        )
        await c.check(
            await admin.get("/tickets/routing/allowlist"), "GET", "/tickets/routing/allowlist", 200
        )
        await c.check(
            await admin.patch(f"/tickets/routing/allowlist/{entry['id']}", {"is_enabled": True}),
            "PATCH",
            "/tickets/routing/allowlist/{allowlist_id}",
            200,
        )
        rule = await c.check(
            await admin.post(
                "/tickets/routing/rules",
                {
                    "name": "Billing",
                    "match_sender_domain_pattern": "example.net",
                    "action_assign_queue_id": queue["id"],
                    "action_add_tags": ["billing"],
                },
            ),
            "POST",
            "/tickets/routing/rules",
            201,
        )
        await c.check(
            await admin.get("/tickets/routing/rules"), "GET", "/tickets/routing/rules", 200
        )
        await c.check(
            await admin.patch(f"/tickets/routing/rules/{rule['id']}", {"priority": 5}),
            "PATCH",
            "/tickets/routing/rules/{rule_id}",
            200,
        )
        for recipient in ("support@acme.example", "other@acme.example"):
            await c.check(
                await admin.post(
                    "/tickets/routing/simulate",
                    {
                        "recipient": recipient,
                        "sender_email": "casey@example.net",
                        "direction": "inbound",
                    },
                ),
                "POST",
                "/tickets/routing/simulate",
                200,
            )
        await c.check(
            await admin.post(f"/tickets/{ticket_id}/reroute"),
            "POST",
            "/tickets/{ticket_id}/reroute",
            200,
        )
        await c.check(
            await admin.delete(f"/tickets/routing/rules/{rule['id']}"),
            "DELETE",
            "/tickets/routing/rules/{rule_id}",
            204,
        )
        await c.check(
            await admin.delete(f"/tickets/routing/allowlist/{entry['id']}"),
            "DELETE",
            "/tickets/routing/allowlist/{allowlist_id}",
            204,
        )

        # Ops.
        await c.check(await admin.get("/ops/mailboxes/sync"), "GET", "/ops/mailboxes/sync", 200)
        await c.check(
            await admin.get("/ops/messages/collisions?limit=5"),
            "GET",
            "/ops/messages/collisions",
            200,
        )
        await c.check(await admin.get("/ops/metrics/overview"), "GET", "/ops/metrics/overview", 200)
        await c.check(
            await admin.post("/ops/messages/collisions/backfill"),
            "POST",
            "/ops/messages/collisions/backfill",
            200,
        )
        await c.check(await admin.get("/ops/jobs/dlq"), "GET", "/ops/jobs/dlq", 200)
        await c.check(
            await admin.post("/ops/jobs/123456/replay"), "POST", "/ops/jobs/{job_id}/replay", 404
        )

        # Sign-in (not configured here: 503; a callback without state: 400), members,
        # invitations, the audit trail and the user's sessions.
        await c.check(await anonymous.get("/auth/google/start"), "GET", "/auth/google/start", 503)
        await c.check(
            await anonymous.get("/auth/google/callback"), "GET", "/auth/google/callback", 400
        )
        other = await dev_login(await client_factory(server), "bo@acme.example", "Acme OpenAPI")
        members = await c.check(await admin.get("/members"), "GET", "/members", 200)
        assert len(members["items"]) == 2
        bo_path = f"/members/{other.login['user']['id']}"
        await c.check(
            await admin.patch(bo_path, {"role": "viewer"}), "PATCH", "/members/{user_id}", 200
        )
        await c.check(
            await admin.patch(f"/members/{admin.login['user']['id']}", {"role": "agent"}),
            "PATCH",
            "/members/{user_id}",
            409,
        )
        invitation = await c.check(
            await admin.post("/invitations", {"email": "cy@acme.example", "role": "viewer"}),
            "POST",
            "/invitations",
            201,
        )
        await c.check(await admin.get("/invitations"), "GET", "/invitations", 200)
        await c.check(
            await admin.delete(f"/invitations/{invitation['id']}"),
            "DELETE",
            "/invitations/{invitation_id}",
            204,
        )
        await c.check(await admin.get("/audit-events?limit=2"), "GET", "/audit-events", 200)
        policy = "/organization/join-policy"
        await c.check(await admin.get(policy), "GET", policy, 200)
        await c.check(
            await admin.patch(policy, {"domain_join_role": "viewer"}), "PATCH", policy, 200
        )
        await c.check(await admin.patch(policy, {"join_policy": "domain"}), "PATCH", policy, 409)
        domains = "/organization/mail-domains"
        await c.check(await admin.put(domains, {"domains": ["acme.example"]}), "PUT", domains, 200)
        await c.check(await admin.put(domains, {"domains": ["nodot"]}), "PUT", domains, 422)
        await c.check(await admin.get(domains), "GET", domains, 200)
        second = await dev_login(await client_factory(server), "ada@acme.example", "Acme OpenAPI")
        await c.check(await admin.get("/me/sessions"), "GET", "/me/sessions", 200)
        await c.check(
            await admin.delete(f"/me/sessions/{second.login['session']['id']}"),
            "DELETE",
            "/me/sessions/{session_id}",
            204,
        )
        await c.check(await other.post("/auth/logout-all"), "POST", "/auth/logout-all", 200)
        await c.check(await admin.delete(bo_path), "DELETE", "/members/{user_id}", 204)

        await c.check(await admin.post("/auth/logout"), "POST", "/auth/logout", 200)
        await c.check(await admin.get("/me"), "GET", "/me", 401)
    finally:
        await anonymous.session.close()
        await client.session.close()

    # Every documented operation was called at least once.
    assert _documented(doc) - c.checked == set()
