"""Ingest benchmark: N generated messages through fake Gmail → backfill → workers → routed.

    .venv/bin/python -m bench.ingest --messages 2000 [--database-url URL] [--workers 2]
        [--concurrency 4] [--seed 1] [--profile-dir DIR]

Messages are built from real corpus mail (../shared/corpus): each gets a unique Message-ID,
Date and Subject; about 30% are replies (In-Reply-To/References to an earlier generated
message, "Re: " subject); all are addressed to the demo's allowlisted support addresses
(the organisation, allowlist and rules are cli.demo.seed_organization's); the templates with
attachments are used for about 3% of the messages. The fake Gmail server runs in a thread
of this process; the mailbox is registered with cli.mailbox_admin.register_gmail_mailbox,
which queues the backfill; `ticketing worker --until-idle` subprocesses do the rest.

With --database-url (a server URL) a fresh database bench_ingest_* is created there and
dropped afterwards; without it an embedded PostgreSQL in a temporary directory is used.
Prints a human table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import email.utils
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from email.policy import compat32
from pathlib import Path
from typing import Any

import psutil
from psycopg.conninfo import conninfo_to_dict

from bench.common import (
    BENCH_SECRET,
    Template,
    bench_database,
    corpus_templates,
    cpu_seconds,
    postgres_pids,
    summary,
)
from cli.demo import ALLOWLIST, JOURNAL_EMAIL, ORGANIZATION, seed_organization, with_fake_gmail
from cli.mailbox_admin import register_gmail_mailbox
from kernel import db
from kernel.migrate import migrate
from kernel.settings import REPO_ROOT, Settings

REPLY_SHARE = 0.30
ATTACHMENT_SHARE = 0.03
SAMPLE_SECONDS = 0.5
# Progress counts scan the occurrences: every few samples only, so that the benchmark's own
# queries stay a small part of the database's work at 100,000 messages.
COUNT_EVERY = 4
# Headers replaced on every generated message (recipient evidence included: the journal
# copy names the support address in X-Gm-Original-To, as Workspace journaling does).
_REPLACED = (
    "Message-ID", "Date", "Subject", "To", "Cc", "In-Reply-To", "References", "Delivered-To",
    "X-Gm-Original-To", "X-Original-To", "X-Delivered-To", "Envelope-To",
)  # fmt: skip
# Generated messages are dated this far apart, the last one at the start of the run: mail
# as a mailbox receives it, so the tickets are recent (recent-search index included).
_DATE_STEP = dt.timedelta(seconds=5)


def generate_messages(
    count: int, seed: int, templates: list[Template], end: dt.datetime | None = None
) -> list[bytes]:
    """`count` unique messages from `templates`, the last dated `end` (default: now, to the
    minute); deterministic for a given seed and end."""
    if end is None:
        end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    first_date = end - _DATE_STEP * (count - 1)
    rng = random.Random(seed)
    plain = [t for t in templates if not t.attachments]
    attached = [t for t in templates if t.attachments]
    made: list[tuple[str, str, list[str]]] = []  # (message id, subject, references)
    out: list[bytes] = []
    i = 0
    while len(out) < count:
        i += 1
        pool = attached if attached and rng.random() < ATTACHMENT_SHARE else plain
        template = pool[rng.randrange(len(pool))]
        try:
            msg = email.message_from_bytes(template.raw, policy=compat32)
        except Exception:  # noqa: S112 - an unusable template is skipped
            continue
        original_subject = " ".join(str(msg.get("Subject") or "support request").split())[:120]
        for name in _REPLACED:
            del msg[name]
        message_id = f"<bench.{seed}.{len(out)}@bench.example>"
        refs: list[str] = []
        if made and rng.random() < REPLY_SHARE:
            # A reply to one of the recent messages (threads stay local in time).
            parent_id, parent_subject, parent_refs = made[
                rng.randrange(max(0, len(made) - 200), len(made))
            ]
            subject = (
                parent_subject if parent_subject.startswith("Re: ") else "Re: " + parent_subject
            )
            refs = [*parent_refs, parent_id][-10:]
            msg["In-Reply-To"] = parent_id
            msg["References"] = " ".join(refs)
        else:
            subject = f"{original_subject} (case {seed}-{len(out)})"
        recipient = ALLOWLIST[0] if rng.random() < 0.8 else ALLOWLIST[1]
        msg["Message-ID"] = message_id
        msg["Date"] = email.utils.format_datetime(first_date + _DATE_STEP * len(out))
        msg["Subject"] = subject
        msg["To"] = recipient
        msg["X-Gm-Original-To"] = recipient
        try:
            raw = msg.as_bytes()
        except Exception:  # noqa: S112 - an unusable template is skipped
            continue
        made.append((message_id, subject, refs))
        out.append(raw)
    return out


def worker_env(settings: Settings, database_url: str) -> dict[str, str]:
    """Environment of a `ticketing worker` subprocess (as tests/fixtures/ingest.py)."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "APP_ENV": "test",
        "SECRET_KEY": settings.secret_key,
        "GMAIL_API_BASE_URL": settings.gmail_api_base_url,
        "GOOGLE_TOKEN_URI": settings.google_token_uri,
        "GOOGLE_CLIENT_ID": settings.google_client_id or "",
        "GOOGLE_CLIENT_SECRET": settings.google_client_secret or "",
        "LOCAL_BLOB_DIR": str(settings.local_blob_dir),
        "BLOB_STORE": "local",
    }


