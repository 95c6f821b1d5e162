"""`ticketing import-mbox`: feed a Google Takeout (or any) mbox through the same pipeline.

Raw bytes go to the blob store and become `raw_fetched` occurrences of the named mailbox;
from there occurrence_parse and the later stages run as for Gmail mail. Re-importing the
same file adds nothing: an imported message's id is derived from its bytes.
"""

from __future__ import annotations

import hashlib
import mailbox
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from kernel.blobstore import BlobStore
from kernel.db import connect

CHUNK = 200  # messages recorded per transaction


def _header(raw: bytes, name: bytes) -> str | None:
    """A header's raw value from the header block (no full MIME parse needed here)."""
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    prefix = name.lower() + b":"
    for line in head.splitlines():
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip().decode("utf-8", "replace")
    return None


def _internal_date_ms(raw: bytes) -> int | None:
    value = _header(raw, b"Date")
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1000) if value else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def mbox_messages(path: Path) -> Iterator[bytes]:
    """The raw bytes of each message of an mbox file, in file order."""
    box = mailbox.mbox(path, create=False)
    try:
        for key in box.iterkeys():
            yield box.get_bytes(key)
    finally:
        box.close()


def imported_item(raw: bytes, blobs: BlobStore) -> dict[str, Any]:
    """Store one message's bytes and describe it as worker.record_imported expects."""
    digest = hashlib.sha256(raw).hexdigest()
    labels = _header(raw, b"X-Gmail-Labels")
    return {
        "id": f"mbox-{digest[:32]}",
        "thread_id": _header(raw, b"X-GM-THRID"),
        "label_ids": [label.strip() for label in labels.split(",")] if labels else [],
        "blob_key": blobs.put(raw, content_type="message/rfc822"),
        "sha256": digest,
        "size": len(raw),
        "internal_date_ms": _internal_date_ms(raw),
    }


def import_mbox(
    url: str, path: Path, email: str, organization: str, blobs: BlobStore
) -> dict[str, Any]:
    """Import every message of `path` into `email`'s mailbox of `organization`."""
    totals = {"messages": 0, "new_occurrences": 0, "already_imported": 0}
    with connect(url, "import") as conn:
        mailbox_id = conn.execute(
            "SELECT ops.ensure_import_mailbox(%s, %s) AS id", [organization, email]
        ).fetchone()["id"]
        conn.commit()
        chunk: list[dict[str, Any]] = []

        def flush() -> None:
            result = conn.execute(
                "SELECT worker.record_imported(%s, %s) AS r", [mailbox_id, Jsonb(chunk)]
            ).fetchone()["r"]
            conn.commit()
            totals["new_occurrences"] += result["new_occurrences"]
            totals["already_imported"] += result["already_imported"]
            chunk.clear()

        for raw in mbox_messages(path):
            chunk.append(imported_item(raw, blobs))
            totals["messages"] += 1
            if len(chunk) >= CHUNK:
                flush()
        if chunk:
            flush()
    return {"mailbox_id": str(mailbox_id), **totals}
