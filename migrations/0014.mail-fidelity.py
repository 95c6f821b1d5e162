"""Mail fidelity (issue 16): parse evidence on message contents; strict signatures v2.

What it changes:
1. `core.message_contents.parse_evidence` (jsonb): how the parser read the message
   (charset and method per body and header, detector confidence, parts skipped, why the
   body is empty). Existing rows get `{}`; they were parsed before evidence existed.
2. Every strict signature is recomputed with the sanitised HTML body added (recipe
   `strict-v2`, worker/mime.py `strict_signature`), from the stored fields. A key is
   replaced only when the stored fields reproduce the message's current `strict-v1` key
   exactly, so the new key says the same thing plus the HTML. v2 keys hold every v1
   field, so two messages with different keys still differ: nothing is merged, nothing is
   split, no occurrence moves. Keys the stored fields do not reproduce stay as they are.
3. `core.migration_notes` (new): one row per migration that has something to report;
   this one records the counts (also logged by `ticketing migrate`).

What it cannot do: a message without Message-ID whose copies differed only in their HTML
was merged into one before this change; the stored row holds one HTML, so the merge cannot
be seen from the database. Such candidates (no Message-ID, occurrences with different raw
bytes) are counted in the note; re-parsing their raw blobs would tell.
"""

import hashlib
import json
import logging
from datetime import UTC

from yoyo import step

__depends__ = {"0012.recent-search", "0013.ingestion-reliability"}

log = logging.getLogger("kernel.migrate")
MIGRATION_ID = "0014.mail-fidelity"
BATCH = 2000


# The recipes as they are at this migration, frozen here (a migration must keep meaning
# what it meant when it ran); tests/test_migrate_0014.py checks v2 against worker.mime.
def _hash(values: list) -> str:
    encoded = json.dumps(values, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _fields(row: dict) -> list:
    sent_at = row["sent_at"]
    return [
        row["rfc_message_id"],
        sent_at.astimezone(UTC).isoformat() if sent_at is not None else None,
        row["from_address"],
        sorted(entry["address"] for entry in row["to_addresses"]),
        sorted(entry["address"] for entry in row["cc_addresses"]),
        row["normalized_subject"],
        row["body_sha256"],
        sorted(row["attachment_hashes"]),
    ]


def signature_v1(row: dict) -> str:
    return _hash(["strict-v1", *_fields(row)])


def signature_v2(row: dict) -> str:
    html = " ".join((row["html_body"] or "").split())
    html_hash = hashlib.sha256(html.encode("utf-8")).hexdigest()
    return _hash(["strict-v2", *_fields(row), html_hash])


_ROWS = """
    SELECT m.id, m.strict_signature, m.rfc_message_id, m.sent_at, m.from_address,
           m.to_addresses, m.cc_addresses, m.normalized_subject,
           c.body_sha256, c.html_body, c.message_id IS NOT NULL AS has_contents,
           ARRAY(SELECT a.sha256 FROM core.attachments a WHERE a.message_id = m.id)
               AS attachment_hashes
    FROM core.messages m
    LEFT JOIN core.message_contents c ON c.message_id = m.id
    WHERE m.id > %s
    ORDER BY m.id
    LIMIT %s
"""


def recompute_signatures(conn) -> None:
    cursor = conn.cursor()
    recomputed, kept = 0, []
    last_id = 0
    while True:
        cursor.execute(_ROWS, [last_id, BATCH])
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        if not rows:
            break
        last_id = rows[-1]["id"]
        ids, signatures = [], []
        for row in rows:
            if row["has_contents"] and signature_v1(row) == row["strict_signature"]:
                ids.append(row["id"])
                signatures.append(signature_v2(row))
            else:
                kept.append(row["id"])
        if ids:
            # v2 keys never equal a v1 key (different tag), so the unique index holds
            # row by row while the batch moves over.
            cursor.execute(
                "UPDATE core.messages m SET strict_signature = v.signature "
                "FROM unnest(%s::bigint[], %s::text[]) AS v(id, signature) WHERE m.id = v.id",
                [ids, signatures],
            )
            recomputed += len(ids)
    cursor.execute(
        """
        SELECT count(*) FROM core.messages m
        WHERE m.rfc_message_id IS NULL
          AND (SELECT count(DISTINCT o.raw_blob_key) FROM core.message_occurrences o
               WHERE o.message_id = m.id) > 1
        """
    )
    merge_candidates = cursor.fetchone()[0]
    summary = (
        f"strict signatures recomputed as strict-v2 (sanitised HTML added): {recomputed}; "
        f"left unchanged (stored fields do not reproduce their key): {len(kept)}; "
        "messages merged or split: 0; "
        f"messages without Message-ID whose occurrences have different raw bytes (merged "
        f"before HTML counted; re-parse to check): {merge_candidates}"
    )
    details = {
        "recomputed": recomputed,
        "unchanged": len(kept),
        "unchanged_message_ids": kept[:100],
        "merge_candidates_without_message_id": merge_candidates,
    }
    cursor.execute(
        "INSERT INTO core.migration_notes (migration_id, summary, details) VALUES (%s, %s, %s)",
        [MIGRATION_ID, summary, json.dumps(details)],
    )
    log.info("%s: %s", MIGRATION_ID, summary)


steps = [
    step("ALTER TABLE core.message_contents ADD COLUMN parse_evidence jsonb NOT NULL DEFAULT '{}'"),
    step(
        """
        CREATE TABLE core.migration_notes (
            migration_id text PRIMARY KEY,
            summary text NOT NULL,
            details jsonb NOT NULL DEFAULT '{}',
            recorded_at timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE core.migration_notes IS
            'What a data migration changed, in words (summary) and counts (details).';
        """
    ),
    step(recompute_signatures),
]
