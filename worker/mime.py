"""MIME parsing: raw RFC 5322 bytes → `ParsedMessage` (SPEC 2.2, 2.3, 2.4, 2.5 tokens).

Pure Python, no database, no network. The one entry point is `parse_message`; the
`ticketing parse` CLI uses `parse_files`.

Design notes
------------
* The stdlib parser runs with the `compat32` policy. It never raises while headers are read
  (the `default` policy builds header objects that can raise on malformed input and costs
  several times more CPU), and it keeps raw 8-bit bytes as surrogate escapes, so this
  module decodes every header and body itself with an explicit fallback chain.
* `message/*` parts (rfc822, global, delivery-status, ...) are parsed as opaque leaves: the
  embedded message's original bytes become one attachment, byte for byte, and its text
  never reaches the outer body. That also makes endlessly nested rfc822 cheap.
* Multipart nesting deeper than `MAX_MIME_DEPTH` is not descended into: the subtree is kept
  as one opaque attachment (the stdlib parser would otherwise slow down quadratically and
  finally hit the recursion limit).
* Bodies are chosen by content after the walk (`_Collector.finish`), not by position:
  an empty part or a multipart without a usable boundary never takes the body's place.
* Charsets: a label means the codec Python knows for it; what decides ASCII compatibility
  is decoding, not the codec's name. Undeclared 8-bit text is detected once per message
  (`_Charsets`). Every decision goes into `ParsedMessage.parse_evidence`.
* Every string leaving this module is valid Unicode without NUL (PostgreSQL `text` rejects
  NUL; lone surrogates cannot be encoded as UTF-8): NUL becomes U+FFFD.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import html as html_lib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import utils as email_utils
from email.feedparser import FeedParser
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from functools import lru_cache
from typing import Any, TextIO

import charset_normalizer
import nh3
from charset_normalizer.constant import FREQUENCIES

__all__ = [
    "MAX_MIME_DEPTH",
    "MAX_REFERENCES",
    "Attachment",
    "ParsedMessage",
    "RecipientEvidence",
    "UnparseableMessage",
    "normalize_subject",
    "parse_files",
    "parse_message",
    "sanitize_html",
    "strict_signature",
]

MAX_MIME_DEPTH = 50
# Only the newest references count: one bogus or runaway header (thousands of ids, or ids
# copied from unrelated mail) must not be able to glue unrelated threads together.
MAX_REFERENCES = 50
# RFC 5322 caps a line at 998 characters, so a longer id is junk (fuzzers produce them);
# it would also exceed PostgreSQL's btree index row limit.
MAX_MESSAGE_ID_LENGTH = 995
SNIPPET_LENGTH = 200
MAX_SKIPPED_EVIDENCE = 50
LOOSE_BODY_PREFIX = 512

Address = tuple[str, str]


class UnparseableMessage(Exception):
    """The bytes are not an e-mail message at all (empty, binary, no header)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Attachment:
    """One attachment; `payload` holds the decoded bytes (omitted from JSON)."""

    filename: str
    content_type: str
    size: int
    sha256: str
    content_id: str | None
    disposition: str  # 'attachment' | 'inline'
    payload: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "content_id": self.content_id,
            "disposition": self.disposition,
        }


@dataclass(frozen=True)
class RecipientEvidence:
    """Which address the message was originally delivered to, and how sure we are (SPEC 2.3)."""

    original_recipient: str | None
    source: str  # workspace_header | delivered_to | x_original_to | to_cc_scan | unknown
    confidence: str  # high | medium | low
    candidates: dict[str, list[str]]  # lowercase header name -> addresses, header order

    def to_json(self) -> dict[str, Any]:
        return {
            "original_recipient": self.original_recipient,
            "source": self.source,
            "confidence": self.confidence,
            "candidates": {name: list(values) for name, values in self.candidates.items()},
        }


