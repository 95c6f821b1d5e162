"""The Python part of each ingestion stage: Gmail I/O, blob I/O and MIME parsing.

Each function does its I/O, then makes ONE SQL call (sql/worker/ingest.sql, parse.sql) that
records the result and queues the next stage in the same transaction. Tasks (worker/tasks.py)
are thin wrappers that pass ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from kernel.blobstore import BlobStore, blob_store_from_settings
from kernel.crypto import decrypt_token, token_key
from kernel.gmail import (
    GmailApiError,
    GmailClient,
    GmailClientConfig,
    GmailError,
    GmailHistoryExpired,
    GmailReconnectRequired,
    RetryPolicy,
)
from kernel.markers import verify_markers
from kernel.settings import Settings, load_settings
from worker.mime import ParsedMessage, UnparseableMessage, parse_message

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a worker needs besides its database pool, handed to every task.

    Whoever runs a worker passes it through the procrastinate app (worker.runner puts it in
    the worker's additional context; tasks read it with worker.tasks.runtime_of); a worker
    given none builds one from the environment (default_runtime). Tests and the demo make
    their own and close it when done: no module state is configured.
    """

    settings: Settings
    blobs: BlobStore
    backfill_page_size: int = 500  # Gmail's maximum for messages.list
    history_page_size: int = 500  # Gmail's maximum for history.list
    # A fetch job stores and records its messages this many at a time (one Gmail batch
    # request each), so a worker killed mid-job costs at most one chunk's refetch. Each
    # chunk is one more SQL call: at 10, a 10,000-message ingest cost 25 % more PostgreSQL
    # CPU than at 50; at 25 it costs the same as 50 (bench/RESULTS.md).
    fetch_chunk_size: int = 25
    gmail_retry: RetryPolicy = field(default_factory=RetryPolicy)
    # httplib2 is not thread-safe: each executor thread keeps its own GmailClient per
    # mailbox (and grant). Every client is also listed so that close() can close them all.
    _thread_clients: threading.local = field(
        default_factory=threading.local, init=False, repr=False, compare=False
    )
    _all_clients: list[GmailClient] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(settings=settings, blobs=blob_store_from_settings(settings))

    def gmail_client(self, mailbox: dict[str, Any]) -> GmailClient:
        """The calling thread's client for `mailbox` (call it from the executor thread)."""
        token = bytes(mailbox["encrypted_refresh_token"] or b"")
        key = (mailbox["id"], token)
        cache: dict[tuple, GmailClient] = self._thread_clients.__dict__.setdefault("clients", {})
        client = cache.get(key)
        if client is None:
            if not token:
                raise GmailReconnectRequired("the mailbox has no stored Gmail grant")
            refresh_token = decrypt_token(
                token_key(self.settings),
                token,
                organization_id=mailbox["organization_id"],
                mailbox_id=mailbox["id"],
            )
            config = dataclasses.replace(
                GmailClientConfig.from_settings(self.settings), retry=self.gmail_retry
            )
            client = GmailClient(config, refresh_token)
            cache[key] = client
            with self._lock:
                self._all_clients.append(client)
        return client

    def close(self) -> None:
        """Close every Gmail client this runtime made (in any thread)."""
        with self._lock:
            clients = list(self._all_clients)
            self._all_clients.clear()
        for client in clients:
            client.close()


