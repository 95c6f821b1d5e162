"""Tests for worker.mime against the shared corpus (read-only) and small synthetic messages."""

from __future__ import annotations

import csv
import email
import email.policy
import hashlib
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.mime import (
    MAX_MIME_DEPTH,
    MAX_REFERENCES,
    UnparseableMessage,
    normalize_subject,
    parse_files,
    parse_message,
    sanitize_html,
)

CORPUS = Path("/work/shared/corpus")
MESSAGES = CORPUS / "messages"
CORPUS_FILES = sorted(MESSAGES.glob("*/*.eml"))


def manifest() -> dict[str, dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(encoding="utf-8", newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


def corpus_bytes(name: str) -> bytes:
    return (MESSAGES / name).read_bytes()


def build(headers: list[tuple[str, str]], body: str = "Hello there.\n") -> bytes:
    lines = [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


BASE_HEADERS = [
    ("From", "Alice Example <Alice@Example.COM>"),
    ("To", "Support <support@corp.example>"),
    ("Subject", "Printer on fire"),
    ("Date", "Tue, 23 May 2017 13:21:05 +0800"),
    ("Message-ID", "<abc.123@example.com>"),
]


# ------------------------------------------------------------------------------ the corpus


def test_every_corpus_message_parses_or_is_rejected_with_a_reason():
    rows = manifest()
    crashes, unparseable = [], []
    for path in CORPUS_FILES:
        raw = path.read_bytes()
        try:
            parsed = parse_message(raw, journal_address="journal@corp.example")
        except UnparseableMessage as exc:
            unparseable.append((path, exc.reason, raw))
            continue
        except Exception as exc:
            crashes.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        # Everything must be storable as PostgreSQL text / JSON: no NUL, no lone surrogate.
        encoded = json.dumps(parsed.to_json(), ensure_ascii=False, allow_nan=False)
        encoded.encode("utf-8")
        if "\\u0000" in encoded:
            crashes.append(f"{path}: NUL in output")
    assert crashes == []
    assert 0 < len(unparseable) <= 5, [str(p) for p, _, _ in unparseable]
    for path, reason, raw in unparseable:
        assert reason.strip()
        # Genuinely not an e-mail: the stdlib finds no header field and the manifest agrees.
        stdlib_view = email.message_from_bytes(raw, policy=email.policy.compat32)
        assert len(stdlib_view.keys()) == 0, path
        assert "no_headers" in rows[f"messages/{path.parent.name}/{path.name}"]["malformed"]


def test_manifest_properties_are_reflected():
    rows = manifest()
    missing_attachments, wrong_evidence = [], []
    for key, row in rows.items():
        if not key.startswith("messages/") or "no_headers" in row["malformed"]:
            continue
        raw = (CORPUS / key).read_bytes()
        parsed = parse_message(raw)
        if row["has_attachments"] == "yes" and not parsed.attachments:
            missing_attachments.append(key)
        if "delivered-to" in row["recipient_headers"].split(","):
            first = email.message_from_bytes(raw, policy=email.policy.compat32)["Delivered-To"]
            expected = email.utils.parseaddr(str(first))[1].lower()
            evidence = parsed.recipient_evidence
            if (evidence.source, evidence.original_recipient) != ("delivered_to", expected):
                wrong_evidence.append((key, evidence))
    assert missing_attachments == []
    assert wrong_evidence == []


def stdlib_attachments(raw: bytes) -> list[tuple[str, bytes]]:
    """Named leaf parts decoded by the stdlib `default` policy (not inside message/*)."""
    found = []

    def walk(part):
        if part.get_content_maintype() == "message":
            return
        if part.is_multipart():
            for child in part.iter_parts():
                walk(child)
        elif part.get_filename():
            found.append((part.get_filename(), part.get_payload(decode=True)))

    walk(email.message_from_bytes(raw, policy=email.policy.default))
    return found


@pytest.mark.parametrize(
    "name",
    [
        "redmine/ticket_with_attachment.eml",
        "redmine/apple_mail_with_attachment.eml",
        "mikel-mail/attachment_emails_attachment_pdf.eml",
        "mu/testdir2_Foo_cur_mail5.eml",
        "php-mime-mail-parser/m0025.eml",
        "php-mime-mail-parser/m0005.eml",
    ],
)
def test_attachments_round_trip_byte_for_byte(name):
    raw = corpus_bytes(name)
    expected = stdlib_attachments(raw)
    assert expected, "fixture should have named attachments"
    parsed = parse_message(raw)
    ours = {(a.filename, a.sha256): a for a in parsed.attachments}
    for filename, data in expected:
        attachment = ours[(filename, hashlib.sha256(data).hexdigest())]
        assert attachment.payload == data
        assert attachment.size == len(data)


def test_inline_cid_image_is_an_inline_attachment_and_kept_in_html():
    parsed = parse_message(corpus_bytes("php-mime-mail-parser/m0025.eml"))
    inline = {a.content_id: a for a in parsed.attachments if a.disposition == "inline"}
    referenced = re.findall(r'src="cid:([^"]+)"', parsed.html_body or "")
    assert referenced
    for content_id in referenced:
        assert inline[content_id].content_type.startswith("image/")


# ------------------------------------------------------------------------- nested rfc822


@pytest.mark.parametrize(
    "name",
    [
        "bounce-parser/t_corpus_doesnotexist.eml",
        "cpython/msg_11.eml",
        "mailgun-flanker/enclosed-endless.eml",
    ],
)
def test_nested_message_is_one_attachment_with_its_original_bytes(name):
    raw = corpus_bytes(name)
    parsed = parse_message(raw)
    embedded = [a for a in parsed.attachments if a.content_type == "message/rfc822"]
    assert len(embedded) == 1
    attachment = embedded[0]
    assert attachment.payload in raw  # the embedded message's own bytes, not a re-render
    assert attachment.filename.endswith(".eml")
    inner = email.message_from_bytes(attachment.payload, policy=email.policy.compat32)
    stdlib_outer = email.message_from_bytes(raw, policy=email.policy.compat32)
    stdlib_inner = next(
        p.get_payload(0) for p in stdlib_outer.walk() if p.get_content_type() == "message/rfc822"
    )
    assert inner["Subject"] == stdlib_inner["Subject"]
    inner_lines = [
        line.strip()
        for part in inner.walk()
        if part.get_content_maintype() == "text"
        for line in (part.get_payload(decode=True) or b"").decode("utf-8", "replace").splitlines()
        if len(line.strip()) > 12
    ]
    for line in inner_lines:
        assert line not in parsed.text_body


def test_nested_message_text_stays_out_of_the_body():
    raw = build(
        [
            *BASE_HEADERS,
            ("MIME-Version", "1.0"),
            ("Content-Type", 'multipart/mixed; boundary="b1"'),
        ],
        "--b1\nContent-Type: text/plain\n\nOuter words only.\n"
        "--b1\nContent-Type: message/rfc822\n\nSubject: Inner / report?\nFrom: x@y.example\n\n"
        "SECRET INNER TEXT\n--b1--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text_body == "Outer words only."
    assert "SECRET INNER TEXT" not in parsed.text_body + parsed.snippet
    (attachment,) = parsed.attachments
    assert attachment.content_type == "message/rfc822"
    assert attachment.filename == "Inner _ report_.eml"
    assert b"SECRET INNER TEXT" in attachment.payload


def test_pathological_nesting_is_capped():
    depth = MAX_MIME_DEPTH * 4
    body = "Content-Type: text/plain\n\nDEEPEST LEAF\n"
    for level in range(depth):
        body = f"Content-Type: multipart/mixed; boundary=b{level}\n\n--b{level}\n{body}\n--b{level}--\n"
    parsed = parse_message(f"Subject: deep\nFrom: a@b.example\n{body}".encode())
    assert "MimeNestingTooDeep" in parsed.defects
    assert "DEEPEST LEAF" not in parsed.text_body
    (attachment,) = parsed.attachments
    assert b"DEEPEST LEAF" in attachment.payload


# -------------------------------------------------------------------- recipient evidence

J = "journal@corp.example"


@pytest.mark.parametrize(
    ("headers", "journal", "recipient", "source", "confidence"),
    [
        (
            [("X-Gm-Original-To", "Sales@Corp.example"), ("Delivered-To", "other@corp.example")],
            J,
            "sales@corp.example",
            "workspace_header",
            "high",
        ),
        (
            [("Delivered-To", J), ("Delivered-To", "Support@Corp.example")],
            J,
            "support@corp.example",
            "delivered_to",
            "medium",
        ),
        (  # journal address compared case-insensitively
            [("Delivered-To", "JOURNAL@Corp.Example"), ("Delivered-To", "help@corp.example")],
            "Journal@corp.EXAMPLE",
            "help@corp.example",
            "delivered_to",
            "medium",
        ),
        (  # without a journal address the top-most Delivered-To counts
            [("Delivered-To", J), ("Delivered-To", "help@corp.example")],
            None,
            J,
            "delivered_to",
            "medium",
        ),
        (  # only the journal in Delivered-To: fall through to X-Original-To
            [("Delivered-To", J), ("X-Original-To", "billing@corp.example")],
            J,
            "billing@corp.example",
            "x_original_to",
            "medium",
        ),
        (
            [("To", "Team <TEAM@corp.example>, b@corp.example")],
            J,
            "team@corp.example",
            "to_cc_scan",
            "low",
        ),
        (
            [("To", "undisclosed-recipients:;"), ("Cc", "cc-person@corp.example")],
            J,
            "cc-person@corp.example",
            "to_cc_scan",
            "low",
        ),
        ([], J, None, "unknown", "low"),
    ],
)
def test_recipient_evidence(headers, journal, recipient, source, confidence):
    raw = build([("From", "a@b.example"), ("Subject", "x"), *headers])
    evidence = parse_message(raw, journal_address=journal).recipient_evidence
    assert (evidence.original_recipient, evidence.source, evidence.confidence) == (
        recipient,
        source,
        confidence,
    )
    json.dumps(evidence.to_json())
    for name, value in headers:
        for _, address in email.utils.getaddresses([value]):
            if "@" in address:
                assert address.lower() in evidence.candidates[name.lower()]


def test_recipient_candidates_record_every_header_in_order():
    raw = build(
        [
            ("Delivered-To", J),
            ("Delivered-To", "first@corp.example"),
            ("Delivered-To", "second@corp.example"),
            ("X-Original-To", "orig@corp.example"),
            ("Envelope-To", "env@corp.example"),
            ("Original-Recipient", "rfc822; ORIGINAL@corp.example"),
            ("To", "to@corp.example"),
            ("From", "a@b.example"),
        ]
    )
    evidence = parse_message(raw, journal_address=J).recipient_evidence
    assert evidence.original_recipient == "first@corp.example"
    assert evidence.candidates == {
        "delivered-to": [J, "first@corp.example", "second@corp.example"],
        "x-original-to": ["orig@corp.example"],
        "to": ["to@corp.example"],
        "envelope-to": ["env@corp.example"],
        "original-recipient": ["original@corp.example"],
    }


# --------------------------------------------------------------------- subjects and ids


@pytest.mark.parametrize(
    ("subject", "normalized"),
    [
        ("Printer on fire", "printer on fire"),
        ("Re: Printer on fire", "printer on fire"),
        ("RE: Re: re:  Printer   on fire ", "printer on fire"),
        ("Fwd: FW: Fw: printer on fire", "printer on fire"),
        ("AW: WG: SV: Printer on fire", "printer on fire"),
        ("Re[2]: Re(3): Re 4: Printer on fire", "printer on fire"),
        ("[EXT] Re: Printer on fire", "printer on fire"),
        ("Re: [ext] RE : Printer on fire", "printer on fire"),
        ("Re: [T-1234] Printer on fire", "[t-1234] printer on fire"),
        ("Reason: not a prefix", "reason: not a prefix"),
        ("Printer on fire (Re: earlier)", "printer on fire (re: earlier)"),
        ("", ""),
        ("Re:", ""),
    ],
)
def test_normalize_subject(subject, normalized):
    assert normalize_subject(subject) == normalized


def test_encoded_word_subject_is_decoded_and_normalized():
    raw = build(
        [("Subject", "=?utf-8?q?Re=3A_Caf=C3=A9?= =?utf-8?b?IG9yZGVy?="), ("From", "a@b.c")]
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Re: Café order"
    assert parsed.normalized_subject == "café order"


@pytest.mark.parametrize(
    ("headers", "message_id", "in_reply_to", "references"),
    [
        (
            [("Message-ID", "  <abc@host>  "), ("References", "<a@x> <yes> <b@x> <a@x>")],
            "abc@host",
            [],
            ["a@x", "b@x"],
        ),
        (
            [("Message-ID", "<>"), ("In-Reply-To", "Your message of Monday <m1@x>")],
            None,
            ["m1@x"],
            [],
        ),
        (
            [("Message-ID", "bare@host"), ("References", "<one@x>\r\n <two\r\n @x>")],
            "bare@host",
            [],
            ["one@x", "two@x"],
        ),
        ([("Message-ID", "   ")], None, [], []),
        ([], None, [], []),
    ],
)
def test_message_id_and_reference_tokens(headers, message_id, in_reply_to, references):
    parsed = parse_message(build([("From", "a@b.c"), *headers]))
    assert parsed.message_id == message_id
    assert parsed.in_reply_to == in_reply_to
    assert parsed.references == references


def test_references_keep_only_the_newest():
    ids = [f"<id{n}@x.example>" for n in range(MAX_REFERENCES + 25)]
    parsed = parse_message(build([("From", "a@b.c"), ("References", " ".join(ids))]))
    assert parsed.references == [i.strip("<>") for i in ids[-MAX_REFERENCES:]]


def test_overlong_message_id_is_ignored():
    parsed = parse_message(build([("From", "a@b.c"), ("Message-ID", f"<{'x' * 2000}@h>")]))
    assert parsed.message_id is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 23 May 2017 13:21:05 +0800", datetime(2017, 5, 23, 5, 21, 5, tzinfo=UTC)),
        ("23 May 2017 05:21:05 -0000", datetime(2017, 5, 23, 5, 21, 5, tzinfo=UTC)),
        ("Thu, 1 Jan 1970 00:00:00 GMT", datetime(1970, 1, 1, tzinfo=UTC)),
        ("not a date at all", None),
        ("Mon, 99 Foo 20177 99:99:99 +9999", None),
    ],
)
def test_date_is_aware_utc_or_none(value, expected):
    assert parse_message(build([("From", "a@b.c"), ("Date", value)])).date == expected


def test_addresses_are_decoded_and_lowercased():
    raw = build(
        [
            ("From", '"=?utf-8?q?J=C3=B6rg?=" <Joerg@Example.COM>'),
            ("To", "A <a@x.example>, b@X.example"),
            ("Cc", "undisclosed-recipients:;"),
            ("Reply-To", "Help Desk <HELP@x.example>"),
        ]
    )
    parsed = parse_message(raw)
    assert parsed.from_ == ("Jörg", "joerg@example.com")
    assert parsed.to == [("A", "a@x.example"), ("", "b@x.example")]
    assert parsed.cc == []
    assert parsed.reply_to == [("Help Desk", "help@x.example")]


# ---------------------------------------------------------------------------- charsets


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        ("x-bogus-charset", "café crème".encode(), "café crème"),
        ("x-bogus-charset", "café".encode("latin-1"), "café"),
        ("utf-8", b"caf\xe9 ok", "café ok"),  # Latin-1 labelled UTF-8: the label is wrong
        ("utf-8", "Grüße aus Köln".encode() + b"\xff", "Grüße aus Köln\ufffd"),  # one bad byte
        ("us-ascii", "naïve".encode(), "naïve"),
        ("iso-8859-2", "Łódź".encode("iso-8859-2"), "Łódź"),
        ("gb2312", "你好".encode("gb2312"), "你好"),
        ('"invalid\x15tf-8"', b"plain words", "plain words"),
    ],
)
def test_body_charset_fallback_never_drops_text(charset, body, expected):
    head = (
        "From: a@b.c\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode("latin-1")
    assert parse_message(head + body).text_body == expected


def test_raw_8bit_headers_are_decoded():
    subject = "Grüße aus Köln".encode()
    raw = b"From: J\xc3\xb6rg <j@x.example>\r\nSubject: " + subject + b"\r\n\r\nbody\r\n"
    parsed = parse_message(raw)
    assert parsed.subject == "Grüße aus Köln"
    assert parsed.from_ == ("Jörg", "j@x.example")
    gb = (
        "From: a@b.c\r\nSubject: 你好\r\nContent-Type: text/plain; charset=gb2312\r\n\r\n你好\r\n"
    ).encode("gb2312")
    parsed = parse_message(gb)
    assert (parsed.subject, parsed.text_body) == ("你好", "你好")


def test_attachment_with_bogus_charset_is_kept():
    raw = build(
        [
            ("From", "a@b.c"),
            ("MIME-Version", "1.0"),
            ("Content-Type", "multipart/mixed; boundary=zz"),
        ],
        "--zz\nContent-Type: text/plain\n\nbody\n--zz\n"
        'Content-Type: text/plain; charset="no-such-charset"; name="notes.txt"\n'
        "Content-Disposition: attachment\nContent-Transfer-Encoding: base64\n\n"
        "bm90ZXMgY29udGVudA==\n--zz--\n",
    )
    (attachment,) = parse_message(raw).attachments
    assert (attachment.filename, attachment.payload) == ("notes.txt", b"notes content")


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("zbateson-mail-mime-parser/invalid-charset.eml", "The Hare and the Tortoise"),
        ("enmime/testdata_low-quality_unk-charset-part.eml", "A text section"),
        ("patchwork/fuzz_codec-null.eml", "Explicit set skb->sk is needless"),
        ("spamscope-mail-parser/mail_test_12.eml", "增值税发票"),
    ],
)
def test_corpus_bogus_charsets_keep_the_text(name, phrase):
    parsed = parse_message(corpus_bytes(name))
    assert phrase in parsed.text_body
    assert "\x00" not in parsed.text_body


