"""The fake Gmail server holds clients to the real contract: page tokens bound to their
request and opaque, several history records per delivery with gaps between ids, records
arriving during a walk, and responses lost after the request was processed.

Everything goes through google-api-python-client over HTTP on loopback: the project's
GmailClient where it exposes the call, the library's Gmail service where a parameter it
never sends (labelIds, q, historyTypes, labelId) is the point."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from devtools.fake_gmail import FakeGmail, FakeGmailServer, FaultRule, fake_gmail_in_thread
from kernel.gmail import GmailApiError, GmailRetriesExhausted, RetryPolicy
from tests.fixtures.gmail import GMAIL_TEST_USER
from tests.kernel.test_gmail import add_synthetic, synthetic_message

OTHER_USER = "other-journal@example.com"


@pytest.fixture
def gmail_service(
    fake_gmail: FakeGmail, fake_gmail_thread: FakeGmailServer
) -> Iterator[Callable[..., Any]]:
    """google-api-python-client's Gmail service against the fake, for a mailbox."""
    transports: list[httplib2.Http] = []

    def make(user: str = GMAIL_TEST_USER) -> Any:
        transport = httplib2.Http(timeout=5)
        transports.append(transport)
        credentials = Credentials(token=fake_gmail.issue_access_token(user))
        return build(
            "gmail",
            "v1",
            http=google_auth_httplib2.AuthorizedHttp(credentials, http=transport),
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": fake_gmail_thread.base_url},
        )

    yield make
    for transport in transports:
        transport.close()


def error_of(excinfo: pytest.ExceptionInfo[HttpError]) -> dict[str, Any]:
    """The JSON error object of an HttpError, with the HTTP status checked against it."""
    error = json.loads(excinfo.value.content)["error"]
    assert error["code"] == excinfo.value.resp.status
    return error


def assert_invalid_page_token(excinfo: pytest.ExceptionInfo[HttpError]) -> None:
    error = error_of(excinfo)
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith("Invalid pageToken")
    assert error["errors"][0]["reason"] == "invalidArgument"
    assert error["errors"][0]["location"] == "pageToken"
    assert error["errors"][0]["locationType"] == "parameter"


def walk_history(client, start: int, *, max_results: int, between_pages=None):
    """Walk history.list from `start` with one query; returns (records, last page)."""
    records, token, pages = [], None, 0
    while True:
        page = client.list_history(start, token, max_results=max_results)
        records.extend(page.records)
        pages += 1
        if between_pages is not None:
            between_pages(pages)
        token = page.next_page_token
        if token is None:
            return records, page


# --------------------------------------------------------------------------- page tokens


def test_list_token_is_refused_when_another_parameter_changes(fake_gmail, gmail_service):
    add_synthetic(fake_gmail, 30)
    fake_gmail.add_message(GMAIL_TEST_USER, synthetic_message(99), label_ids=["SPAM"])
    messages = gmail_service().users().messages()
    first = messages.list(userId="me", maxResults=10, labelIds=["INBOX"]).execute()
    token = first["nextPageToken"]

    for changed in (
        {"labelIds": ["INBOX", "UNREAD"]},
        {"labelIds": ["INBOX"], "includeSpamTrash": True},
        {},  # labelIds dropped
    ):
        with pytest.raises(HttpError) as excinfo:
            messages.list(userId="me", maxResults=10, pageToken=token, **changed).execute()
        assert_invalid_page_token(excinfo)

    # The same request again is fine (a retry gets the same page), ...
    again = messages.list(userId="me", maxResults=10, labelIds=["INBOX"], pageToken=token)
    second = again.execute()
    assert second == again.execute()
    assert not {m["id"] for m in first["messages"]} & {m["id"] for m in second["messages"]}
    # ... and so is another page size: AIP-158 says the service must honour it.
    resized = messages.list(userId="me", maxResults=4, labelIds=["INBOX"], pageToken=token)
    assert [m["id"] for m in resized.execute()["messages"]] == [
        m["id"] for m in second["messages"][:4]
    ]


def test_page_size_binds_the_token_when_asked(fake_gmail, gmail_service):
    fake_gmail.page_tokens_bind_page_size = True
    add_synthetic(fake_gmail, 12)
    messages = gmail_service().users().messages()
    token = messages.list(userId="me", maxResults=5).execute()["nextPageToken"]

    with pytest.raises(HttpError) as excinfo:
        messages.list(userId="me", maxResults=6, pageToken=token).execute()
    assert_invalid_page_token(excinfo)
    assert "maxResults" in error_of(excinfo)["message"]
    assert len(messages.list(userId="me", maxResults=5, pageToken=token).execute()["messages"]) == 5


