"""A fake Gmail API server (aiohttp) for tests, benchmarks and demos.

It speaks the subset of the Gmail REST API the ingestion pipeline uses, with the real
paths and JSON field names, so google-api-python-client can talk to it unmodified:

    GET  gmail/v1/users/{userId}/profile
    GET  gmail/v1/users/{userId}/messages            (maxResults, pageToken, includeSpamTrash,
                                                      labelIds; q: only rfc822msgid:<id>,
                                                      any other search is refused)
    POST gmail/v1/users/{userId}/messages/send       ({"raw", "threadId"}: the message is
                                                      stored in the sender's mailbox with
                                                      label SENT and journaled)
    GET  gmail/v1/users/{userId}/settings/sendAs     (the primary address and the aliases
                                                      added with add_send_as)
    GET  gmail/v1/users/{userId}/messages/{id}       (format=raw|minimal|metadata)
    GET  gmail/v1/users/{userId}/history             (startHistoryId, pageToken, maxResults,
                                                      historyTypes, labelId)
    POST gmail/v1/users/{userId}/watch               ({"topicName"}: push notifications to a
                                                      Pub/Sub topic; see devtools/fake_pubsub.py)
    POST gmail/v1/users/{userId}/stop
    POST batch/gmail/v1                               (multipart/mixed of application/http)
    POST token                                        (OAuth: refresh_token, authorization_code)

State lives in `FakeGmail`, a thread-safe control object: mailboxes, OAuth grants, fault
rules and request counters. Run it with `fake_gmail_server()` (async context manager, on
the caller's event loop) or `fake_gmail_in_thread()` (own thread and loop; needed when the
synchronous Gmail client is called from the test's own thread, because a blocking call
there would otherwise starve the loop that serves it).

The contract it holds clients to, and the documentation it is read from:

- Page tokens (messages.list, history.list) are random strings naming a cursor kept in
  the fake; a client can neither decode nor make one (AIP-158, "Opacity": tokens must not
  be user-parseable). A token is valid only for the mailbox and the exact request that
  produced it: every parameter but pageToken must be the same (AIP-158: "The user is
  expected to keep all other arguments to the RPC the same; if any arguments are
  different, the API should send an INVALID_ARGUMENT error"), so e.g. an advanced
  startHistoryId with the previous walk's token is refused. maxResults is the exception
  AIP-158 makes ("If the user changes the page_size ... the service must honor the new
  page size"); `FakeGmail(page_tokens_bind_page_size=True)` binds it too. Unknown,
  forged, expired (only the newest `max_page_tokens` are kept) or mismatched tokens are
  answered 400 INVALID_ARGUMENT with Gmail's error body (errors[0].location "pageToken").
  A token may be used again (a retry after a lost answer gets the same page).
- messages.list pages never skip or repeat a message that exists for the whole walk:
  a page starts after the last message served, by sort key (newest first). Mail that
  arrives meanwhile with a newer date is not listed (it sorts before the walk's
  position); the history walk from a historyId taken before the listing catches it
  (Gmail's guide "Synchronize clients with Gmail": full sync, then history.list).
- History, from the users.history.list reference: "History IDs increase chronologically
  but are not contiguous with random gaps in between valid IDs", so each record's id is
  1..`history_id_gap` above the previous one; records are served in increasing id order;
  the response's historyId is "the ID of the mailbox's current history record"; a
  startHistoryId older than the retained history (`expire_history`,
  `max_history_records`) is answered 404. A delivery is a messagesAdded record, followed
  (with chance `delivery_label_records`, or per `add_message(label_records=...)`) by
  label records: read (labelsRemoved UNREAD) or labelled by a filter (labelsAdded), so
  one message has several records. `advance_history_id()` moves the mailbox's historyId
  without a visible record. `FakeGmail(realistic_history=False)` restores contiguous ids
  and one record per delivery.
- Records arriving during a walk: the reference says "If you receive no nextPageToken in
  the response, there are no updates to retrieve and you can store the returned
  historyId". Read literally, a walk ends only when nothing newer is left, so each page is
  served from the log as it is at that moment: records appended after the first page are
  served by later pages of the same walk, and the last page's historyId covers them all.
- Errors have Gmail's body ({"error": {"code", "message", "errors": [{"message",
  "domain", "reason"}], "status"}}, guide "Resolve errors"); unknown parameters and bad
  values are 400 INVALID_ARGUMENT.
- Batches (guide "Batching requests"): parts are answered independently, each with its
  own status; the outer Authorization applies to parts without their own.
- Faults (`FaultRule`, `FakeGmail.inject`): a status, a delay, "drop" (the connection
  closes before the request is processed) and "lose_response" (the request is processed
  completely, state changes and counters included, then the connection closes without
  the answer), for direct requests, whole batches and single batch parts.
  `on_request(hook)` runs code after each request is processed, e.g. to deliver mail
  between the pages of a walk the pipeline drives itself. A send whose answer is lost
  (`FaultRule("send", action="lose_response")`) is a send Gmail accepted: the message is
  in the mailbox, the client saw a dropped connection.
- messages.send (reference "users.messages.send", guide "Sending Email"): the body is a
  Message with `raw` (base64url RFC 2822) and optionally `threadId`; the answer is the new
  Message resource's id, threadId and labelIds ["SENT"]. A message without a recipient is
  400 "Recipient address required"; a threadId unknown to the mailbox is 404. The message
  joins the given thread only when, as the reference requires, its References or
  In-Reply-To name a message of that thread and its Subject matches; otherwise it threads
  by its references as received mail does. A From that is neither the account's address
  nor an accepted send-as alias is rewritten to the account's address (Gmail sends as the
  authenticated user). Workspace journaling is emulated: with `journal_address` set, a copy
  of every sent message is delivered to that mailbox (label INBOX) unless it is the sender.
- settings.sendAs.list: {"sendAs": [...]}, the primary address first (isPrimary, isDefault,
  no verificationStatus: it only applies to custom "from" aliases), then the aliases with
  their verificationStatus (accepted or pending) and treatAsAlias.
- messages.list q: only `rfc822msgid:<id>` (with or without angle brackets) is emulated; it
  matches messages whose Message-ID header is that id.

Manual use: `python -m devtools.fake_gmail --eml-dir DIR --user EMAIL --port 8085`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import bisect
import contextlib
import datetime
import email.utils
import itertools
import json
import mailbox
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

FAKE_CLIENT_ID = "fake-client-id.apps.googleusercontent.com"
FAKE_CLIENT_SECRET = "fake-client-secret"  # noqa: S105 - a test fixture, not a secret
DEFAULT_USER = "journal@example.com"

ENDPOINT_KINDS = (
    "profile",
    "list",
    "get",
    "history",
    "watch",
    "stop",
    "batch",
    "token",
    "batch_part",
    "send",
    "send_as",
    "any",
)
# users.watch: a watch lasts 7 days unless renewed; topics look like this.
WATCH_LIFETIME_MS = 7 * 24 * 3600 * 1000
_TOPIC_RE = re.compile(r"projects/[^/\s]+/topics/[^/\s]+")
_HISTORY_TYPES = {
    "messageAdded": "messagesAdded",
    "messageDeleted": "messagesDeleted",
    "labelAdded": "labelsAdded",
    "labelRemoved": "labelsRemoved",
}
_STATUS_NAMES = {
    400: ("INVALID_ARGUMENT", "global", "invalidArgument"),
    401: ("UNAUTHENTICATED", "global", "authError"),
    403: ("PERMISSION_DENIED", "global", "forbidden"),
    404: ("NOT_FOUND", "global", "notFound"),
    429: ("RESOURCE_EXHAUSTED", "usageLimits", "rateLimitExceeded"),
    500: ("INTERNAL", "global", "backendError"),
    502: ("UNAVAILABLE", "global", "backendError"),
    503: ("UNAVAILABLE", "global", "backendError"),
}
_REASON_PHRASES = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_API_PATH_RE = re.compile(
    r"^/?gmail/v1/users/(?P<user>[^/]+)/(?:(?P<profile>profile)|(?P<history>history)"
    r"|(?P<watch>watch)|(?P<stop>stop)|(?P<send_as>settings/sendAs)|(?P<send>messages/send)"
    r"|messages(?:/(?P<message_id>[^/]+))?)$"
)
_RFC822MSGID_RE = re.compile(r"^\s*rfc822msgid:\s*<?([^<>\s]+)>?\s*$", re.IGNORECASE)
_SUBJECT_PREFIX_RE = re.compile(r"^\s*((re|fwd?|aw|sv)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
# Gives fake ids the look of real ones (16 hex digits) while staying ordered.
_ID_BASE = 0x18C0_0000_0000_0000
# Synthetic clock for messages without a usable Date header: 2024-01-01, one second apart.
_SYNTHETIC_DATE_BASE_MS = 1_704_067_200_000
# Realistic history (the default): each record's id is 1..8 above the previous one, and
# half the deliveries are followed by label records.
_HISTORY_ID_GAP = 8
_DELIVERY_LABEL_RECORDS = 0.5
_FAULT_ACTIONS = ("status", "delay", "drop", "lose_response")
# Parameters Google accepts on every method; they never bind a page token.
_SYSTEM_PARAMS = {
    "$.xgafv",
    "access_token",
    "alt",
    "callback",
    "fields",
    "key",
    "oauth_token",
    "prettyPrint",
    "quotaUser",
    "uploadType",
    "upload_protocol",
    "userIp",
}


def _api_kind(path: str) -> tuple[str, str | None]:
    """Endpoint kind (profile/list/get/history, or any) and message id of an API path."""
    match = _API_PATH_RE.match(path)
    if match is None:
        return "any", None
    if match["profile"]:
        return "profile", None
    if match["history"]:
        return "history", None
    if match["watch"] or match["stop"]:
        return ("watch" if match["watch"] else "stop"), None
    if match["send"]:
        return "send", None
    if match["send_as"]:
        return "send_as", None
    if match["message_id"]:
        return "get", match["message_id"]
    return "list", None


def gmail_error_body(
    status: int, message: str, reason: str | None = None, location: str | None = None
) -> dict[str, Any]:
    """Gmail's JSON error shape: {"error": {"code", "message", "errors": [...], "status"}}.

    `location` names the offending query parameter (errors[0].location, locationType
    "parameter"), as Google's 400 answers do.
    """
    status_name, domain, default_reason = _STATUS_NAMES.get(status, ("UNKNOWN", "global", "error"))
    detail: dict[str, Any] = {
        "message": message,
        "domain": domain,
        "reason": reason or default_reason,
    }
    if location is not None:
        detail.update(location=location, locationType="parameter")
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [detail],
            "status": status_name,
        }
    }


# --------------------------------------------------------------------------- state


@dataclass
class FakeMessage:
    """One stored message; `raw` is the exact byte string served as base64url."""

    id: str
    thread_id: str
    raw: bytes
    label_ids: list[str]
    internal_date_ms: int
    history_id: int
    seq: int

    def ref(self, with_labels: bool = False) -> dict[str, Any]:
        ref: dict[str, Any] = {"id": self.id, "threadId": self.thread_id}
        if with_labels:
            ref["labelIds"] = list(self.label_ids)
        return ref


@dataclass
class FakeHistoryRecord:
    """One history entry; `kind` is the JSON key (messagesAdded, labelsRemoved, ...)."""

    id: int
    kind: str
    message: dict[str, Any]
    label_ids: list[str] = field(default_factory=list)

    def touches_label(self, label_id: str) -> bool:
        """For history.list's labelId: the message carried the label, or it changed."""
        return label_id in self.label_ids or label_id in self.message.get("labelIds", ())

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"message": self.message}
        if self.kind in ("labelsAdded", "labelsRemoved"):
            entry["labelIds"] = list(self.label_ids)
        return {
            "id": str(self.id),
            "messages": [{"id": self.message["id"], "threadId": self.message["threadId"]}],
            self.kind: [entry],
        }


