"""Live benchmark: new mail arriving while normal workers run → arrival-to-routed latency.

    .venv/bin/python -m bench.live [--push on|off|both] [--rate 20] [--duration 60]
        [--burst 700] [--bursts 1] [--singles 5] [--workers 2] [--concurrency 4]
        [--sync-poll-seconds N] [--database-url URL] [--seed 1]

Per mode (push on, then push off with `both`): a fresh database with the demo
organisation (cli.demo.seed_organization), the fake Gmail server in a thread of this
process, its journal mailbox registered (backfill and, with push, the watch queued), and
`--workers` long-running `ticketing worker --concurrency N` subprocesses (not
--until-idle) with the environment a deployment gives them. With push on, the API runs as
a `ticketing serve` subprocess with GMAIL_PUSH_TOKEN, and a FakePushSubscription on a
topic of the fake posts every change of the mailbox to POST /webhooks/gmail/pubsub?token=.
Without push only polling discovers mail (SYNC_POLL_SECONDS, default 15 then).

Once the (empty) mailbox is backfilled and watched, the fake delivers, one phase after the
other, each phase waiting for the one before it to be routed:

1. singles: `--singles` messages one at a time, each routed before the next (where the time
   goes for one message: push, sync, fetch, parse, stitch, route; from procrastinate's job
   events and the occurrence timestamps);
2. steady: `--rate` messages per second for `--duration` seconds;
3. bursts: `--bursts` times `--burst` messages at once, `--burst-gap` seconds apart.

Latency of a message = its occurrence's `routed_at` (set by worker.route_occurrences) minus the
moment the fake's add_message returned (the message is then listed in history and, with
push, published). Both clocks are this machine's. Every message must be ingested exactly
once: one occurrence, one canonical message, one ticket link, one Gmail fetch.

Prints a human table on stderr and one JSON line on stdout; exit code 1 when a message was
lost or doubled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from bench.common import (
    BENCH_SECRET,
    bench_database,
    corpus_templates,
    cpu_seconds,
    postgres_pids,
    summary,
)
from bench.ingest import generate_messages, worker_env
from cli.demo import JOURNAL_EMAIL, ORGANIZATION, seed_organization, with_fake_gmail
from cli.mailbox_admin import register_gmail_mailbox
from kernel import db
from kernel.migrate import migrate
from kernel.settings import REPO_ROOT, Settings

TOPIC = "projects/bench-live/topics/gmail"
TICKETING = str(REPO_ROOT / ".venv" / "bin" / "ticketing")
POLL = 0.1  # seconds between checks of the database while waiting
# Stage boundaries of one message, in order: (label, timestamp key).
SINGLE_MARKS = (
    ("delivered", "delivered"),
    ("push answered (204)", "push_answered"),
    ("sync job started", "sync_started"),
    ("occurrence discovered", "discovered_at"),
    ("sync job finished", "sync_finished"),
    ("fetch job started", "fetch_started"),
    ("raw fetched", "raw_fetched_at"),
    ("parse job started", "parse_started"),
    ("parsed", "parsed_at"),
    ("stitch job started", "stitch_started"),
    ("stitched", "stitched_at"),
    ("route job started", "route_started"),
    ("routed", "routed_at"),
)


@dataclass
class Deliveries:
    """Gmail message id → wall-clock time the fake had it (after add_message returned)."""

    at: dict[str, float] = field(default_factory=dict)
    phase: dict[str, str] = field(default_factory=dict)

    def add(self, gmail, raw: bytes, phase: str) -> str:
        message_id = gmail.add_message(JOURNAL_EMAIL, raw)
        self.at[message_id] = time.time()
        self.phase[message_id] = phase
        return message_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def subprocesses(cmds: list[tuple[list[str], dict[str, str]]]) -> Iterator[list]:
    """Start each (command, env); on exit SIGTERM them (graceful), then kill stragglers.
    Output goes to temporary files (an unread pipe would block them); the last lines of a
    process that failed are kept in `.log_tail`."""
    logs = [tempfile.TemporaryFile() for _ in cmds]  # noqa: SIM115 - closed below
    procs = [
        subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        for (cmd, env), log in zip(cmds, logs, strict=True)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p, log in zip(procs, logs, strict=True):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.seek(0)
            p.log_tail = log.read().decode("utf-8", "replace")[-3000:]
            log.close()


def wait_for(predicate, timeout: float, what: str, procs: list | None = None) -> float:
    """Poll `predicate` until true; seconds waited. Raises when `timeout` passes or one of
    `procs` died."""
    started = time.monotonic()
    while not predicate():
        for p in procs or ():
            if p.poll() is not None:
                raise RuntimeError(f"a subprocess exited ({p.returncode}) while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"gave up waiting {timeout:.0f} s for {what}")
        time.sleep(POLL)
    return time.monotonic() - started


def routed_count(conn, mailbox_id: str) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM core.message_occurrences "
        "WHERE mailbox_id = %s AND state = 'routed'",
        [mailbox_id],
    ).fetchone()["n"]


def single_breakdown(conn, mailbox_id: str, gmail_id: str, delivered: float, push_rows) -> dict:
    """Timestamps (seconds after delivery) of each stage boundary of one message."""
    occ = conn.execute(
        "SELECT id, extract(epoch FROM discovered_at)::float8 AS discovered_at,"
        " extract(epoch FROM raw_fetched_at)::float8 AS raw_fetched_at,"
        " extract(epoch FROM parsed_at)::float8 AS parsed_at,"
        " extract(epoch FROM stitched_at)::float8 AS stitched_at,"
        " extract(epoch FROM routed_at)::float8 AS routed_at"
        " FROM core.message_occurrences WHERE mailbox_id = %s AND gmail_message_id = %s",
        [mailbox_id, gmail_id],
    ).fetchone()
    marks: dict[str, float | None] = {"delivered": delivered}
    marks.update({k: occ[k] for k in occ if k.endswith("_at")})
    # The job of each occurrence stage whose arguments name this occurrence.
    for key, task in (
        ("fetch", "occurrence_fetch_raw"),
        ("parse", "occurrence_parse"),
        ("stitch", "occurrence_stitch"),
        ("route", "ticket_apply_routing"),
    ):
        row = conn.execute(
            "SELECT extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'deferred'))::float8 AS d,"
            " extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'started'))::float8 AS s,"
            " extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded'))::float8 AS f"
            " FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id"
            " WHERE j.task_name = %s AND j.args->'occurrence_ids' @> %s::jsonb",
            [task, json.dumps([occ["id"]])],
        ).fetchone()
        marks[f"{key}_deferred"], marks[f"{key}_started"], marks[f"{key}_finished"] = (
            row["d"],
            row["s"],
            row["f"],
        )
    # The history sync that discovered it: the one running when the occurrence was stored.
    row = conn.execute(
        "SELECT extract(epoch FROM s.at)::float8 AS s, extract(epoch FROM f.at)::float8 AS f,"
        " extract(epoch FROM d.at)::float8 AS d"
        " FROM procrastinate_jobs j"
        " JOIN procrastinate_events s ON s.job_id = j.id AND s.type = 'started'"
        " JOIN procrastinate_events f ON f.job_id = j.id AND f.type = 'succeeded'"
        " JOIN procrastinate_events d ON d.job_id = j.id AND d.type = 'deferred'"
        " WHERE j.task_name IN ('mailbox_history_sync', 'mailbox_backfill')"
        "   AND s.at <= to_timestamp(%s) AND f.at >= to_timestamp(%s)"
        " ORDER BY s.at DESC LIMIT 1",
        [marks["discovered_at"], marks["discovered_at"]],
    ).fetchone()
    if row:
        marks["sync_deferred"], marks["sync_started"], marks["sync_finished"] = (
            row["d"],
            row["s"],
            row["f"],
        )
    answered = [at for at, status in push_rows if status == 204 and at >= delivered]
    marks["push_answered"] = min(answered) if answered else None
    return {k: (round(v - delivered, 4) if v is not None else None) for k, v in marks.items()}


def ingest_check(conn, mailbox_id: str, deliveries: Deliveries, gmail) -> dict[str, Any]:
    """Delivered vs ingested: every message once as occurrence, canonical message, ticket
    link, routed; fetched from Gmail once; processed by one job per stage."""
    ids = list(deliveries.at)
    row = conn.execute(
        "SELECT count(*) AS occurrences, count(DISTINCT o.gmail_message_id) AS distinct_ids,"
        " count(*) FILTER (WHERE o.state = 'routed') AS routed,"
        " count(*) FILTER (WHERE o.state = 'failed') AS failed,"
        " count(DISTINCT o.message_id) AS messages,"
        " (SELECT count(*) FROM core.ticket_messages tm WHERE tm.message_id IN"
        "   (SELECT message_id FROM core.message_occurrences WHERE mailbox_id = %s"
        "    AND gmail_message_id = ANY(%s))) AS ticket_links"
        " FROM core.message_occurrences o WHERE o.mailbox_id = %s AND o.gmail_message_id = ANY(%s)",
        [mailbox_id, ids, mailbox_id, ids],
    ).fetchone()
    extra = conn.execute(
        "SELECT count(*) AS n FROM core.message_occurrences WHERE mailbox_id = %s"
        " AND NOT (gmail_message_id = ANY(%s))",
        [mailbox_id, ids],
    ).fetchone()["n"]
    per_stage = {
        r["task_name"]: {"jobs": r["jobs"], "occurrence_ids": r["n"], "distinct": r["d"]}
        for r in conn.execute(
            "SELECT j.task_name, count(DISTINCT j.id) AS jobs, count(*) AS n,"
            " count(DISTINCT x.id) AS d FROM procrastinate_jobs j"
            " CROSS JOIN LATERAL jsonb_array_elements_text(j.args->'occurrence_ids') AS x(id)"
            " WHERE j.status = 'succeeded' GROUP BY j.task_name ORDER BY j.task_name"
        )
    }
    counted = Counter(r.message_id for r in list(gmail.log) if r.kind == "get")
    fetches = [counted.get(message_id, 0) for message_id in ids]
    return {
        "delivered": len(ids),
        **row,
        "unexpected_occurrences": extra,
        "gmail_fetches": {"total": sum(fetches), "messages_fetched_more_than_once": sum(
            1 for n in fetches if n > 1), "never_fetched": sum(1 for n in fetches if n == 0)},
        "stage_jobs": per_stage,
    }  # fmt: skip


# Intervals of an occurrence's life, from the fake's delivery: (name, from, to).
INTERVALS = (
    ("discover", "delivered", "discovered_at"),
    ("fetch", "discovered_at", "raw_fetched_at"),
    ("parse", "raw_fetched_at", "parsed_at"),
    ("stitch", "parsed_at", "stitched_at"),
    ("route", "stitched_at", "routed_at"),
)


def latency_report(conn, mailbox_id: str, deliveries: Deliveries) -> dict[str, Any]:
    """Per phase (single, steady, burst): arrival -> routed, and each interval of the way
    (queue wait + work of the stage that ends it); drain time per phase."""
    rows = conn.execute(
        "SELECT gmail_message_id AS id,"
        " extract(epoch FROM discovered_at)::float8 AS discovered_at,"
        " extract(epoch FROM raw_fetched_at)::float8 AS raw_fetched_at,"
        " extract(epoch FROM parsed_at)::float8 AS parsed_at,"
        " extract(epoch FROM stitched_at)::float8 AS stitched_at,"
        " extract(epoch FROM routed_at)::float8 AS routed_at"
        " FROM core.message_occurrences WHERE mailbox_id = %s AND routed_at IS NOT NULL",
        [mailbox_id],
    ).fetchall()
    by_phase: dict[str, dict[str, list[float]]] = {}
    last_routed: dict[str, float] = {}
    first_delivered: dict[str, float] = {}
    for r in rows:
        delivered = deliveries.at.get(r["id"])
        if delivered is None:
            continue
        phase = deliveries.phase[r["id"]]
        kind = "burst" if phase.startswith("burst") else phase
        lists = by_phase.setdefault(kind, {})
        marks = {**r, "delivered": delivered}
        lists.setdefault("arrival_to_routed", []).append(r["routed_at"] - delivered)
        for name, begin, end in INTERVALS:
            lists.setdefault(name, []).append(marks[end] - marks[begin])
        last_routed[phase] = max(last_routed.get(phase, 0.0), r["routed_at"])
    for message_id, at in deliveries.at.items():
        phase = deliveries.phase[message_id]
        first_delivered[phase] = min(first_delivered.get(phase, at), at)
    out: dict[str, Any] = {}
    for kind, lists in by_phase.items():
        out[kind] = {
            "arrival_to_routed_s": {
                k: round(v, 3) for k, v in summary(lists.pop("arrival_to_routed")).items()
            },
            "intervals_s": {
                name: {k: round(v, 3) for k, v in summary(values).items() if k != "n"}
                for name, values in lists.items()
            },
        }
    out["drain_s"] = {
        phase: round(last_routed[phase] - first_delivered[phase], 3)
        for phase in sorted(last_routed)
        if phase != "single"
    }
    return out


def run_mode(args: argparse.Namespace, push: bool, raws: list[bytes]) -> dict[str, Any]:
    from devtools.fake_gmail import FakeGmail, fake_gmail_in_thread
    from devtools.fake_pubsub import FakePushSubscription

    gmail = FakeGmail(seed=args.seed)
    gmail.add_mailbox(JOURNAL_EMAIL)
    token = secrets.token_urlsafe(24)
    deliveries = Deliveries()
    subscription = None
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-live-blobs-") as blobs,
        bench_database(args.database_url, "live", keep=args.keep) as database_url,
        fake_gmail_in_thread(gmail) as server,
    ):
        migrate(database_url)
        settings = with_fake_gmail(
            Settings(
                app_env="test",
                secret_key=BENCH_SECRET,
                local_blob_dir=Path(blobs),
                gmail_pubsub_topic=TOPIC if push else None,
                sync_poll_seconds_setting=args.sync_poll_seconds,
            ),
            server.base_url,
            server.token_uri,
        )
        env = worker_env(settings, database_url)
        for name in ("GMAIL_PUBSUB_TOPIC", "GMAIL_PUSH_TOKEN", "SYNC_POLL_SECONDS"):
            env.pop(name, None)
        if push:
            env["GMAIL_PUBSUB_TOPIC"] = TOPIC
        if args.sync_poll_seconds is not None:
            env["SYNC_POLL_SECONDS"] = str(args.sync_poll_seconds)
        cmds = [
            ([TICKETING, "worker", "--concurrency", str(args.concurrency)], env)
            for _ in range(args.workers)
        ]
        port = free_port()
        if push:
            api_env = {**env, "GMAIL_PUSH_TOKEN": token, "RATE_LIMIT_REQUESTS_PER_MINUTE": "0"}
            cmds.append(([TICKETING, "serve", "--host", "127.0.0.1", "--port", str(port)], api_env))
            subscription = FakePushSubscription(
                endpoint=f"http://127.0.0.1:{port}/webhooks/gmail/pubsub", shared_secret=token
            )
            gmail.create_topic(TOPIC, subscription.publish)
        seed_organization(database_url)
        mailbox_id = register_gmail_mailbox(
            settings,
            database_url,
            organization=ORGANIZATION,
            email=JOURNAL_EMAIL,
            refresh_token=gmail.issue_refresh_token(JOURNAL_EMAIL),
        )["mailbox_id"]
        cpu_before = cpu_seconds()
        with (
            subprocesses(cmds) as procs,
            db.connect(database_url, "bench-live", autocommit=True) as conn,
        ):
            if push:
                wait_for(lambda: _healthy(port), 30, "the API", procs)
                subscription.start()

            def ready() -> bool:
                row = conn.execute(
                    "SELECT history_id IS NOT NULL AND backfill_state = 'done' AS ok"
                    " FROM core.mailboxes WHERE id = %s",
                    [mailbox_id],
                ).fetchone()
                return row["ok"] and (not push or gmail.mailbox(JOURNAL_EMAIL).watch_topic == TOPIC)

            setup_s = wait_for(ready, 60, "the backfill and the watch", procs)
            feed = iter(raws)
            started = time.monotonic()
            expected = 0

            def drain(phase: str, timeout: float) -> float:
                return wait_for(
                    lambda: routed_count(conn, mailbox_id) >= expected,
                    timeout,
                    f"{phase} to be routed",
                    procs,
                )

            # 1. Singles: one message at a time, each routed before the next.
            singles = []
            for _ in range(args.singles):
                time.sleep(args.single_gap)
                gmail_id = deliveries.add(gmail, next(feed), "single")
                expected += 1
                drain("a single message", args.timeout)
                push_rows = []
                if subscription is not None:
                    offset = time.time() - time.monotonic()
                    push_rows = [(d.at + offset, d.status) for d in list(subscription.deliveries)]
                singles.append(
                    single_breakdown(conn, mailbox_id, gmail_id, deliveries.at[gmail_id], push_rows)
                )
            # 2. Steady: rate msg/s for duration s, paced against the clock.
            steady_n = int(args.rate * args.duration)
            t0 = time.monotonic()
            for i in range(steady_n):
                delay = t0 + i / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                deliveries.add(gmail, next(feed), "steady")
            steady_late_s = time.monotonic() - t0 - (steady_n - 1) / args.rate
            expected += steady_n
            drain("the steady phase", args.timeout)
            # 3. Bursts: all at once, then the next after a gap.
            burst_delivery_s = []
            for b in range(args.bursts):
                if b:
                    time.sleep(args.burst_gap)
                t0 = time.monotonic()
                for _ in range(args.burst):
                    deliveries.add(gmail, next(feed), f"burst{b + 1}")
                burst_delivery_s.append(round(time.monotonic() - t0, 3))
                expected += args.burst
            drain("the bursts", args.timeout)
            # A while longer: nothing must arrive twice (a late push, the next poll).
            time.sleep(args.settle)
            wall_s = time.monotonic() - started
            check = ingest_check(conn, mailbox_id, deliveries, gmail)
            latency = latency_report(conn, mailbox_id, deliveries)
            history_syncs = conn.execute(
                "SELECT count(*) AS n FROM procrastinate_jobs"
                " WHERE task_name = 'mailbox_history_sync' AND status = 'succeeded'"
            ).fetchone()["n"]
            # CPU of the whole run (setup and idle waits included): the processes still run.
            database = conninfo_to_dict(database_url)["dbname"]
            cpu = {
                "workers": sum(cpu_seconds(p.pid, children=True) for p in procs[: args.workers]),
                "api": sum(cpu_seconds(p.pid) for p in procs[args.workers :]),
                "postgres_backends": sum(cpu_seconds(pid) for pid in postgres_pids(database)),
            }
            pushes = {}
            if subscription is not None:
                subscription.close()
                for d in subscription.deliveries:
                    pushes[str(d.status)] = pushes.get(str(d.status), 0) + 1
        bench_cpu = cpu_seconds() - cpu_before
    load_after = os.getloadavg()
    exit_codes = [p.returncode for p in procs]
    failed_logs = [p.log_tail for p in procs if p.returncode not in (0, -15)]
    ok = (
        check["occurrences"] == check["delivered"] == check["distinct_ids"]
        and check["routed"] == check["delivered"]
        and check["messages"] == check["delivered"]
        and check["ticket_links"] == check["delivered"]
        and check["unexpected_occurrences"] == 0
        and check["gmail_fetches"]["total"] == check["delivered"]
    )
    return {
        "push": push,
        "sync_poll_seconds": settings.sync_poll_seconds,
        "ingested_exactly_once": ok,
        "setup_s": round(setup_s, 2),
        "wall_s": round(wall_s, 2),
        "steady": {"rate": args.rate, "duration_s": args.duration, "messages": steady_n,
                   "pacing_late_s": round(steady_late_s, 3)},
        "bursts": {"count": args.bursts, "size": args.burst, "delivery_s": burst_delivery_s},
        "latency": latency,
        "singles": singles,
        "single_median": _median_marks(singles),
        "check": check,
        "history_sync_jobs": history_syncs,
        "pushes_by_status": pushes,
        "fake_gmail_requests": dict(gmail.counts),
        "cpu_s": {
            **{k: round(v, 2) for k, v in cpu.items()},
            "bench_process_fake_gmail_pubsub": round(bench_cpu, 2),
        },
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "exit_codes": exit_codes,
        "subprocess_errors": failed_logs,
    }  # fmt: skip


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _median_marks(singles: list[dict]) -> dict[str, float | None]:
    if not singles:
        return {}
    out: dict[str, float | None] = {}
    for key in singles[0]:
        values = sorted(s[key] for s in singles if s.get(key) is not None)
        out[key] = values[len(values) // 2] if values else None
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        f"live: {result['steady_rate']} msg/s for {result['duration_s']} s, "
        f"{result['bursts']} burst(s) of {result['burst']}, {result['singles']} single(s); "
        f"{result['workers']} worker(s) x concurrency {result['concurrency']}",
    ]
    for mode in result["modes"]:
        check = mode["check"]
        lines.append(
            f"push {'ON ' if mode['push'] else 'OFF'} (SYNC_POLL_SECONDS {mode['sync_poll_seconds']}):"
            f" delivered {check['delivered']}, occurrences {check['occurrences']}, routed "
            f"{check['routed']}, canonical messages {check['messages']}, ticket links "
            f"{check['ticket_links']}, Gmail fetches {check['gmail_fetches']['total']} -> "
            f"{'exactly once' if mode['ingested_exactly_once'] else 'NOT EXACTLY ONCE'}"
        )
        lines.append("  phase    arrival->routed s: p50     p95     p99     max   (n)")
        for phase in ("single", "steady", "burst"):
            if phase in mode["latency"]:
                s = mode["latency"][phase]["arrival_to_routed_s"]
                lines.append(
                    f"  {phase:<8} {s['p50']:>24.3f} {s['p95']:>7.3f} {s['p99']:>7.3f} "
                    f"{s['max']:>7.3f}   ({s['n']})"
                )
        lines.append("  phase    p50 / p95 s of: discover  fetch  parse  stitch  route")
        for phase in ("steady", "burst"):
            if phase in mode["latency"]:
                iv = mode["latency"][phase]["intervals_s"]
                lines.append(
                    f"  {phase:<8} "
                    + "  ".join(
                        f"{iv[k]['p50']:.3f}/{iv[k]['p95']:.3f}"
                        for k in ("discover", "fetch", "parse", "stitch", "route")
                    )
                )
        lines.append(f"  drain (first delivery -> last routed) s: {mode['latency']['drain_s']}")
        lines.append(f"  CPU s: {mode['cpu_s']}")
        lines.append(
            f"  history syncs {mode['history_sync_jobs']}, pushes {mode['pushes_by_status']}, "
            f"load {mode['load_avg_before'][0]} -> {mode['load_avg_after'][0]}"
        )
        if mode["single_median"]:
            marks = mode["single_median"]
            lines.append("  one message, median of singles (s after delivery):")
            for label, key in SINGLE_MARKS:
                if marks.get(key) is not None:
                    lines.append(f"    {label:<24} {marks[key]:>7.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.live", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--push", choices=("on", "off", "both"), default="both")
    parser.add_argument("--rate", type=float, default=20.0, help="steady messages per second")
    parser.add_argument("--duration", type=float, default=60.0, help="steady phase seconds")
    parser.add_argument("--burst", type=int, default=700, help="messages per burst")
    parser.add_argument("--bursts", type=int, default=1)
    parser.add_argument("--burst-gap", type=float, default=5.0)
    parser.add_argument("--singles", type=int, default=5, help="messages delivered one by one")
    parser.add_argument("--single-gap", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to watch for doubles")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--sync-poll-seconds", type=int, help="SYNC_POLL_SECONDS (default: 60 push on, 15 off)"
    )
    parser.add_argument("--database-url", help="server URL; a bench_live_* database is created")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300, help="seconds to drain a phase")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases")
    args = parser.parse_args(argv)
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.push]
    total = args.singles + int(args.rate * args.duration) + args.burst * args.bursts
    raws = generate_messages(total, args.seed, corpus_templates())
    result: dict[str, Any] = {
        "benchmark": "live",
        "steady_rate": args.rate,
        "duration_s": args.duration,
        "burst": args.burst,
        "bursts": args.bursts,
        "singles": args.singles,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "modes": [],
    }
    for push in modes:
        print(f"push {'on' if push else 'off'} ...", file=sys.stderr, flush=True)
        result["modes"].append(run_mode(args, push, raws))
    print(table(result), file=sys.stderr, flush=True)
    print(json.dumps(result, default=str), flush=True)
    return 0 if all(m["ingested_exactly_once"] for m in result["modes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