def test_history_token_is_refused_with_an_advanced_start(fake_gmail, gmail_client_factory):
    # What history_sync did before issue 11: the cursor moved to the page's newest record
    # and went out with the previous page's token.
    client = gmail_client_factory()
    cursor = client.get_profile().history_id
    add_synthetic(fake_gmail, 10)
    first = client.list_history(cursor, max_results=4)
    assert first.next_page_token is not None

    advanced = max(record.id for record in first.records)
    with pytest.raises(GmailApiError) as excinfo:
        client.list_history(advanced, first.next_page_token, max_results=4)
    assert excinfo.value.status == 400
    assert "Invalid pageToken" in str(excinfo.value)
    assert "startHistoryId" in str(excinfo.value)

    # Resuming from the advanced cursor without a token is the correct way, and works.
    rest, _ = walk_history(client, advanced, max_results=4)
    assert [r.id for r in first.records] + [r.id for r in rest] == [
        r.id for r in fake_gmail.mailbox(GMAIL_TEST_USER).history
    ]


def test_history_token_is_refused_when_filters_change(fake_gmail, gmail_service):
    start = fake_gmail.mailbox(GMAIL_TEST_USER).history_id
    add_synthetic(fake_gmail, 8)
    history = gmail_service().users().history()
    query = {"userId": "me", "startHistoryId": str(start), "maxResults": 3}
    token = history.list(**query, historyTypes=["messageAdded"]).execute()["nextPageToken"]

    for changed in (
        {"historyTypes": ["messageAdded", "labelAdded"]},
        {"historyTypes": ["messageAdded"], "labelId": "INBOX"},
        {"historyTypes": ["messageAdded"], "startHistoryId": str(start + 1)},
        {},
    ):
        with pytest.raises(HttpError) as excinfo:
            history.list(**{**query, **changed}, pageToken=token).execute()
        assert_invalid_page_token(excinfo)
    page = history.list(**query, historyTypes=["messageAdded"], pageToken=token).execute()
    assert all("messagesAdded" in record for record in page["history"])


def test_forged_and_foreign_tokens_are_refused(fake_gmail, gmail_service):
    add_synthetic(fake_gmail, 6)
    fake_gmail.add_message(OTHER_USER, synthetic_message(1))
    for n in range(2, 6):
        fake_gmail.add_message(OTHER_USER, synthetic_message(n))
    service = gmail_service()
    messages, history = service.users().messages(), service.users().history()
    start = str(fake_gmail.mailbox(GMAIL_TEST_USER).history_id - 1)
    list_token = messages.list(userId="me", maxResults=2).execute()["nextPageToken"]
    other_token = (
        gmail_service(OTHER_USER).users().messages().list(userId="me", maxResults=2).execute()
    )["nextPageToken"]

    # Tokens carry nothing a client could read or edit: two tokens of one walk have no
    # common structure beyond their form.
    assert list_token.isdigit() and len(list_token) == 20
    assert other_token != list_token

    forged = [
        "garbage",
        "0" * 20,
        str(int(list_token) + 1).zfill(20),
        "eyJrIjogImxpc3QiLCAiZCI6IDAsICJzIjogMH0",  # base64 of the old transparent form
        other_token,  # another mailbox's token
    ]
    for token in forged:
        with pytest.raises(HttpError) as excinfo:
            messages.list(userId="me", maxResults=2, pageToken=token).execute()
        assert_invalid_page_token(excinfo)
    with pytest.raises(HttpError) as excinfo:  # a messages.list token on history.list
        history.list(userId="me", startHistoryId=start, pageToken=list_token).execute()
    assert_invalid_page_token(excinfo)


def test_expired_tokens_are_refused(fake_gmail, gmail_service):
    fake_gmail.max_page_tokens = 2
    add_synthetic(fake_gmail, 10)
    messages = gmail_service().users().messages()
    oldest = messages.list(userId="me", maxResults=2).execute()["nextPageToken"]
    messages.list(userId="me", maxResults=2, pageToken=oldest).execute()
    messages.list(userId="me", maxResults=3).execute()  # a third token pushes out the first

    with pytest.raises(HttpError) as excinfo:
        messages.list(userId="me", maxResults=2, pageToken=oldest).execute()
    assert_invalid_page_token(excinfo)