class CpuTracker:
    """Cumulative CPU seconds of a changing set of processes (last sample of each pid)."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}

    def sample(self, pids: list[int]) -> None:
        for pid in pids:
            if seconds := cpu_seconds(pid):
                self.seen[pid] = seconds

    @property
    def total(self) -> float:
        return sum(self.seen.values())


def _vm_hwm_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_workers(
    database_url: str,
    settings: Settings,
    mailbox_id: str,
    expected: int,
    workers: int,
    concurrency: int,
    timeout: float,
    progress: bool,
    profile_dir: str | None = None,
) -> dict[str, Any]:
    """Start the worker subprocesses, sample until they exit; CPU, RSS and counts."""
    env = worker_env(settings, database_url)
    cmd = [str(REPO_ROOT / ".venv" / "bin" / "ticketing"), "worker", "--until-idle",
           "--concurrency", str(concurrency)]  # fmt: skip
    if profile_dir is not None:
        # cProfile sees the event loop thread only (procrastinate, psycopg, the stages'
        # async parts); work handed to threads (Gmail, MIME, blobs) shows as waits.
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "cProfile", "-o", str(Path(profile_dir) / "worker-{}.prof"),
               "-m", "cli.main", *cmd[1:]]  # fmt: skip
    database = conninfo_to_dict(database_url)["dbname"]
    worker_cpu, bench_db_cpu, all_pg_cpu = CpuTracker(), CpuTracker(), CpuTracker()
    all_pg_cpu.sample(postgres_pids())
    baseline = dict(all_pg_cpu.seen)
    peak_rss = 0
    samples: list[dict[str, Any]] = []
    # This process serves the fake Gmail (a thread) on the same cores: its CPU counts too.
    own_cpu_before = cpu_seconds()
    started = time.monotonic()
    # Worker logs go to files: an unread pipe fills up and blocks the worker's event loop.
    logs = [tempfile.TemporaryFile() for _ in range(workers)]  # noqa: SIM115 - closed below
    procs = [
        subprocess.Popen(  # noqa: S603
            [part.format(i) if "{}" in part else part for part in cmd],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for i, log in enumerate(logs)
    ]
    timed_out = False
    ticks = 0
    with db.connect(database_url, "bench-ingest", autocommit=True) as conn:
        try:
            while any(p.poll() is None for p in procs):
                if time.monotonic() - started > timeout:
                    timed_out = True
                    break
                time.sleep(SAMPLE_SECONDS)
                worker_pids = []
                for p in procs:
                    if p.poll() is None:
                        worker_pids.append(p.pid)
                        with_children = [p.pid]
                        try:
                            with_children += [c.pid for c in psutil.Process(p.pid).children(True)]
                            peak_rss = max(peak_rss, psutil.Process(p.pid).memory_info().rss)
                        except psutil.NoSuchProcess:
                            pass
                        peak_rss = max(peak_rss, _vm_hwm_bytes(p.pid))
                        worker_cpu.sample(with_children)
                bench_db_cpu.sample(postgres_pids(database))
                all_pg_cpu.sample(postgres_pids())
                ticks += 1
                if ticks % COUNT_EVERY:
                    continue
                row = conn.execute(
                    "SELECT count(*) AS total, count(*) FILTER (WHERE state = 'routed') AS routed,"
                    " count(*) FILTER (WHERE state = 'failed') AS failed"
                    " FROM core.message_occurrences WHERE mailbox_id = %s",
                    [mailbox_id],
                ).fetchone()
                elapsed = time.monotonic() - started
                samples.append({"t": round(elapsed, 2), **row})
                if progress and (sys.stderr.isatty() or len(samples) % 20 == 0):
                    print(
                        ("\r" if sys.stderr.isatty() else "")
                        + f"{elapsed:7.1f}s  discovered {row['total']:>7}/{expected}  "
                        f"routed {row['routed']:>7}  failed {row['failed']}",
                        end="" if sys.stderr.isatty() else "\n",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            errors = []
            for p, log in zip(procs, logs, strict=True):
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                if p.returncode not in (0, None):
                    log.seek(0)
                    errors.append(log.read().decode("utf-8", "replace")[-2000:])
                log.close()
            if progress and sys.stderr.isatty():
                print(file=sys.stderr)
    own_cpu = cpu_seconds() - own_cpu_before
    pg_total = sum(v - baseline.get(pid, 0.0) for pid, v in all_pg_cpu.seen.items())
    return {
        "wall_seconds": time.monotonic() - started,
        "timed_out": timed_out,
        "worker_exit_codes": [p.returncode for p in procs],
        "worker_errors": errors,
        "cpu_seconds": {
            "workers": round(worker_cpu.total, 2),
            "postgres_bench_db_backends": round(bench_db_cpu.total, 2),
            "postgres_all_processes": round(pg_total, 2),
            "bench_process_fake_gmail": round(own_cpu, 2),
        },
        "peak_worker_rss_mb": round(peak_rss / 2**20, 1),
        "samples": samples,
    }


STAGES = (
    ("fetch", "discovered_at", "raw_fetched_at"),
    ("parse", "raw_fetched_at", "parsed_at"),
    ("stitch", "parsed_at", "stitched_at"),
    ("route", "stitched_at", "routed_at"),
)


def stage_report(database_url: str, mailbox_id: str) -> dict[str, Any]:
    """Counts, throughput window and per-stage timings from the occurrence timestamps."""
    with db.connect(database_url, "bench-ingest") as conn:
        counts = conn.execute(
            "SELECT count(*) AS occurrences,"
            " count(*) FILTER (WHERE state = 'routed') AS routed,"
            " count(*) FILTER (WHERE state = 'failed') AS failed,"
            " min(discovered_at) AS first_discovered, min(raw_fetched_at) AS first_fetch,"
            " max(routed_at) AS last_routed"
            " FROM core.message_occurrences WHERE mailbox_id = %s",
            [mailbox_id],
        ).fetchone()
        stages: dict[str, Any] = {}
        for name, start, end in STAGES:
            latencies = [
                r["s"]
                for r in conn.execute(
                    f"SELECT extract(epoch FROM {end} - {start})::float8 * 1000 AS s "
                    f"FROM core.message_occurrences WHERE mailbox_id = %s AND {end} IS NOT NULL",
                    [mailbox_id],
                )
            ]
            span = conn.execute(
                f"SELECT extract(epoch FROM max({end}) - min({end}))::float8 AS span "
                "FROM core.message_occurrences WHERE mailbox_id = %s",
                [mailbox_id],
            ).fetchone()["span"]
            stages[name] = {
                "wait_plus_work_ms": {k: round(v, 1) for k, v in summary(latencies).items()},
                "completion_span_s": round(span or 0.0, 2),
            }
        tickets = conn.execute(
            "SELECT count(*) AS tickets, count(*) FILTER (WHERE status = 'spam') AS spam "
            "FROM core.tickets"
        ).fetchone()
        jobs = {
            r["task_name"]: {"jobs": r["n"], "failed": r["failed"]}
            for r in conn.execute(
                "SELECT task_name, count(*) AS n, count(*) FILTER (WHERE status = 'failed') "
                "AS failed FROM procrastinate_jobs GROUP BY task_name ORDER BY task_name"
            )
        }
    window = None
    if counts["first_fetch"] and counts["last_routed"]:
        window = (counts["last_routed"] - counts["first_fetch"]).total_seconds()
    return {
        "occurrences": counts["occurrences"],
        "routed": counts["routed"],
        "failed": counts["failed"],
        "first_fetch_to_last_routed_s": round(window, 3) if window else None,
        "msgs_per_s": round(counts["routed"] / window, 1) if window else None,
        "tickets": tickets["tickets"],
        "spam_tickets": tickets["spam"],
        "stages": stages,
        "jobs": jobs,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devtools.fake_gmail import FakeGmail, fake_gmail_in_thread

    t0 = time.monotonic()
    raws = generate_messages(args.messages, args.seed, corpus_templates())
    generate_s = time.monotonic() - t0
    gmail = FakeGmail(seed=args.seed)
    for raw in raws:
        gmail.add_message(JOURNAL_EMAIL, raw)
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-blobs-") as blobs,
        bench_database(args.database_url, "ingest", keep=args.keep) as database_url,
        fake_gmail_in_thread(gmail) as server,
    ):
        migrate(database_url)
        settings = with_fake_gmail(
            Settings(app_env="test", secret_key=BENCH_SECRET, local_blob_dir=Path(blobs)),
            server.base_url,
            server.token_uri,
        )
        seed_organization(database_url)
        mailbox = register_gmail_mailbox(
            settings,
            database_url,
            organization=ORGANIZATION,
            email=JOURNAL_EMAIL,
            refresh_token=gmail.issue_refresh_token(JOURNAL_EMAIL),
        )
        run_info = run_workers(
            database_url,
            settings,
            mailbox["mailbox_id"],
            len(raws),
            args.workers,
            args.concurrency,
            args.timeout,
            progress=not args.quiet,
            profile_dir=args.profile_dir,
        )
        report = stage_report(database_url, mailbox["mailbox_id"])
    samples = run_info.pop("samples")
    return {
        "benchmark": "ingest",
        "messages": len(raws),
        "seed": args.seed,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "database": "embedded" if args.database_url is None else "server",
        "generate_s": round(generate_s, 2),
        "fake_gmail_requests": dict(gmail.counts),
        **report,
        **run_info,
        "routed_timeline": samples[:: max(1, len(samples) // 20)],
    }


def table(result: dict[str, Any]) -> str:
    cpu = result["cpu_seconds"]
    lines = [
        f"ingest: {result['messages']} messages, {result['workers']} worker(s) x concurrency "
        f"{result['concurrency']}",
        f"  routed {result['routed']}/{result['occurrences']}  failed {result['failed']}  "
        f"tickets {result['tickets']} (spam {result['spam_tickets']})",
        f"  first fetch -> last routed {result['first_fetch_to_last_routed_s']} s  "
        f"=> {result['msgs_per_s']} msg/s   (worker wall {result['wall_seconds']:.1f} s)",
        f"  CPU s: workers {cpu['workers']}  postgres backends {cpu['postgres_bench_db_backends']}"
        f"  postgres all {cpu['postgres_all_processes']}  bench+fake Gmail "
        f"{cpu['bench_process_fake_gmail']}   peak worker RSS "
        f"{result['peak_worker_rss_mb']} MB",
        "  stage    wait+work ms: p50      p95      p99      max   completion span s",
    ]
    for name, stage in result["stages"].items():
        w = stage["wait_plus_work_ms"]
        lines.append(
            f"  {name:<8} {w['p50']:>18.1f} {w['p95']:>8.1f} {w['p99']:>8.1f} {w['max']:>8.1f}"
            f" {stage['completion_span_s']:>10.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--database-url", help="server URL; a bench_ingest_* database is created")
    # Two worker processes: one process's Python (MIME, Gmail batches, blobs) shares one GIL.
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before giving up")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument(
        "--profile-dir", help="run each worker under cProfile, writing DIR/worker-<n>.prof"
    )
    args = parser.parse_args(argv)
    result = run(args)
    print(table(result), file=sys.stderr, flush=True)
    print(json.dumps(result, default=str), flush=True)
    ok = (
        result["routed"] == result["messages"] and result["failed"] == 0 and not result["timed_out"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
