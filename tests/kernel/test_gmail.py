"""The real google-api-python-client stack (kernel.gmail) against the fake Gmail server
over HTTP on loopback: no mocks. Sleeps are recorded, not waited, so retries stay fast."""

from __future__ import annotations

import asyncio
import base64
import json
import mailbox
import time
import urllib.parse
from pathlib import Path

import httplib2
import pytest

from devtools.fake_gmail import (
    FAKE_CLIENT_ID,
    FAKE_CLIENT_SECRET,
    FakeGmail,
    FakeGmailServer,
    FaultRule,
    fake_gmail_server,
)
from kernel.gmail import (
    GmailApiError,
    GmailClient,
    GmailClientConfig,
    GmailHistoryExpired,
    GmailReconnectRequired,
    GmailRetriesExhausted,
    RetryPolicy,
)
from tests.fixtures.gmail import GMAIL_TEST_USER, RecordingSleep

CORPUS = Path("/work/shared/corpus")
# A handful of hostile real messages: CRLF with a zip attachment, CRLF with large base64
# attachments, mixed line endings with raw 8-bit headers, NUL bytes, CR-only line ends, and
# one starting with an mbox "From " line.
CORPUS_PICKS = [
    "parsedmarc/aggregate_Report_domain-_borschow.com_Submitter-_google.com_Report-ID-_949348866075514174.eml",
    "php-mime-mail-parser/issue274.eml",
    "spamscope-mail-parser/mail_outlook_1.eml",
    "patchwork/fuzz_codec-null.eml",
    "patchwork/fuzz_date-oserror.eml",
    "parsedmarc/failure_dmarc_ruf_report_linkedin.crlf.eml",
]


def synthetic_message(n: int, *, date: str = "Mon, 01 Jan 2024 00:00:00 +0000") -> bytes:
    return (
        f"From: sender{n}@example.org\r\nTo: {GMAIL_TEST_USER}\r\nDate: {date}\r\n"
        f"Message-ID: <m{n}@example.org>\r\nSubject: message {n}\r\n\r\nbody {n}\r\n"
    ).encode()


def add_synthetic(fake: FakeGmail, count: int, start: int = 0) -> list[str]:
    # Distinct Date headers one minute apart give a well-defined newest-first order.
    return [
        fake.add_message(
            GMAIL_TEST_USER,
            synthetic_message(n),
            internal_date_ms=1_704_067_200_000 + n * 60_000,
        )
        for n in range(start, start + count)
    ]


# --------------------------------------------------------------------------- operations


def test_profile_reports_mailbox_history_and_count(fake_gmail, gmail_client_factory):
    add_synthetic(fake_gmail, 3)
    client = gmail_client_factory()

    profile = client.get_profile()

    assert profile.email == GMAIL_TEST_USER
    assert profile.messages_total == 3
    assert profile.history_id == fake_gmail.mailbox(GMAIL_TEST_USER).history_id
    assert fake_gmail.counts["token"] == 1  # first call obtained an access token


def test_listing_several_pages_yields_every_id_once(fake_gmail, gmail_client_factory):
    ids = add_synthetic(fake_gmail, 310)
    client = gmail_client_factory()

    seen: list[str] = []
    page_token = None
    pages = 0
    while True:
        page = client.list_message_ids(page_token, max_results=100)
        pages += 1
        seen.extend(ref.id for ref in page.ids)
        assert all(ref.thread_id for ref in page.ids)
        page_token = page.next_page_token
        if page_token is None:
            break

    assert pages == 4
    assert len(seen) == len(set(seen)) == 310
    assert seen == list(reversed(ids))  # newest first
    assert fake_gmail.counts["list"] == 4  # no page fetched twice


def test_fetch_raw_returns_byte_identical_corpus_messages(fake_gmail, gmail_client_factory):
    originals = {
        fake_gmail.add_message(GMAIL_TEST_USER, (CORPUS / "messages" / name).read_bytes()): name
        for name in CORPUS_PICKS
    }
    client = gmail_client_factory()

    fetched = client.fetch_raw(originals)

    assert set(fetched) == set(originals)
    for message_id, name in originals.items():
        expected = (CORPUS / "messages" / name).read_bytes()
        message = fetched[message_id]
        assert message.raw == expected, name
        stored = fake_gmail.mailbox(GMAIL_TEST_USER).messages[message_id]
        assert message.thread_id == stored.thread_id
        assert message.label_ids == ("INBOX",)
        assert message.internal_date_ms == stored.internal_date_ms
        assert message.history_id == stored.history_id
    assert b"\r\n" in fetched[next(iter(originals))].raw
    assert any(b"\x00" in m.raw for m in fetched.values())
    assert fake_gmail.counts["batch"] == 1
    assert fake_gmail.counts["batch_part"] == len(CORPUS_PICKS)


