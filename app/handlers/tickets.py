"""Tickets: list/search, detail, PATCH, notes (agents), attachment download.

Handlers parse the request, make one SQL call and send its jsonb back. The download is the
exception that needs Python after SQL: the attachment's blob is redirected to (S3,
presigned) or streamed (local store) once the database has said it belongs to the ticket.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from aiohttp import web
from psycopg.types.json import Jsonb

from app.apidoc import INPUT_LIMITS, NO_CONTENT, Doc, json_body, ok
from app.errors import ApiError
from app.http import (
    BLOBS,
    SETTINGS,
    Limit,
    Route,
    path_id,
    query_limit,
    read_json_object,
    read_json_patch,
    respond_sql,
    sql_json,
)
from kernel.blobstore import BlobNotFound, BlobStream, content_disposition

# What may go into a Content-Type header as it is; anything else is served as bytes.
_MIME_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9!#$&^_.+-]{1,127}$")
_OCTET_STREAM = "application/octet-stream"


async def list_tickets(request: web.Request) -> web.Response:
    """Tickets, newest activity first, one keyset page at a time (filters checked in SQL)."""
    return await respond_sql(
        request,
        "api.ticket_list(%s, %s, %s, %s, %s, %s)",
        [
            request.query.get("status") or None,
            request.query.get("q") or None,
            request.query.get("assignee_user_id"),
            request.query.get("assignee_queue_id"),
            query_limit(request),
            request.query.get("cursor") or None,
        ],
    )


async def get_ticket(request: web.Request) -> web.Response:
    """One ticket with its messages, attachments, occurrences, events and notes."""
    return await respond_sql(request, "api.ticket_detail(%s)", [path_id(request, "ticket_id")])


async def update_ticket(request: web.Request) -> web.Response:
    """Change status, priority or assignee (agent); the database validates the values."""
    ticket_id = path_id(request, "ticket_id")
    body = await read_json_patch(request)
    return await respond_sql(request, "api.ticket_update(%s, %s)", [ticket_id, Jsonb(body)])


async def add_note(request: web.Request) -> web.Response:
    """Add an internal note {body_markdown} (agent)."""
    ticket_id = path_id(request, "ticket_id")
    body = await read_json_object(request)
    return await respond_sql(request, "api.ticket_add_note(%s, %s)", [ticket_id, Jsonb(body)])


async def list_saved_views(request: web.Request) -> web.Response:
    """The current user's saved ticket list views."""
    return await respond_sql(request, "api.ticket_saved_view_list()")


async def create_saved_view(request: web.Request) -> web.Response:
    """Save a view {name, filters} (agent); SQL validates the filters as GET /tickets's."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.ticket_saved_view_create(%s)", [Jsonb(body)])


async def delete_saved_view(request: web.Request) -> web.Response:
    """Remove one of the current user's saved views (agent)."""
    return await respond_sql(
        request, "api.ticket_saved_view_delete(%s)", [path_id(request, "saved_view_id")]
    )


async def _chunks(stream: BlobStream) -> AsyncIterator[bytes]:
    # File (or S3) reads are blocking: each chunk is read in a worker thread.
    try:
        while (chunk := await asyncio.to_thread(next, stream, None)) is not None:
            yield chunk
    finally:
        stream.close()


