"""The `core` schema a fresh migrate builds is the committed snapshot, migrations/core_schema.txt."""

from __future__ import annotations

import difflib

from tests.schema_snapshot import SNAPSHOT, describe


def test_fresh_core_schema_matches_the_snapshot(db):
    # db is a clone of the session's freshly migrated template database.
    actual = describe(db)
    expected = SNAPSHOT.read_text("utf-8")
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            "migrations/core_schema.txt",
            "fresh database",
        )
    )
    assert actual == expected, (
        "core schema differs from the snapshot; if the migration is intended, regenerate it "
        "with `.venv/bin/python -m tests.schema_snapshot`:\n" + diff
    )
