"""A refusal a person must see: an HTTP status, a stable code and a sentence.

The kernel raises it where a request cannot go on (connecting a mailbox, signing in); the
HTTP layer renders it as `{"detail", "code"}` (app/errors.py) without a handler catching it.
"""

from __future__ import annotations


class Refused(Exception):
    """A request that cannot go on, with the status, code and sentence to answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
