# ruff: noqa: RUF001  (Cyrillic and CJK text is the point of these tests)
"""Mail fidelity (issue 16): charsets, body choice, filenames, detection, evidence, the
strict signature. Real corpus messages where they show the case, small messages otherwise."""

from __future__ import annotations

import base64
import io
import json

import pytest

from tests.worker.test_mime import BASE_HEADERS, MESSAGES, build, corpus_bytes
from worker.mime import parse_files, parse_message, strict_signature


def single_part(content_type: str, body: bytes, encoding: str = "base64") -> bytes:
    """A one-part message whose body bytes are given exactly (base64 keeps them intact)."""
    head = (
        "From: a@b.example\r\nTo: help@corp.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode("ascii")
    if encoding == "base64":
        return head + base64.encodebytes(body)
    return head + body


# ------------------------------------------------------------ 1. every charset Python knows


@pytest.mark.parametrize(
    ("charset", "body", "expected_codec", "method"),
    [
        ("utf-16le", "Tést ✓".encode("utf-16-le"), "utf-16-le", "declared"),
        ("utf-16be", "Tést ✓".encode("utf-16-be"), "utf-16-be", "declared"),
        ("UTF-16", "Tést ✓".encode("utf-16"), "utf-16-le", "bom"),  # BOM, then LE
        ("utf-16", "Tést ✓".encode("utf-16-be"), "utf-16-be", "declared"),  # no BOM: BE
        ("utf-16", "Tést ✓".encode("utf-16-le"), "utf-16-le", "declared"),  # no BOM: LE
        ("utf-16le", b"\xff\xfe" + "Tést ✓".encode("utf-16-le"), "utf-16-le", "bom"),
        ("utf-32", "Tést ✓".encode("utf-32"), "utf-32-le", "bom"),
        ("utf-32be", "Tést ✓".encode("utf-32-be"), "utf-32-be", "declared"),
        ("utf-7", b"T+AOk-st +JxM-", "utf-7", "declared"),
        ("unicode-1-1-utf-7", b"T+AOk-st +JxM-", "utf-7", "declared"),
        ("unicode", "Tést ✓".encode("utf-16-le"), "utf-16-le", "declared"),
        ("utf-8", b"\xef\xbb\xbfT\xc3\xa9st \xe2\x9c\x93", "utf-8", "bom"),
        # A byte order mark beats a label that cannot be right.
        ("iso-8859-1", "Tést ✓".encode("utf-16"), "utf-16-le", "bom"),
        ("cp037", "Tést ✓".encode("cp1140", errors="replace"), "cp037", "declared"),
    ],
)
def test_unicode_and_non_ascii_compatible_charsets_are_decoded(
    charset, body, expected_codec, method
):
    parsed = parse_message(single_part(f"text/plain; charset={charset}", body))
    expected = "Tést ?" if charset == "cp037" else "Tést ✓"
    assert parsed.text_body == expected
    decoding = parsed.parse_evidence["text_body"]
    assert (decoding["charset"], decoding["method"]) == (expected_codec, method)


def test_iso_2022_jp_is_not_mistaken_for_ascii():
    body = "日本語のテキスト".encode("iso2022_jp")
    assert body.isascii()
    parsed = parse_message(single_part("text/plain; charset=iso-2022-jp", body, "7bit"))
    assert parsed.text_body == "日本語のテキスト"
    # Unlabelled, its escape sequences still give it away.
    assert parse_message(single_part("text/plain", body, "7bit")).text_body == "日本語のテキスト"


@pytest.mark.parametrize(
    "name", ["bounce-parser/t_corpus_warning-4.eml", "bounce-parser/t_corpus_warning-1.eml"]
)
def test_corpus_utf7_bounces_are_decoded(name):
    parsed = parse_message(corpus_bytes(name))
    assert parsed.parse_evidence["text_body"]["charset"] == "utf-7"
    assert "+AD" not in parsed.text_body  # UTF-7 shifts such as "+AD0-" are gone


def test_corpus_utf7_bounce_line_of_equals_signs():
    parsed = parse_message(corpus_bytes("bounce-parser/t_corpus_warning-4.eml"))
    assert "=" * 40 in parsed.text_body


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("redmine/subject_japanese_1.eml", "テスト"),
        ("redmine/subject_japanese_2.eml", "Re: テスト"),
        ("mikel-mail/rfc2822_example14.eml", "Re: TEST \tテストテスト"),
    ],
)
def test_corpus_iso_2022_jp_subjects(name, subject):
    assert parse_message(corpus_bytes(name)).subject.strip() == subject