@dataclass
class FakeMailbox:
    """A mailbox: messages by id, history log, current historyId and retention floor."""

    email: str
    history_id: int = 1000
    # A startHistoryId below this has lost records: history.list answers 404.
    history_floor: int = 1000
    messages: dict[str, FakeMessage] = field(default_factory=dict)
    history: list[FakeHistoryRecord] = field(default_factory=list)
    thread_by_message_id_header: dict[str, str] = field(default_factory=dict)
    # users.watch: the topic changes are published to, until the expiration (epoch ms).
    watch_topic: str | None = None
    watch_expiration_ms: int = 0
    # settings.sendAs: custom "from" aliases, address -> SendAs resource.
    send_as: dict[str, dict[str, Any]] = field(default_factory=dict)

    # The last listing built per include_spam_trash, with the state it was built from: every
    # change to the mailbox moves history_id, so a page of a long backfill does not sort the
    # whole mailbox again (which made a 100,000-message backfill quadratic).
    _listings: dict[bool, tuple[tuple[int, int], list[FakeMessage]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def listing(self, include_spam_trash: bool) -> list[FakeMessage]:
        """Messages newest first, as messages.list orders them."""
        state = (self.history_id, len(self.messages))
        cached = self._listings.get(include_spam_trash)
        if cached is not None and cached[0] == state:
            return cached[1]
        visible = [
            m
            for m in self.messages.values()
            if include_spam_trash or not ({"SPAM", "TRASH"} & set(m.label_ids))
        ]
        ordered = sorted(visible, key=_listing_key)
        self._listings[include_spam_trash] = (state, ordered)
        return ordered


def _listing_key(message: FakeMessage) -> tuple[int, int]:
    return (-message.internal_date_ms, -message.seq)


@dataclass(frozen=True)
class _PageCursor:
    """What a page token stands for, kept server-side: the token itself is random.

    `query` is every parameter of the request that made it except pageToken (and, unless
    page_tokens_bind_page_size, maxResults); `position` is where the next page starts:
    for messages.list the sort key (internalDate, seq) of the last message served, for
    history.list the id of the last record served.
    """

    kind: str
    mailbox: str
    query: tuple[tuple[str, Any], ...]
    position: tuple[int, ...]


@dataclass
class FaultRule:
    """A fault to inject on requests of one endpoint kind.

    endpoint: profile | list | get | history | batch | token | any, or batch_part
      (one sub-request inside a batch).
    action: "status" (answer `status`, with Retry-After if `retry_after` is set),
      "delay" (sleep `delay` seconds, then answer normally), "drop" (close the
      connection without processing the request) or "lose_response" (process the
      request completely, with every state change and counter, then close the
      connection without sending the answer: the client cannot tell it from "drop").
      For a whole batch ("batch"), "lose_response" answers every part and loses the
      batch's answer. For "batch_part": "status" answers that part with the status;
      "delay" sleeps before processing it; "drop" processes the parts before it, then
      closes the connection (that part and the rest are never processed);
      "lose_response" processes the part but its answer is lost between Gmail's batch
      front end and its backend, so the batch carries a 503 backendError for it.
    times: how many more requests to hit (None = unlimited); probability: hit each
      matching request with this chance from the fake's seeded RNG.
    message_id: for get / batch_part, only requests for this message id match.
    """

    endpoint: str
    action: str = "status"
    status: int = 429
    retry_after: float | None = None
    delay: float = 0.0
    times: int | None = 1
    probability: float | None = None
    message_id: str | None = None
    reason: str | None = None
    fired: int = 0

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINT_KINDS:
            raise ValueError(f"unknown endpoint kind {self.endpoint!r}")
        if self.action not in _FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}")


@dataclass(frozen=True)
class RequestRecord:
    """One request the fake answered (sub-requests of a batch have in_batch=True)."""

    kind: str
    method: str
    path: str
    query: str
    status: int
    in_batch: bool
    message_id: str | None
    # Processed, but the answer never reached the client (fault action lose_response).
    lost: bool = False


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _AccessGrant:
    email: str
    expires_at: float


class FakeGmail:
    """Thread-safe state and control API of the fake server.

    All public methods may be called from any thread while the server runs.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        access_token_ttl: int = 3600,
        max_history_records: int | None = None,
        realistic_history: bool = True,
        history_id_gap: int | None = None,
        delivery_label_records: float | None = None,
        page_tokens_bind_page_size: bool = False,
        max_page_tokens: int = 100_000,
    ) -> None:
        self._lock = threading.RLock()
        self._rng = random.Random(seed)  # noqa: S311 - reproducible fault injection
        # A separate stream, so history ids do not shift the fault sequence of a seed.
        self._history_rng = random.Random(f"history-{seed}")  # noqa: S311
        self.access_token_ttl = access_token_ttl
        self.max_history_records = max_history_records
        # History ids advance by 1..history_id_gap per record (1: contiguous, unrealistic).
        self.history_id_gap = history_id_gap or (_HISTORY_ID_GAP if realistic_history else 1)
        # Chance that a delivery's messagesAdded record is followed by label records.
        if delivery_label_records is None:
            delivery_label_records = _DELIVERY_LABEL_RECORDS if realistic_history else 0.0
        self.delivery_label_records = delivery_label_records
        # AIP-158 lets a client change the page size between pages; True refuses that too.
        self.page_tokens_bind_page_size = page_tokens_bind_page_size
        self.max_page_tokens = max_page_tokens
        self._page_tokens: dict[str, _PageCursor] = {}
        self._token_of_cursor: dict[_PageCursor, str] = {}
        self.mailboxes: dict[str, FakeMailbox] = {}
        self.clients: dict[str, str] = {FAKE_CLIENT_ID: FAKE_CLIENT_SECRET}
        self._refresh_tokens: dict[str, str] = {}  # token -> email
        self._access_tokens: dict[str, _AccessGrant] = {}
        self._auth_codes: dict[str, str] = {}  # code -> email
        self._next_seq = 0
        self.faults: list[FaultRule] = []
        self.counts: Counter[str] = Counter()
        self.log: list[RequestRecord] = []
        # Called with each request's record once it is logged, before it is answered.
        self.request_hooks: list[Callable[[RequestRecord], object]] = []
        # Pub/Sub: topic -> callables(email, history_id), each a push subscription's publish.
        self.topics: dict[str, list[Callable[[str, int], object]]] = {}
        # Workspace journaling: every sent message is also delivered to this mailbox.
        self.journal_address: str | None = None

    # ---- mailboxes and messages

    def add_mailbox(self, email_address: str, *, history_id: int = 1000) -> FakeMailbox:
        """Create (or return) the mailbox for `email_address`."""
        key = email_address.lower()
        with self._lock:
            if key not in self.mailboxes:
                self.mailboxes[key] = FakeMailbox(
                    email=email_address, history_id=history_id, history_floor=history_id
                )
            return self.mailboxes[key]

    def mailbox(self, email_address: str) -> FakeMailbox:
        """The mailbox for `email_address` (KeyError if unknown)."""
        return self.mailboxes[email_address.lower()]

    def skip_to(self, message_id: str) -> None:
        """Make `message_id` the id of the next message stored (ids are never reused, so it
        may not be below the next one). For a fake rebuilt to hold some of the messages an
        earlier fake held, under the ids they had."""
        with self._lock:
            seq = int(message_id, 16) - _ID_BASE
            if seq < self._next_seq:
                raise ValueError(f"message id {message_id} was already issued")
            self._next_seq = seq

    def add_message(
        self,
        email_address: str,
        raw: bytes,
        *,
        label_ids: Iterable[str] = ("INBOX",),
        internal_date_ms: int | None = None,
        label_records: bool | None = None,
    ) -> str:
        """Store a message as a delivery in history; return its id.

        The delivery is a messagesAdded record, followed by label records when
        `label_records` is true (None: with the fake's `delivery_label_records` chance):
        either delivered UNREAD then read (labelsRemoved UNREAD), or delivered without its
        last label and then labelled by a filter (labelsAdded), or both. Either way the
        message ends with exactly `label_ids`.
        """
        with self._lock:
            box = self.add_mailbox(email_address)
            seq = self._next_seq
            self._next_seq += 1
            message_id = f"{_ID_BASE + seq:016x}"
            headers = _parse_headers(raw)
            if internal_date_ms is None:
                internal_date_ms = _date_header_ms(headers) or _SYNTHETIC_DATE_BASE_MS + seq * 1000
            thread_id = _thread_for(box, headers, message_id)
            final_labels = list(dict.fromkeys(label_ids))
            initial_labels, follow_ups = self._delivery_plan(final_labels, label_records)
            message = FakeMessage(
                id=message_id,
                thread_id=thread_id,
                raw=bytes(raw),
                label_ids=initial_labels,
                internal_date_ms=internal_date_ms,
                history_id=self._advance(box),
                seq=seq,
            )
            box.messages[message_id] = message
            self._record(box, "messagesAdded", message)
            for kind, labels in follow_ups:
                if kind == "labelsAdded":
                    message.label_ids = message.label_ids + labels
                else:
                    message.label_ids = [x for x in message.label_ids if x not in labels]
                message.history_id = self._advance(box)
                self._record(box, kind, message, labels)
            return message_id

    def add_send_as(
        self,
        email_address: str,
        alias: str,
        *,
        display_name: str = "",
        verification_status: str = "accepted",
    ) -> dict[str, Any]:
        """Add a custom "from" alias to a mailbox (verification_status accepted or pending)."""
        if verification_status not in ("accepted", "pending"):
            raise ValueError(f"unknown verification status {verification_status!r}")
        with self._lock:
            box = self.add_mailbox(email_address)
            resource = {
                "sendAsEmail": alias,
                "displayName": display_name,
                "replyToAddress": "",
                "signature": "",
                "isPrimary": False,
                "isDefault": False,
                "treatAsAlias": True,
                "verificationStatus": verification_status,
            }
            box.send_as[alias.lower()] = resource
            return resource

    def sent_messages(self, email_address: str) -> list[FakeMessage]:
        """The messages of a mailbox that carry label SENT, oldest first."""
        with self._lock:
            box = self.mailbox(email_address)
            return sorted(
                (m for m in box.messages.values() if "SENT" in m.label_ids), key=lambda m: m.seq
            )

    def advance_history_id(self, email_address: str, by: int = 1) -> int:
        """Move the mailbox's historyId without a visible record (as drafts or settings
        changes do in Gmail); returns the new id."""
        with self._lock:
            box = self.mailbox(email_address)
            box.history_id += by
            self._notify(box)
            return box.history_id

    def _advance(self, box: FakeMailbox) -> int:
        """The id of the next history record: increasing, with gaps unless disabled."""
        step = 1 if self.history_id_gap <= 1 else self._history_rng.randint(1, self.history_id_gap)
        box.history_id += step
        return box.history_id

    def _delivery_plan(
        self, final_labels: list[str], label_records: bool | None
    ) -> tuple[list[str], list[tuple[str, list[str]]]]:
        """(labels at delivery, [(labelsAdded|labelsRemoved, labels)]) ending at final."""
        if label_records is None:
            chance = self.delivery_label_records
            label_records = chance > 0 and self._history_rng.random() < chance
        if not label_records:
            return list(final_labels), []
        can_read = "UNREAD" not in final_labels
        can_filter = bool(final_labels)
        choices = [c for c, ok in (("read", can_read), ("filter", can_filter)) if ok]
        if can_read and can_filter:
            choices.append("both")
        choice = self._history_rng.choice(choices)
        initial = list(final_labels)
        follow_ups: list[tuple[str, list[str]]] = []
        if choice in ("filter", "both"):
            filtered = initial.pop()
            follow_ups.append(("labelsAdded", [filtered]))
        if choice in ("read", "both"):
            initial.append("UNREAD")
            follow_ups.append(("labelsRemoved", ["UNREAD"]))
        return initial, follow_ups

    def add_eml_files(self, email_address: str, paths: Iterable[Path | str]) -> list[str]:
        """Add .eml files (byte-exact) in the given order; return their ids."""
        return [self.add_message(email_address, Path(p).read_bytes()) for p in paths]

    def add_eml_dir(self, email_address: str, directory: Path | str) -> list[str]:
        """Add every *.eml under `directory` (recursively, sorted by path)."""
        return self.add_eml_files(email_address, sorted(Path(directory).rglob("*.eml")))

    def add_mbox(self, email_address: str, path: Path | str) -> list[str]:
        """Add every message of an mbox file (bytes without the `From ` separator line)."""
        box = mailbox.mbox(str(path), create=False)
        try:
            return [self.add_message(email_address, box.get_bytes(key)) for key in box.iterkeys()]
        finally:
            box.close()

    def delete_message(self, email_address: str, message_id: str) -> None:
        """Delete a message for good (history: messagesDeleted)."""
        with self._lock:
            box = self.mailbox(email_address)
            message = box.messages.pop(message_id)
            self._advance(box)
            self._record(box, "messagesDeleted", message)

    def modify_labels(
        self,
        email_address: str,
        message_id: str,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Change labels of a message (history: labelsAdded / labelsRemoved)."""
        with self._lock:
            box = self.mailbox(email_address)
            message = box.messages[message_id]
            added = [label for label in add if label not in message.label_ids]
            removed = [label for label in remove if label in message.label_ids]
            message.label_ids = [
                label for label in message.label_ids if label not in removed
            ] + added
            for kind, labels in (("labelsAdded", added), ("labelsRemoved", removed)):
                if labels:
                    message.history_id = self._advance(box)
                    self._record(box, kind, message, labels)

    def expire_history(self, email_address: str, before: int | None = None) -> None:
        """Forget history records with id <= `before` (default: all of them)."""
        with self._lock:
            box = self.mailbox(email_address)
            cutoff = box.history_id if before is None else before
            box.history = [record for record in box.history if record.id > cutoff]
            box.history_floor = max(box.history_floor, cutoff)

    def _record(
        self,
        box: FakeMailbox,
        kind: str,
        message: FakeMessage,
        label_ids: list[str] | None = None,
    ) -> None:
        box.history.append(
            FakeHistoryRecord(
                id=box.history_id,
                kind=kind,
                message=message.ref(with_labels=True),
                label_ids=label_ids or [],
            )
        )
        if self.max_history_records is not None and len(box.history) > self.max_history_records:
            dropped = box.history[: len(box.history) - self.max_history_records]
            box.history = box.history[len(dropped) :]
            box.history_floor = max(box.history_floor, dropped[-1].id)
        self._notify(box)

    # ---- push notifications (users.watch)

    def create_topic(self, topic: str, subscriber: Callable[[str, int], object]) -> None:
        """A Pub/Sub topic Gmail may publish to, delivered to `subscriber(email, history_id)`
        (e.g. FakePushSubscription.publish)."""
        with self._lock:
            self.topics.setdefault(topic, []).append(subscriber)

    def _notify(self, box: FakeMailbox) -> None:
        # Gmail publishes {emailAddress, historyId} for every change of a watched mailbox.
        if box.watch_topic is None or box.watch_expiration_ms <= time.time() * 1000:
            return
        for subscriber in self.topics.get(box.watch_topic, ()):
            subscriber(box.email, box.history_id)

    def _watch(self, box: FakeMailbox, body: bytes) -> _Response:
        try:
            request = json.loads(body or b"{}")
            topic = request.get("topicName") if isinstance(request, dict) else None
        except ValueError as error:
            raise _BadRequest("Invalid JSON payload received.") from error
        if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic):
            raise _BadRequest(f"Invalid topicName does not match projects/*/topics/*: {topic}")
        if topic not in self.topics:
            # What Gmail answers when the topic is missing or Gmail may not publish to it.
            return _Response(
                403,
                gmail_error_body(
                    403,
                    f"Error sending test message to Cloud PubSub {topic} : User not authorized "
                    "to perform this action.",
                ),
            )
        box.watch_topic = topic
        box.watch_expiration_ms = int(time.time() * 1000) + WATCH_LIFETIME_MS
        return _Response(
            200, {"historyId": str(box.history_id), "expiration": str(box.watch_expiration_ms)}
        )

    def expire_watch(self, email_address: str) -> None:
        """The watch lapses (not renewed for 7 days): no more notifications."""
        with self._lock:
            self.mailbox(email_address).watch_expiration_ms = 0

    # ---- OAuth grants

    def register_client(self, client_id: str, client_secret: str) -> None:
        """Accept another OAuth client at the token endpoint."""
        with self._lock:
            self.clients[client_id] = client_secret

    def issue_refresh_token(self, email_address: str) -> str:
        """A refresh token for the mailbox (creating the mailbox if needed)."""
        with self._lock:
            self.add_mailbox(email_address)
            token = "1//fake-refresh-" + secrets.token_urlsafe(16)
            self._refresh_tokens[token] = email_address.lower()
            return token

    def issue_access_token(self, email_address: str, ttl: int | None = None) -> str:
        """An access token for the mailbox, valid for `ttl` seconds."""
        with self._lock:
            token = "ya29.fake-" + secrets.token_urlsafe(24)
            lifetime = self.access_token_ttl if ttl is None else ttl
            self._access_tokens[token] = _AccessGrant(
                email_address.lower(), time.monotonic() + lifetime
            )
            return token

    def issue_authorization_code(self, email_address: str) -> str:
        """A one-time code for the authorization_code grant (OAuth connect flow)."""
        with self._lock:
            self.add_mailbox(email_address)
            code = "4/fake-code-" + secrets.token_urlsafe(12)
            self._auth_codes[code] = email_address.lower()
            return code

    def revoke_refresh_token(self, token: str) -> None:
        """Revoke a refresh token and every access token (the user removed access)."""
        with self._lock:
            email_address = self._refresh_tokens.pop(token, None)
            self._access_tokens = {
                t: g for t, g in self._access_tokens.items() if g.email != email_address
            }

    def expire_access_tokens(self) -> None:
        """Make every issued access token invalid (clients must refresh)."""
        with self._lock:
            self._access_tokens.clear()

    # ---- faults and counters

    def inject(self, rule: FaultRule) -> FaultRule:
        """Add a fault rule; returns it so tests can read `rule.fired`."""
        with self._lock:
            self.faults.append(rule)
            return rule

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def on_request(self, hook: Callable[[RequestRecord], object]) -> None:
        """Call `hook(record)` for each request once it is in the log (processed, or hit
        by a fault), before its answer leaves.

        It runs in the server's thread with the fake's lock held, so it may change the
        mailbox (e.g. deliver mail after page 1 of a walk the test does not drive) but
        must not wait for the server.
        """
        with self._lock:
            self.request_hooks.append(hook)

    def reset_counters(self) -> None:
        with self._lock:
            self.counts.clear()
            self.log.clear()

    def fetches_of(self, message_id: str) -> int:
        """How many messages.get requests (direct or in a batch) asked for this id."""
        with self._lock:
            return sum(1 for r in self.log if r.kind == "get" and r.message_id == message_id)

    def _take_fault(
        self, kind: str, *, in_batch: bool = False, message_id: str | None = None
    ) -> FaultRule | None:
        with self._lock:
            for rule in self.faults:
                if in_batch:
                    if rule.endpoint != "batch_part":
                        continue
                elif rule.endpoint not in (kind, "any"):
                    continue
                if rule.message_id is not None and rule.message_id != message_id:
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
            return None

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self.counts["batch_part" if record.in_batch else record.kind] += 1
            self.log.append(record)
            for hook in list(self.request_hooks):
                hook(record)

    # ---- request handling (shared by direct requests and batch parts)

    def _authenticate(self, authorization: str | None) -> str | _Response:
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            grant = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
            if grant is None or grant.expires_at <= time.monotonic():
                response = _Response(
                    401,
                    gmail_error_body(
                        401,
                        "Request had invalid authentication credentials. Expected OAuth 2 "
                        "access token, login cookie or other valid authentication credential.",
                    ),
                    {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
                )
                return response
            return grant.email

    def handle_api(
        self, method: str, path: str, query: str, authorization: str | None, body: bytes = b""
    ) -> tuple[str, str | None, _Response]:
        """Answer one Gmail API call; returns (kind, message_id, response)."""
        match = _API_PATH_RE.match(path)
        if match is None:
            return "any", None, _Response(404, gmail_error_body(404, f"Not Found: {path}"))
        kind, message_id = _api_kind(path)
        if method != ("POST" if kind in ("watch", "stop", "send") else "GET"):
            return kind, message_id, _Response(405, gmail_error_body(400, "Method not allowed"))
        who = self._authenticate(authorization)
        if isinstance(who, _Response):
            return kind, message_id, who
        user = match["user"]
        if user != "me" and user.lower() != who:
            return (
                kind,
                message_id,
                _Response(403, gmail_error_body(403, f"Delegation denied for {who}")),
            )
        params = parse_qs(query, keep_blank_values=True)
        with self._lock:
            box = self.mailboxes[who]
            try:
                if kind == "profile":
                    response = _Response(200, self._profile(box))
                elif kind == "list":
                    response = self._list(box, params)
                elif kind == "get":
                    response = self._get(box, message_id or "", params)
                elif kind == "watch":
                    response = self._watch(box, body)
                elif kind == "stop":
                    box.watch_topic, box.watch_expiration_ms = None, 0
                    response = _Response(204, {})
                elif kind == "send":
                    response = self._send(box, body)
                elif kind == "send_as":
                    self._token_query(params, 0, ())
                    response = _Response(200, self._send_as_list(box))
                else:
                    response = self._history(box, params)
            except _BadRequest as error:
                response = _Response(
                    400, gmail_error_body(400, str(error), location=error.location)
                )
        return kind, message_id, response

    @staticmethod
    def _profile(box: FakeMailbox) -> dict[str, Any]:
        return {
            "emailAddress": box.email,
            "messagesTotal": len(box.messages),
            "threadsTotal": len({m.thread_id for m in box.messages.values()}),
            "historyId": str(box.history_id),
        }

    def _list(self, box: FakeMailbox, params: dict[str, list[str]]) -> _Response:
        max_results = _int_param(params, "maxResults", 100, low=1, high=500)
        include_spam_trash = _bool_param(params, "includeSpamTrash", default=False)
        label_ids = tuple(sorted({label for label in params.get("labelIds", []) if label}))
        q = _param(params, "q", "")
        wanted_message_id = None
        if q.strip():
            msgid = _RFC822MSGID_RE.match(q)
            if msgid is None:
                # Gmail's search syntax is not emulated beyond rfc822msgid:; refusing beats
                # ignoring the filter.
                raise _BadRequest("The fake Gmail server supports only q=rfc822msgid:<id>", "q")
            wanted_message_id = f"<{msgid.group(1)}>"
        query = self._token_query(
            params,
            max_results,
            (("includeSpamTrash", include_spam_trash), ("labelIds", label_ids), ("q", q)),
        )
        listing = box.listing(include_spam_trash)
        if wanted_message_id is not None:
            listing = [m for m in listing if _own_message_id(m.raw) == wanted_message_id]
        if label_ids:
            wanted = set(label_ids)
            listing = [m for m in listing if wanted <= set(m.label_ids)]
        start = 0
        if token := _param(params, "pageToken", ""):
            # The page starts after the last message served, by its sort key, so messages
            # added or deleted meanwhile never shift a page (no repeats, no gaps).
            cursor = self._page_cursor(token, "list", box, query)
            anchor_key = (-cursor.position[0], -cursor.position[1])
            start = bisect.bisect_right(listing, anchor_key, key=_listing_key)
        page = listing[start : start + max_results]
        body: dict[str, Any] = {
            "messages": [m.ref() for m in page],
            "resultSizeEstimate": len(listing),
        }
        if start + max_results < len(listing):
            last = page[-1]
            body["nextPageToken"] = self._issue_page_token(
                "list", box, query, (last.internal_date_ms, last.seq)
            )
        if not page:
            del body["messages"]
        return _Response(200, body)

    def _send_as_list(self, box: FakeMailbox) -> dict[str, Any]:
        primary = {
            "sendAsEmail": box.email,
            "displayName": "",
            "replyToAddress": "",
            "signature": "",
            "isPrimary": True,
            "isDefault": True,
        }
        return {"sendAs": [primary, *(dict(alias) for alias in box.send_as.values())]}

    def _send(self, box: FakeMailbox, body: bytes) -> _Response:
        """users.messages.send: store in the sender's mailbox (SENT), journal a copy."""
        try:
            request = json.loads(body or b"{}")
        except ValueError as error:
            raise _BadRequest("Invalid JSON payload received.") from error
        if not isinstance(request, dict) or not isinstance(request.get("raw"), str):
            raise _BadRequest(
                "'raw' RFC822 payload message string or uploading message via "
                "/upload/* URL required"
            )
        unknown = sorted(set(request) - {"raw", "threadId", "labelIds", "id", "snippet"})
        if unknown:
            raise _BadRequest(f'Invalid JSON payload received. Unknown name "{unknown[0]}"')
        try:
            text = request["raw"]
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, binascii.Error) as error:
            raise _BadRequest("Invalid value for ByteString") from error
        headers = _parse_headers(raw)
        if headers is None or not any(
            email.utils.getaddresses(headers.get_all(name, [])) for name in ("To", "Cc", "Bcc")
        ):
            raise _BadRequest("Recipient address required")
        raw = self._sender_from(box, raw, headers)
        thread_id = request.get("threadId")
        if thread_id is not None:
            members = [m for m in box.messages.values() if m.thread_id == thread_id]
            if not members:
                return _Response(404, gmail_error_body(404, "Requested entity was not found."))
            if not _may_join_thread(members, headers):
                thread_id = None
        message_id = self._store(box, raw, ["SENT"], thread_id)
        message = box.messages[message_id]
        journal = self.journal_address
        if journal is not None and journal.lower() != box.email.lower():
            self._store(self.add_mailbox(journal), raw, ["INBOX"], None)
        return _Response(
            200, {"id": message.id, "threadId": message.thread_id, "labelIds": ["SENT"]}
        )

    @staticmethod
    def _sender_from(box: FakeMailbox, raw: bytes, headers: Any) -> bytes:
        """Gmail sends as the account: a From it may not use becomes the account's address."""
        senders = email.utils.getaddresses(headers.get_all("From", []))
        allowed = {box.email.lower()} | {
            address
            for address, alias in box.send_as.items()
            if alias.get("verificationStatus") == "accepted"
        }
        if senders and senders[0][1].lower() in allowed:
            return raw
        head, separator, rest = raw.partition(b"\r\n\r\n")
        if not separator:
            head, separator, rest = raw.partition(b"\n\n")
        lines = re.sub(rb"(?im)^From:.*(?:\r?\n[ \t].*)*\r?\n?", b"", head + b"\r\n")
        return b"From: " + box.email.encode() + b"\r\n" + lines.rstrip(b"\r\n") + separator + rest

    def _store(
        self, box: FakeMailbox, raw: bytes, label_ids: list[str], thread_id: str | None
    ) -> str:
        """A message arriving in `box` now (a send or a journal copy), with its history."""
        seq = self._next_seq
        self._next_seq += 1
        message_id = f"{_ID_BASE + seq:016x}"
        headers = _parse_headers(raw)
        threaded = _thread_for(box, headers, message_id)
        if thread_id is not None:
            for own in _MSGID_RE.findall(str(headers.get("Message-ID", "") if headers else "")):
                box.thread_by_message_id_header[own] = thread_id
        message = FakeMessage(
            id=message_id,
            thread_id=thread_id or threaded,
            raw=bytes(raw),
            label_ids=list(label_ids),
            internal_date_ms=int(time.time() * 1000),
            history_id=self._advance(box),
            seq=seq,
        )
        box.messages[message_id] = message
        self._record(box, "messagesAdded", message)
        return message_id

    @staticmethod
    def _get(box: FakeMailbox, message_id: str, params: dict[str, list[str]]) -> _Response:
        message = box.messages.get(message_id)
        if message is None:
            return _Response(404, gmail_error_body(404, "Requested entity was not found."))
        response_format = _param(params, "format", "full")
        body: dict[str, Any] = {
            "id": message.id,
            "threadId": message.thread_id,
            "labelIds": list(message.label_ids),
            "snippet": "",
            "sizeEstimate": len(message.raw),
            "historyId": str(message.history_id),
            "internalDate": str(message.internal_date_ms),
        }
        if response_format == "raw":
            body["raw"] = base64.urlsafe_b64encode(message.raw).decode("ascii")
        elif response_format in ("metadata", "full"):
            wanted = {h.lower() for h in params.get("metadataHeaders", [])}
            headers = _parse_headers(message.raw)
            body["payload"] = {
                "mimeType": headers.get_content_type() if headers is not None else "text/plain",
                "headers": [
                    {"name": name, "value": str(value)}
                    for name, value in (headers.items() if headers is not None else [])
                    if not wanted or name.lower() in wanted
                ],
            }
        elif response_format != "minimal":
            raise _BadRequest(f"Invalid value for format: {response_format}")
        return _Response(200, body)

    def _history(self, box: FakeMailbox, params: dict[str, list[str]]) -> _Response:
        start_text = _param(params, "startHistoryId", "")
        if not start_text.isdigit():
            raise _BadRequest("Missing or invalid startHistoryId", "startHistoryId")
        start = int(start_text)
        max_results = _int_param(params, "maxResults", 100, low=1, high=500)
        history_types = [t for t in params.get("historyTypes", []) if t]
        for history_type in history_types:
            if history_type not in _HISTORY_TYPES:
                raise _BadRequest(f"Invalid value for historyTypes: {history_type}", "historyTypes")
        wanted_kinds = {_HISTORY_TYPES[t] for t in history_types}
        label_id = _param(params, "labelId", "")
        query = self._token_query(
            params,
            max_results,
            (
                ("startHistoryId", start),
                ("historyTypes", tuple(sorted(set(history_types)))),
                ("labelId", label_id),
            ),
        )
        after = start
        if token := _param(params, "pageToken", ""):
            after = self._page_cursor(token, "history", box, query).position[0]
        if after < box.history_floor:
            return _Response(404, gmail_error_body(404, "Requested entity was not found."))
        # The walk reads the log as it is when each page is served: records appended
        # after the first page are served by the later pages of the same walk.
        first = bisect.bisect_right(box.history, after, key=_record_id)
        page: list[FakeHistoryRecord] = []
        more = False
        for record in itertools.islice(box.history, first, None):
            if wanted_kinds and record.kind not in wanted_kinds:
                continue
            if label_id and not record.touches_label(label_id):
                continue
            if len(page) == max_results:
                more = True
                break
            page.append(record)
        body: dict[str, Any] = {"historyId": str(box.history_id)}
        if page:
            body["history"] = [r.to_json() for r in page]
        if more:
            body["nextPageToken"] = self._issue_page_token("history", box, query, (page[-1].id,))
        return _Response(200, body)

    # ---- page tokens

    def _token_query(
        self, params: dict[str, list[str]], max_results: int, query: tuple[tuple[str, Any], ...]
    ) -> tuple[tuple[str, Any], ...]:
        """The request's identity for its page tokens: `query`, plus maxResults if bound."""
        unknown = sorted(
            set(params) - _SYSTEM_PARAMS - {"pageToken", "maxResults"} - {name for name, _ in query}
        )
        if unknown:
            raise _BadRequest(f"Unknown parameter: {unknown[0]}", unknown[0])
        if self.page_tokens_bind_page_size:
            query += (("maxResults", max_results),)
        return query

    def _issue_page_token(
        self, kind: str, box: FakeMailbox, query: tuple[tuple[str, Any], ...], position: tuple
    ) -> str:
        """A random token naming a server-side cursor (nothing in it can be decoded); the
        same cursor gets the same token, so a repeated request gets the same answer."""
        cursor = _PageCursor(kind, box.email.lower(), query, position)
        token = self._token_of_cursor.get(cursor)
        if token is None:
            token = f"{secrets.randbelow(10**20):020d}"
            self._page_tokens[token] = cursor
            self._token_of_cursor[cursor] = token
        while len(self._page_tokens) > self.max_page_tokens:  # oldest first: they expire
            oldest = next(iter(self._page_tokens))
            del self._token_of_cursor[self._page_tokens.pop(oldest)]
        return token

    def _page_cursor(
        self, token: str, kind: str, box: FakeMailbox, query: tuple[tuple[str, Any], ...]
    ) -> _PageCursor:
        """The cursor of `token`, if it was issued for exactly this request; else 400."""
        cursor = self._page_tokens.get(token)
        if cursor is None or cursor.kind != kind or cursor.mailbox != box.email.lower():
            raise _BadRequest("Invalid pageToken", "pageToken")
        if cursor.query != query:
            changed = sorted(
                name
                for name in {n for n, _ in cursor.query} | {n for n, _ in query}
                if dict(cursor.query).get(name) != dict(query).get(name)
            )
            raise _BadRequest(
                "Invalid pageToken: it was issued for a request with other parameters "
                f"({', '.join(changed)} differ)",
                "pageToken",
            )
        return cursor

    def handle_token(self, form: dict[str, str], basic_auth: tuple[str, str] | None) -> _Response:
        """The OAuth token endpoint: refresh_token and authorization_code grants."""
        client_id, client_secret = basic_auth or (
            form.get("client_id", ""),
            form.get("client_secret", ""),
        )
        with self._lock:
            if self.clients.get(client_id) != client_secret:
                return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
            grant_type = form.get("grant_type")
            if grant_type == "refresh_token":
                email_address = self._refresh_tokens.get(form.get("refresh_token", ""))
                if email_address is None:
                    return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
                return _Response(200, self._token_body(email_address, form))
            if grant_type == "authorization_code":
                email_address = self._auth_codes.pop(form.get("code", ""), None)
                if email_address is None:
                    return _oauth_error(400, "invalid_grant", "Malformed auth code.")
                body = self._token_body(email_address, form)
                body["refresh_token"] = self.issue_refresh_token(email_address)
                return _Response(200, body)
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _token_body(self, email_address: str, form: dict[str, str]) -> dict[str, Any]:
        return {
            "access_token": self.issue_access_token(email_address),
            "expires_in": self.access_token_ttl,
            "token_type": "Bearer",
            "scope": form.get("scope") or "https://www.googleapis.com/auth/gmail.readonly",
        }