_default_runtime: Runtime | None = None
_default_runtime_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The runtime of a worker that was given none: built from the environment, once."""
    global _default_runtime
    with _default_runtime_lock:
        if _default_runtime is None:
            _default_runtime = Runtime.from_settings(load_settings())
        return _default_runtime


async def gmail(
    rt: Runtime, mailbox: dict[str, Any], operation: str, *args: Any, **kwargs: Any
) -> Any:
    """Run one GmailClient operation for `mailbox` in a worker thread."""

    def call() -> Any:
        return getattr(rt.gmail_client(mailbox), operation)(*args, **kwargs)

    return await asyncio.to_thread(call)


async def _rows(conn: psycopg.AsyncConnection, query: str, params: list[Any]) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


async def _call(conn: psycopg.AsyncConnection, query: str, params: list[Any]) -> Any:
    """Run one SQL function call and return its single value."""
    rows = await _rows(conn, query, params)
    return next(iter(rows[0].values())) if rows else None


async def load_mailbox(
    conn: psycopg.AsyncConnection, mailbox_id: str
) -> tuple[dict | None, str | None]:
    """The mailbox row and why it may not sync (None when it may)."""
    rows = await _rows(
        conn,
        "SELECT (s.mailbox).*, s.blocked_reason FROM worker.mailbox_for_sync(%s) s",
        [mailbox_id],
    )
    if not rows:
        return None, "missing"
    return rows[0], rows[0].pop("blocked_reason")


async def _record_failure(pool, mailbox_id: str, exc: Exception) -> None:
    # In its own transaction: the failure must be recorded even though the step rolls back.
    async with pool.connection() as conn:
        if isinstance(exc, GmailReconnectRequired):
            await conn.execute("SELECT worker.mark_needs_reconnect(%s, %s)", [mailbox_id, str(exc)])
        else:
            await conn.execute(
                "SELECT worker.record_sync_failure(%s, %s)",
                [mailbox_id, f"{type(exc).__name__}: {exc}"],
            )


async def _gmail_failed(pool, mailbox_id: str, exc: GmailError) -> dict[str, Any]:
    """A sync step's Gmail call failed: record it; a revoked grant ends the step (the
    mailbox now needs reconnecting), anything else fails it."""
    await _record_failure(pool, mailbox_id, exc)
    if isinstance(exc, GmailReconnectRequired):
        return {"skipped": "needs_reconnect"}
    raise exc


async def backfill_page(pool, rt: Runtime, mailbox_id: str) -> dict[str, Any]:
    """mailbox_backfill: walk one listing page from the checkpoint and record it.

    A page token is valid only with the query that produced it, so every page of one walk
    is listed with the page size stored when the walk began.
    """
    async with pool.connection() as conn:
        mailbox, blocked = await load_mailbox(conn, mailbox_id)
    if blocked or mailbox["backfill_state"] != "running":
        return {"skipped": blocked or "no backfill running"}
    page_token = mailbox["backfill_page_token"]
    page_size = mailbox["backfill_page_size"] or rt.backfill_page_size
    try:
        history_id = mailbox["backfill_history_id"]
        if history_id is None:
            # Recorded before the first page, so mail arriving during the walk is replayed.
            history_id = (await gmail(rt, mailbox, "get_profile")).history_id
        page = await gmail(
            rt, mailbox, "list_message_ids", page_token, page_size, include_spam_trash=True
        )
    except GmailApiError as exc:
        if exc.status == 400 and page_token is not None:
            # The checkpointed token is no longer accepted (expired): walk again from the
            # first page rather than fail at the same place for ever.
            log.warning("mailbox %s: backfill page token refused (%s); restarting", mailbox_id, exc)
            async with pool.connection() as conn:
                restarted = await _call(
                    conn,
                    "SELECT worker.backfill_restart_walk(%s, %s, %s)",
                    [mailbox_id, page_token, str(exc)],
                )
            return {"restarted": restarted}
        return await _gmail_failed(pool, mailbox_id, exc)
    except GmailError as exc:
        return await _gmail_failed(pool, mailbox_id, exc)
    messages = [{"id": ref.id, "thread_id": ref.thread_id} for ref in page.ids]
    async with pool.connection() as conn:
        return await _call(
            conn,
            "SELECT worker.backfill_record_page(%s, %s, %s, %s, %s, %s)",
            [mailbox_id, page_token, history_id, Jsonb(messages), page.next_page_token, page_size],
        )


async def history_sync(pool, rt: Runtime, mailbox_id: str) -> dict[str, Any]:
    """mailbox_history_sync: walk history from the stored cursor and record it page by page.

    One walk is one query: every page is requested with the same startHistoryId (the
    cursor the walk began from) and the previous page's token, since Gmail reads a token
    only relative to the query that produced it. After each page but the last, the cursor
    stored with its occurrences becomes the newest record of that page, so a crash resumes
    from the last stored record with a fresh query (no token), skipping and repeating
    nothing. The last page (no nextPageToken) stores the response's historyId, as Gmail's
    history.list reference says to.
    """
    async with pool.connection() as conn:
        mailbox, blocked = await load_mailbox(conn, mailbox_id)
    if blocked or mailbox["history_id"] is None or mailbox["backfill_state"] == "running":
        return {"skipped": blocked or "no cursor yet"}
    walk_start = stored = mailbox["history_id"]
    page_token = None
    pages = new_occurrences = 0
    while True:
        try:
            page = await gmail(
                rt,
                mailbox,
                "list_history",
                walk_start,
                page_token,
                max_results=rt.history_page_size,
            )
        except GmailHistoryExpired:
            async with pool.connection() as conn:
                await conn.execute("SELECT worker.restart_backfill(%s)", [mailbox_id])
            return {"history_expired": True, "backfill_queued": True}
        except GmailError as exc:
            return await _gmail_failed(pool, mailbox_id, exc)
        pages += 1
        added, deleted, labels = _history_changes(page.records)
        last_page = page.next_page_token is None
        newest = [stored, *(int(record.id) for record in page.records)]
        new_cursor = max([*newest, page.history_id] if last_page else newest)
        async with pool.connection() as conn:
            result = await _call(
                conn,
                "SELECT worker.history_record_page(%s, %s, %s, %s, %s, %s, %s)",
                [mailbox_id, stored, Jsonb(added), deleted, Jsonb(labels), new_cursor, last_page],
            )
        if not result["recorded"]:
            return {"skipped": "cursor moved by another sync"}
        new_occurrences += result["new_occurrences"]
        stored = new_cursor
        if last_page:
            return {"new_occurrences": new_occurrences, "cursor": stored, "pages": pages}
        page_token = page.next_page_token


async def watch_mailbox(pool, rt: Runtime, mailbox_id: str) -> dict[str, Any]:
    """mailbox_watch: set up or renew the mailbox's Gmail push watch, or stop it.

    The configured topic (GMAIL_PUBSUB_TOPIC) decides: without one push is off and any
    watch is stopped. worker.watch_action says what the mailbox needs now.
    """
    topic = rt.settings.gmail_pubsub_topic
    async with pool.connection() as conn:
        rows = await _rows(
            conn,
            "SELECT (s.mailbox).*, worker.watch_action(s.mailbox, %s) AS action "
            "FROM worker.mailbox_for_sync(%s) s",
            [topic, mailbox_id],
        )
    if not rows or rows[0]["action"] is None:
        return {"action": None}
    mailbox, action = rows[0], rows[0].pop("action")
    try:
        if action == "watch":
            watch = await gmail(rt, mailbox, "watch", topic)
            outcome = [mailbox_id, topic, watch.expiration_ms, None]
        else:
            await gmail(rt, mailbox, "stop_watch")
            outcome = [mailbox_id, None, None, None]
    except GmailReconnectRequired as exc:
        await _record_failure(pool, mailbox_id, exc)
        outcome = [mailbox_id, None, None, f"{type(exc).__name__}: {exc}"]
    except GmailError as exc:
        # Recorded, and tried again by the next renewal (hourly) or resume; polling goes on.
        outcome = [mailbox_id, None, None, f"{type(exc).__name__}: {exc}"]
    async with pool.connection() as conn:
        await conn.execute("SELECT worker.record_watch(%s, %s, %s, %s)", outcome)
    return {"action": action, "error": outcome[3]}


def _history_changes(records: Iterable[Any]) -> tuple[list[dict], list[str], list[dict]]:
    added: dict[str, dict] = {}
    deleted: list[str] = []
    labels: list[dict] = []
    for record in records:
        for message in record.messages_added:
            added[message.id] = {
                "id": message.id,
                "thread_id": message.thread_id,
                "label_ids": list(message.label_ids),
            }
        deleted.extend(message.id for message in record.messages_deleted)
        for change in record.labels_added:
            labels.append({"id": change.message.id, "added": list(change.label_ids), "removed": []})
        for change in record.labels_removed:
            labels.append({"id": change.message.id, "added": [], "removed": list(change.label_ids)})
    return list(added.values()), deleted, labels


async def fetch_raw(
    pool, rt: Runtime, mailbox_id: str, occurrence_ids: list[int]
) -> dict[str, Any]:
    """occurrence_fetch_raw: fetch raw bytes through Gmail batches, store them, record them.

    The batch goes chunk by chunk (one Gmail batch request each), each chunk recorded as
    soon as its blobs are stored: a run that dies refetches at most one chunk, because the
    next run only asks for what is still `discovered`. The last chunk queues the parse job.
    """
    async with pool.connection() as conn:
        waiting = await _rows(
            conn, "SELECT * FROM worker.occurrences_in_state(%s, 'discovered')", [occurrence_ids]
        )
        mailbox, _ = await load_mailbox(conn, mailbox_id)
    size = max(1, rt.fetch_chunk_size)
    chunks = [waiting[i : i + size] for i in range(0, len(waiting), size)] or [[]]
    totals = {"fetched": 0, "failed": 0}
    for number, chunk in enumerate(chunks, start=1):
        fetched, missing = await _fetch_chunk(rt, mailbox, chunk) if chunk else ([], [])
        async with pool.connection() as conn:
            result = await _call(
                conn,
                "SELECT worker.record_raw(%s, %s, %s, %s)",
                [
                    mailbox_id,
                    Jsonb(fetched),
                    Jsonb(missing),
                    occurrence_ids if number == len(chunks) else None,
                ],
            )
        totals["fetched"] += result["fetched"]
        totals["failed"] += result["failed"]
    return totals


async def _fetch_chunk(
    rt: Runtime, mailbox: dict[str, Any], chunk: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Fetch and store one chunk: (stored rows for worker.record_raw, messages Gmail lost)."""
    by_gmail_id = {row["gmail_message_id"]: row["id"] for row in chunk}
    raws = await gmail(rt, mailbox, "fetch_raw", list(by_gmail_id))
    blobs = rt.blobs

    def store() -> list[dict[str, Any]]:
        return [
            {
                "occurrence_id": by_gmail_id[gmail_id],
                "blob_key": blobs.put(message.raw, content_type="message/rfc822"),
                "sha256": hashlib.sha256(message.raw).hexdigest(),
                "size": len(message.raw),
                "thread_id": message.thread_id,
                "label_ids": list(message.label_ids),
                "internal_date_ms": message.internal_date_ms,
            }
            for gmail_id, message in raws.items()
        ]

    fetched = await asyncio.to_thread(store)
    missing = [
        {"occurrence_id": occurrence_id, "error": "Gmail no longer has this message (404)"}
        for gmail_id, occurrence_id in by_gmail_id.items()
        if gmail_id not in raws
    ]
    return fetched, missing


