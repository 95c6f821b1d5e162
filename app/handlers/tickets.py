"""Tickets: list/search, detail, PATCH, notes (agents), attachment download.

Handlers parse the request, make one SQL call and send its jsonb back. The download is the
exception that needs Python after SQL: the attachment's blob is redirected to (S3,
presigned) or streamed (local store) once the database has said it belongs to the ticket.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from psycopg.types.json import Jsonb

from app.errors import ApiError
from app.http import (
    BLOBS,
    SETTINGS,
    Route,
    read_json_object,
    read_json_patch,
    required_str,
    respond_sql,
    sql_json,
)
from kernel.blobstore import BlobNotFound, BlobStream, content_disposition

# Path ids are bigints; anything else names no ticket (18 digits stay below 2^63).
_ID_RE = re.compile(r"^[0-9]{1,18}$")
# What may go into a Content-Type header as it is; anything else is served as bytes.
_MIME_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9!#$&^_.+-]{1,127}$")
_OCTET_STREAM = "application/octet-stream"


def _path_id(request: web.Request, name: str, code: str, detail: str) -> int:
    value = request.match_info[name]
    if not _ID_RE.match(value):
        raise ApiError(404, code, detail)
    return int(value)


def _ticket_id(request: web.Request) -> int:
    return _path_id(
        request, "ticket_id", "ticket_not_found", "No ticket with that id in this organization."
    )


def _query_uuid(request: web.Request, name: str) -> str | None:
    # Absent means no filter; present but empty is no UUID (as the document says).
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ApiError(422, f"invalid_{name}", f"{name} must be a UUID.") from exc


def _query_limit(request: web.Request) -> int | None:
    value = request.query.get("limit") or None
    if value is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,9}", value):
        raise ApiError(422, "invalid_limit", "limit must be an integer between 1 and 100.")
    return int(value)


async def list_tickets(request: web.Request) -> web.Response:
    """Tickets, newest activity first, one keyset page at a time."""
    return await respond_sql(
        request,
        "api.ticket_list(%s, %s, %s, %s, %s, %s)",
        [
            request.query.get("status") or None,
            request.query.get("q") or None,
            _query_uuid(request, "assignee_user_id"),
            _query_uuid(request, "assignee_queue_id"),
            _query_limit(request),
            request.query.get("cursor") or None,
        ],
    )


async def get_ticket(request: web.Request) -> web.Response:
    """One ticket with its messages, attachments, occurrences, events and notes."""
    return await respond_sql(request, "api.ticket_detail(%s)", [_ticket_id(request)])


async def update_ticket(request: web.Request) -> web.Response:
    """Change status, priority or assignee (agent); the database validates the values."""
    ticket_id = _ticket_id(request)
    body = await read_json_patch(request)
    return await respond_sql(request, "api.ticket_update(%s, %s)", [ticket_id, Jsonb(body)])


async def add_note(request: web.Request) -> web.Response:
    """Add an internal note (agent)."""
    ticket_id = _ticket_id(request)
    body = await read_json_object(request, ("body",))
    response = await respond_sql(
        request, "api.ticket_add_note(%s, %s)", [ticket_id, required_str(body, "body")]
    )
    response.set_status(201)
    return response


async def _chunks(stream: BlobStream) -> AsyncIterator[bytes]:
    # File (or S3) reads are blocking: each chunk is read in a worker thread.
    try:
        while (chunk := await asyncio.to_thread(next, stream, None)) is not None:
            yield chunk
    finally:
        stream.close()


async def download_attachment(request: web.Request) -> web.StreamResponse:
    """An attachment of the ticket: a presigned redirect (S3) or the bytes (local store)."""
    ticket_id = _ticket_id(request)
    attachment_id = _path_id(
        request,
        "attachment_id",
        "attachment_not_found",
        "No attachment with that id on this ticket.",
    )
    # One of the few handlers that reads the SQL answer: it needs the blob key.
    attachment = json.loads(
        await sql_json(request, "api.ticket_attachment(%s, %s)", [ticket_id, attachment_id])
    )
    store = request.app[BLOBS]
    content_type = attachment["content_type"]
    if not _MIME_TYPE_RE.match(content_type or ""):
        content_type = _OCTET_STREAM
    url = await asyncio.to_thread(
        store.presigned_get_url,
        attachment["blob_key"],
        ttl_seconds=request.app[SETTINGS].attachment_download_url_ttl_seconds,
        filename=attachment["filename"],
        content_type=content_type,
    )
    if url is not None:
        return web.Response(status=307, headers={"Location": url})
    try:
        stream = await asyncio.to_thread(store.open_stream, attachment["blob_key"])
    except BlobNotFound as exc:
        raise ApiError(
            404, "attachment_content_missing", "The attachment's content is not in the store."
        ) from exc
    # The body is written after the handler returns, so the database connection goes back
    # to the pool before a large file starts streaming.
    return web.Response(
        body=_chunks(stream),
        headers={
            "Content-Type": content_type,
            "Content-Length": str(stream.size),
            "Content-Disposition": content_disposition(attachment["filename"]),
            "X-Content-Type-Options": "nosniff",
        },
    )


ROUTES: tuple[Route, ...] = (
    Route("GET", "/tickets", list_tickets, "viewer"),
    Route("GET", "/tickets/{ticket_id}", get_ticket, "viewer"),
    Route("PATCH", "/tickets/{ticket_id}", update_ticket, "agent"),
    Route("POST", "/tickets/{ticket_id}/notes", add_note, "agent"),
    Route(
        "GET",
        "/tickets/{ticket_id}/attachments/{attachment_id}/download",
        download_attachment,
        "viewer",
    ),
)