def test_bad_parameters_are_invalid_argument(fake_gmail, gmail_service, fake_gmail_thread):
    history = gmail_service().users().history()
    for bad in ({"startHistoryId": "abc"}, {"startHistoryId": "1000", "maxResults": -1}):
        with pytest.raises(HttpError) as excinfo:
            history.list(userId="me", **bad).execute()
        assert error_of(excinfo)["status"] == "INVALID_ARGUMENT"
    with pytest.raises(HttpError) as excinfo:
        gmail_service().users().messages().list(userId="me", q="from:someone").execute()
    assert error_of(excinfo)["errors"][0]["location"] == "q"

    token = fake_gmail.issue_access_token(GMAIL_TEST_USER)
    http = httplib2.Http(timeout=5)
    try:
        base = fake_gmail_thread.base_url + "gmail/v1/users/me/history?startHistoryId=1000"
        for extra in ("&historyTypes=messageMoved", "&colour=blue"):
            response, content = http.request(
                base + extra, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status == 400, extra
            assert json.loads(content)["error"]["status"] == "INVALID_ARGUMENT"
    finally:
        http.close()


# --------------------------------------------------------------------------- walks


def test_listing_neither_skips_nor_repeats_while_mail_arrives(fake_gmail, gmail_client_factory):
    ids = add_synthetic(fake_gmail, 50, start=100)  # dated 100..149 minutes
    client = gmail_client_factory()
    arrived_newer: list[str] = []
    arrived_older: list[str] = []
    deleted: list[str] = []

    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = client.list_message_ids(token, max_results=7)
        seen.extend(ref.id for ref in page.ids)
        pages += 1
        token = page.next_page_token
        if token is None:
            break
        # Between pages: newer mail, older mail (sorts after the walk's position), and a
        # deletion of a message not yet listed.
        arrived_newer += add_synthetic(fake_gmail, 2, start=300 + 2 * pages)
        arrived_older += add_synthetic(fake_gmail, 1, start=50 - pages)  # ever older
        unlisted = [i for i in ids if i not in seen and i not in deleted]
        if len(unlisted) > 10:
            fake_gmail.delete_message(GMAIL_TEST_USER, unlisted[-1])
            deleted.append(unlisted[-1])

    assert len(seen) == len(set(seen))
    present_throughout = [i for i in reversed(ids) if i not in deleted]
    assert [i for i in seen if i in ids] == present_throughout
    assert not set(seen) & set(deleted)
    assert not set(seen) & set(arrived_newer)  # newer than the walk: history's job
    assert set(arrived_older) <= set(seen)


def test_history_walk_serves_records_arriving_during_the_walk(fake_gmail, gmail_client_factory):
    client = gmail_client_factory()
    cursor = client.get_profile().history_id
    before = add_synthetic(fake_gmail, 10)
    during: list[str] = []

    def deliver(pages: int) -> None:
        if pages <= 2:
            during.extend(add_synthetic(fake_gmail, 3, start=100 + 3 * pages))

    records, last = walk_history(client, cursor, max_results=4, between_pages=deliver)

    added = [m.id for r in records for m in r.messages_added]
    assert added == before + during
    assert len(during) == 6
    ids = [r.id for r in records]
    assert ids == sorted(set(ids)) and ids[0] > cursor
    box = fake_gmail.mailbox(GMAIL_TEST_USER)
    assert ids == [r.id for r in box.history if r.id > cursor]
    assert last.history_id == box.history_id == client.get_profile().history_id


def test_mail_delivered_from_a_request_hook_during_a_walk(fake_gmail, gmail_client_factory):
    # A walk the test does not drive (as mailbox_history_sync's): mail arrives after each
    # of the first two history pages are served.
    client = gmail_client_factory()
    cursor = client.get_profile().history_id
    before = add_synthetic(fake_gmail, 6)
    during: list[str] = []

    def deliver(record) -> None:
        if record.kind == "history" and len(during) < 4:
            during.extend(add_synthetic(fake_gmail, 2, start=200 + len(during)))

    fake_gmail.on_request(deliver)
    records, last = walk_history(client, cursor, max_results=3)

    assert [m.id for r in records for m in r.messages_added] == before + during
    assert len(during) == 4
    assert last.history_id == fake_gmail.mailbox(GMAIL_TEST_USER).history_id


def test_a_delivery_has_several_records_with_gaps_between_ids(fake_gmail, gmail_client_factory):
    client = gmail_client_factory()
    cursor = client.get_profile().history_id
    plain = fake_gmail.add_message(GMAIL_TEST_USER, synthetic_message(1), label_records=False)
    busy = [
        fake_gmail.add_message(
            GMAIL_TEST_USER,
            synthetic_message(n),
            label_ids=["INBOX", "Label_7"],
            label_records=True,
        )
        for n in range(2, 12)
    ]
    add_synthetic(fake_gmail, 40, start=100)  # the fake's default mix

    records, _ = walk_history(client, cursor, max_results=500)

    def records_of(message_id: str) -> list:
        return [
            r
            for r in records
            if message_id
            in {m.id for m in r.messages_added}
            | {c.message.id for c in r.labels_added + r.labels_removed}
        ]

    assert len(records_of(plain)) == 1
    for message_id in busy:
        mine = records_of(message_id)
        assert len(mine) >= 2
        assert mine[0].messages_added  # the delivery comes first, labels after
        assert all(not r.messages_added for r in mine[1:])
        stored = fake_gmail.mailbox(GMAIL_TEST_USER).messages[message_id]
        assert stored.label_ids == ["INBOX", "Label_7"]  # ends as asked
        assert stored.history_id == mine[-1].id
        assert set(mine[0].messages_added[0].label_ids) != {"INBOX", "Label_7"}
    assert len(records) > 51  # several records per message in the default mix too
    ids = [r.id for r in records]
    assert ids == sorted(ids)
    gaps = {b - a for a, b in itertools.pairwise(ids)}
    assert min(gaps) >= 1 and max(gaps) > 1  # increasing, not contiguous

    fetched = client.fetch_raw([busy[0]])[busy[0]]
    assert fetched.history_id == records_of(busy[0])[-1].id
    assert fetched.label_ids == ("INBOX", "Label_7")


def test_unrealistic_history_is_one_contiguous_record_per_delivery():
    fake = FakeGmail(realistic_history=False)
    start = fake.add_mailbox(GMAIL_TEST_USER).history_id
    for n in range(5):
        fake.add_message(GMAIL_TEST_USER, synthetic_message(n))
    assert [r.id for r in fake.mailbox(GMAIL_TEST_USER).history] == list(
        range(start + 1, start + 6)
    )


def test_history_id_can_move_without_a_visible_record(fake_gmail, gmail_client_factory):
    client = gmail_client_factory()
    add_synthetic(fake_gmail, 2)
    cursor = client.get_profile().history_id
    moved = fake_gmail.advance_history_id(GMAIL_TEST_USER, 5)

    page = client.list_history(cursor)
    assert page.records == [] and page.next_page_token is None
    assert page.history_id == moved == cursor + 5


# --------------------------------------------------------------------------- lost responses


def test_lost_response_is_processed_but_never_answered(fake_gmail, gmail_client_factory):
    add_synthetic(fake_gmail, 3)
    client = gmail_client_factory(retry=RetryPolicy(max_attempts=1))
    cursor = client.get_profile().history_id - 1
    fake_gmail.reset_counters()
    # httplib2 silently sends a request again once when a connection closes without an
    # answer, so two losses in a row reach the client.
    lost = fake_gmail.inject(FaultRule("history", action="lose_response", times=2))

    with pytest.raises(GmailRetriesExhausted) as excinfo:
        client.list_history(cursor)

    assert "RemoteDisconnected" in excinfo.value.last_error
    assert lost.fired == 2
    assert fake_gmail.counts["history"] == 2
    answered = [r for r in fake_gmail.log if r.kind == "history"]
    assert [(r.status, r.lost) for r in answered] == [(200, True), (200, True)]
    # The next attempt is answered.
    assert client.list_history(cursor).records


def test_lost_response_keeps_the_state_change(fake_gmail, fake_gmail_thread):
    # The token endpoint grants an access token whose answer is lost: the grant exists.
    refresh = fake_gmail.issue_refresh_token(GMAIL_TEST_USER)
    granted_before = len(fake_gmail._access_tokens)
    fake_gmail.inject(FaultRule("token", action="lose_response", times=2))
    http = httplib2.Http(timeout=5)
    try:
        with pytest.raises(ConnectionError):
            http.request(
                fake_gmail_thread.token_uri,
                "POST",
                body=f"grant_type=refresh_token&refresh_token={refresh}"
                "&client_id=fake-client-id.apps.googleusercontent.com"
                "&client_secret=fake-client-secret",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
    finally:
        http.close()
    assert len(fake_gmail._access_tokens) == granted_before + 2
    assert [r.lost for r in fake_gmail.log if r.kind == "token"] == [True, True]


def test_lost_batch_response_answers_every_part_first(fake_gmail, gmail_client_factory):
    ids = add_synthetic(fake_gmail, 5)
    client = gmail_client_factory(retry=RetryPolicy(max_attempts=1))
    lost = fake_gmail.inject(FaultRule("batch", action="lose_response", times=2))

    with pytest.raises(GmailRetriesExhausted):
        client.fetch_raw(ids)
    assert lost.fired == 2
    assert all(fake_gmail.fetches_of(i) == 2 for i in ids)  # every part, both times
    assert all(r.lost and r.status == 200 for r in fake_gmail.log if r.in_batch)
    assert fake_gmail.counts["batch"] == 2

    # With retries the client gets there; the parts were processed three times in all.
    retrying = gmail_client_factory()
    fake_gmail.inject(FaultRule("batch", action="lose_response", times=2))
    assert set(retrying.fetch_raw(ids)) == set(ids)
    assert all(fake_gmail.fetches_of(i) == 5 for i in ids)


def test_lost_part_answer_inside_a_batch(fake_gmail, gmail_client_factory, gmail_sleep):
    ids = add_synthetic(fake_gmail, 6)
    victim = ids[2]
    fake_gmail.inject(FaultRule("batch_part", action="lose_response", message_id=victim))
    client = gmail_client_factory()

    fetched = client.fetch_raw(ids)

    assert set(fetched) == set(ids)
    assert fake_gmail.fetches_of(victim) == 2  # processed, answered 503, fetched again
    assert all(fake_gmail.fetches_of(i) == 1 for i in ids if i != victim)
    victim_records = [r for r in fake_gmail.log if r.message_id == victim]
    assert [(r.status, r.lost) for r in victim_records] == [(200, True), (200, False)]
    assert len(gmail_sleep.delays) == 1


def test_dropped_part_cuts_the_batch_there(fake_gmail, gmail_client_factory):
    ids = add_synthetic(fake_gmail, 6)
    fake_gmail.inject(FaultRule("batch_part", action="drop", message_id=ids[3], times=2))
    client = gmail_client_factory(retry=RetryPolicy(max_attempts=1))

    with pytest.raises(GmailRetriesExhausted):
        client.fetch_raw(ids)
    # The client sends parts in order; the ones before the dropped part were processed
    # (twice: httplib2 sent the batch again), the dropped one and the rest never.
    assert [fake_gmail.fetches_of(i) for i in ids] == [2, 2, 2, 2, 0, 0]
    assert {r.status for r in fake_gmail.log if r.message_id == ids[3]} == {0}
    assert [r.status for r in fake_gmail.log if r.kind == "batch"] == [0, 0]


def test_in_thread_fake_with_its_own_state():
    # The fixture-free path used by the demo and bench: defaults are realistic.
    fake = FakeGmail(seed=3)
    with fake_gmail_in_thread(fake) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
    assert fake.history_id_gap > 1 and fake.delivery_label_records > 0


def test_a_rebuilt_fake_gives_messages_their_earlier_ids_and_never_reuses_one():
    first = FakeGmail()
    ids = [first.add_message("j@x.example", f"Subject: {n}\r\n\r\nbody".encode()) for n in range(3)]
    rebuilt = FakeGmail()
    rebuilt.add_message("j@x.example", b"Subject: 0\r\n\r\nbody")
    rebuilt.skip_to(ids[2])  # message 1 is gone; message 2 comes back under its id
    assert rebuilt.add_message("j@x.example", b"Subject: 2\r\n\r\nbody") == ids[2]
    with pytest.raises(ValueError, match="already issued"):
        rebuilt.skip_to(ids[1])
    assert rebuilt.add_message("j@x.example", b"Subject: 3\r\n\r\nbody") not in ids
