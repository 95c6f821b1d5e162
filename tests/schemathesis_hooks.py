"""Schemathesis hooks for `schemathesis run` against this API (SCHEMATHESIS_HOOKS).

Every generated request carries a development-login session (admin of its own
organisation) and the CSRF header that goes with it. Each operation has a session of its
own, so that POST /auth/logout ends only its own. Generated logins can also name this user
(schemathesis learns its address from responses) with a lower role: a 401 or 403 makes the
session again, as admin, and retries the request. When SCHEMATHESIS_TICKET_ID names a ticket of that organisation, every
well-formed ticket id in a path becomes that one, so the ticket operations are exercised
on a real ticket rather than answering 404.
"""

from __future__ import annotations

import os

import requests
import schemathesis

ORGANIZATION = os.environ.get("SCHEMATHESIS_ORGANIZATION", "Schemathesis")


def _operation(case, context) -> str:
    return case.operation.label


@schemathesis.auth(refresh_interval=None, cache_by_key=_operation, retry_on=[401, 403])
class DevLoginSession:
    """The cookies and CSRF token of a fresh development login."""

    def get(self, case, context):
        base = case.operation.base_url.rstrip("/")
        with requests.Session() as http:
            csrf = http.get(f"{base}/auth/csrf", timeout=10).json()["csrf_token"]
            login = http.post(
                f"{base}/auth/dev/login",
                json={
                    "email": "fuzz@schemathesis.example",
                    "organization_name": ORGANIZATION,
                    "role": "admin",
                },
                headers={"x-csrf-token": csrf},
                timeout=10,
            )
            login.raise_for_status()
            return {"cookies": http.cookies.get_dict(), "csrf": login.json()["csrf_token"]}

    def set(self, case, data, context):
        case.cookies = {**(case.cookies or {}), **data["cookies"]}
        case.headers = {**(case.headers or {}), "x-csrf-token": data["csrf"]}
        ticket_id = os.environ.get("SCHEMATHESIS_TICKET_ID")
        value = (case.path_parameters or {}).get("ticket_id")
        if ticket_id and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            case.path_parameters = {**case.path_parameters, "ticket_id": int(ticket_id)}