def test_fetch_raw_chunks_by_50_and_reports_deleted_as_missing(fake_gmail, gmail_client_factory):
    ids = add_synthetic(fake_gmail, 120)
    deleted = ids[77]
    fake_gmail.delete_message(GMAIL_TEST_USER, deleted)
    client = gmail_client_factory()

    fetched = client.fetch_raw(ids)

    assert set(fetched) == set(ids) - {deleted}
    assert fetched[ids[5]].raw == synthetic_message(5)
    assert fake_gmail.counts["batch"] == 3  # 50 + 50 + 20
    assert all(fake_gmail.fetches_of(i) == 1 for i in ids)


def test_history_pages_through_messages_added_at_runtime(fake_gmail, gmail_client_factory):
    # One record per delivery, so the label records below are the only ones (deliveries
    # with label records of their own: tests/devtools/test_fake_gmail.py).
    fake_gmail.delivery_label_records = 0
    add_synthetic(fake_gmail, 5)
    client = gmail_client_factory()
    cursor = client.get_profile().history_id

    added = add_synthetic(fake_gmail, 7, start=100)
    fake_gmail.delete_message(GMAIL_TEST_USER, added[0])
    fake_gmail.modify_labels(GMAIL_TEST_USER, added[1], add=["Label_1"], remove=["INBOX"])

    records = []
    page_token = None
    pages = 0
    while True:
        page = client.list_history(cursor, page_token, max_results=3)
        pages += 1
        records.extend(page.records)
        page_token = page.next_page_token
        if page_token is None:
            break

    assert pages == 4  # 7 added + 1 deleted + 1 labels added + 1 labels removed = 10
    assert [m.id for r in records for m in r.messages_added] == added
    assert [m.id for r in records for m in r.messages_deleted] == [added[0]]
    assert [(c.message.id, c.label_ids) for r in records for c in r.labels_added] == [
        (added[1], ("Label_1",))
    ]
    assert [(c.message.id, c.label_ids) for r in records for c in r.labels_removed] == [
        (added[1], ("INBOX",))
    ]
    assert [r.id for r in records] == sorted(r.id for r in records)
    assert all(r.id > cursor for r in records)
    assert page.history_id == client.get_profile().history_id

    only_added = client.list_history(cursor, history_types=["messageAdded"])
    assert len(only_added.records) == 7


def test_expired_history_raises_history_expired(fake_gmail, gmail_client_factory, gmail_sleep):
    add_synthetic(fake_gmail, 2)
    client = gmail_client_factory()
    cursor = client.get_profile().history_id
    add_synthetic(fake_gmail, 2, start=10)
    fake_gmail.expire_history(GMAIL_TEST_USER)

    with pytest.raises(GmailHistoryExpired):
        client.list_history(cursor)
    assert gmail_sleep.delays == []  # a 404 is not retried
    # A cursor taken after the expiry works again.
    assert client.list_history(client.get_profile().history_id).records == []


# --------------------------------------------------------------------------- retries


def test_429_storm_is_ridden_out_honouring_retry_after(
    fake_gmail, gmail_client_factory, gmail_sleep
):
    add_synthetic(fake_gmail, 3)
    storm = fake_gmail.inject(FaultRule("list", status=429, retry_after=7, times=5))
    client = gmail_client_factory()

    page = client.list_message_ids()

    assert len(page.ids) == 3
    assert storm.fired == 5
    assert len(gmail_sleep.delays) == 5
    assert all(delay >= 7 for delay in gmail_sleep.delays)
    assert fake_gmail.counts["list"] == 6


def test_server_errors_and_rate_limit_403_are_retried(
    fake_gmail, gmail_client_factory, gmail_sleep
):
    fake_gmail.inject(FaultRule("profile", status=500, times=1))
    fake_gmail.inject(FaultRule("profile", status=503, times=1))
    fake_gmail.inject(FaultRule("profile", status=403, reason="userRateLimitExceeded", times=1))
    client = gmail_client_factory()

    assert client.get_profile().email == GMAIL_TEST_USER
    assert fake_gmail.counts["profile"] == 4
    # Exponential backoff with the fixed jitter factor 0.75: 0.75, 1.5, 3.
    assert gmail_sleep.delays == [0.75, 1.5, 3.0]