# --------------------------------------------------------------- 2. the body chosen by content


def test_empty_multipart_before_the_text_does_not_take_the_body():
    parsed = parse_message(corpus_bytes("cpython/msg_15.eml"))  # Outlook Express for Mac
    assert parsed.text_body.strip() == "Some removed test."
    assert not any(a.content_type == "text/plain" for a in parsed.attachments)
    assert parsed.parse_evidence["text_body"]["part"] == "2"
    assert {"part": "1", "content_type": "multipart/alternative", "reason": "empty body part"} in (
        parsed.parse_evidence["skipped"]
    )


def test_real_text_after_broken_multiparts_is_the_body():
    parsed = parse_message(corpus_bytes("cpython/msg_39.eml"))
    assert parsed.text_body.startswith("--\nIt's never too late")
    assert not any(a.filename.endswith(".txt") for a in parsed.attachments)


@pytest.mark.parametrize("position", ["before", "after"])
def test_a_boundaryless_multipart_around_the_text(position):
    empty = "--zz\nContent-Type: multipart/alternative\n\n\n"
    text = "--zz\nContent-Type: text/plain; charset=utf-8\n\nThe real text.\n"
    parts = empty + text if position == "before" else text + empty
    raw = build(
        [*BASE_HEADERS, ("MIME-Version", "1.0"), ("Content-Type", "multipart/mixed; boundary=zz")],
        parts + "--zz--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text_body == "The real text."
    assert parsed.attachments == []


def test_boundaryless_multipart_with_content_is_still_read_when_it_is_all_there_is():
    raw = build(
        [*BASE_HEADERS, ("MIME-Version", "1.0"), ("Content-Type", "multipart/mixed")],
        "Text without any boundary.\n",
    )
    assert parse_message(raw).text_body == "Text without any boundary."


def test_alternative_with_the_text_part_last():
    raw = build(
        [
            *BASE_HEADERS,
            ("MIME-Version", "1.0"),
            ("Content-Type", "multipart/alternative; boundary=q"),
        ],
        "--q\nContent-Type: text/html; charset=utf-8\n\n<p>Rich <b>text</b></p>\n"
        "--q\nContent-Type: text/plain; charset=utf-8\n\nPlain text\n--q--\n",
    )
    parsed = parse_message(raw)
    assert parsed.text_body == "Plain text"
    assert parsed.html_body == "<p>Rich <b>text</b></p>"
    assert parsed.attachments == []
    assert parsed.parse_evidence["text_body"]["part"] == "2"
    assert parsed.parse_evidence["html_body"]["part"] == "1"


def test_html_only_mail_gets_a_text_body_for_search_and_snippets():
    parsed = parse_message(corpus_bytes("redmine/outlook_web_access_2010_html_only.eml"))
    assert parsed.text_body and "<" not in parsed.text_body
    assert parsed.snippet and parsed.snippet in " ".join(parsed.text_body.split())
    assert parsed.parse_evidence["text_body"] == {"derived_from": "html_body"}


# ------------------------------------------------------------------ 3. raw UTF-8 filenames


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("mikel-mail/attachment_emails_attachment_nonascii_filename.eml", "ciële.txt"),
        ("enmime/testdata_mail_mime-bad-8bit-filename.eml", "管理.doc"),
    ],
)
def test_corpus_raw_utf8_filenames(name, filename):
    assert [a.filename for a in parse_message(corpus_bytes(name)).attachments] == [filename]


