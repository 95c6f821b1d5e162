"""Schemathesis hooks for `schemathesis run` against this API (SCHEMATHESIS_HOOKS).

Every generated request carries a development-login session (admin of its own
organisation) and the CSRF header that goes with it. Each operation has a session of its
own, so that POST /auth/logout ends only its own; a 401 makes the session again and retries
the request.
"""

from __future__ import annotations

import os

import requests
import schemathesis

ORGANIZATION = os.environ.get("SCHEMATHESIS_ORGANIZATION", "Schemathesis")


def _operation(case, context) -> str:
    return case.operation.label


@schemathesis.auth(refresh_interval=None, cache_by_key=_operation, retry_on=[401])
class DevLoginSession:
    """The cookies and CSRF token of a fresh development login."""

    def get(self, case, context):
        base = case.operation.base_url.rstrip("/")
        with requests.Session() as http:
            csrf = http.get(f"{base}/auth/csrf", timeout=10).json()["csrf_token"]
            login = http.post(
                f"{base}/auth/dev/login",
                json={"email": "fuzz@schemathesis.example", "organization_name": ORGANIZATION},
                headers={"x-csrf-token": csrf},
                timeout=10,
            )
            login.raise_for_status()
            return {"cookies": http.cookies.get_dict(), "csrf": login.json()["csrf_token"]}

    def set(self, case, data, context):
        case.cookies = {**(case.cookies or {}), **data["cookies"]}
        case.headers = {**(case.headers or {}), "x-csrf-token": data["csrf"]}
