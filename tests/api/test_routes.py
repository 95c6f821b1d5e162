"""One declaration per operation (app/routes.py): the document is generated from it.

The OpenAPI conventions themselves are asserted in test_openapi.py; here: every route carries
what the generator needs, the SQL function it names exists and is documented, the document
follows a change of the route (it cannot drift), and path ids and limits are parsed once.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from app import openapi
from app.apidoc import Doc, json_body
from app.http import PATH_IDS, Route
from app.routes import ROUTES
from app.server import _UNLIMITED_PATHS

HANDLERS = Path(__file__).resolve().parents[2] / "app" / "handlers"


def _route(method: str, path: str) -> Route:
    return next(r for r in ROUTES if (r.method, r.path) == (method, path))


def _sql_functions(route: Route) -> tuple[str, ...]:
    return (route.sql,) if isinstance(route.sql, str) else tuple(route.sql or ())


def test_each_operation_is_declared_once_with_its_documentation():
    keys = [(route.method, route.path) for route in ROUTES]
    assert len(keys) == len(set(keys))
    operation_ids = [route.doc.operation_id for route in ROUTES]
    assert len(operation_ids) == len(set(operation_ids))
    for route in ROUTES:
        assert isinstance(route.doc, Doc), route.path
        assert route.min_role in (None, "viewer", "agent", "admin"), route.path
        assert 200 <= route.status < 300, route.path


def test_every_route_names_the_sql_it_calls_and_the_handler_calls_it():
    for route in ROUTES:
        source = inspect.getsource(route.handler)
        for function in _sql_functions(route):
            assert re.fullmatch(r"api\.[a-z_]+", function), function
            assert f"{function}(" in source, f"{route.path}: handler does not call {function}"
        called = set(re.findall(r"\b(api\.[a-z_]+)\(", source))
        assert called <= set(_sql_functions(route)), f"{route.path}: undeclared SQL {called}"


def test_the_declared_sql_functions_exist_and_are_documented(db):
    rows = db.execute(
        "SELECT n.nspname || '.' || p.proname AS name, "
        "obj_description(p.oid, 'pg_proc') AS comment "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'api'"
    ).fetchall()
    comments = {row["name"]: row["comment"] for row in rows}
    for route in ROUTES:
        for function in _sql_functions(route):
            assert function in comments, f"{route.path}: no function {function}"
            assert comments[function], f"{function} has no COMMENT ON"


def test_the_sql_comment_names_the_operation_that_calls_it(db):
    """A COMMENT ON that starts with an operation ("GET /tickets/{id}: ...") names this
    route's method and path (path ids written {id} or by name; a query string may follow)."""
    rows = db.execute(
        "SELECT n.nspname || '.' || p.proname AS name, "
        "obj_description(p.oid, 'pg_proc') AS comment "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'api'"
    ).fetchall()
    comments = {row["name"]: row["comment"] or "" for row in rows}
    named = 0
    for route in ROUTES:
        for function in _sql_functions(route):
            match = re.match(r"(GET|POST|PATCH|PUT|DELETE) (/[^\s:?,]*)", comments[function])
            if match is None:
                continue  # a helper of the operation, described in its own words
            named += 1
            method, path = match.groups()
            ours = re.sub(r"\{[^}]+\}", "{id}", route.path)
            assert (method, re.sub(r"\{[^}]+\}", "{id}", path)) == (route.method, ours), function
    assert named >= len(ROUTES) - 3


def test_public_operations_say_so_and_the_others_name_their_role():
    doc = openapi.document()
    for route in ROUTES:
        description = doc["paths"][route.path][route.method.lower()]["description"]
        if route.min_role is None:
            assert description.endswith("No session needed."), route.path
        else:
            assert description.endswith(f"Minimum role: {route.min_role}."), route.path
        assert description.count("Minimum role") <= 1, route.path