def test_line_ending_variants_and_mbox_line_parse_the_same():
    raw = corpus_bytes("redmine/ticket_with_attachment.eml").replace(b"\r\n", b"\n")
    reference = parse_message(raw)
    variants = [
        raw.replace(b"\n", b"\r\n"),
        raw.replace(b"\n", b"\r"),
        b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n" + raw,
        b"\xef\xbb\xbf" + raw,
    ]
    for variant in variants:
        parsed = parse_message(variant)
        assert parsed.strict_signature == reference.strict_signature
        assert [a.sha256 for a in parsed.attachments] == [a.sha256 for a in reference.attachments]


def test_obsolete_space_before_colon_is_accepted():
    parsed = parse_message(b"From  : John <j@x.example>\r\nSubject   : Hi\r\n\r\nbody\r\n")
    assert parsed.from_ == ("John", "j@x.example")
    assert parsed.subject == "Hi"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\r\n",
        b"// Not an RFC-822 Document",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64,
        b"just some words on a line\nand another\n",
    ],
)
def test_not_an_email_is_unparseable(raw):
    with pytest.raises(UnparseableMessage) as info:
        parse_message(raw)
    assert info.value.reason.strip()


# -------------------------------------------------------------------------------- bodies


def test_alternative_picks_plain_and_html_and_html_only_derives_text():
    raw = build(
        [
            ("From", "a@b.c"),
            ("MIME-Version", "1.0"),
            ("Content-Type", "multipart/alternative; boundary=q"),
        ],
        "--q\nContent-Type: text/plain; charset=utf-8\n\nPlain version\n"
        "--q\nContent-Type: text/html; charset=utf-8\n\n<p>HTML <b>version</b></p>\n--q--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text_body == "Plain version"
    assert parsed.html_body == "<p>HTML <b>version</b></p>"
    assert parsed.attachments == []
    html_only = build(
        [("From", "a@b.c"), ("Content-Type", "text/html")],
        "<html><head><title>T</title><style>p{}</style></head><body><p>First&nbsp;para</p>"
        "<div>Second &amp; last</div><script>evil()</script></body></html>",
    )
    parsed = parse_message(html_only)
    assert parsed.text_body == "First para\n\nSecond & last"
    assert parsed.snippet == "First para Second & last"


def test_corpus_html_only_message():
    parsed = parse_message(corpus_bytes("redmine/ticket_html_only.eml"))
    assert "This is a html-only email." in parsed.text_body
    assert "<b>html-only</b>" in (parsed.html_body or "")


@pytest.mark.parametrize(
    ("html", "present", "absent"),
    [
        ("<p>hi<script>alert(1)</script></p>", ["<p>hi</p>"], ["script", "alert"]),
        ("<style>p{color:red}</style><p>x</p>", ["<p>x</p>"], ["style", "color:red"]),
        ('<p onclick="steal()">x</p>', ["<p>x</p>"], ["onclick", "steal"]),
        (
            '<form action="https://evil.example"><input name="pw">Text</form>',
            ["Text"],
            ["form", "input"],
        ),
        ('<iframe src="https://evil.example"></iframe>ok', ["ok"], ["iframe", "evil"]),
        ('<img src="https://tracker.example/p.gif" alt="p">', ["<img"], ["tracker", "src="]),
        ('<img src="//tracker.example/p.gif">', [], ["tracker"]),
        ('<img src="data:image/png;base64,AAAA">', [], ["data:"]),
        ('<img src="cid:logo@x" alt="logo">', ['src="cid:logo@x"'], []),
        (
            '<a href="https://ok.example/x">l</a>',
            ['href="https://ok.example/x"', 'rel="noopener noreferrer"'],
            [],
        ),
        ('<a href="mailto:a@b.example">m</a>', ['href="mailto:a@b.example"'], []),
        ('<a href="javascript:alert(1)">j</a>', ["j</a>"], ["javascript", "href"]),
        ('<a href="/relative">r</a>', ["r</a>"], ["href"]),
        (
            '<p style="color: red; background-image: url(https://t.example/x)">s</p>',
            ["color"],
            ["t.example", "url("],
        ),
        ("<table><tr><td colspan=2>c</td></tr></table>", ['<td colspan="2">c</td>'], []),
    ],
)
def test_sanitize_html(html, present, absent):
    cleaned = sanitize_html(html)
    for fragment in present:
        assert fragment in cleaned
    for fragment in absent:
        assert fragment not in cleaned


# ----------------------------------------------------------------------------- dedupe keys


def test_strict_signature_ignores_transport_headers_but_not_content():
    original = build(BASE_HEADERS, "The printer is on fire.\nPlease help.\n")
    relayed = build(
        [
            ("Received", "from mx.example by mx2.example; Tue, 23 May 2017 05:30:00 +0000"),
            ("Delivered-To", "journal@corp.example"),
            ("Delivered-To", "support@corp.example"),
            *BASE_HEADERS,
        ],
        "The  printer is on fire.\n\nPlease help.\n",  # only whitespace differs
    )
    changed = build(BASE_HEADERS, "The printer is on fire.\nNever mind.\n")
    first, again = parse_message(original), parse_message(original)
    assert first.strict_signature == again.strict_signature
    assert re.fullmatch(r"[0-9a-f]{64}", first.strict_signature)
    assert parse_message(relayed).strict_signature == first.strict_signature
    assert parse_message(changed).strict_signature != first.strict_signature
    assert parse_message(changed).body_sha256 != first.body_sha256


def test_loose_fingerprint_groups_trivial_variants():
    body = "Word " * 200  # the first 512 characters match in both
    original = parse_message(build(BASE_HEADERS, body + "\nfirst ending\n"))
    reply_headers = [
        ("Subject", "Re: Printer on fire"),
        ("Message-ID", "<different@example.com>"),
        ("Date", "Tue, 23 May 2017 15:00:00 +0800"),
    ]
    headers = [h for h in BASE_HEADERS if h[0] not in ("Subject", "Message-ID", "Date")]
    variant = parse_message(build(headers + reply_headers, body + "\nanother ending\n"))
    assert variant.strict_signature != original.strict_signature
    assert variant.loose_fingerprint == original.loose_fingerprint
    other_body = parse_message(build(BASE_HEADERS, "Different start " + body))
    assert other_body.loose_fingerprint != original.loose_fingerprint


# ------------------------------------------------------------------------- output helpers


def test_to_json_has_no_payload_and_iso_dates():
    raw = build(
        [*BASE_HEADERS, ("MIME-Version", "1.0"), ("Content-Type", "multipart/mixed; boundary=zz")],
        "--zz\nContent-Type: text/plain\n\nbody\n--zz\nContent-Type: application/pdf\n"
        'Content-Disposition: attachment; filename="../../etc/report.pdf"\n'
        "Content-Transfer-Encoding: base64\n\nJVBERi0=\n--zz--\n",
    )
    summary = parse_message(raw).to_json()
    assert summary["date"] == "2017-05-23T05:21:05+00:00"
    (attachment,) = summary["attachments"]
    assert attachment == {
        "filename": "report.pdf",
        "content_type": "application/pdf",
        "size": 5,
        "sha256": hashlib.sha256(b"%PDF-").hexdigest(),
        "content_id": None,
        "disposition": "attachment",
    }
    assert summary["from"] == {"name": "Alice Example", "address": "alice@example.com"}
    assert summary["headers"]["subject"] == ["Printer on fire"]
    json.dumps(summary)


def test_parse_files_reports_each_file_and_continues(tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\x01\x02 not mail")
    good = str(MESSAGES / "redmine/ticket_with_attachment.eml")
    missing = str(tmp_path / "missing.eml")
    out = io.StringIO()
    errors = parse_files([str(garbage), good, missing], out, journal_address=J)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert errors == 2
    assert [line["file"] for line in lines] == [str(garbage), good, missing]
    assert lines[0]["error"] and "error" not in lines[1] and lines[2]["error"]
    assert lines[1]["attachments"][0]["filename"] == "Paella.jpg"