def test_raw_utf8_filename_long_and_cyrillic():
    (attachment,) = parse_message(
        corpus_bytes("mailgun-flanker/russian-attachment-yahoo.eml")
    ).attachments
    assert attachment.filename.startswith("Картинка с очень, очень длинным")


def test_raw_utf8_filename_rfc6532_and_rfc2231_side_by_side():
    raw = (
        "From: a@b.example\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
        "--zz\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        '--zz\r\nContent-Type: application/pdf; name="Übersicht März.pdf"\r\n'
        'Content-Disposition: attachment; filename="Übersicht März.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
        "--zz\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=utf-8''%C3%A9t%C3%A9.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--zz--\r\n"
    ).encode()
    names = [a.filename for a in parse_message(raw).attachments]
    assert names == ["Übersicht März.pdf", "été.pdf"]


# ------------------------------------------------------- 4. 8-bit text without a charset

KOI8_SUBJECT = "Отчёт о работе сервера за март"
KOI8_BODY = (
    "Здравствуйте! Сервер перестал отвечать после обновления, письма не доходят до "
    "получателей. Пожалуйста, посмотрите журнал и сообщите, что случилось.\n"
)


def test_koi8r_subject_and_body_without_charset():
    raw = (
        b"From: =?koi8-r?b?8M/MwdPPzg==?= <user@example.ru>\r\nTo: help@corp.example\r\n"
        b"Subject: " + KOI8_SUBJECT.encode("koi8-r") + b"\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + KOI8_BODY.encode("koi8-r")
    )
    parsed = parse_message(raw)
    assert parsed.subject == KOI8_SUBJECT
    assert parsed.text_body == KOI8_BODY.strip("\n")
    evidence = parsed.parse_evidence
    assert evidence["text_body"]["charset"] == "koi8-r"
    assert evidence["text_body"]["method"] == "detected"
    assert evidence["text_body"]["detector"]["name"] == "charset-normalizer"
    assert evidence["text_body"]["detector"]["confidence"] in ("high", "low")
    assert evidence["headers"]["charset"]["source"] == "detected"
    assert evidence["headers"]["fields"]["subject"]["charset"] == "koi8-r"


def test_a_declared_body_charset_still_decides_raw_headers():
    raw = (
        b"From: a@b.example\r\nSubject: " + "Grüße aus Köln".encode("latin-1") + b"\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n" + "Grüße".encode("latin-1")
    )
    parsed = parse_message(raw)
    assert (parsed.subject, parsed.text_body) == ("Grüße aus Köln", "Grüße")
    assert parsed.parse_evidence["headers"]["charset"]["source"] == "body part charset"


@pytest.mark.parametrize(
    ("label", "text", "encoding"),
    [
        (None, "Ceci est un message de test, merci de répondre à l'équipe.", "cp1252"),
        ("unknown-8bit", "Grüße aus Köln, wir melden uns bald. Mit freundlichen Grüßen", "cp1252"),
        ("x-no-such-charset", "你好，这是一封测试邮件，请查收附件中的发票。", "gb18030"),
        (None, "Žluťoučký kůň úpěl ďábelské ódy, prosím odpovězte.", "cp1250"),
    ],
)
def test_undeclared_8bit_bodies_are_detected(label, text, encoding):
    content_type = "text/plain" + (f"; charset={label}" if label else "")
    parsed = parse_message(single_part(content_type, text.encode(encoding), "8bit"))
    assert parsed.text_body == text
    assert parsed.parse_evidence["text_body"]["method"] == "detected"


