"""The one factory around google-api-python-client for reading a Gmail mailbox.

`GmailClient` builds the Gmail service from the discovery document bundled with the
library (no network fetch), against a configurable base URL (GMAIL_API_BASE_URL; the
in-repo fake in tests), with OAuth credentials from a stored refresh token and a
configurable token URI. It returns plain Python data, retries 429/5xx/dropped
connections/timeouts with bounded exponential backoff honouring Retry-After, and turns
a revoked grant into `GmailReconnectRequired` and an expired history cursor into
`GmailHistoryExpired`.

The client is synchronous (httplib2) and not thread-safe: async callers run it with
`asyncio.to_thread`, and each thread uses its own `GmailClient` (one `httplib2.Http`
per thread). Close it (or use it as a context manager) to release its connections.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http.client
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import google.auth.exceptions
import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest

from kernel.settings import Settings

DEFAULT_GMAIL_API_BASE_URL = "https://gmail.googleapis.com/"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
GMAIL_READONLY_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"
GMAIL_SEND_SCOPE = "https://www.googleapis.com/auth/gmail.send"
# Gmail's guidance: batches larger than 50 requests are likely to be rate limited.
MAX_BATCH_SIZE = 50
# 403 reasons Gmail uses for rate limiting (older than its 429 answers).
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}

T = TypeVar("T")


class GmailError(Exception):
    """Base class of the errors this module raises."""


class GmailReconnectRequired(GmailError):
    """The grant was revoked or is invalid: mark the mailbox needs_reconnect, do not retry."""


class GmailHistoryExpired(GmailError):
    """history.list answered 404: the startHistoryId is too old; run a full backfill."""


class GmailRetriesExhausted(GmailError):
    """A transient failure persisted past the retry limits."""

    def __init__(self, operation: str, attempts: int, waited: float, last_error: str) -> None:
        super().__init__(
            f"Gmail {operation} failed after {attempts} attempts "
            f"({waited:.1f}s waited); last error: {last_error}"
        )
        self.operation = operation
        self.attempts = attempts
        self.waited = waited
        self.last_error = last_error


class GmailSendUncertain(GmailError):
    """messages.send got no usable answer (timeout, dropped connection, 429/5xx): Gmail may
    or may not have accepted the message. Never retried by the client: the caller asks
    Gmail (find_by_rfc822msgid) before sending again."""


class GmailApiError(GmailError):
    """A non-retryable answer from Gmail (e.g. 400, 403)."""

    def __init__(self, operation: str, status: int, message: str) -> None:
        super().__init__(f"Gmail {operation} failed with HTTP {status}: {message}")
        self.operation = operation
        self.status = status


@dataclass(frozen=True)
class Profile:
    email: str
    history_id: int
    messages_total: int


class MessageRef(NamedTuple):
    id: str
    thread_id: str


class MessagePage(NamedTuple):
    ids: list[MessageRef]
    next_page_token: str | None


@dataclass(frozen=True)
class RawMessage:
    id: str
    thread_id: str
    label_ids: tuple[str, ...]
    internal_date_ms: int
    history_id: int
    raw: bytes


@dataclass(frozen=True)
class HistoryMessage:
    id: str
    thread_id: str
    label_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelChange:
    message: HistoryMessage
    label_ids: tuple[str, ...]


@dataclass(frozen=True)
class HistoryRecord:
    id: int
    messages_added: tuple[HistoryMessage, ...] = ()
    messages_deleted: tuple[HistoryMessage, ...] = ()
    labels_added: tuple[LabelChange, ...] = ()
    labels_removed: tuple[LabelChange, ...] = ()


class HistoryPage(NamedTuple):
    records: list[HistoryRecord]
    next_page_token: str | None
    history_id: int


class Watch(NamedTuple):
    """A push notification watch: Gmail notifies the topic of changes until `expiration_ms`."""

    history_id: int
    expiration_ms: int


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for retrying transient failures.

    Delay before retry n (1-based) is min(max_delay, base_delay * 2**(n-1)) scaled by a
    jitter factor in [0.5, 1.0), or the server's Retry-After if that is longer. The
    operation fails with GmailRetriesExhausted after `max_attempts` attempts or when the
    next wait would push the total past `max_total_wait` seconds.
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 32.0
    max_total_wait: float = 120.0


@dataclass(frozen=True)
class GmailClientConfig:
    """Where and how to reach Gmail; shared by all clients of a process."""

    client_id: str
    client_secret: str
    base_url: str = DEFAULT_GMAIL_API_BASE_URL
    token_uri: str = DEFAULT_TOKEN_URI
    timeout_seconds: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batch_size: int = MAX_BATCH_SIZE

    @classmethod
    def from_settings(cls, settings: Settings) -> GmailClientConfig:
        """From Settings: GMAIL_API_BASE_URL, GOOGLE_TOKEN_URI, GOOGLE_CLIENT_ID/SECRET."""
        if not settings.google_client_id or not settings.google_client_secret:
            raise GmailError("GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET must be set")
        return cls(
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret,
            base_url=settings.gmail_api_base_url,
            token_uri=settings.google_token_uri,
        )


class _RetryBudget:
    """Attempts and waiting time left for one logical operation."""

    def __init__(
        self,
        operation: str,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        rng: Callable[[], float],
    ) -> None:
        self.operation = operation
        self.policy = policy
        self.sleep = sleep
        self.rng = rng
        self.attempts = 0
        self.waited = 0.0

    def start_attempt(self) -> None:
        self.attempts += 1

    def wait_or_give_up(self, error: str, retry_after: float | None) -> None:
        """Sleep before the next attempt, or raise GmailRetriesExhausted."""
        policy = self.policy
        backoff = min(policy.max_delay, policy.base_delay * 2 ** (self.attempts - 1))
        delay = backoff * (0.5 + self.rng() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if self.attempts >= policy.max_attempts or self.waited + delay > policy.max_total_wait:
            raise GmailRetriesExhausted(self.operation, self.attempts, self.waited, error)
        self.sleep(delay)
        self.waited += delay


class _Transient(Exception):
    """Internal: a retryable failure with an optional server-requested delay."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.retry_after = retry_after