def test_plain_403_is_not_retried(fake_gmail, gmail_client_factory, gmail_sleep):
    fake_gmail.inject(FaultRule("profile", status=403, reason="forbidden", times=1))
    client = gmail_client_factory()

    with pytest.raises(GmailApiError) as error:
        client.get_profile()
    assert error.value.status == 403
    assert gmail_sleep.delays == []


def test_dropped_connections_are_retried(fake_gmail, gmail_client_factory, gmail_sleep):
    ids = add_synthetic(fake_gmail, 4)
    client = gmail_client_factory()
    drops = fake_gmail.inject(FaultRule("list", action="drop", times=3))

    assert [ref.id for ref in client.list_message_ids().ids] == list(reversed(ids))
    assert drops.fired == 3
    # httplib2 itself resends once after a stale-connection drop; we retried the rest.
    assert len(gmail_sleep.delays) >= 1

    batch_drops = fake_gmail.inject(FaultRule("batch", action="drop", times=2))
    assert set(client.fetch_raw(ids)) == set(ids)
    assert batch_drops.fired == 2


def test_slow_response_times_out_and_is_retried(fake_gmail, gmail_client_factory, gmail_sleep):
    client = gmail_client_factory(timeout_seconds=0.2)
    client.get_profile()  # warm up: token fetched, connection open
    slow = fake_gmail.inject(FaultRule("profile", action="delay", delay=0.5, times=1))

    started = time.monotonic()
    assert client.get_profile().email == GMAIL_TEST_USER
    assert slow.fired == 1
    assert len(gmail_sleep.delays) == 1
    assert time.monotonic() - started < 0.5 + 0.2  # did not wait for the slow answer


def test_batch_part_429_is_retried_for_that_id_only(fake_gmail, gmail_client_factory, gmail_sleep):
    ids = add_synthetic(fake_gmail, 10)
    throttled = ids[4]
    fake_gmail.inject(FaultRule("batch_part", status=429, retry_after=2, message_id=throttled))
    client = gmail_client_factory()

    fetched = client.fetch_raw(ids)

    assert set(fetched) == set(ids)
    assert fetched[throttled].raw == synthetic_message(4)
    assert fake_gmail.fetches_of(throttled) == 2
    assert all(fake_gmail.fetches_of(i) == 1 for i in ids if i != throttled)
    assert fake_gmail.counts["batch"] == 2
    assert gmail_sleep.delays == [2.0]


def test_gives_up_after_bounded_attempts(fake_gmail, gmail_client_factory, gmail_sleep):
    fake_gmail.inject(FaultRule("profile", status=503, times=None))
    client = gmail_client_factory(retry=RetryPolicy(max_attempts=4))

    with pytest.raises(GmailRetriesExhausted, match=r"after 4 attempts.*HTTP 503") as error:
        client.get_profile()

    assert error.value.attempts == 4
    assert fake_gmail.counts["profile"] == 4
    assert len(gmail_sleep.delays) == 3


def test_gives_up_when_retry_after_exceeds_total_wait(
    fake_gmail, gmail_client_factory, gmail_sleep
):
    fake_gmail.inject(FaultRule("list", status=429, retry_after=3600, times=None))
    client = gmail_client_factory(retry=RetryPolicy(max_total_wait=120))

    with pytest.raises(GmailRetriesExhausted, match="after 1 attempts"):
        client.list_message_ids()
    assert gmail_sleep.delays == []


def test_batch_part_failing_forever_gives_up(fake_gmail, gmail_client_factory):
    ids = add_synthetic(fake_gmail, 3)
    fake_gmail.inject(FaultRule("batch_part", status=500, times=None, message_id=ids[1]))
    client = gmail_client_factory(retry=RetryPolicy(max_attempts=3))

    with pytest.raises(GmailRetriesExhausted, match=f"HTTP 500 for message {ids[1]}"):
        client.fetch_raw(ids)
    assert fake_gmail.fetches_of(ids[1]) == 3
    assert fake_gmail.fetches_of(ids[0]) == 1


# --------------------------------------------------------------------------- credentials