@dataclass
class ParsedMessage:
    """The canonical view of one raw message.

    `text_body` is always a string ('' when there is no text); `html_body` is sanitised HTML
    or None. `normalized_subject` is lower-cased and whitespace-collapsed. Addresses are
    `(display name, lower-cased address)` tuples.
    """

    message_id: str | None
    date: datetime | None
    subject: str
    normalized_subject: str
    from_: Address | None
    reply_to: list[Address]
    to: list[Address]
    cc: list[Address]
    in_reply_to: list[str]
    references: list[str]
    headers: dict[str, list[str]]
    text_body: str
    html_body: str | None
    attachments: list[Attachment]
    snippet: str
    recipient_evidence: RecipientEvidence
    strict_signature: str
    loose_fingerprint: str
    body_sha256: str
    defects: list[str] = field(default_factory=list)
    parse_evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable summary (attachments without payload bytes)."""
        return {
            "message_id": self.message_id,
            "date": self.date.isoformat() if self.date else None,
            "subject": self.subject,
            "normalized_subject": self.normalized_subject,
            "from": _address_json(self.from_) if self.from_ else None,
            "reply_to": [_address_json(a) for a in self.reply_to],
            "to": [_address_json(a) for a in self.to],
            "cc": [_address_json(a) for a in self.cc],
            "in_reply_to": list(self.in_reply_to),
            "references": list(self.references),
            "headers": {name: list(values) for name, values in self.headers.items()},
            "text_body": self.text_body,
            "html_body": self.html_body,
            "attachments": [a.to_json() for a in self.attachments],
            "snippet": self.snippet,
            "recipient_evidence": self.recipient_evidence.to_json(),
            "strict_signature": self.strict_signature,
            "loose_fingerprint": self.loose_fingerprint,
            "body_sha256": self.body_sha256,
            "defects": list(self.defects),
            "parse_evidence": self.parse_evidence,
        }


def _address_json(address: Address) -> dict[str, str]:
    return {"name": address[0], "address": address[1]}


# --------------------------------------------------------------------------- text decoding

# Labels seen in real mail mapped to the codec that actually decodes them (mostly the
# supersets browsers use: senders label GBK text gb2312, cp949 text euc-kr, and so on).
_CHARSET_ALIASES = {
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "unicode-1-1-utf-8": "utf-8",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ks_c_5601-1989": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "gb_2312-80": "gb18030",
    "big5": "big5hkscs",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso_8859-1": "cp1252",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "cp-850": "cp850",
    "ansi_x3.4-1968": "ascii",
    # Microsoft's names for UTF-16/UCS: "unicode" is what .NET calls UTF-16 (BOM or LE).
    "unicode": "utf-16",
    "ucs-2": "utf-16",
    "ucs2": "utf-16",
    "iso-10646-ucs-2": "utf-16-be",
    "unicodefffe": "utf-16-be",
    "ucs-4": "utf-32",
    "iso-10646-ucs-4": "utf-32-be",
}
# Labels that promise nothing useful: the bytes are treated as undeclared.
_WEAK_LABELS = frozenset({"", "ascii", "us-ascii", "none", "x-unknown", "unknown-8bit", "default"})
# Codecs that Python knows but that are not text charsets or are dangerous to apply blindly.
_REJECTED_CODECS = frozenset(
    {"undefined", "unicode_escape", "raw_unicode_escape", "idna", "punycode", "mbcs", "oem"}
)
_CHARSET_LABEL = re.compile(r"[a-z0-9._:+-]{1,40}")
# Byte order marks, longest first (the UTF-32-LE mark begins with the UTF-16-LE one). A
# mark overrides the declared label, as browsers do: it is the stronger evidence.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Charsets the detector may answer with, most common in mail first: the order breaks ties
# between equally plausible readings (short text often reads as well in several).
_DETECTABLE = (
    "cp1252", "cp1250", "cp1251", "koi8_r", "iso8859_2", "iso8859_15", "gb18030",
    "big5", "cp932", "euc_jp", "cp949", "koi8_u", "iso8859_5", "cp1253", "iso8859_7",
    "cp1254", "cp1255", "iso8859_8", "cp1256", "cp1257", "cp874", "cp866", "mac_cyrillic",
)  # fmt: skip
_DETECT_RANK = {codecs.lookup(name).name: rank for rank, name in enumerate(_DETECTABLE)}
_DETECT_LIMIT = 65536  # bytes looked at; the detector samples anyway
_MULTIBYTE = frozenset(
    codecs.lookup(name).name for name in ("gb18030", "big5", "cp932", "euc_jp", "cp949")
)
_FIT_SAMPLE = 4000  # characters of a reading scored by _alphabet_fit
# Each language's most frequent letters, weighted by rank (charset-normalizer's own table).
_LETTER_WEIGHTS = {
    language: {char: 1 - n / (2 * len(chars)) for n, char in enumerate(chars)}
    for language, chars in FREQUENCIES.items()
}
_ISO2022_ESCAPE = re.compile(rb"\x1b[$(][@A-Z]")


@lru_cache(maxsize=256)
def _codec_name(label: str | None) -> str | None:
    """The Python codec for a charset label, or None when unknown, weak or bogus."""
    if label is None:
        return None
    label = label.strip().strip("\"'").lower()
    if label in _WEAK_LABELS or not _CHARSET_LABEL.fullmatch(label):
        return None
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REJECTED_CODECS:
        return None
    return info.name


@lru_cache(maxsize=256)
def _ascii_compatible(codec: str) -> bool:
    """Whether ASCII bytes mean ASCII in `codec` (not so for UTF-7/16/32, ISO-2022, HZ,
    EBCDIC...): decided by decoding, not by name, so no codec can slip through a list."""
    # Escapes that switch stateful codecs (ISO-2022, UTF-7, HZ) are part of the sample:
    # some of those codecs pass every other ASCII byte through unchanged.
    sample = bytes(range(128)) + b"\x1b$B\x1b(B+AOk-~{~}"
    try:
        return sample.decode(codec) == sample.decode("ascii")
    except (UnicodeDecodeError, ValueError, LookupError):
        return False


@dataclass(frozen=True)
class Decoding:
    """How one run of bytes became text; part of the parse evidence.

    `method`: ascii (7-bit, no charset needed), bom (a byte order mark), declared (the
    label), utf-8 (valid UTF-8 whatever the label said), mostly-utf-8 (UTF-8 with a few
    broken bytes as U+FFFD), message charset (the charset another part declares),
    detected (charset-normalizer), replacement (undecodable bytes became U+FFFD).
    """

    charset: str
    method: str
    declared: str | None = None
    detector: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "charset": self.charset,
            "method": self.method,
            "declared": self.declared,
        }
        if self.detector is not None:
            result["detector"] = self.detector
        return result


def _label(charset: str | None) -> str | None:
    """The declared label as evidence (printable, bounded), or None."""
    if charset is None:
        return None
    text = _clean(str(charset)).strip()[:60]
    return "".join(c if c.isprintable() else "?" for c in text) or None


def _utf16_or_32(data: bytes, codec: str) -> str:
    """Pick the byte order for utf-16/utf-32 without a BOM: ASCII-range text leaves the zero
    bytes on one side (RFC 2781 says big-endian, but most unmarked mail is Windows's LE)."""
    width = 2 if codec == "utf-16" else 4
    sample = data[:4096]
    zeros_first = sum(1 for i in range(0, len(sample) - width + 1, width) if sample[i] == 0)
    zeros_last = sum(1 for i in range(width - 1, len(sample), width) if sample[i] == 0)
    return f"{codec}-be" if zeros_first > zeros_last else f"{codec}-le"


def _words(text: str) -> list[str]:
    """Runs of letters, marks and non-ASCII symbols (a mojibake "letter" is often a
    symbol: box drawing, degree sign), lower-cased; punctuation and spaces separate."""
    words, word = [], []
    for char in text.lower():
        category = unicodedata.category(char)
        if category[0] in "LM" or (category[0] == "S" and not char.isascii()):
            word.append(char)
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    return words


def _script(char: str) -> str | None:
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name and not name.startswith("COMBINING") else None


def _alphabet_fit(text: str) -> float:
    """How well a reading's non-ASCII letters fit one language's common letters (0 to 1).

    Short text gives charset-normalizer too little to measure: "Привет" in KOI8-R reads as
    well as "Ďđčâĺň" in Windows-1250 to it. A real reading uses frequent letters of one
    language, one script per word; mojibake mixes rare letters of several scripts. Letters
    among a language's common ones weigh 0.5 to 1 by rank, others 0, and so do all the
    non-ASCII letters of a word that mixes scripts. A reading without non-ASCII letters
    (symbols only, such as the trade mark sign) scores a neutral 0.5.
    """
    letters: list[str] = []
    for word in _words(text[:_FIT_SAMPLE]):
        wide = [c for c in word if not c.isascii() and (c.isalpha() or _is_mark(c))]
        if not wide:
            continue
        scripts = {_script(c) for c in word if c.isalpha() or _is_mark(c)} - {None}
        letters.extend(wide if len(scripts) == 1 else "\0" * len(wide))
    if not letters or not _LETTER_WEIGHTS:
        return 0.5
    return max(
        sum(weights.get(char, 0.0) for char in letters) / len(letters)
        for weights in _LETTER_WEIGHTS.values()
    )


def _is_mark(char: str) -> bool:
    return unicodedata.category(char)[0] == "M"


def _halfwidth_kana(text: str) -> bool:
    """Whether a CJK reading is full of half-width katakana, which mail hardly uses: the
    classic sign of single-byte text read as Shift_JIS."""
    sample = text[:_FIT_SAMPLE]
    wide = sum(1 for char in sample if ord(char) > 0x7F)
    kana = sum(1 for char in sample if "\uff61" <= char <= "\uff9f")
    return wide > 0 and kana * 10 >= wide


def _detect(data: bytes) -> tuple[str, dict[str, Any]] | None:
    """Guess the charset of undeclared 8-bit text with charset-normalizer.

    Readings are ordered by mess (least first), language coherence, then how common the
    charset is in mail (`_DETECTABLE` order). Unless the best is a multi-byte (CJK)
    charset, the single-byte readings as little messy as it are ordered again by
    `_alphabet_fit` first. Confidence is `high` when one reading stands out, `low` when
    a tie had to be broken.
    """
    matches = list(
        charset_normalizer.from_bytes(data[:_DETECT_LIMIT], cp_isolation=list(_DETECTABLE))
    )
    if not matches:
        return None

    def rank(match) -> int:
        return _DETECT_RANK.get(codecs.lookup(match.encoding).name, len(_DETECT_RANK))

    matches.sort(key=lambda m: (round(m.chaos, 2), -round(m.coherence, 2), rank(m)))
    best = matches[0]
    fits: dict[int, float] = {}
    if codecs.lookup(best.encoding).name not in _MULTIBYTE or _halfwidth_kana(str(best)):
        peers = [
            m
            for m in matches
            if round(m.chaos, 2) == round(best.chaos, 2)
            and codecs.lookup(m.encoding).name not in _MULTIBYTE
        ]
        fits = {id(m): round(_alphabet_fit(str(m)), 2) for m in peers}
        peers.sort(key=lambda m: (-fits[id(m)], -round(m.coherence, 2), rank(m)))
        matches = peers + [m for m in matches if id(m) not in fits]
        best = matches[0]

    def standing(match) -> tuple[float, float, float]:
        return (round(match.chaos, 2), -fits.get(id(match), 0.0), -round(match.coherence, 2))

    clear = len(matches) == 1 or standing(best) != standing(matches[1])
    detector: dict[str, Any] = {
        "name": "charset-normalizer",
        "confidence": "high" if clear else "low",
        "chaos": round(best.chaos, 3),
        "coherence": round(best.coherence, 3),
        "language": best.language,
        "alternatives": [codecs.lookup(m.encoding).name for m in matches[1:6]],
        "bytes": min(len(data), _DETECT_LIMIT),
    }
    if id(best) in fits:
        detector["alphabet_fit"] = fits[id(best)]
    return codecs.lookup(best.encoding).name, detector


def decode_bytes(
    data: bytes,
    charset: str | None,
    guess: tuple[str, dict[str, Any]] | None = None,
    *,
    relabel: bool = False,
) -> tuple[str, Decoding]:
    """Decode bytes declared as `charset`; never fails, never drops the text.

    A byte order mark wins. A known label is tried strictly, then UTF-8 (mislabelled
    UTF-8 is common), then the label with replacement characters; with `relabel` (body
    parts: enough text to judge), text that hardly decodes as labelled is detected. Undeclared, weak or
    unknown labels: 7-bit text is ASCII (or ISO-2022 when it carries its escapes), then
    UTF-8 (also when only a few bytes are broken), then `guess` (the charset another part
    declares, or the one detected for the message: `_Charsets`), then a detection of
    these bytes alone, then UTF-8 with replacement characters.
    """
    declared = _label(charset)
    for bom, name in _BOMS:
        if data.startswith(bom):
            return _clean(data[len(bom) :].decode(name, errors="replace")), Decoding(
                name, "bom", declared
            )
    codec = _codec_name(charset)
    if codec in ("utf-16", "utf-32"):
        codec = _utf16_or_32(data, codec)
    if data.isascii() and (codec is None or _ascii_compatible(codec)):
        if codec is None and _ISO2022_ESCAPE.search(data):
            try:
                return _clean(data.decode("iso2022_jp_2")), Decoding(
                    "iso2022_jp_2", "detected", declared, {"name": "iso-2022 escapes"}
                )
            except UnicodeDecodeError:
                pass
        return _clean(data.decode("ascii")), Decoding("ascii", "ascii", declared)
    if codec is not None:
        for name, method in ((codec, "declared"), ("utf-8", "utf-8")):
            try:
                return _clean(data.decode(name)), Decoding(name, method, declared)
            except (UnicodeDecodeError, LookupError, ValueError):
                continue
        text = data.decode(codec, errors="replace")
        if relabel and not _mostly_valid(text):
            # Hardly anything decodes as labelled: the label is wrong (Latin-1 text sent
            # as UTF-8 is the classic), so the bytes are read as if undeclared.
            detected = _detect(data)
            if detected is not None:
                try:
                    text = data.decode(detected[0])
                except (UnicodeDecodeError, LookupError):
                    pass
                else:
                    return _clean(text), Decoding(detected[0], "detected", declared, detected[1])
        return _clean(text), Decoding(codec, "replacement", declared)
    lossy = data.decode("utf-8", errors="replace")
    if "\ufffd" not in lossy or _mostly_valid(lossy):
        method = "utf-8" if "\ufffd" not in lossy else "mostly-utf-8"
        return _clean(lossy), Decoding("utf-8", method, declared)
    for candidate in (guess, _detect(data)):
        if candidate is None:
            continue
        try:
            text = data.decode(candidate[0])
        except (UnicodeDecodeError, LookupError):
            continue
        if candidate[1].get("source") == "body part charset":
            return _clean(text), Decoding(candidate[0], "message charset", declared)
        return _clean(text), Decoding(candidate[0], "detected", declared, candidate[1])
    text = data.decode("utf-8", errors="replace")
    return _clean(text), Decoding("utf-8", "replacement", declared)


def _mostly_valid(lossy: str) -> bool:
    """Whether a replacement decode is right but for a few broken bytes (truncated,
    spliced): valid non-ASCII characters clearly outnumber the replaced bytes."""
    broken = lossy.count("\ufffd")
    valid = sum(1 for c in lossy if ord(c) > 0x7F) - broken
    return valid >= 3 * broken


def decode_text(data: bytes, charset: str | None) -> str:
    """`decode_bytes` without the evidence."""
    return decode_bytes(data, charset)[0]


def _clean(text: str) -> str:
    """Make a string storable: no NUL, no lone surrogates."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    return text


def _raw_bytes(value: str) -> bytes | None:
    """The raw 8-bit bytes a compat32 string stands for, or None when it holds none."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
        return None  # already real text (no escaped raw bytes)
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        return None


def _from_surrogates(value: str, fallback_charset: str | None) -> str:
    """Turn a compat32 string (raw 8-bit bytes kept as surrogate escapes) into clean text."""
    data = _raw_bytes(value)
    if data is None:
        return _clean(value)
    try:
        # UTF-8 validates itself and is what RFC 6532 allows in headers: try it first.
        return _clean(data.decode("utf-8"))
    except UnicodeDecodeError:
        return decode_text(data, fallback_charset)


# RFC 2047 encoded word; tolerates spaces inside the encoded text (seen in the wild).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+?)\?([bBqQ])\?([^?]*?)\?=")
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")
_BASE64_DATA = re.compile(rb"([A-Za-z0-9+/]*)")


def _decode_base64(data: bytes) -> bytes:
    """Lenient base64: skips non-alphabet bytes, repairs missing padding and decodes what a
    truncated tail allows. Stops at the first padding, like the stdlib: text after it is
    usually a missing boundary's trailing junk, not more data."""
    match = _BASE64_DATA.search(_BASE64_JUNK.sub(b"", data))
    if not match:
        return b""
    body = match.group(1)
    if len(body) % 4 == 1:
        body = body[:-1]  # a lone trailing character carries no whole byte
    try:
        return binascii.a2b_base64(body + b"=" * (-len(body) % 4))
    except binascii.Error:
        return b""


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded words; adjacent words in one charset are joined first so a
    multi-byte character split across two words survives."""
    if "=?" not in text:
        return text
    pieces: list[tuple[str, bytes | str]] = []  # (charset or '', bytes) / ('', text)
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        previous_is_word = bool(pieces) and isinstance(pieces[-1][1], bytes)
        if between and not (previous_is_word and between.isspace()):
            pieces.append(("", between))
        charset = match.group(1).split("*", 1)[0].lower()  # drop RFC 2231 language
        encoded = match.group(3)
        if match.group(2) in "bB":
            data = _decode_base64(encoded.encode("ascii", errors="ignore"))
        else:
            data = binascii.a2b_qp(encoded.encode("ascii", errors="ignore"), header=True)
        if pieces and isinstance(pieces[-1][1], bytes) and pieces[-1][0] == charset:
            pieces[-1] = (charset, pieces[-1][1] + data)
        else:
            pieces.append((charset, data))
        position = match.end()
    if not pieces:
        return text
    pieces.append(("", text[position:]))
    return "".join(
        decode_text(value, charset) if isinstance(value, bytes) else value
        for charset, value in pieces
    )


_FOLD = re.compile(r"[\r\n]+")


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).strip()


def _decode_header(value: str, fallback_charset: str | None) -> str:
    return decode_encoded_words(_from_surrogates(_unfold(value), fallback_charset))


# ------------------------------------------------------------------------------- addresses


def _parse_addresses(value: str, fallback_charset: str | None) -> list[Address]:
    """(name, lower-cased address) pairs from an address header; entries without an address
    (groups, `undisclosed-recipients:;`) are dropped."""
    text = _from_surrogates(_unfold(value), fallback_charset)
    try:
        pairs = email_utils.getaddresses([text])
    except Exception:  # the stdlib address parser has raised on fuzzed input before
        pairs = [("", found) for found in re.findall(r"[^\s<>,;:\"]+@[^\s<>,;:\"]+", text)]
    result = []
    for name, address in pairs:
        address = address.strip().strip("<>").strip().lower()
        if not address:
            continue
        result.append((_clean(decode_encoded_words(name).strip()), _clean(address)))
    return result


# ------------------------------------------------------------------------------ message ids

_ID_TOKEN = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")


def _id_tokens(value: str) -> list[str]:
    """`<...>` tokens with inner whitespace removed (ids get folded); if the header has no
    angle brackets at all, its whitespace-separated words."""
    tokens = [_WHITESPACE.sub("", t) for t in _ID_TOKEN.findall(value)]
    if not tokens and "<" not in value:
        tokens = [word for word in value.split() if ">" not in word]
    return [t for t in tokens if t]


def _message_id(values: list[str]) -> str | None:
    for value in values:
        for token in _id_tokens(value):
            if len(token) <= MAX_MESSAGE_ID_LENGTH:
                return token
            return None
    return None


def reference_ids(values: list[str], limit: int = MAX_REFERENCES) -> list[str]:
    """Thread reference ids from In-Reply-To/References values, in header order.

    Tokens that cannot be Message-IDs (no '@', overlong) are ignored, duplicates keep their
    first position, and only the newest `limit` (the last ones) are kept.
    """
    seen: set[str] = set()
    ids = []
    for value in values:
        for token in _id_tokens(value):
            if "@" not in token or len(token) > MAX_MESSAGE_ID_LENGTH or token in seen:
                continue
            seen.add(token)
            ids.append(token)
    return ids[-limit:] if limit else []


# --------------------------------------------------------------------------------- subject

_SUBJECT_PREFIX = re.compile(
    r"""^\s*(?:
        (?:re|fwd?|aw|wg|sv)              # reply / forward markers (en, de, nordic)
        (?:\s*\[\d+\]|\s*\(\d+\)|\s*\d+)?  # Re[2]: / Re(2): / Re 2: counters
        \s*[:\uff1a]                       # ASCII or full-width colon
      | \[ext(?:ernal)?\]                  # external-sender banners
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def normalize_subject(subject: str) -> str:
    """Strip any leading run of Re:/Fwd:/Fw:/AW:/WG:/SV:/Re[2]:/[EXT] prefixes, collapse
    whitespace and lower-case (the form used for dedupe keys and subject comparison)."""
    text = subject
    while True:
        match = _SUBJECT_PREFIX.match(text)
        if not match:
            break
        text = text[match.end() :]
    return " ".join(text.split()).lower()


# ---------------------------------------------------------------------------------- HTML

_SAFE_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "cite", "code", "col",
    "colgroup", "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small",
    "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "tt", "u", "ul",
}  # fmt: skip
_CELL_ATTRIBUTES = {"align", "valign", "width", "height", "colspan", "rowspan", "bgcolor"}
_SAFE_ATTRIBUTES = {
    "*": {"style", "title", "dir", "lang", "align"},
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height", "border"},
    "font": {"color", "face", "size"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": _CELL_ATTRIBUTES,
    "th": _CELL_ATTRIBUTES,
    "tr": {"valign", "bgcolor"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "ol": {"start", "type"},
    "ul": {"type"},
}
# Only properties that cannot load anything: no background/background-image, no content.
_SAFE_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "text-align", "text-decoration", "text-indent", "text-transform",
    "line-height", "letter-spacing", "white-space", "vertical-align", "width", "height",
    "max-width", "min-width", "margin", "margin-top", "margin-right", "margin-bottom",
    "margin-left", "padding", "padding-top", "padding-right", "padding-bottom",
    "padding-left", "border", "border-top", "border-right", "border-bottom", "border-left",
    "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
    "display", "list-style-type",
}  # fmt: skip
# Removed together with their content (forms' controls, frames, scripts, styles).
_DROP_WITH_CONTENT = {
    "script", "style", "title", "textarea", "select", "button", "iframe", "frame",
    "frameset", "noframes", "object", "embed", "applet", "noscript", "template", "svg",
    "math",
}  # fmt: skip
_LINK_SCHEMES = ("http:", "https:", "mailto:")
# Values of the allowed properties: lengths, numbers, names, colours, quoted font names.
# No backslash, parenthesis (but colour functions), slash, colon or at sign.
_SAFE_CSS_VALUE = re.compile(r"^[A-Za-z0-9#%.,!'\" -]*[A-Za-z0-9#%'\"]\s*$")
_CSS_COLOR_FUNCTION = re.compile(r"\b(?:rgb|rgba|hsl|hsla)\([0-9.%,\s]*\)", re.IGNORECASE)


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    lowered = value.strip().lower()
    if attribute == "href":
        return value if lowered.startswith(_LINK_SCHEMES) else None
    if attribute == "src":
        # Remote (and data:) images would let senders track reads; inline cid: images are
        # kept verbatim so the API can point them at the attachment download URL.
        return value if tag == "img" and lowered.startswith("cid:") else None
    if attribute == "style":
        # Keep the declarations whose property and value are both allowed; the rest could
        # load or run something. A CSS escape (`\65` for `e`) would be decoded later, past
        # any check of the text, so a declaration with a backslash is always dropped.
        kept = [
            f"{name.strip().lower()}:{css_value.strip()}"
            for name, _, css_value in (d.partition(":") for d in value.split(";"))
            if name.strip().lower() in _SAFE_STYLE_PROPERTIES
            and _SAFE_CSS_VALUE.match(_CSS_COLOR_FUNCTION.sub("0", css_value))
        ]
        return ";".join(kept) or None
    return value


_HTML_CLEANER = nh3.Cleaner(
    tags=_SAFE_TAGS,
    clean_content_tags=_DROP_WITH_CONTENT,
    attributes=_SAFE_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    url_schemes={"http", "https", "mailto", "cid"},
    url_relative="deny",
    link_rel="noopener noreferrer",
    filter_style_properties=_SAFE_STYLE_PROPERTIES,
    strip_comments=True,
)
_TEXT_CLEANER = nh3.Cleaner(
    tags=set(),
    clean_content_tags=_DROP_WITH_CONTENT | {"head"},
    attributes={},
    link_rel=None,
    strip_comments=True,
)
_BLOCK_BOUNDARY = re.compile(
    r"<(?:br|/?p|/?div|/?tr|/?li|/?h[1-6]|/?table|/?blockquote|/?pre|hr)\b", re.IGNORECASE
)
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")


def sanitize_html(html: str) -> str:
    """Allow-list sanitiser for displaying untrusted e-mail HTML.

    Keeps formatting tags/attributes and filtered inline styles; removes scripts, styles,
    event handlers, forms, frames, remote and data: images (keeps `cid:` sources) and links
    other than http/https/mailto (links get rel="noopener noreferrer").
    """
    return _HTML_CLEANER.clean(_clean(html))


def html_to_text(html: str) -> str:
    """Readable text from HTML: tags stripped, line breaks at block boundaries."""
    marked = _BLOCK_BOUNDARY.sub(lambda m: "\n" + m.group(0), _clean(html))
    text = html_lib.unescape(_TEXT_CLEANER.clean(marked)).replace("\xa0", " ")
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# ------------------------------------------------------------------------------- parsing


class _Part(Message):
    """compat32 message that makes the stdlib parser treat some parts as opaque leaves."""

    too_deep = False

    def get_content_type(self) -> str:
        content_type = super().get_content_type()
        # The parser asks this to decide whether to descend; message/* and parts beyond the
        # depth cap are read as flat payloads instead (their raw bytes are kept).
        if self.too_deep or content_type.startswith("message/"):
            return "text/plain"
        return content_type


class _DepthLimitedParser(FeedParser):
    def _new_message(self) -> None:
        super()._new_message()
        # _msgstack holds the chain from the root to the part whose headers come next.
        stack = getattr(self, "_msgstack", ())
        if len(stack) > MAX_MIME_DEPTH + 1:
            self._cur.too_deep = True


_UTF8_BOM = b"\xef\xbb\xbf"
_MBOX_FROM = re.compile(rb"From (?![ \t]*:)[^\r\n]*(?:\r\n|\r|\n)")
_HEADER_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_HEADER_END = re.compile(rb"\r?\n\r?\n|\r\r")
# Obsolete syntax (RFC 5322 4.5): whitespace between a field name and its colon.
_OBS_NAME_SPACE = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)


def _prepare(raw: bytes) -> bytes:
    """Normalise the start of the bytes and refuse input that is not an e-mail."""
    if not raw or not raw.strip():
        raise UnparseableMessage("empty input")
    data = raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw
    data = data.lstrip(b" \t\r\n")
    match = _MBOX_FROM.match(data)
    after_mbox_line = data[match.end() :] if match else data
    if not _HEADER_FIELD.match(after_mbox_line):
        first_line = after_mbox_line[:40].splitlines()[0] if after_mbox_line else b""
        raise UnparseableMessage(
            f"no RFC 5322 header field at the start of the message (first bytes: {first_line!r})"
        )
    end = _HEADER_END.search(data)
    header_block = data[: end.start()] if end else data
    if _OBS_NAME_SPACE.search(header_block):
        header_block = _OBS_NAME_SPACE.sub(rb"\1:", header_block)
        data = header_block + (data[end.start() :] if end else b"")
    return data


def _parse_tree(data: bytes) -> _Part:
    parser = _DepthLimitedParser(_factory=_Part, policy=compat32)
    parser.feed(data.decode("ascii", errors="surrogateescape"))
    return parser.close()


def _raw_header(part: Message, name: str) -> str | None:
    for key, value in part.raw_items():
        if key.lower() == name:
            return value
    return None


_MIME_NAME_CHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CONTENT_TYPE = re.compile(rf"\s*({_MIME_NAME_CHARS})\s*/\s*({_MIME_NAME_CHARS})\s*(?:;|$)")


def _content_type(part: Message) -> str:
    """The declared type, lower-cased; RFC 2045 default when absent or invalid."""
    raw = _raw_header(part, "content-type")
    if raw is None:
        return part.get_default_type()
    match = _CONTENT_TYPE.match(_unfold(raw))
    if not match:
        return "text/plain"
    return f"{match.group(1)}/{match.group(2)}".lower()


def _safe_call(function, default=None):
    try:
        return function()
    except Exception:  # compat32 helpers can trip over raw 8-bit or broken parameters
        return default


_PARAM_FALLBACK = {
    "filename": re.compile(r"""filename\s*=\s*(?:"([^"]*)"|([^;\s]+))""", re.IGNORECASE),
    "name": re.compile(r"""\bname\s*=\s*(?:"([^"]*)"|([^;\s]+))""", re.IGNORECASE),
}
_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


def _safe_name(text: str) -> str:
    return " ".join(_UNSAFE_FILENAME.sub("_", text).split()).strip(". ")[:200]


def _sanitize_filename(name: str) -> str:
    return _safe_name(name.replace("\\", "/").rsplit("/", 1)[-1])  # never trust a path


def _filename(part: Message, charsets: _Charsets) -> str | None:
    def text(value: str) -> str:
        # The message's header charset is worked out only for raw 8-bit bytes.
        if _raw_bytes(value) is None:
            return _clean(value)
        return _from_surrogates(value, charsets.header_charset)

    source = part
    raw_values = [(h, _raw_header(part, h)) for h in ("content-disposition", "content-type")]
    if any(raw is not None and _raw_bytes(raw) is not None for _, raw in raw_values):
        # compat32's get_filename() has already turned raw 8-bit bytes into U+FFFD: read
        # the raw values instead, as UTF-8 where valid (RFC 6532), else the message's charset.
        source = Message()
        for header, raw in raw_values:
            if raw is not None:
                source[header] = text(raw)
    value = _safe_call(source.get_filename)
    if value is None:
        for header, key in (("content-disposition", "filename"), ("content-type", "name")):
            raw = _raw_header(source, header)
            match = raw and _PARAM_FALLBACK[key].search(_unfold(raw))
            if match:
                value = match.group(1) if match.group(1) is not None else match.group(2)
                break
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    name = _sanitize_filename(decode_encoded_words(text(_unfold(value))))
    return name or None


def _disposition(part: Message) -> str | None:
    raw = _raw_header(part, "content-disposition")
    if raw is None:
        return None
    return _unfold(raw).split(";", 1)[0].strip().lower() or None


def _charset(part: Message) -> str | None:
    value = _safe_call(part.get_content_charset)
    return value if isinstance(value, str) else None


def _uudecode(data: bytes) -> bytes:
    out = []
    inside = False
    for line in data.splitlines():
        if not inside:
            inside = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            if line.strip() == b"end":
                break
            continue
        try:
            out.append(binascii.a2b_uu(line))
        except binascii.Error:
            # Some encoders pad lines wrongly; decode exactly the announced length.
            length = ((line[0] - 32) & 63) * 4 + 5 if line else 0
            try:
                out.append(binascii.a2b_uu(line[: length // 3]))
            except binascii.Error:
                continue
    return b"".join(out) if inside else data


_LONE_CR = re.compile(rb"\r(?!\n)")


def _payload_bytes(part: Message) -> bytes:
    """The decoded body of a leaf part; never raises (bad encodings degrade to raw bytes)."""
    # compat32 keeps the body as str with raw bytes as surrogate escapes; read it directly
    # because get_payload() itself can raise on odd charset labels.
    payload = part._payload
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        data = payload.encode("utf-8", errors="surrogateescape")
    else:
        return b""
    raw_encoding = _raw_header(part, "content-transfer-encoding")
    encoding = _unfold(raw_encoding).lower() if raw_encoding else ""
    if encoding == "base64":
        return _decode_base64(data)
    if encoding == "quoted-printable":
        # A lone CR in quoted-printable is a line break (RFC 2045 6.7), but a2b_qp knows soft
        # breaks only before LF: CR-only mail would keep its "=<CR>" breaks in the text.
        return binascii.a2b_qp(_LONE_CR.sub(b"\r\n", data))
    if encoding in ("x-uuencode", "uuencode", "x-uue", "uue"):
        return _uudecode(data)
    return data


# Extensions for generated attachment names; deterministic (mimetypes depends on the host).
_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/rfc822-headers": ".txt",
    "text/csv": ".csv",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "application/pgp-signature": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/ms-tnef": ".dat",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
}


def _embedded_subject(data: bytes) -> str:
    end = _HEADER_END.search(data, 0, 65536)
    head = data[: end.start()] if end else data[:65536]
    headers = HeaderParser(_class=Message, policy=compat32).parsestr(
        head.decode("ascii", errors="surrogateescape"), headersonly=True
    )
    raw = _raw_header(headers, "subject")
    return _decode_header(raw, None) if raw else ""


class _Charsets:
    """One message's charset decisions for text that declares no usable charset.

    Raw 8-bit header bytes that are not UTF-8, and undeclared 8-bit body parts, use the
    first charset a body part declares (the same client wrote them all), else a detection
    over all of the message's undeclared 8-bit bytes together (headers of every part and
    undeclared text parts): a subject alone is too short to tell KOI8-R from Windows-1252,
    the subject and the body together are not. Computed on first use only.
    """

    def __init__(self, root: Message) -> None:
        self.root = root
        self._fallback: tuple[str, dict[str, Any]] | None = None
        self._decided = False

    @property
    def fallback(self) -> tuple[str, dict[str, Any]] | None:
        """(codec, evidence) for the message's undeclared 8-bit text, or None."""
        if not self._decided:
            self._decided = True
            declared = _fallback_charset(self.root)
            if declared is not None:
                codec = _codec_name(declared) or declared
                self._fallback = (codec, {"charset": codec, "source": "body part charset"})
            else:
                pool = self._undeclared_bytes()
                detected = _detect(pool) if pool else None
                if detected is not None:
                    codec, detector = detected
                    self._fallback = (codec, {"charset": codec, "source": "detected"} | detector)
        return self._fallback

    @property
    def header_charset(self) -> str | None:
        return self.fallback[0] if self.fallback else None

    @property
    def header_evidence(self) -> dict[str, Any] | None:
        return self.fallback[1] if self.fallback else None

    def _undeclared_bytes(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for part in self.root.walk():
            for _, value in part.raw_items():
                data = _raw_bytes(value)
                if data is not None and not _is_utf8(data):
                    chunks.append(data)
                    size += len(data)
            content_type = _content_type(part)
            if (
                not part.is_multipart()
                and content_type.startswith("text/")
                and not getattr(part, "too_deep", False)
                and _codec_name(_charset(part)) is None
            ):
                data = _payload_bytes(part)
                if not data.isascii() and not _is_utf8(data):
                    chunks.append(data)
                    size += len(data)
            if size >= _DETECT_LIMIT:
                break
        return b"\n".join(chunks)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class _Leaf:
    """A leaf of the part tree, in document order, before bodies are chosen."""

    part: Message
    path: str  # IMAP-style section number: "1", "1.2"
    content_type: str
    in_alternative: bool
    opaque_name: str | None = None  # message/* or too deep: kept whole as an attachment
    filename: str | None = None
    disposition: str | None = None

    @property
    def body_kind(self) -> str | None:
        """'text', 'html' or 'broken' (a multipart without a usable boundary) when this leaf
        could be a body: inline, no filename; None when it can only be an attachment."""
        if self.opaque_name is not None or self.filename is not None:
            return None
        if self.disposition == "attachment":
            return None
        # Text parts without a filename are bodies even when they carry a Content-ID (some
        # clients put one on every part); the Content-ID rule is for images and the like.
        if self.content_type == "text/plain":
            return "text"
        if self.content_type == "text/html":
            return "html"
        if self.content_type.startswith("multipart/"):
            return "broken"
        return None


class _Collector:
    """Walks the part tree, then chooses the bodies by content and collects attachments.

    The text body is the first inline text/plain part with non-blank text (a multipart
    without a usable boundary, read as text, only when there is none); the HTML body the
    first non-blank inline text/html part. Blank body candidates are skipped, other
    renderings inside multipart/alternative are dropped, every other leaf is an attachment.
    Each decision is recorded as evidence.
    """

    def __init__(self, charsets: _Charsets) -> None:
        self.charsets = charsets
        self.leaves: list[_Leaf] = []
        self.text: str | None = None
        self.html: str | None = None
        self.evidence: dict[str, Any] = {"text_body": None, "html_body": None, "skipped": []}
        self.attachments: list[Attachment] = []
        self.defects: set[str] = set()

    def walk(self, part: Message, path: str = "", in_alternative: bool = False) -> None:
        for defect in part.defects:
            self.defects.add(type(defect).__name__)
        content_type = _content_type(part)
        leaf = _Leaf(part, path or "1", content_type, in_alternative)
        if getattr(part, "too_deep", False):
            self.defects.add("MimeNestingTooDeep")
            leaf.opaque_name = "nested-part"
        elif part.is_multipart():
            inside = in_alternative or content_type == "multipart/alternative"
            for number, child in enumerate(part.get_payload(), 1):
                self.walk(child, f"{path}.{number}" if path else str(number), inside)
            return
        elif content_type.startswith("message/"):
            leaf.opaque_name = content_type.split("/", 1)[1]
        else:
            leaf.filename = _filename(part, self.charsets)
            leaf.disposition = _disposition(part)
        self.leaves.append(leaf)

    def finish(self) -> None:
        """Choose the bodies, then turn the remaining leaves into attachments (in order)."""
        chosen: dict[str, int] = {}  # slot ('text' or 'html') -> index of its leaf
        blank: set[int] = set()
        for kind in ("text", "html", "broken"):
            slot = _slot(kind)
            for index, leaf in enumerate(self.leaves):
                if slot in chosen:
                    break
                if leaf.body_kind != kind:
                    continue
                data = _payload_bytes(leaf.part)
                charset = _charset(leaf.part)
                # The message-wide guess costs a walk and a detection: only for 8-bit text
                # that declares nothing usable.
                undeclared = not data.isascii() and _codec_name(charset) is None
                if undeclared and kind == "html" and (meta := _html_meta_charset(data)):
                    charset = meta  # the HTML says it itself
                guess = self.charsets.fallback if undeclared else None
                text, decoding = decode_bytes(data, charset, guess, relabel=True)
                if not text.strip():
                    blank.add(index)
                    continue
                chosen[slot] = index
                setattr(self, slot, text)
                self.evidence[f"{slot}_body"] = {
                    "part": leaf.path,
                    "content_type": leaf.content_type,
                    **decoding.to_json(),
                }
        for index, leaf in enumerate(self.leaves):
            if index in chosen.values():
                continue
            kind = leaf.body_kind
            if kind is not None and (index in blank or not _payload_bytes(leaf.part).strip()):
                self._skip(leaf, "empty body part")
            elif kind is not None and leaf.in_alternative and _slot(kind) in chosen:
                self._skip(leaf, "another rendering of the chosen body")
            else:
                self._attach(leaf)

    def _skip(self, leaf: _Leaf, reason: str) -> None:
        skipped = self.evidence["skipped"]
        if len(skipped) < MAX_SKIPPED_EVIDENCE:  # fuzzed mail can hold thousands
            skipped.append({"part": leaf.path, "content_type": leaf.content_type, "reason": reason})
        else:
            self.evidence["skipped_not_listed"] = self.evidence.get("skipped_not_listed", 0) + 1

    def _attach(self, leaf: _Leaf) -> None:
        part, content_type = leaf.part, leaf.content_type
        payload = _payload_bytes(part)
        filename = leaf.filename
        if filename is None and leaf.opaque_name is not None:
            filename = _filename(part, self.charsets)
        disposition = leaf.disposition if leaf.opaque_name is None else _disposition(part)
        content_id = _content_id(part)
        if filename is None:
            if content_type in ("message/rfc822", "message/global"):
                subject = _safe_name(_safe_call(lambda: _embedded_subject(payload), ""))
                filename = f"{subject[:100]}.eml" if subject else "message.eml"
            else:
                number = len(self.attachments) + 1
                default_name = leaf.opaque_name or "attachment"
                filename = f"{default_name}-{number}{_EXTENSIONS.get(content_type, '.bin')}"
        inline = disposition == "inline" or (disposition is None and content_id is not None)
        self.attachments.append(
            Attachment(
                filename=filename,
                content_type=content_type,
                size=len(payload),
                sha256=hashlib.sha256(payload).hexdigest(),
                content_id=content_id,
                disposition="inline" if inline else "attachment",
                payload=payload,
            )
        )


_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9._:+-]{1,40})""", re.I
)


def _html_meta_charset(data: bytes) -> str | None:
    """The charset an HTML part names in its own <meta> (looked for near the start)."""
    match = _META_CHARSET.search(data[:4096])
    if match is None:
        return None
    label = match.group(1).decode("ascii")
    return label if _codec_name(label) else None


def _slot(kind: str) -> str:
    return "text" if kind == "broken" else kind


# Why a message shows no text: checked in this order against its attachments.
_EMPTY_BODY_REASONS = (
    (
        lambda a: a.content_type == "message/partial",
        "The message is one fragment (message/partial) of a message sent in several parts; "
        "fragments are not reassembled, so its content is only in the attachment {name}.",
    ),
    (
        lambda a: a.content_type == "application/ms-tnef" or a.filename.lower() == "winmail.dat",
        "The body is inside {name} (Microsoft TNEF, sent by Outlook), which is kept as an "
        "attachment and not decoded.",
    ),
    (
        lambda a: (
            a.content_type
            in ("application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted")
        ),
        "The message is encrypted or wrapped in an opaque S/MIME or PGP envelope ({name}); "
        "it is kept as an attachment and not opened.",
    ),
    (
        lambda a: a.content_type.startswith("text/"),
        "The only text is in the attachment {name}.",
    ),
)


def _empty_body_reason(
    attachments: list[Attachment], skipped: list[dict[str, Any]], has_html: bool
) -> str:
    if has_html:
        return "The HTML body has no text (only images or layout)."
    for matches, sentence in _EMPTY_BODY_REASONS:
        for attachment in attachments:
            if matches(attachment):
                return sentence.format(name=attachment.filename)
    if attachments:
        return f"The message has no text part; its content is in {len(attachments)} attachment(s)."
    if skipped:
        return "The message's text parts are empty."
    return "The message has no body."


def _content_id(part: Message) -> str | None:
    raw = _raw_header(part, "content-id")
    if raw is None:
        return None
    value = _clean(_from_surrogates(_unfold(raw), None)).strip().strip("<>").strip()
    return value or None


def _fallback_charset(message: Message) -> str | None:
    """The charset to try for raw 8-bit header bytes: the first declared body charset."""
    for part in message.walk():
        charset = _charset(part)
        if _codec_name(charset):
            return charset
    return None


def _header_decodings(raw_headers: dict[str, list[str]], charsets: _Charsets) -> dict[str, Any]:
    """Evidence for header fields with raw 8-bit bytes: how each field's bytes were read."""
    fields: dict[str, Any] = {}
    for name, values in raw_headers.items():
        for value in values:
            data = _raw_bytes(value)
            if data is None:
                continue
            if _is_utf8(data):
                fields[name] = Decoding("utf-8", "utf-8").to_json()
            else:
                fields[name] = decode_bytes(data, charsets.header_charset)[1].to_json()
            break
    return {"charset": charsets.header_evidence, "fields": fields}


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email_utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # "-0000": UTC with unknown origin (RFC 5322 3.3)
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


# ---------------------------------------------------------------------- recipient evidence

_EVIDENCE_ORDER = (
    ("x-gm-original-to", "workspace_header", "high"),
    ("delivered-to", "delivered_to", "medium"),
    ("x-original-to", "x_original_to", "medium"),
    ("to", "to_cc_scan", "low"),
    ("cc", "to_cc_scan", "low"),
)
# Recorded as evidence only; they never decide the recipient (SPEC 2.3 lists the above).
_EVIDENCE_ONLY = (
    "envelope-to",
    "x-envelope-to",
    "x-forwarded-to",
    "original-recipient",
    "x-original-recipient",
    "resent-to",
    "x-rcpt-to",
    "x-delivered-to",
)
_ADDRESS_TYPE_PREFIX = re.compile(r"^\s*[A-Za-z0-9-]+\s*;")


def recipient_evidence(
    raw_headers: dict[str, list[str]],
    journal_address: str | None = None,
    fallback_charset: str | None = None,
) -> RecipientEvidence:
    """Record every candidate for the original recipient, and report which one wins.

    The choice that counts, the one stored and routed on, is made in SQL from these
    candidates (logic.original_recipient, sql/logic/45_original_recipient.sql). This is its
    mirror, for the parser's own report (`ticketing parse`); tests/sql/test_rules.py keeps
    the two equal. SPEC 2.3, first match wins; the journal mailbox's own address is skipped
    in Delivered-To only: there it is the top-most entry put there by the journal delivery.
    """
    journal = journal_address.strip().strip("<>").lower() if journal_address else None
    candidates: dict[str, list[str]] = {}
    for name in [entry[0] for entry in _EVIDENCE_ORDER] + list(_EVIDENCE_ONLY):
        addresses: list[str] = []
        for value in raw_headers.get(name, ()):
            if name in ("original-recipient", "x-original-recipient"):
                value = _ADDRESS_TYPE_PREFIX.sub("", value)  # "rfc822; user@host"
            for _, address in _parse_addresses(value, fallback_charset):
                if "@" in address:
                    addresses.append(address)
        if addresses:
            candidates[name] = addresses
    for name, source, confidence in _EVIDENCE_ORDER:
        for address in candidates.get(name, ()):
            if name == "delivered-to" and address == journal:
                continue
            return RecipientEvidence(address, source, confidence, candidates)
    return RecipientEvidence(None, "unknown", "low", candidates)


# ----------------------------------------------------------------------------- dedupe keys


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical_hash(values: list[Any]) -> str:
    # JSON is unambiguous (no separator can be smuggled inside a value); the leading tag
    # versions the recipe so a future change cannot collide with old keys.
    encoded = json.dumps(values, ensure_ascii=True, separators=(",", ":"))
    return _sha256_text(encoded)


def strict_signature(
    message_id: str | None,
    date: datetime | None,
    from_address: str | None,
    to: list[str],
    cc: list[str],
    normalized_subject: str,
    body_sha256: str,
    attachment_hashes: list[str],
    html_body: str | None,
) -> str:
    """The strict dedupe key (SPEC 2.4) from the stored form of a message's fields.

    v2 adds the sanitised HTML body, whitespace-collapsed (line endings and re-wrapping by
    relays do not count, markup and links do): two messages whose text matches but whose
    HTML differs are different messages. Migration 0014 recomputed v1 keys with this.
    """
    return _canonical_hash(
        [
            "strict-v2",
            message_id,
            date.astimezone(UTC).isoformat() if date else None,
            from_address,
            sorted(to),
            sorted(cc),
            normalized_subject,
            body_sha256,
            sorted(attachment_hashes),
            _sha256_text(" ".join((html_body or "").split())),
        ]
    )


def _strict_signature(message: ParsedMessage, attachment_hashes: list[str]) -> str:
    return strict_signature(
        message.message_id,
        message.date,
        message.from_[1] if message.from_ else None,
        [address for _, address in message.to],
        [address for _, address in message.cc],
        message.normalized_subject,
        message.body_sha256,
        attachment_hashes,
        message.html_body,
    )


def _loose_fingerprint(message: ParsedMessage, normalized_body: str, hashes: list[str]) -> str:
    return _canonical_hash(
        [
            "loose-v1",
            message.from_[1] if message.from_ else None,
            message.normalized_subject,
            message.date.date().isoformat() if message.date else None,
            _sha256_text(normalized_body[:LOOSE_BODY_PREFIX]),
            hashes,
        ]
    )


def _snippet(text: str) -> str:
    collapsed = " ".join(text.split())
    if len(collapsed) <= SNIPPET_LENGTH:
        return collapsed
    cut = collapsed[:SNIPPET_LENGTH]
    space = cut.rfind(" ")
    return cut[:space] if space > SNIPPET_LENGTH // 2 else cut


# --------------------------------------------------------------------------- entry points


def parse_message(raw: bytes, *, journal_address: str | None = None) -> ParsedMessage:
    """Parse raw RFC 5322 bytes. Raises `UnparseableMessage` only when the bytes are not an
    e-mail at all; every malformation short of that degrades gracefully."""
    data = _prepare(bytes(raw))
    try:
        root = _parse_tree(data)
    except RecursionError as exc:  # the depth cap should make this unreachable
        raise UnparseableMessage("MIME structure nested too deeply to parse") from exc
    raw_headers: dict[str, list[str]] = {}
    for name, value in root.raw_items():
        raw_headers.setdefault(name.lower(), []).append(value)
    if not raw_headers:
        raise UnparseableMessage("no RFC 5322 header fields found")

    needs_fallback = any(not v.isascii() for values in raw_headers.values() for v in values)
    charsets = _Charsets(root)
    fallback = charsets.header_charset if needs_fallback else None
    headers = {
        name: [_decode_header(value, fallback) for value in values]
        for name, values in raw_headers.items()
    }

    def addresses(name: str) -> list[Address]:
        return [a for value in raw_headers.get(name, ()) for a in _parse_addresses(value, fallback)]

    senders = addresses("from")
    subject = headers.get("subject", [""])[0]
    collector = _Collector(charsets)
    collector.walk(root)
    collector.finish()
    evidence = collector.evidence

    html_source = collector.html
    text_body = (collector.text or "").strip("\r\n")
    text_body = text_body.replace("\r\n", "\n").replace("\r", "\n")
    if not text_body.strip() and html_source:
        text_body = html_to_text(html_source)
        evidence["text_body"] = {"derived_from": "html_body"}
    if not text_body.strip():
        evidence["empty_body_reason"] = _empty_body_reason(
            collector.attachments, evidence["skipped"], html_source is not None
        )
    if needs_fallback:
        evidence["headers"] = _header_decodings(raw_headers, charsets)
    report = _safe_call(lambda: _delivery_report(root, collector.attachments))
    if report is not None:
        evidence["delivery_report"] = report
    normalized_body = " ".join(text_body.split())
    attachment_hashes = sorted(a.sha256 for a in collector.attachments)
    html_body = sanitize_html(html_source) if html_source is not None else None

    message = ParsedMessage(
        message_id=_message_id(headers.get("message-id", [])),
        date=_parse_date(headers.get("date", [None])[0]),
        subject=subject,
        normalized_subject=normalize_subject(subject),
        from_=senders[0] if senders else None,
        reply_to=addresses("reply-to"),
        to=addresses("to"),
        cc=addresses("cc"),
        in_reply_to=reference_ids(headers.get("in-reply-to", [])),
        references=reference_ids(headers.get("references", [])),
        headers=headers,
        text_body=text_body,
        html_body=html_body,
        attachments=collector.attachments,
        snippet=_snippet(text_body),
        recipient_evidence=recipient_evidence(raw_headers, journal_address, fallback),
        strict_signature="",
        loose_fingerprint="",
        body_sha256=_sha256_text(normalized_body),
        defects=sorted(collector.defects),
        parse_evidence=evidence,
    )
    message.strict_signature = _strict_signature(message, attachment_hashes)
    message.loose_fingerprint = _loose_fingerprint(message, normalized_body, attachment_hashes)
    return message


_REPORT_TYPE = re.compile(r"""report-type\s*=\s*"?\s*delivery-status""", re.IGNORECASE)
MAX_REPORT_RECIPIENTS = 50


def _delivery_report(root: Message, attachments: list[Attachment]) -> dict[str, Any] | None:
    """An RFC 3464 delivery report's fields: the reported message's Message-ID (from its
    embedded copy or headers) and, per recipient, final_recipient, action, status and
    diagnostic_code. None when the message is not a multipart/report of delivery-status."""
    if _content_type(root) != "multipart/report":
        return None
    if not _REPORT_TYPE.search(_unfold(_raw_header(root, "content-type") or "")):
        return None
    report: dict[str, Any] = {"original_message_id": None, "recipients": []}
    parser = HeaderParser(policy=compat32)
    for attachment in attachments:
        text = attachment.payload.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        if attachment.content_type in ("message/rfc822", "text/rfc822-headers", "message/global"):
            if report["original_message_id"] is None:
                found = parser.parsestr(text, headersonly=True).get_all("Message-ID", [])
                report["original_message_id"] = _message_id([str(v) for v in found])
        elif attachment.content_type in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            blocks = [b for b in re.split(r"\r?\n\s*\r?\n", text.strip()) if b.strip()]
            for block in blocks[1 : MAX_REPORT_RECIPIENTS + 1]:  # the first is per message
                fields = parser.parsestr(block + "\n", headersonly=True)

                def field(name: str, fields=fields) -> str | None:
                    value = fields.get(name)
                    return " ".join(str(value).split())[:500] if value is not None else None

                recipient = field("Final-Recipient") or field("Original-Recipient")
                if recipient and ";" in recipient:
                    recipient = recipient.split(";", 1)[1].strip()
                report["recipients"].append(
                    {
                        "final_recipient": recipient,
                        "action": (field("Action") or "").lower() or None,
                        "status": field("Status"),
                        "diagnostic_code": field("Diagnostic-Code"),
                    }
                )
    return report


def parse_files(paths: list[str], out: TextIO, journal_address: str | None = None) -> int:
    """Parse each file and print one JSON object per line; return the number of errors.

    A file that cannot be read or is not an e-mail yields `{"file": ..., "error": reason}`
    and the loop goes on.
    """
    errors = 0
    for path in paths:
        record: dict[str, Any] = {"file": path}
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            record.update(parse_message(raw, journal_address=journal_address).to_json())
        except OSError as exc:
            errors += 1
            record["error"] = f"unreadable: {exc.strerror or exc}"
        except UnparseableMessage as exc:
            errors += 1
            record["error"] = exc.reason
        except Exception as exc:  # one bad file must never stop an operator's batch
            errors += 1
            record["error"] = f"parser failure: {type(exc).__name__}: {exc}"
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return errors