def marker_addresses(parsed: ParsedMessage) -> list[tuple[str, str]]:
    """(header, address) pairs that may carry a signed `+t<number>` reply-address marker."""
    pairs = [("to", address) for _, address in parsed.to]
    pairs += [("cc", address) for _, address in parsed.cc]
    candidates = parsed.recipient_evidence.candidates
    for name in ("delivered-to", "x-original-to", "x-gm-original-to"):
        pairs += [(name, address) for address in candidates.get(name, ())]
    return pairs


def parsed_payload(
    occurrence_id: int,
    parsed: ParsedMessage,
    blobs: BlobStore,
    organization_id: Any = None,
    secret_key: str | None = None,
) -> dict[str, Any]:
    """What worker.record_parsed stores for one parsed message (attachments go to blobs).

    Product markers are verified here, with the occurrence's organisation (and the
    worker's SECRET_KEY): only a verified one reaches stitching as `marker_ticket_number`;
    every marker seen is kept as evidence.
    """
    marker_number, marker_evidence = (
        verify_markers(
            secret_key,
            organization_id,
            parsed.headers,
            marker_addresses(parsed),
        )
        if organization_id is not None
        else (None, {})
    )

    def addresses(items) -> list[dict[str, str]]:
        return [{"name": name, "address": address} for name, address in items]

    return {
        "occurrence_id": occurrence_id,
        "message_id": parsed.message_id,
        "date": parsed.date.isoformat() if parsed.date else None,
        "subject": parsed.subject,
        "normalized_subject": parsed.normalized_subject,
        "from_name": parsed.from_[0] if parsed.from_ else "",
        "from_address": parsed.from_[1] if parsed.from_ else None,
        "reply_to": addresses(parsed.reply_to),
        "to": addresses(parsed.to),
        "cc": addresses(parsed.cc),
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "headers": parsed.headers,
        "text_body": parsed.text_body,
        "html_body": parsed.html_body or "",
        "snippet": parsed.snippet,
        "body_sha256": parsed.body_sha256,
        "strict_signature": parsed.strict_signature,
        "loose_fingerprint": parsed.loose_fingerprint,
        "parse_evidence": parsed.parse_evidence,
        "attachments": [
            {
                **attachment.to_json(),
                "position": position,
                "blob_key": blobs.put(attachment.payload, content_type=attachment.content_type),
            }
            for position, attachment in enumerate(parsed.attachments)
        ],
        "recipient": parsed.recipient_evidence.to_json(),
        "marker_ticket_number": marker_number,
        "marker_evidence": marker_evidence,
    }