def test_expired_access_token_is_refreshed_transparently(
    fake_gmail, gmail_client_factory, gmail_sleep
):
    ids = add_synthetic(fake_gmail, 3)
    client = gmail_client_factory()
    client.get_profile()
    assert fake_gmail.counts["token"] == 1

    fake_gmail.expire_access_tokens()
    assert client.get_profile().messages_total == 3
    assert fake_gmail.counts["token"] == 2

    fake_gmail.expire_access_tokens()
    assert set(client.fetch_raw(ids)) == set(ids)
    assert fake_gmail.counts["token"] == 3
    assert gmail_sleep.delays == []


def test_revoked_refresh_token_requires_reconnect(fake_gmail, gmail_client_factory, gmail_sleep):
    refresh_token = fake_gmail.issue_refresh_token(GMAIL_TEST_USER)
    client = gmail_client_factory(refresh_token=refresh_token)
    client.get_profile()

    fake_gmail.revoke_refresh_token(refresh_token)

    with pytest.raises(GmailReconnectRequired, match="invalid_grant"):
        client.get_profile()
    with pytest.raises(GmailReconnectRequired):
        client.fetch_raw(["18c0000000000000"])
    with pytest.raises(GmailReconnectRequired):
        gmail_client_factory(refresh_token="1//never-issued").list_message_ids()
    assert gmail_sleep.delays == []
    assert fake_gmail.counts["token"] == 4  # one success, then one refusal per call


def test_authorization_code_grant_gives_a_working_refresh_token(
    fake_gmail, fake_gmail_thread, gmail_client_factory
):
    code = fake_gmail.issue_authorization_code(GMAIL_TEST_USER)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": FAKE_CLIENT_ID,
        "client_secret": FAKE_CLIENT_SECRET,
        "redirect_uri": "http://localhost/callback",
    }
    status, body = post_form(fake_gmail_thread.token_uri, form)
    assert status == 200
    assert body["access_token"] and body["expires_in"] > 0
    assert gmail_client_factory(refresh_token=body["refresh_token"]).get_profile().email == (
        GMAIL_TEST_USER
    )

    status, body = post_form(fake_gmail_thread.token_uri, form)  # codes are single-use
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = post_form(fake_gmail_thread.token_uri, {**form, "client_secret": "wrong"})
    assert (status, body["error"]) == (401, "invalid_client")


# --------------------------------------------------------------------------- the fake itself


