"""The hand-written part of the API's documentation: the vocabulary and `Doc`.

A route (app/http.py `Route`) carries a `Doc`: what cannot be derived from the route itself —
operationId, tag, summary, a description that adds information, the success response's
schema, the request body, query parameters, and the error statuses the operation adds to the
derived ones. app/openapi.py derives the rest from the route: security, `x-min-role`, the
role sentence, the CSRF header and path parameters, `?limit=`, and the shared error
responses (400/401/403/404/413/415/422/429/503/default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, eq=False)
class Doc:
    """The OpenAPI pieces of one operation that only a person can write."""

    operation_id: str
    tag: str
    summary: str
    response: dict[str, Any]  # the response for the route's success status
    description: str = ""  # the derived role sentence is appended
    body: dict[str, Any] | None = None  # requestBody
    query: tuple[dict[str, Any], ...] = ()  # query parameters besides `limit`
    errors: tuple[int, ...] = ()  # error statuses besides the derived ones
    responses: dict[str, Any] = field(default_factory=dict)  # other statuses (201, 307, ...)


# ------------------------------------------------------------------ schema vocabulary


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or JSON null (OpenAPI 3.1 / JSON Schema 2020-12 style)."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object whose every property is always present except those named `optional`."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


def request_object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A request body object: unknown fields are refused (422 unknown_field)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def present(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An object where `name` is present and matches `schema`."""
    return {"required": [name], "properties": {name: schema}}


def both(first: str, first_schema: dict[str, Any], second: str, second_schema: dict[str, Any]):
    """An object where both fields are present and match their schemas."""
    return {
        "required": [first, second],
        "properties": {first: first_schema, second: second_schema},
    }


def list_of(item: str) -> dict[str, Any]:
    """A page object {items: [item, ...]}."""
    return obj({"items": {"type": "array", "items": ref(item)}})


def array_of(item: str) -> dict[str, Any]:
    """A bare JSON array of `item`."""
    return {"type": "array", "items": ref(item)}


# The input limits of logic.input_limits() (sql/logic/06_input.sql, their one home), which
# the document states as maxLength, maximum and maxItems; tests/sql/test_rules.py keeps this
# copy equal to the database's.
INPUT_LIMITS = {
    "organization_name": 200,
    "queue_name": 100,
    "queue_description": 2000,
    "saved_view_name": 120,
    "rule_name": 200,
    "rule_priority": 10000,
    "rule_tags": 20,
    "tag_length": 50,
    "glob_length": 320,
    "glob_wildcards": 16,
    "note_body": 20000,
    "search_query": 500,
    "ticket_cursor": 400,
    "ticket_page": 100,
    "ops_page": 200,
    "audit_page": 200,
    "display_name": 200,
    "page_default": 50,
    "pause_minutes": 10080,
    "reply_recipients": 50,
    "reply_subject": 994,
    "reply_body": 100000,
    "sender_name": 200,
    "mail_domains": 50,
}

# An e-mail address as logic.is_email_address accepts it (the spaces SQL trims around it
# allowed); tests/sql/test_rules.py keeps it equal to the SQL rule.
EMAIL = {
    "type": "string",
    "maxLength": 320,
    "pattern": "^ *[^@\\s]+@[^@\\s]+\\.[^@\\s]+ *$",
}

# The values of the database's enum types (migrations/, schema core) that the document
# lists; tests/sql/test_rules.py keeps them equal to enum_range of each type.
DATABASE_ENUMS: dict[str, tuple[str, ...]] = {
    "member_role": ("viewer", "agent", "admin"),
    "mailbox_state": ("active", "needs_reconnect", "disabled"),
    "ticket_status": ("new", "open", "pending", "resolved", "closed", "spam"),
    "ticket_priority": ("low", "normal", "high", "urgent"),
}


def enum_of(type_name: str, nullable: bool = False) -> dict[str, Any]:
    """A string of database enum type `type_name` (or null when `nullable`)."""
    values: list[Any] = list(DATABASE_ENUMS[type_name])
    if nullable:
        return {"enum": [*values, None]}
    return {"type": "string", "enum": values}


# A domain name as logic.is_domain_name accepts it (after the trim and lower-casing SQL
# applies); tests/sql/test_rules.py checks the two agree.
_LABEL = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
DOMAIN = {
    "type": "string",
    "maxLength": 253,
    "pattern": f"^ *({_LABEL}\\.)+[a-zA-Z]([a-zA-Z0-9-]{{0,61}}[a-zA-Z0-9])? *$",
}

STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
INT = {"type": "integer"}
NINT = {"type": ["integer", "null"]}
BOOL = {"type": "boolean"}
UUID = {"type": "string", "format": "uuid"}
NUUID = {"type": ["string", "null"], "format": "uuid"}
TS = {"type": "string", "format": "date-time"}
NTS = {"type": ["string", "null"], "format": "date-time"}
OBJ = {"type": "object"}
STR_LIST = {"type": "array", "items": STR}
ROLE = enum_of("member_role")
NBOOL = {"type": ["boolean", "null"]}


def text(max_length: int, nullable: bool = False) -> dict[str, Any]:
    """Required-style text as logic.require_text checks it: not blank, at most max_length."""
    return {
        "type": ["string", "null"] if nullable else "string",
        "maxLength": max_length,
        "pattern": "[^ \\t\\r\\n\\f]",  # something besides the whitespace it trims
    }


# A glob as logic.valid_glob accepts it (spaces around it are trimmed; runs of * count as
# one wildcard).
_GLOB_CHAR = "[^*?\\s\\x00-\\x1f\\x7f\\[\\]{}\\\\]"
GLOB = {
    "type": "string",
    "maxLength": INPUT_LIMITS["glob_length"],
    "pattern": f"^ *(?:(?:{_GLOB_CHAR}*(?:\\*+|\\?)){{1,{INPUT_LIMITS['glob_wildcards']}}}"
    f"{_GLOB_CHAR}*|{_GLOB_CHAR}+) *$",
    "description": f"Glob: * and ? are wildcards (at most {INPUT_LIMITS['glob_wildcards']}; "
    "a run of * is one); no whitespace, [ ] { } or \\.",
}
NGLOB = {**GLOB, "type": ["string", "null"]}


def ok(description: str, schema: str, example: Any = None) -> dict[str, Any]:
    """A JSON response of component schema `schema`."""
    media: dict[str, Any] = {"schema": ref(schema)}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def json_body(schema: str, example: Any = None) -> dict[str, Any]:
    """A required JSON request body of component schema `schema`."""
    media: dict[str, Any] = {"schema": ref(schema)}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


def query(
    name: str, schema: dict[str, Any], description: str | None = None, required: bool = False
) -> dict[str, Any]:
    """A query parameter."""
    parameter: dict[str, Any] = {"name": name, "in": "query"}
    if required:
        parameter["required"] = True
    parameter["schema"] = schema
    if description is not None:
        parameter["description"] = description
    return parameter


NO_CONTENT = {"description": "Removed."}
