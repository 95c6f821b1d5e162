"""The stored list item and message count of a ticket follow every write (migration 0010)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def org(db) -> str:
    return str(
        db.execute("INSERT INTO core.organizations (name) VALUES ('Acme') RETURNING id").fetchone()[
            "id"
        ]
    )


def _ticket(db, org: str, number: int) -> int:
    return db.execute(
        "INSERT INTO core.tickets (organization_id, number, subject) "
        "VALUES (%s, %s, %s) RETURNING id",
        [org, number, f"Ticket {number}"],
    ).fetchone()["id"]


def _link_messages(db, org: str, ticket_id: int, count: int) -> list[int]:
    """`count` new messages linked to the ticket in one statement (one trigger run)."""
    return [
        row["message_id"]
        for row in db.execute(
            """
            WITH m AS (
                INSERT INTO core.messages (organization_id, strict_signature, loose_fingerprint)
                SELECT %(org)s, 'sig:' || gen_random_uuid(), 'fp:' || g
                FROM generate_series(1, %(n)s) g
                RETURNING id)
            INSERT INTO core.ticket_messages (message_id, organization_id, ticket_id,
                                              stitch_reason, stitch_confidence)
            SELECT m.id, %(org)s, %(ticket)s, 'new_ticket', 'high' FROM m
            RETURNING message_id
            """,
            {"org": org, "ticket": ticket_id, "n": count},
        )
    ]


def _state(db, ticket_id: int) -> dict[str, Any]:
    return db.execute(
        "SELECT t.message_count, t.list_item::jsonb AS item, "
        "core.ticket_list_item_stored(t)::jsonb AS fresh, "
        "(SELECT count(*) FROM core.ticket_messages tm WHERE tm.ticket_id = t.id) AS links "
        "FROM core.tickets t WHERE t.id = %s",
        [ticket_id],
    ).fetchone()


def test_message_count_follows_links_inserted_moved_and_deleted(db, org):
    first, second = _ticket(db, org, 1001), _ticket(db, org, 1002)
    messages = _link_messages(db, org, first, 3)
    _link_messages(db, org, second, 1)
    assert _state(db, first)["message_count"] == 3
    assert _state(db, second)["message_count"] == 1

    # A merge moves links: the count leaves one ticket and arrives on the other.
    db.execute(
        "UPDATE core.ticket_messages SET ticket_id = %s WHERE message_id = ANY(%s)",
        [second, messages[:2]],
    )
    # An update that moves nothing changes no count.
    db.execute(
        "UPDATE core.ticket_messages SET stitch_reason = 'merged' WHERE ticket_id = %s", [second]
    )
    # Deleting a message removes its link by cascade.
    db.execute("DELETE FROM core.messages WHERE id = %s", [messages[2]])

    for ticket_id, expected in ((first, 0), (second, 3)):
        state = _state(db, ticket_id)
        assert state["message_count"] == state["links"] == expected
        assert state["item"]["message_count"] == expected
        assert state["item"] == state["fresh"]


def test_list_item_is_rebuilt_on_every_ticket_change(db, org):
    ticket_id = _ticket(db, org, 1001)
    db.execute(
        "UPDATE core.tickets SET status = 'pending', subject = 'Printer on fire', "
        "tags = ARRAY['hardware'] WHERE id = %s",
        [ticket_id],
    )
    state = _state(db, ticket_id)
    assert state["item"] == state["fresh"]
    assert (state["item"]["status"], state["item"]["subject"], state["item"]["tags"]) == (
        "pending",
        "Printer on fire",
        ["hardware"],
    )
    assert state["item"]["ticket_code"] == "T-1001"


def test_list_item_timestamps_are_utc_whatever_the_writers_time_zone(db, org):
    db.execute("SET TIME ZONE 'America/New_York'")
    ticket_id = _ticket(db, org, 1001)
    db.execute(
        "UPDATE core.tickets SET last_activity_at = '2025-03-01 12:00:00+00' WHERE id = %s",
        [ticket_id],
    )
    item = _state(db, ticket_id)["item"]
    assert item["last_activity_at"] == "2025-03-01T12:00:00+00:00"
    assert item["created_at"].endswith("+00:00")