def http_get(url: str, token: str | None = None) -> tuple[int, dict]:
    http = httplib2.Http(timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response, content = http.request(url, "GET", headers=headers)
    finally:
        http.close()
    return response.status, json.loads(content)


def post_form(url: str, form: dict[str, str]) -> tuple[int, dict]:
    http = httplib2.Http(timeout=5)
    try:
        response, content = http.request(
            url,
            "POST",
            body=urllib.parse.urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    finally:
        http.close()
    return response.status, json.loads(content)


def test_fake_requires_a_valid_bearer_token(fake_gmail, fake_gmail_thread):
    url = fake_gmail_thread.base_url + "gmail/v1/users/me/profile"

    for token in (None, "not-a-token"):
        status, body = http_get(url, token)
        assert status == 401
        assert body["error"]["code"] == 401
        assert body["error"]["status"] == "UNAUTHENTICATED"
        assert body["error"]["errors"][0]["reason"] == "authError"

    token = fake_gmail.issue_access_token(GMAIL_TEST_USER)
    assert http_get(url, token)[0] == 200
    other = fake_gmail.issue_access_token("someone-else@example.com")
    status, body = http_get(
        fake_gmail_thread.base_url + f"gmail/v1/users/{GMAIL_TEST_USER}/profile", other
    )
    assert status == 403


def test_fake_page_tokens_stay_stable_while_messages_arrive(fake_gmail, fake_gmail_thread):
    ids = add_synthetic(fake_gmail, 25, start=100)
    token = fake_gmail.issue_access_token(GMAIL_TEST_USER)
    list_url = fake_gmail_thread.base_url + "gmail/v1/users/me/messages?maxResults=10"

    status, first = http_get(list_url, token)
    assert status == 200 and first["resultSizeEstimate"] == 25
    newer = add_synthetic(fake_gmail, 3, start=200)  # sorts before the first page
    older = add_synthetic(fake_gmail, 1, start=0)  # sorts after everything listed so far
    seen = [m["id"] for m in first["messages"]]
    page = first
    while "nextPageToken" in page:
        status, page = http_get(f"{list_url}&pageToken={page['nextPageToken']}", token)
        assert status == 200
        seen.extend(m["id"] for m in page["messages"])

    assert len(seen) == len(set(seen))
    assert seen == list(reversed(ids)) + older
    assert not set(newer) & set(seen)

    status, body = http_get(f"{list_url}&pageToken=garbage", token)
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"


def test_fake_message_formats_and_spam_filter(fake_gmail, fake_gmail_thread):
    raw = synthetic_message(1)
    inbox_id = fake_gmail.add_message(GMAIL_TEST_USER, raw)
    spam_id = fake_gmail.add_message(GMAIL_TEST_USER, synthetic_message(2), label_ids=["SPAM"])
    token = fake_gmail.issue_access_token(GMAIL_TEST_USER)
    base = fake_gmail_thread.base_url + "gmail/v1/users/me/messages"

    status, body = http_get(f"{base}/{inbox_id}?format=raw", token)
    assert status == 200
    assert base64.urlsafe_b64decode(body["raw"]) == raw
    assert body["sizeEstimate"] == len(raw)
    assert int(body["internalDate"]) == 1_704_067_200_000  # from the Date header
    status, body = http_get(f"{base}/{inbox_id}?format=minimal", token)
    assert "raw" not in body and "payload" not in body and body["labelIds"] == ["INBOX"]
    status, body = http_get(f"{base}/{inbox_id}?format=metadata&metadataHeaders=Subject", token)
    assert body["payload"]["headers"] == [{"name": "Subject", "value": "message 1"}]
    status, body = http_get(f"{base}/doesnotexist?format=raw", token)
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"

    assert [m["id"] for m in http_get(base, token)[1]["messages"]] == [inbox_id]
    listed = http_get(f"{base}?includeSpamTrash=true", token)[1]["messages"]
    assert {m["id"] for m in listed} == {inbox_id, spam_id}


def test_fake_loads_mbox_and_threads_replies(fake_gmail):
    path = CORPUS / "threads" / "notmuch-default.mbox"
    ids = fake_gmail.add_mbox(GMAIL_TEST_USER, path)

    source = mailbox.mbox(str(path))
    try:
        expected = [source.get_bytes(key) for key in source.iterkeys()]
    finally:
        source.close()
    box = fake_gmail.mailbox(GMAIL_TEST_USER)
    assert [box.messages[i].raw for i in ids] == expected
    threads = {box.messages[i].thread_id for i in ids}
    assert 1 < len(threads) < len(ids)


def test_fake_history_retention_limit(fake_gmail):
    fake_gmail.max_history_records = 5
    add_synthetic(fake_gmail, 8)
    box = fake_gmail.mailbox(GMAIL_TEST_USER)
    assert len(box.history) == 5
    # History ids have gaps: the floor is the id of the newest record dropped.
    assert box.history_floor < box.history[0].id


async def test_async_server_serves_the_client_through_a_thread():
    # On the test's own loop the sync client must run in a worker thread.
    control = FakeGmail()
    ids = [control.add_message(GMAIL_TEST_USER, synthetic_message(n)) for n in range(3)]
    async with fake_gmail_server(control) as server:
        assert isinstance(server, FakeGmailServer)
        config = GmailClientConfig(
            FAKE_CLIENT_ID,
            FAKE_CLIENT_SECRET,
            base_url=server.base_url,
            token_uri=server.token_uri,
        )

        def fetch() -> set[str]:
            with GmailClient(
                config, control.issue_refresh_token(GMAIL_TEST_USER), sleep=RecordingSleep()
            ) as client:
                return set(client.fetch_raw(ids))

        assert await asyncio.to_thread(fetch) == set(ids)


def test_client_config_comes_from_settings():
    from kernel.gmail import GmailClientConfig, GmailError
    from kernel.settings import Settings

    settings = Settings(
        google_client_id="id",
        google_client_secret="secret",
        gmail_api_base_url="http://127.0.0.1:9/",
        google_token_uri="http://127.0.0.1:9/token",
    )
    config = GmailClientConfig.from_settings(settings)
    assert (config.client_id, config.base_url, config.token_uri) == (
        "id",
        "http://127.0.0.1:9/",
        "http://127.0.0.1:9/token",
    )
    with pytest.raises(GmailError, match="GOOGLE_CLIENT_ID"):
        GmailClientConfig.from_settings(Settings())
