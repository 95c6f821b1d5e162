"""Creating an organisation: `ticketing org-create`, an operator's act (no endpoint creates
organisations). Its first admin signs in with Google as the e-mail given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from kernel import db


class OrganizationError(Exception):
    """The organisation could not be created; the message says why."""


def create_organization(
    database_url: str,
    *,
    name: str,
    admin_email: str,
    domains: Sequence[str] = (),
    join_policy: str | None = None,
    domain_join_role: str | None = None,
) -> dict[str, Any]:
    """ops.organization_create: the organisation, its verified domains, join policy and first
    admin. Returns {id, name, admin, admin_user_id, domains, join_policy, domain_join_role}."""
    with db.connect(database_url, "cli") as conn, conn.transaction():
        try:
            return conn.execute(
                "SELECT ops.organization_create(%s, %s, %s, %s, %s) AS org",
                [name, admin_email, list(domains), join_policy, domain_join_role],
            ).fetchone()["org"]
        except psycopg.Error as exc:
            # logic.fail errors carry a sentence meant for people: pass it on as is.
            if (exc.sqlstate or "").startswith("TK"):
                raise OrganizationError(exc.diag.message_primary) from exc
            raise