def test_mostly_utf8_with_a_broken_byte_is_read_as_utf8():
    body = "Юникод запрещен".encode() + b"\xd1"  # truncated in the middle of a character
    parsed = parse_message(single_part("text/plain", body, "8bit"))
    assert parsed.text_body == "Юникод запрещен\ufffd"
    assert parsed.parse_evidence["text_body"]["method"] == "mostly-utf-8"


def test_corpus_big5_without_a_usable_charset():
    parsed = parse_message(corpus_bytes("enmime/testdata_parts_chardet-success-big-5.eml"))
    assert parsed.text_body.startswith("顏是家訓")


def test_a_few_broken_bytes_in_declared_text_are_replaced_and_the_evidence_says_so():
    body = "Grüße aus Köln, bis bald".encode() + b"\xff"
    parsed = parse_message(single_part("text/plain; charset=utf-8", body, "8bit"))
    assert parsed.text_body == "Grüße aus Köln, bis bald\ufffd"
    assert parsed.parse_evidence["text_body"]["method"] == "replacement"


def test_latin1_labelled_utf8_is_read_as_latin1():
    parsed = parse_message(corpus_bytes("php-mime-mail-parser/m0019.eml"))
    assert "Det här är ett flerdelat meddelande" in parsed.text_body
    decoding = parsed.parse_evidence["text_body"]
    assert (decoding["declared"], decoding["method"]) == ("utf-8", "detected")


# ------------------------------------------------------------- why the body is empty


def test_tnef_winmail_dat_stays_an_attachment_and_the_reason_is_given():
    parsed = parse_message(corpus_bytes("redmine/subject_as_iso-8859-1.eml"))
    assert parsed.text_body == ""
    assert [a.filename for a in parsed.attachments] == ["winmail.dat"]
    assert "winmail.dat" in parsed.parse_evidence["empty_body_reason"]
    assert "TNEF" in parsed.parse_evidence["empty_body_reason"]


def test_message_partial_stays_an_attachment_and_the_reason_is_given():
    fragment = "Subject: big file\n\nfirst third of the message\n"
    raw = build(
        [
            *BASE_HEADERS,
            ("MIME-Version", "1.0"),
            ("Content-Type", 'message/partial; id="abc@example.com"; number=1; total=3'),
        ],
        fragment,
    )
    parsed = parse_message(raw)
    assert parsed.text_body == ""
    (attachment,) = parsed.attachments
    assert attachment.content_type == "message/partial"
    assert attachment.payload == fragment.replace("\n", "\r\n").encode()
    assert "message/partial" in parsed.parse_evidence["empty_body_reason"]


def test_a_message_with_text_has_no_empty_body_reason():
    parsed = parse_message(corpus_bytes("redmine/ticket_with_attachment.eml"))
    assert parsed.text_body
    assert "empty_body_reason" not in parsed.parse_evidence


def test_ticketing_parse_explains_the_decoding(tmp_path):
    path = tmp_path / "koi8.eml"
    path.write_bytes(single_part("text/plain", KOI8_BODY.encode("koi8-r"), "8bit"))
    out = io.StringIO()
    assert parse_files([str(path), str(MESSAGES / "cpython/msg_15.eml")], out) == 0
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["parse_evidence"]["text_body"]["charset"] == "koi8-r"
    assert first["parse_evidence"]["text_body"]["detector"]["language"] == "Russian"
    assert second["parse_evidence"]["skipped"][0]["reason"] == "empty body part"


# --------------------------------------------------------------- 5. HTML in the signature


def _html_message(html: str, line_end: str = "\r\n") -> bytes:
    headers = [h for h in BASE_HEADERS if h[0] != "Message-ID"]
    raw = build(
        [*headers, ("MIME-Version", "1.0"), ("Content-Type", "multipart/alternative; boundary=q")],
        "--q\nContent-Type: text/plain; charset=utf-8\n\nPay the invoice.\n"
        f"--q\nContent-Type: text/html; charset=utf-8\n\n{html}\n--q--\n",
    )
    return raw.replace(b"\r\n", line_end.encode())