# Transport-level failures worth another attempt: timeouts, resets, dropped connections
# (http.client.RemoteDisconnected is a ConnectionResetError), truncated responses.
_TRANSPORT_ERRORS = (
    OSError,
    http.client.HTTPException,
    httplib2.HttpLib2Error,
    google.auth.exceptions.TransportError,
)


class _SingleAttemptHttp(httplib2.Http):
    """An httplib2 transport that sends each request once.

    httplib2 sends a request again when the connection closes before the answer, taking it
    for a stale keep-alive connection: harmless for a read, a second e-mail for a send
    (seen against the fake's lost answers). Failures here reach the caller instead.
    """

    def _conn_request(self, conn, request_uri, method, body, headers):
        if conn.sock is None:
            conn.connect()
        try:
            conn.request(method, request_uri, body, headers)
            answer = conn.getresponse()
            content = answer.read()
        except BaseException:
            conn.close()
            raise
        response = httplib2.Response(answer)
        if response.get("content-encoding") in ("gzip", "deflate"):
            content = httplib2._decompressContent(response, content, self.limit_kwargs)
        return response, content


class GmailClient:
    """A synchronous Gmail reader for one mailbox; see the module docstring."""

    def __init__(
        self,
        config: GmailClientConfig,
        refresh_token: str,
        *,
        access_token: str | None = None,
        user_id: str = "me",
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.user_id = user_id
        self._sleep = sleep
        self._rng = rng
        self.credentials = Credentials(
            token=access_token,
            refresh_token=refresh_token,
            token_uri=config.token_uri,
            client_id=config.client_id,
            client_secret=config.client_secret,
        )
        base_url = config.base_url if config.base_url.endswith("/") else config.base_url + "/"
        # The discovery document's batch URI points at googleapis.com; ours follows base_url.
        self.batch_uri = base_url + "batch/gmail/v1"
        self._transport = httplib2.Http(timeout=config.timeout_seconds)
        # AuthorizedHttp refreshes the access token when it expires or on a 401.
        self._http = google_auth_httplib2.AuthorizedHttp(self.credentials, http=self._transport)
        # Sends go through a transport that never repeats a request (_SingleAttemptHttp).
        self._send_transport = _SingleAttemptHttp(timeout=config.timeout_seconds)
        self._send_http = google_auth_httplib2.AuthorizedHttp(
            self.credentials, http=self._send_transport
        )
        self._service = build(
            "gmail",
            "v1",
            http=self._http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": base_url},
        )
        # Resource objects are rebuilt from the discovery document on every access
        # (costly: it dominated batch fetches), so take each one once.
        self._users = self._service.users()
        self._messages = self._users.messages()
        self._history = self._users.history()

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()
        self._send_transport.close()

    def __enter__(self) -> GmailClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- operations

    def get_profile(self) -> Profile:
        """users.getProfile: the mailbox address, current historyId and message count."""
        body = self._execute(
            "users.getProfile", lambda: self._users.getProfile(userId=self.user_id)
        )
        return Profile(
            email=body["emailAddress"],
            history_id=int(body["historyId"]),
            messages_total=int(body.get("messagesTotal", 0)),
        )

    def list_message_ids(
        self,
        page_token: str | None = None,
        max_results: int = 500,
        *,
        include_spam_trash: bool = False,
    ) -> MessagePage:
        """One page of users.messages.list (newest first): ([(id, thread_id)], next token)."""
        body = self._execute(
            "users.messages.list",
            lambda: self._messages.list(
                userId=self.user_id,
                pageToken=page_token,
                maxResults=max_results,
                includeSpamTrash=include_spam_trash,
            ),
        )
        refs = [MessageRef(m["id"], m["threadId"]) for m in body.get("messages", [])]
        return MessagePage(refs, body.get("nextPageToken") or None)

    def list_history(
        self,
        start_history_id: int,
        page_token: str | None = None,
        *,
        max_results: int = 500,
        history_types: Sequence[str] | None = None,
    ) -> HistoryPage:
        """One page of users.history.list after `start_history_id`.

        Returns (records, next_page_token, history_id); `history_id` is the mailbox's
        current one, the cursor to store after the last page. Raises GmailHistoryExpired
        when Gmail no longer has history that old (HTTP 404).
        """
        try:
            body = self._execute(
                "users.history.list",
                lambda: self._history.list(
                    userId=self.user_id,
                    startHistoryId=str(start_history_id),
                    pageToken=page_token,
                    maxResults=max_results,
                    historyTypes=list(history_types) if history_types else None,
                ),
            )
        except GmailApiError as error:
            if error.status == 404:
                raise GmailHistoryExpired(
                    f"history from {start_history_id} is no longer available"
                ) from error
            raise
        records = [_history_record(entry) for entry in body.get("history", [])]
        return HistoryPage(records, body.get("nextPageToken") or None, int(body["historyId"]))

    def watch(self, topic_name: str) -> Watch:
        """users.watch: publish every change of the mailbox to the Pub/Sub topic (renew
        before the returned expiration; Google asks for a daily renewal)."""
        body = self._execute(
            "users.watch",
            lambda: self._users.watch(userId=self.user_id, body={"topicName": topic_name}),
        )
        return Watch(int(body["historyId"]), int(body["expiration"]))

    def stop_watch(self) -> None:
        """users.stop: no more push notifications for this mailbox."""
        self._execute("users.stop", lambda: self._users.stop(userId=self.user_id))

    def send_raw(self, raw: bytes, thread_id: str | None = None) -> MessageRef:
        """users.messages.send of an RFC 5322 message, ONE attempt (a retry could send it
        twice). Returns (id, threadId). Raises GmailSendUncertain when the outcome is
        unknown (no answer, 429, 5xx), GmailReconnectRequired when the grant is refused,
        GmailApiError for a refusal (4xx: the message was not sent)."""
        body: dict[str, Any] = {"raw": base64.urlsafe_b64encode(raw).decode("ascii")}
        if thread_id:
            body["threadId"] = thread_id
        try:
            with _translate_errors("users.messages.send"):
                request = self._messages.send(userId=self.user_id, body=body)
                answer = request.execute(http=self._send_http, num_retries=0)
        except _Transient as transient:
            raise GmailSendUncertain(f"users.messages.send: {transient}") from transient
        return MessageRef(answer["id"], answer["threadId"])

    def find_by_rfc822msgid(self, message_id: str) -> MessageRef | None:
        """The message whose Message-ID header is `message_id` in this mailbox, trash and
        spam included (messages.list with q=rfc822msgid:), or None."""
        bare = message_id.strip().removeprefix("<").removesuffix(">")
        body = self._execute(
            "users.messages.list",
            lambda: self._messages.list(
                userId=self.user_id, q=f"rfc822msgid:{bare}", includeSpamTrash=True
            ),
        )
        found = body.get("messages") or []
        return MessageRef(found[0]["id"], found[0]["threadId"]) if found else None

    def list_send_as(self) -> list[dict[str, Any]]:
        """users.settings.sendAs.list: the account's primary address and its aliases."""
        body = self._execute(
            "users.settings.sendAs.list",
            lambda: self._users.settings().sendAs().list(userId=self.user_id),
        )
        return list(body.get("sendAs", []))

    def fetch_raw(self, ids: Iterable[str]) -> dict[str, RawMessage]:
        """Fetch messages in format=raw through batch requests (at most batch_size each).

        Parts answered 429/5xx are retried for just those ids. Ids Gmail reports as not
        found (404, e.g. deleted meanwhile; or 400 invalid id) are absent from the result.
        """
        wanted = list(dict.fromkeys(ids))
        fetched: dict[str, RawMessage] = {}
        size = max(1, min(self.config.batch_size, MAX_BATCH_SIZE))
        for start in range(0, len(wanted), size):
            self._fetch_chunk(wanted[start : start + size], fetched)
        return fetched

    # ---- internals

    def _budget(self, operation: str) -> _RetryBudget:
        return _RetryBudget(operation, self.config.retry, self._sleep, self._rng)

    def _execute(self, operation: str, make_request: Callable[[], HttpRequest]) -> dict[str, Any]:
        budget = self._budget(operation)
        while True:
            budget.start_attempt()
            try:
                with _translate_errors(operation):
                    # num_retries=0: the retry policy here replaces the library's own.
                    return make_request().execute(num_retries=0)
            except _Transient as transient:
                budget.wait_or_give_up(str(transient), transient.retry_after)

    def _ensure_fresh_token(self) -> None:
        # BatchHttpRequest refreshes invalid credentials through a throwaway Http of its
        # own (no timeout, never closed); refreshing here first keeps it on ours.
        if not self.credentials.valid:
            self.credentials.refresh(google_auth_httplib2.Request(self._transport))

    def _fetch_chunk(self, chunk: list[str], fetched: dict[str, RawMessage]) -> None:
        operation = "users.messages.get (batch)"
        budget = self._budget(operation)
        pending = list(chunk)
        while pending:
            budget.start_attempt()
            answers: dict[str, tuple[dict[str, Any] | None, HttpError | None]] = {}

            def collect(request_id: str, response: Any, exception: Exception | None) -> None:
                answers[request_id] = (response, exception)  # noqa: B023 - used immediately

            batch = BatchHttpRequest(callback=collect, batch_uri=self.batch_uri)
            for message_id in pending:
                request = self._messages.get(userId=self.user_id, id=message_id, format="raw")
                # Without an http of its own the part carries no Authorization header and
                # inherits the outer request's, which AuthorizedHttp refreshes on a 401.
                request.http = None
                batch.add(request, request_id=message_id)
            try:
                with _translate_errors(operation):
                    self._ensure_fresh_token()
                    batch.execute(http=self._http)
            except _Transient as transient:
                budget.wait_or_give_up(str(transient), transient.retry_after)
                continue

            retry_ids: list[str] = []
            retry_after: float | None = None
            last_error = ""
            for message_id in pending:
                body, error = answers.get(message_id, (None, None))
                if error is None and body is not None:
                    fetched[message_id] = _raw_message(body)
                    continue
                if error is None:
                    raise GmailApiError(operation, 0, f"no answer for message {message_id}")
                status = error.resp.status
                if status in (400, 404):
                    continue  # gone (deleted meanwhile) or an invalid id: report as missing
                if _is_retryable(error):
                    retry_ids.append(message_id)
                    part_retry_after = _retry_after_seconds(error.resp)
                    if part_retry_after is not None:
                        retry_after = max(retry_after or 0.0, part_retry_after)
                    last_error = f"HTTP {status} for message {message_id}: {_error_message(error)}"
                    continue
                if status == 401:
                    raise GmailReconnectRequired(
                        f"Gmail rejected the credentials: {_error_message(error)}"
                    ) from error
                raise GmailApiError(operation, status, _error_message(error)) from error
            pending = retry_ids
            if pending:
                budget.wait_or_give_up(last_error, retry_after)


@contextlib.contextmanager
def _translate_errors(operation: str) -> Iterator[None]:
    """Map library exceptions to this module's error model (_Transient is internal)."""
    try:
        yield
    except google.auth.exceptions.RefreshError as error:
        if error.retryable:
            raise _Transient(f"token refresh failed: {error}") from error
        raise GmailReconnectRequired(f"OAuth grant rejected: {error}") from error
    except BatchError as error:
        # A batch answer that is not valid multipart (e.g. cut short): try again.
        raise _Transient(f"malformed batch response: {error}") from error
    except HttpError as error:
        if _is_retryable(error):
            raise _Transient(
                f"HTTP {error.resp.status}: {_error_message(error)}",
                _retry_after_seconds(error.resp),
            ) from error
        if error.resp.status == 401:
            # AuthorizedHttp already refreshed the token and retried: still rejected.
            raise GmailReconnectRequired(
                f"Gmail rejected the credentials: {_error_message(error)}"
            ) from error
        raise GmailApiError(operation, error.resp.status, _error_message(error)) from error
    except _TRANSPORT_ERRORS as error:
        raise _Transient(f"{type(error).__name__}: {error}") from error


def _is_retryable(error: HttpError) -> bool:
    status = error.resp.status
    if status == 429 or status >= 500:
        return True
    if status == 403:
        return any(
            detail.get("reason") in _RATE_LIMIT_REASONS
            for detail in (error.error_details or [])
            if isinstance(detail, dict)
        )
    return False


def _error_message(error: HttpError) -> str:
    return error.reason or f"HTTP {error.resp.status}"


def _retry_after_seconds(response: Any) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    value = response.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _decode_raw(text: str) -> bytes:
    # Gmail's base64url may come with or without padding.
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_message(body: dict[str, Any]) -> RawMessage:
    return RawMessage(
        id=body["id"],
        thread_id=body["threadId"],
        label_ids=tuple(body.get("labelIds", ())),
        internal_date_ms=int(body.get("internalDate", 0)),
        history_id=int(body.get("historyId", 0)),
        raw=_decode_raw(body["raw"]),
    )


def _history_message(data: dict[str, Any]) -> HistoryMessage:
    return HistoryMessage(data["id"], data.get("threadId", ""), tuple(data.get("labelIds", ())))


def _history_record(entry: dict[str, Any]) -> HistoryRecord:
    def messages(key: str) -> tuple[HistoryMessage, ...]:
        return tuple(_history_message(item["message"]) for item in entry.get(key, []))

    def label_changes(key: str) -> tuple[LabelChange, ...]:
        return tuple(
            LabelChange(_history_message(item["message"]), tuple(item.get("labelIds", ())))
            for item in entry.get(key, [])
        )

    return HistoryRecord(
        id=int(entry["id"]),
        messages_added=messages("messagesAdded"),
        messages_deleted=messages("messagesDeleted"),
        labels_added=label_changes("labelsAdded"),
        labels_removed=label_changes("labelsRemoved"),
    )
