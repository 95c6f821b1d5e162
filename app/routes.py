"""The route table of the API: every operation, declared once beside its handler.

Each handler module ends with its `ROUTES` (app/http.py `Route` carrying its app/apidoc.py
`Doc`); this module only puts them in order. The server routes them (app/server.py), and
the OpenAPI document is generated from them (app/openapi.py), so the two cannot drift.
"""

from __future__ import annotations

from app import openapi
from app.handlers import (
    auth,
    health,
    mailboxes,
    members,
    ops,
    queues,
    replies,
    routing,
    signin,
    tickets,
    webhooks,
)
from app.http import Route

ROUTES: tuple[Route, ...] = (
    *health.ROUTES,
    *auth.ROUTES,
    *signin.ROUTES,
    *members.ROUTES,
    *queues.ROUTES,
    *mailboxes.ROUTES,
    *routing.ROUTES,
    *replies.ROUTES,  # before tickets: /tickets/send-identities is not a ticket id
    *tickets.ROUTES,
    *ops.ROUTES,
    *webhooks.ROUTES,
    *openapi.ROUTES,
)