async def download_attachment(request: web.Request) -> web.StreamResponse:
    """An attachment of the ticket: a presigned redirect (S3) or the bytes (local store)."""
    ticket_id = path_id(request, "ticket_id")
    attachment_id = path_id(request, "attachment_id")
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
    Route(
        "GET",
        "/tickets",
        list_tickets,
        "viewer",
        sql="api.ticket_list",
        limit=Limit("ticket_page"),
        doc=Doc(
            operation_id="listTickets",
            tag="tickets",
            summary="List and search tickets",
            description=(
                "Keyset pages, newest activity first; merged and hidden tickets are left out. A "
                "cursor only continues the listing with the same filters (400 cursor_mismatch)."
            ),
            response=ok("A page.", "TicketPage", {"items": [], "next_cursor": None}),
            query=(
                {
                    "name": "cursor",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "Opaque `next_cursor` of the previous page.",
                },
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"$ref": "#/components/schemas/TicketStatus"},
                },
                {
                    "name": "q",
                    "in": "query",
                    "schema": {"type": "string", "maxLength": INPUT_LIMITS["search_query"]},
                    "description": "Full-text search (web search syntax) over subject, requester, code "
                    "and message bodies.",
                },
                {
                    "name": "assignee_user_id",
                    "in": "query",
                    "schema": {"type": "string", "format": "uuid"},
                },
                {
                    "name": "assignee_queue_id",
                    "in": "query",
                    "schema": {"type": "string", "format": "uuid"},
                },
            ),
        ),
    ),
    Route(
        "GET",
        "/tickets/saved-views",
        list_saved_views,
        "viewer",
        sql="api.ticket_saved_view_list",
        doc=Doc(
            operation_id="listSavedViews",
            tag="tickets",
            summary="List my saved views",
            description="The current user's saved ticket list views in this organisation.",
            response=ok("Saved views.", "SavedViewList", []),
        ),
    ),
    Route(
        "POST",
        "/tickets/saved-views",
        create_saved_view,
        "agent",
        status=201,
        sql="api.ticket_saved_view_create",
        doc=Doc(
            operation_id="createSavedView",
            tag="tickets",
            summary="Save a ticket list view",
            description=(
                "Filters are validated as GET /tickets's query parameters (422). 409 "
                "saved_view_exists on a case-insensitive name clash."
            ),
            response=ok("Created.", "SavedView"),
            body=json_body(
                "SavedViewCreate", {"name": "Open tickets", "filters": {"status": "open"}}
            ),
            errors=(409,),
        ),
    ),
    Route(
        "DELETE",
        "/tickets/saved-views/{saved_view_id}",
        delete_saved_view,
        "agent",
        status=204,
        sql="api.ticket_saved_view_delete",
        doc=Doc(
            operation_id="deleteSavedView",
            tag="tickets",
            summary="Remove one of my saved views",
            response=NO_CONTENT,
        ),
    ),
    Route(
        "GET",
        "/tickets/{ticket_id}",
        get_ticket,
        "viewer",
        sql="api.ticket_detail",
        doc=Doc(
            operation_id="getTicket",
            tag="tickets",
            summary="Ticket detail",
            description=(
                "The ticket, its thread messages (attachments, occurrences with routing "
                "evidence), events and notes."
            ),
            response=ok("The ticket.", "TicketDetail"),
        ),
    ),
    Route(
        "PATCH",
        "/tickets/{ticket_id}",
        update_ticket,
        "agent",
        sql="api.ticket_update",
        doc=Doc(
            operation_id="updateTicket",
            tag="tickets",
            summary="Change status, priority or assignee",
            description="Writes one `updated` event; 409 ticket_merged for a merged ticket.",
            response=ok("The ticket.", "Ticket"),
            body=json_body("TicketUpdate", {"status": "open", "priority": "high"}),
            errors=(409,),
        ),
    ),
    Route(
        "POST",
        "/tickets/{ticket_id}/notes",
        add_note,
        "agent",
        status=201,
        sql="api.ticket_add_note",
        doc=Doc(
            operation_id="addTicketNote",
            tag="tickets",
            summary="Add an internal note",
            description="Writes a `note_added` event.",
            response=ok("Created.", "Note"),
            body=json_body("NoteCreate", {"body_markdown": "Called the customer back."}),
            errors=(409,),
        ),
    ),
    Route(
        "GET",
        "/tickets/{ticket_id}/attachments/{attachment_id}/download",
        download_attachment,
        "viewer",
        sql="api.ticket_attachment",
        doc=Doc(
            operation_id="downloadAttachment",
            tag="tickets",
            summary="Download an attachment",
            description=(
                "S3 store: 307 to a short-lived presigned URL. Local store: the bytes, with a "
                "safe Content-Disposition."
            ),
            response={
                "description": "The attachment's bytes.",
                "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            responses={
                "307": {
                    "description": "Redirect to a presigned URL.",
                    "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
                }
            },
        ),
    ),
)