def test_operations_exempt_from_rate_limiting_never_document_429():
    # Before generation the push webhook documented a 429 the server never sends.
    doc = openapi.document()
    assert {"/healthz", "/readyz", "/metrics", "/webhooks/gmail/pubsub"} == _UNLIMITED_PATHS
    for route in ROUTES:
        responses = doc["paths"][route.path][route.method.lower()]["responses"]
        assert ("429" in responses) == (route.path not in _UNLIMITED_PATHS), route.path


def test_success_response_is_documented_under_the_declared_status():
    doc = openapi.document()
    for route in ROUTES:
        responses = doc["paths"][route.path][route.method.lower()]["responses"]
        assert responses[str(route.status)] == route.doc.response, route.path


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (
            {"min_role": "admin"},
            lambda op: (
                op["x-min-role"] == "admin"
                and "security" not in op
                and op["description"].endswith("Minimum role: admin.")
                and {"401", "403"} <= set(op["responses"])
            ),
        ),
        (
            {"min_role": None},
            lambda op: (
                op["x-min-role"] is None
                and op["security"] == []
                and op["description"].endswith("No session needed.")
                and "401" not in op["responses"]
            ),
        ),
        (
            {"method": "POST"},
            lambda op: op["parameters"][0] == {"$ref": "#/components/parameters/CsrfToken"},
        ),
        ({"rate_limited": False}, lambda op: "429" not in op["responses"]),
        ({"database": False}, lambda op: "503" not in op["responses"]),
        ({"status": 202}, lambda op: "202" in op["responses"] and "200" not in op["responses"]),
    ],
)
def test_the_document_follows_the_route(change, check):
    """Change a declaration and the document changes with it: nothing to keep in step."""
    route = dataclasses.replace(_route("GET", "/queues"), **change)
    doc = openapi.document((route,))
    assert check(doc["paths"]["/queues"][route.method.lower()])


def test_a_body_brings_its_edge_errors_and_a_path_id_its_parameter_and_404():
    route = dataclasses.replace(
        _route("GET", "/queues"),
        method="PATCH",
        path="/queues/{ticket_id}",
        doc=dataclasses.replace(_route("GET", "/queues").doc, body=json_body("QueueCreate")),
    )
    operation = openapi.document((route,))["paths"]["/queues/{ticket_id}"]["patch"]
    assert {"400", "404", "413", "415", "422"} <= set(operation["responses"])
    path_parameters = [p for p in operation["parameters"] if p.get("in") == "path"]
    assert [p["name"] for p in path_parameters] == ["ticket_id"]
    assert path_parameters[0]["description"] == PATH_IDS["ticket_id"].description


def test_path_ids_and_limits_are_parsed_in_one_place():
    for path in sorted(HANDLERS.glob("*.py")):
        source = path.read_text()
        assert "match_info[" not in source, f"{path.name}: use app.http.path_id"
        assert 'query.get("limit")' not in source, f"{path.name}: use app.http.query_limit"
        assert "set_status(" not in source, f"{path.name}: declare the route's status"
    for route in ROUTES:
        for name in re.findall(r"\{([^}]+)\}", route.path):
            assert name in PATH_IDS, f"{route.path}: {name} is not a declared path id"
        has_limit = "query_limit(" in inspect.getsource(route.handler)
        assert has_limit == (route.limit is not None), route.path


def test_a_path_id_never_takes_a_literal_segment_of_another_route():
    from app.server import router_path

    path = router_path("/tickets/{ticket_id}", ROUTES)
    pattern = re.compile("^" + re.sub(r"\{(\w+):([^{}]+)\}", r"(?P<\1>\2)", path) + "$")
    assert pattern.match("/tickets/17")
    assert not pattern.match("/tickets/send-identities")
    assert not pattern.match("/tickets/routing")
    assert router_path("/queues", ROUTES) == "/queues"


async def test_an_undeclared_method_on_a_literal_path_is_405(api_server, client_factory):
    client = await client_factory(api_server)
    response = await client.patch("/tickets/send-identities")
    assert response.status == 405
