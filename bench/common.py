"""Shared helpers of the benchmarks: corpus templates, word lists, bench databases, stats,
CPU accounting."""

from __future__ import annotations

import contextlib
import csv
import email
import mailbox
import re
import secrets
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.policy import compat32
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
from psycopg import sql

from kernel.settings import REPO_ROOT

CORPUS = REPO_ROOT.parent / "shared" / "corpus"
BENCH_SECRET = "bench-secret-key-with-enough-entropy-0123456789"  # noqa: S105 - not a secret


@dataclass(frozen=True)
class Template:
    """One corpus message usable as a template: its bytes and whether it has attachments."""

    name: str
    raw: bytes
    attachments: bool


def corpus_templates(corpus: Path = CORPUS) -> list[Template]:
    """Real corpus mail fit to be support mail: no bounces, auto-replies or malformed mail.

    From messages/ (per MANIFEST.tsv) plus every message of the thread mboxes.
    """
    templates: list[Template] = []
    with (corpus / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["is_bounce"] != "no" or row["is_autoreply"] != "no" or row["malformed"] != "no":
                continue
            path = corpus / row["file"]
            if path.is_file():
                templates.append(
                    Template(row["file"], path.read_bytes(), row["has_attachments"] == "yes")
                )
    for path in sorted((corpus / "threads").rglob("*.mbox")):
        box = mailbox.mbox(str(path), create=False)
        try:
            for key in box.iterkeys():
                raw = box.get_bytes(key)
                msg = email.message_from_bytes(raw, policy=compat32)
                if msg.get("From"):
                    attached = any(
                        part.get_filename() for part in msg.walk() if not part.is_multipart()
                    )
                    templates.append(Template(f"{path.name}#{key}", raw, attached))
        finally:
            box.close()
    return templates


_WORD_RE = re.compile(r"[a-z]{3,14}")


def corpus_words(limit: int = 5000, corpus: Path = CORPUS) -> list[str]:
    """The `limit` most frequent plain words of the corpus' text bodies, most frequent first."""
    counts: Counter[str] = Counter()
    for template in corpus_templates(corpus):
        msg = email.message_from_bytes(template.raw, policy=compat32)
        for part in msg.walk():
            if part.get_content_type() != "text/plain":
                continue
            payload = part.get_payload(decode=True) or b""
            text = payload.decode("utf-8", "replace").lower()
            counts.update(_WORD_RE.findall(text))
    return [word for word, _ in counts.most_common(limit)]


@contextlib.contextmanager
def bench_database(server_url: str | None, prefix: str, keep: bool = False) -> Iterator[str]:
    """A fresh database `bench_<prefix>_<random>` on `server_url`, dropped afterwards.

    Without a URL an embedded PostgreSQL (pgserver) in a temporary directory is used.
    """
    if server_url is None:
        from kernel.db import embedded_database_url

        with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as tmp:
            yield embedded_database_url(Path(tmp) / "pgdata")
        return
    name = f"bench_{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(server_url)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    """n, mean, p50, p95, p99, max of `values`."""
    return {
        "n": len(values),
        "mean": statistics.fmean(values) if values else 0.0,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else 0.0,
    }


def cpu_seconds(pid: int | None = None, children: bool = False) -> float:
    """User + system CPU seconds of process `pid` (this process when None), optionally with
    its descendants; 0 for a process that is gone."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)] if children else [proc]
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def postgres_pids(database: str | None = None) -> list[int]:
    """The local PostgreSQL processes, or only the backends serving `database` (their
    process titles name it), so that other work on the machine is not counted."""
    pids = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        title = (proc.info["cmdline"] or [""])[0]
        if database is None:
            if (proc.info["name"] or "").startswith("postgres"):
                pids.append(proc.pid)
        elif title.startswith("postgres:") and f" {database} " in title:
            pids.append(proc.pid)
    return pids