# A NUL character escaped by json.dumps (an even run of backslashes before it is literal).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def payload_json(payload: dict[str, Any]) -> str:
    """`payload` as JSON text, refusing here what PostgreSQL's jsonb would refuse later."""
    text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    if _JSON_NUL.search(text):
        raise ValueError("a NUL character, which PostgreSQL text cannot hold")
    return text


def parse_occurrences(
    waiting: list[dict[str, Any]], journal_address: str | None, rt: Runtime
) -> tuple[list[str], list[dict]]:
    """Parse each occurrence's raw bytes; a message that fails fails alone, with its reason.

    Parsed payloads come back as JSON text (encoded once, and checked per message).
    """
    parsed: list[str] = []
    failures: list[dict] = []
    for row in waiting:
        try:
            raw = rt.blobs.get(row["raw_blob_key"])
            message = parse_message(raw, journal_address=journal_address)
            payload = payload_json(
                parsed_payload(
                    row["id"], message, rt.blobs, row["organization_id"], rt.settings.secret_key
                )
            )
        except UnparseableMessage as exc:
            failures.append({"occurrence_id": row["id"], "error": f"unparseable: {exc.reason}"})
        except Exception as exc:  # a poisoned message must never take the batch down
            log.exception("parsing occurrence %s failed", row["id"])
            failures.append({"occurrence_id": row["id"], "error": f"{type(exc).__name__}: {exc}"})
        else:
            parsed.append(payload)
    return parsed, failures


async def parse(pool, rt: Runtime, mailbox_id: str, occurrence_ids: list[int]) -> dict[str, Any]:
    """occurrence_parse: MIME → canonical messages, contents, attachments, evidence."""
    async with pool.connection() as conn:
        waiting = await _rows(
            conn, "SELECT * FROM worker.occurrences_in_state(%s, 'raw_fetched')", [occurrence_ids]
        )
        mailbox, _ = await load_mailbox(conn, mailbox_id)
    if not waiting:
        return {"parsed": 0, "failed": 0}
    parsed, failures = await asyncio.to_thread(parse_occurrences, waiting, mailbox["email"], rt)
    async with pool.connection() as conn:
        return await _call(
            conn,
            "SELECT worker.record_parsed(%s, %s::jsonb, %s)",
            [mailbox_id, "[" + ",".join(parsed) + "]", Jsonb(failures)],
        )