class _BadRequest(Exception):
    """A 400 INVALID_ARGUMENT answer; `location` names the offending parameter."""

    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


def _oauth_error(status: int, error: str, description: str) -> _Response:
    return _Response(status, {"error": error, "error_description": description})


def _param(params: dict[str, list[str]], name: str, default: str) -> str:
    values = params.get(name)
    return values[0] if values else default


def _int_param(params: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    """An unsigned integer parameter; 0 means the default (AIP-158), above `high` is
    coerced down to it."""
    text = _param(params, name, str(default))
    if not text.isdigit():
        raise _BadRequest(f"Invalid value for {name}: {text}", name)
    value = int(text) or default
    return max(low, min(high, value))


def _bool_param(params: dict[str, list[str]], name: str, *, default: bool) -> bool:
    text = _param(params, name, "").lower()
    if text == "":
        return default
    if text not in ("true", "false"):
        raise _BadRequest(f"Invalid value for {name}: {text}", name)
    return text == "true"


def _record_id(record: FakeHistoryRecord) -> int:
    return record.id


def _parse_headers(raw: bytes) -> Any:
    # compat32 tolerates the broken headers found in real mail; header-less input is fine.
    try:
        return BytesHeaderParser(policy=compat32).parsebytes(raw)
    except Exception:  # a fake must not crash on hostile mail
        return None


def _date_header_ms(headers: Any) -> int | None:
    """The Date header in epoch ms, or None when missing or unparseable."""
    if headers is None or headers.get("Date") is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(str(headers.get("Date")))
        if parsed.tzinfo is None:  # RFC 5322 "-0000": local time unknown; read as UTC
            parsed = parsed.replace(tzinfo=datetime.UTC)
        millis = int(parsed.timestamp() * 1000)
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return millis if millis > 0 else None


def _own_message_id(raw: bytes) -> str | None:
    headers = _parse_headers(raw)
    found = _MSGID_RE.findall(str(headers.get("Message-ID", ""))) if headers is not None else []
    return found[0] if found else None


def _may_join_thread(members: list[FakeMessage], headers: Any) -> bool:
    """The reference's criteria for adding a sent message to a thread: its References or
    In-Reply-To name a message of the thread, and the subjects match (prefixes aside)."""
    referenced = set(
        _MSGID_RE.findall(f"{headers.get('In-Reply-To', '')} {headers.get('References', '')}")
    )
    subject = _SUBJECT_PREFIX_RE.sub("", str(headers.get("Subject", ""))).strip().lower()
    for member in members:
        member_headers = _parse_headers(member.raw)
        if member_headers is None or _own_message_id(member.raw) not in referenced:
            continue
        theirs = _SUBJECT_PREFIX_RE.sub("", str(member_headers.get("Subject", ""))).strip()
        if theirs.lower() == subject:
            return True
    return False


def _thread_for(box: FakeMailbox, headers: Any, message_id: str) -> str:
    """Gmail-like threading: join the thread of any referenced Message-ID."""
    if headers is None:
        return message_id
    referenced = _MSGID_RE.findall(
        f"{headers.get('In-Reply-To', '')} {headers.get('References', '')}"
    )
    thread_id = next(
        (
            box.thread_by_message_id_header[r]
            for r in referenced
            if r in box.thread_by_message_id_header
        ),
        message_id,
    )
    for own in _MSGID_RE.findall(str(headers.get("Message-ID", ""))):
        box.thread_by_message_id_header.setdefault(own, thread_id)
    return thread_id


# --------------------------------------------------------------------------- HTTP layer


def _json_response(response: _Response) -> web.Response:
    if response.status == 204:  # users.stop: no content
        return web.Response(status=204, headers=response.headers)
    return web.Response(
        status=response.status,
        text=json.dumps(response.body),
        content_type="application/json",
        charset="utf-8",
        headers=response.headers,
    )


def _fault_response(rule: FaultRule, *, oauth: bool = False) -> _Response:
    headers = {}
    if rule.retry_after is not None:
        headers["Retry-After"] = f"{rule.retry_after:g}"
    if oauth:
        return _Response(rule.status, {"error": "temporarily_unavailable"}, headers)
    message = "Too many requests" if rule.status == 429 else "Injected fault"
    return _Response(rule.status, gmail_error_body(rule.status, message, rule.reason), headers)


def _drop(request: web.Request) -> web.Response:
    # Closing the transport makes the client see the connection end without a response;
    # aiohttp then silently discards the response returned below.
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


def make_app(fake: FakeGmail) -> web.Application:
    """The aiohttp application serving `fake` (all routes under the base URL root)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.method == "POST" and path.rstrip("/") == "/token":
            kind, message_id = "token", None
        elif request.method == "POST" and path.rstrip("/") == "/batch/gmail/v1":
            kind, message_id = "batch", None
        else:
            kind, message_id = _api_kind(path)
        rule = fake._take_fault(kind, message_id=message_id)
        if rule is not None and rule.action == "delay":
            await asyncio.sleep(rule.delay)
            rule = None
        if rule is not None and rule.action == "drop":
            fake._log(
                RequestRecord(
                    kind, request.method, path, request.query_string, 0, False, message_id
                )
            )
            return _drop(request)
        lose = rule is not None and rule.action == "lose_response"
        if lose:
            rule = None
        if rule is not None:
            response = _fault_response(rule, oauth=kind == "token")
            fake._log(
                RequestRecord(
                    kind, request.method, path, request.query_string, rule.status, False, message_id
                )
            )
            return _json_response(response)
        if kind == "token":
            response = fake.handle_token(dict(await request.post()), _basic_auth(request))
        elif kind == "batch":
            answer = await _handle_batch(fake, request, lose=lose)
            return _drop(request) if lose else answer
        else:
            kind, message_id, response = fake.handle_api(
                request.method,
                path,
                request.query_string,
                request.headers.get("Authorization"),
                await request.read(),
            )
        fake._log(
            RequestRecord(
                kind,
                request.method,
                path,
                request.query_string,
                response.status,
                False,
                message_id,
                lost=lose,
            )
        )
        # lose_response: everything above happened; the answer never leaves.
        return _drop(request) if lose else _json_response(response)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _basic_auth(request: web.Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    client_id, _, secret = base64.b64decode(value).decode().partition(":")
    return client_id, secret


async def _handle_batch(
    fake: FakeGmail, request: web.Request, *, lose: bool = False
) -> web.StreamResponse:
    """Answer a multipart/mixed batch: each application/http part is run like a request.

    `lose`: the caller will drop the answer (recorded as lost on the outer request).
    """
    body = await request.read()
    content_type = request.headers.get("Content-Type", "")
    outer_auth = request.headers.get("Authorization")
    container = HeaderParser(policy=compat32).parsestr(
        f"Content-Type: {content_type}\r\n\r\n", headersonly=True
    )
    boundary = container.get_param("boundary")
    response: _Response | None = None
    if not content_type.startswith("multipart/mixed") or not boundary:
        response = _Response(400, gmail_error_body(400, "Expected multipart/mixed"))
    elif outer_auth is not None:
        # A stale token on the outer request fails the whole batch with 401, so an
        # auth-refreshing client retries it once with a fresh token.
        who = fake._authenticate(outer_auth)
        if isinstance(who, _Response):
            response = who

    def log_batch(status: int) -> None:
        fake._log(RequestRecord("batch", "POST", request.path, "", status, False, None, lost=lose))

    if response is not None:
        log_batch(response.status)
        return _json_response(response)

    answer_boundary = "batch_" + secrets.token_hex(12)
    chunks: list[str] = []
    for part_headers, part_body in _split_multipart(body.decode("utf-8"), boundary):
        content_id = part_headers.get("content-id", "").strip()
        method, target, inner_headers = _parse_application_http(part_body)
        split = urlsplit(target)
        # Outer headers apply to every part unless the part sets its own (Gmail's rule).
        authorization = inner_headers.get("authorization", outer_auth)
        kind, message_id = _api_kind(split.path)
        rule = fake._take_fault("batch_part", in_batch=True, message_id=message_id)
        if rule is not None and rule.action == "delay":
            await asyncio.sleep(rule.delay)
            rule = None
        if rule is not None and rule.action == "drop":
            # The parts before this one were processed; this one and the rest never are.
            fake._log(RequestRecord(kind, method, split.path, split.query, 0, True, message_id))
            log_batch(0)
            return _drop(request)
        part_lost = rule is not None and rule.action == "lose_response"
        if rule is not None and not part_lost:
            response = _fault_response(rule)
        else:
            kind, message_id, response = fake.handle_api(
                method, split.path, split.query, authorization
            )
        fake._log(
            RequestRecord(
                kind,
                method,
                split.path,
                split.query,
                response.status,
                True,
                message_id,
                lost=part_lost or lose,
            )
        )
        if part_lost:
            # Processed, but the backend's answer did not reach the batch front end.
            response = _Response(503, gmail_error_body(503, "Backend Error", "backendError"))
        chunks.append(_format_part(content_id, response))
    log_batch(200)
    text = "".join(f"--{answer_boundary}\r\n{chunk}\r\n" for chunk in chunks)
    text += f"--{answer_boundary}--\r\n"
    return web.Response(
        status=200,
        body=text.encode("utf-8"),
        headers={"Content-Type": f"multipart/mixed; boundary={answer_boundary}"},
    )


def _split_multipart(text: str, boundary: str) -> Iterator[tuple[dict[str, str], str]]:
    """Parts of a multipart body as (lower-cased headers, body); LF or CRLF line ends."""
    delimiter = re.compile(rf"(?:^|\r?\n)--{re.escape(boundary)}(--)?[ \t]*(?:\r?\n|$)")
    pieces = delimiter.split(text)
    # split() yields: preamble, close-marker, part, close-marker, part, ...
    for index in range(2, len(pieces), 2):
        if pieces[index - 1]:  # the previous delimiter was the closing one
            break
        head, part_body = _split_head_body(pieces[index])
        headers = HeaderParser(policy=compat32).parsestr(head + "\n\n", headersonly=True)
        yield {k.lower(): str(v) for k, v in headers.items()}, part_body


def _split_head_body(text: str) -> tuple[str, str]:
    blank_line = re.search(r"\r?\n\r?\n", text)
    if blank_line is None:
        return text, ""
    return text[: blank_line.start()], text[blank_line.end() :]


def _parse_application_http(text: str) -> tuple[str, str, dict[str, str]]:
    request_line, _, rest = text.lstrip("\r\n").partition("\n")
    method, target = request_line.strip().split(" ")[:2]
    head, _ = _split_head_body(rest)
    headers = HeaderParser(policy=compat32).parsestr(head + "\n\n", headersonly=True)
    return method.upper(), target, {k.lower(): str(v) for k, v in headers.items()}


def _format_part(content_id: str, response: _Response) -> str:
    inner_id = content_id[1:-1] if content_id.startswith("<") else content_id
    payload = json.dumps(response.body)
    lines = [
        "Content-Type: application/http",
        f"Content-ID: <response-{inner_id}>",
        "",
        f"HTTP/1.1 {response.status} {_REASON_PHRASES.get(response.status, 'Error')}",
        "Content-Type: application/json; charset=UTF-8",
        *(f"{name}: {value}" for name, value in response.headers.items()),
        f"Content-Length: {len(payload.encode('utf-8'))}",
        "",
        payload,
    ]
    return "\r\n".join(lines)


# --------------------------------------------------------------------------- running it


@dataclass
class FakeGmailServer:
    """A running fake: `base_url` ends with '/', `token_uri` is its OAuth endpoint."""

    base_url: str
    control: FakeGmail

    @property
    def token_uri(self) -> str:
        return self.base_url + "token"


@contextlib.asynccontextmanager
async def fake_gmail_server(
    control: FakeGmail | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeGmailServer]:
    """Serve the fake on the current event loop (ephemeral port by default).

    The synchronous Gmail client must then be called via `asyncio.to_thread`, never
    directly from a coroutine on this loop (it would block the loop serving it).
    """
    control = control or FakeGmail()
    runner = web.AppRunner(make_app(control), shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield FakeGmailServer(f"http://{bound_host}:{bound_port}/", control)
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def fake_gmail_in_thread(
    control: FakeGmail | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeGmailServer]:
    """Serve the fake from a background thread with its own event loop.

    Use this when synchronous code (the Gmail client) runs in the caller's thread.
    """
    control = control or FakeGmail()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        try:
            async with fake_gmail_server(control, host=host, port=port) as server:
                box["server"] = server
                started.set()
                await stop.wait()
        except BaseException as error:
            box["error"] = error
            started.set()
            raise

    def run() -> None:
        with contextlib.suppress(BaseException):
            asyncio.run(serve())

    thread = threading.Thread(target=run, name="fake-gmail", daemon=True)
    thread.start()
    started.wait(timeout=10)
    if "server" not in box:
        thread.join(timeout=5)
        raise RuntimeError("fake Gmail server did not start") from box.get("error")
    try:
        yield box["server"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    """CLI: serve a mailbox built from an .eml directory or an mbox file."""
    parser = argparse.ArgumentParser(description="Run the fake Gmail API server.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--eml-dir", type=Path)
    source.add_argument("--mbox", type=Path)
    parser.add_argument("--user", default=DEFAULT_USER)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    args = parser.parse_args(argv)

    control = FakeGmail()
    if args.eml_dir:
        ids = control.add_eml_dir(args.user, args.eml_dir)
    else:
        ids = control.add_mbox(args.user, args.mbox)
    refresh_token = control.issue_refresh_token(args.user)

    async def serve() -> None:
        async with fake_gmail_server(control, host=args.host, port=args.port) as server:
            print(f"fake Gmail for {args.user}: {len(ids)} messages at {server.base_url}")
            print(f"  GMAIL_API_BASE_URL={server.base_url}")
            print(f"  token URI        {server.token_uri}")
            print(f"  client id        {FAKE_CLIENT_ID}")
            print(f"  client secret    {FAKE_CLIENT_SECRET}")
            print(f"  refresh token    {refresh_token}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
