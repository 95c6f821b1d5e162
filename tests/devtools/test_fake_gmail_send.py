"""The fake's messages.send, settings.sendAs.list and rfc822msgid search, through the real
Gmail client library (kernel/gmail.py)."""

from __future__ import annotations

import pytest

from devtools.fake_gmail import FaultRule
from kernel.gmail import GmailApiError, GmailSendUncertain
from tests.fixtures.gmail import GMAIL_TEST_USER

ARCHIVE = "archive@example.com"


def mail(message_id: str, *, to: str = "customer@example.org", extra: str = "") -> bytes:
    recipients = f"To: {to}\r\n" if to else ""
    return (
        f"From: {GMAIL_TEST_USER}\r\n{recipients}Subject: Hello\r\nMessage-ID: <{message_id}>\r\n"
        f"{extra}\r\nBody.\r\n"
    ).encode()


def test_a_sent_message_is_in_sent_journaled_and_found_by_its_message_id(
    fake_gmail, gmail_client_factory
):
    fake_gmail.journal_address = ARCHIVE
    client = gmail_client_factory()
    sent = client.send_raw(mail("m1@example.com"))
    [stored] = fake_gmail.sent_messages(GMAIL_TEST_USER)
    assert (stored.id, stored.thread_id, stored.label_ids) == (sent.id, sent.thread_id, ["SENT"])
    assert [m.label_ids for m in fake_gmail.mailbox(ARCHIVE).messages.values()] == [["INBOX"]]
    for query in ("m1@example.com", "<m1@example.com>"):
        assert client.find_by_rfc822msgid(query) == sent
    assert client.find_by_rfc822msgid("other@example.com") is None
    # The send is a history record of the mailbox, like any delivery.
    assert fake_gmail.mailbox(GMAIL_TEST_USER).history[-1].kind == "messagesAdded"


def test_a_send_joins_a_thread_only_as_gmail_requires(fake_gmail, gmail_client_factory):
    client = gmail_client_factory()
    first = client.send_raw(mail("t1@example.com"))
    reply = client.send_raw(
        mail("t2@example.com", extra="In-Reply-To: <t1@example.com>\r\n"), first.thread_id
    )
    assert reply.thread_id == first.thread_id
    unrelated = client.send_raw(mail("t3@example.com"), first.thread_id)
    assert unrelated.thread_id != first.thread_id
    with pytest.raises(GmailApiError) as unknown:
        client.send_raw(mail("t4@example.com"), "ffffffffffffffff")
    assert unknown.value.status == 404


def test_a_send_without_recipient_is_refused_and_stores_nothing(fake_gmail, gmail_client_factory):
    client = gmail_client_factory()
    with pytest.raises(GmailApiError) as refused:
        client.send_raw(mail("r1@example.com", to=""))
    assert refused.value.status == 400 and "Recipient address required" in str(refused.value)
    assert fake_gmail.sent_messages(GMAIL_TEST_USER) == []


def test_a_lost_answer_is_uncertain_and_the_message_exists_once(fake_gmail, gmail_client_factory):
    rule = fake_gmail.inject(FaultRule("send", action="lose_response"))
    client = gmail_client_factory()
    with pytest.raises(GmailSendUncertain):
        client.send_raw(mail("lost@example.com"))
    assert rule.fired == 1
    assert len(fake_gmail.sent_messages(GMAIL_TEST_USER)) == 1  # never sent a second time
    assert client.find_by_rfc822msgid("lost@example.com") is not None


def test_a_from_gmail_may_not_use_becomes_the_accounts_address(fake_gmail, gmail_client_factory):
    fake_gmail.add_send_as(GMAIL_TEST_USER, "help@example.com", verification_status="pending")
    client = gmail_client_factory()
    raw = mail("f1@example.com").replace(GMAIL_TEST_USER.encode(), b"help@example.com", 1)
    client.send_raw(raw)
    [stored] = fake_gmail.sent_messages(GMAIL_TEST_USER)
    assert stored.raw.startswith(f"From: {GMAIL_TEST_USER}\r\n".encode())


def test_send_as_lists_the_primary_address_then_the_aliases(fake_gmail, gmail_client_factory):
    fake_gmail.add_send_as(GMAIL_TEST_USER, "help@example.com", display_name="Help")
    fake_gmail.add_send_as(GMAIL_TEST_USER, "sales@example.com", verification_status="pending")
    listed = gmail_client_factory().list_send_as()
    assert listed[0]["sendAsEmail"] == GMAIL_TEST_USER and listed[0]["isPrimary"] is True
    assert "verificationStatus" not in listed[0]
    assert [(a["sendAsEmail"], a["verificationStatus"]) for a in listed[1:]] == [
        ("help@example.com", "accepted"),
        ("sales@example.com", "pending"),
    ]


def test_other_searches_are_refused(fake_gmail, gmail_client_factory):
    client = gmail_client_factory()
    with pytest.raises(GmailApiError) as refused:
        client._execute(
            "users.messages.list",
            lambda: client._messages.list(userId="me", q="from:someone"),
        )
    assert refused.value.status == 400