def test_strict_signature_tells_messages_apart_by_their_html():
    first = parse_message(
        _html_message('<p>Pay the <a href="https://bank.example">invoice</a>.</p>')
    )
    second = parse_message(
        _html_message('<p>Pay the <a href="https://evil.example">invoice</a>.</p>')
    )
    assert first.message_id is None and first.body_sha256 == second.body_sha256
    assert first.strict_signature != second.strict_signature
    assert first.loose_fingerprint == second.loose_fingerprint  # near-duplicates still


def test_strict_signature_ignores_line_endings_and_rewrapping_of_the_html():
    html = '<p>Pay the <a href="https://bank.example">invoice</a>.</p>'
    reference = parse_message(_html_message(html)).strict_signature
    assert parse_message(_html_message(html, "\n")).strict_signature == reference
    assert parse_message(_html_message(html, "\r")).strict_signature == reference
    rewrapped = html.replace(" <a", "\n  <a")
    assert parse_message(_html_message(rewrapped)).strict_signature == reference


def test_strict_signature_function_is_what_the_parser_uses():
    parsed = parse_message(corpus_bytes("redmine/ticket_with_attachment.eml"))
    assert parsed.strict_signature == strict_signature(
        parsed.message_id,
        parsed.date,
        parsed.from_[1] if parsed.from_ else None,
        [address for _, address in parsed.to],
        [address for _, address in parsed.cc],
        parsed.normalized_subject,
        parsed.body_sha256,
        [a.sha256 for a in parsed.attachments],
        parsed.html_body,
    )


def test_an_undeclared_part_uses_the_charset_its_sibling_declares():
    # Italian newsletter: text/plain says iso-8859-1, the HTML alternative says nothing.
    parsed = parse_message(corpus_bytes("spamscope-mail-parser/mail_test_2.eml"))
    assert "Domani e martedì la rimonta" in parsed.html_body
    assert parsed.parse_evidence["html_body"]["method"] == "message charset"


def test_an_undeclared_html_part_uses_its_own_meta_charset():
    html = '<html><head><meta charset="koi8-r"></head><body>Привет, мир</body></html>'
    parsed = parse_message(single_part("text/html", html.encode("koi8-r"), "8bit"))
    assert "Привет, мир" in parsed.html_body
    assert parsed.text_body == "Привет, мир"
    assert parsed.parse_evidence["html_body"]["declared"] == "koi8-r"


@pytest.mark.parametrize(
    ("encoding", "subject", "body"),
    [
        ("koi8-r", "Привет", "Как дела?"),
        ("cp1251", "Привет", "Как дела?"),
        ("koi8-r", "Отчёт за март", "Добрый день! Отчёт во вложении."),
        ("cp1253", "Ερώτηση", "Ευχαριστώ πολύ"),
        ("cp1254", "Fatura hakkında", "Teşekkürler, iyi günler"),
        ("iso8859-2", "Zapytanie ofertowe", "Dziękuję, pozdrawiam"),
        ("cp1252", "Réunion demain", "Merci beaucoup, à bientôt"),
        ("cp1252", "Acme™ product – now 50% off", "Señor García, ¿cómo está?"),
        ("gb18030", "关于发票的问题", "请查收附件，谢谢。"),
        ("cp932", "請求書について", "よろしくお願いします。"),
        ("cp1256", "مرحبا", "شكرا جزيلا"),
    ],
)
def test_short_undeclared_mail_is_read_in_its_own_alphabet(encoding, subject, body):
    """Too short for language statistics: ties go to the reading whose words use one
    language's common letters, not to mojibake mixing scripts or rare letters."""
    raw = (
        b"From: a@b.example\r\nSubject: " + subject.encode(encoding) + b"\r\n"
        b"Content-Type: text/plain\r\n\r\n" + body.encode(encoding)
    )
    parsed = parse_message(raw)
    assert (parsed.subject, parsed.text_body) == (subject, body)
