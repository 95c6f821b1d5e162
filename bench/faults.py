"""Fault benchmark: mail keeps arriving while workers, the database and Gmail fail.

    .venv/bin/python -m bench.faults --messages 3000 [--seed 1] [--workers 3]
        [--concurrency 4] [--kills 12] [--db-restarts 4] [--outage-seconds 60] [--quick]

N messages with thread truth are generated as bench.ingest generates them (corpus mail,
~30 % replies). The fake Gmail (a thread of this process) holds the first part of them
when the mailbox is registered (the backfill); the rest arrive while the pipeline runs
and reach it through history sync: a steady trickle and one burst larger than a history
page (500 records). Meanwhile `ticketing worker` processes (the normal, long-running
command, several of them) run against a PRIVATE PostgreSQL this benchmark starts itself
(bench.private_pg: initdb in a temporary directory, a free loopback port), because it
restarts that database. Faults:

- a database outage (`--outage-seconds`, default 60) starting while a backfill page is in
  flight (the fake holds the page's listing request, the harness stops the server);
- random SIGKILLs of workers (`--kills`);
- a worker SIGKILLed while its history sync waits for Gmail, after the burst (and one
  while it fetches a second history page, when a walk has one);
- database restarts (`--db-restarts`), alternating `pg_ctl stop -m fast` and
  `-m immediate`;
- Gmail faults on every endpoint: 429 with Retry-After, 5xx, dropped connections, failed
  parts inside batches, and lost responses (the request is processed, the answer never
  arrives) when the fake Gmail offers that action (detected from FaultRule).

The harness acts like a process supervisor and nothing more: a worker that exits (killed
or on its own) is started again after a second, as a container restart policy would, and
the database is started again after each stop. It never replays a job, never runs SQL on
the pipeline's state and never queues a sync: mail arriving through history is found by
the workers' own periodic sync.

Reported (one JSON line on stdout, a table on stderr): lost (a message not routed when
the run ends), duplicated (a message with more than one occurrence or canonical row; a
ticket routed twice), in the wrong ticket (against the thread truth: every thread in one
ticket, no ticket holding two threads), time from the end of the last fault until the
last message was routed, every worker exit that the harness did not cause (exit code,
when, the log's last lines), and evidence of what was left behind (jobs not done, the
DLQ, failed attempts by error, the mailbox's sync state). Exit status 0 only when every
target is met: 0 lost, 0 duplicated, 0 in the wrong ticket, all routed within 30 s of the
last fault's end, no worker exit on its own, and no operator action needed: the harness
takes none, and none may be called for (no lost message, nothing in the DLQ, which the
README's DeadLetters alert would page an operator for).

`--quick` is the CI smoke size: 200 messages (80 of them arriving by history during the
first sync), two workers, one SIGKILL landing in a Gmail batch fetch, one fast database
restart and random Gmail faults; well under a minute when the pipeline recovers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import email
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.policy import compat32
from pathlib import Path
from typing import Any

import psutil
import psycopg
from aiohttp import web
from psycopg.rows import dict_row

from bench.common import BENCH_SECRET, corpus_templates, summary
from bench.ingest import generate_messages, worker_env
from bench.private_pg import private_postgres
from cli.demo import JOURNAL_EMAIL, ORGANIZATION, seed_organization, with_fake_gmail
from cli.mailbox_admin import register_gmail_mailbox
from kernel.migrate import migrate
from kernel.settings import REPO_ROOT, Settings

HISTORY_PAGE = 500  # records per history.list page the pipeline asks for (Gmail's maximum)
DRAIN_TARGET_SECONDS = 30.0
# A supervisor's restart delay: 1 s, doubled after each exit within 10 s of the start, at
# most 8 s (docker doubles from 0.1 s and resets after 10 s of running).
RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 8.0
RESTART_RESET_AFTER_SECONDS = 10.0
SAMPLE_SECONDS = 1.0
_KNOWN_ACTIONS = ("status", "delay", "drop")
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_API_PATH_RE = re.compile(
    r"^/?gmail/v1/users/[^/]+/(?:(?P<profile>profile)|(?P<history>history)"
    r"|messages(?:/(?P<message_id>[^/]+))?)$"
)


def _now() -> float:
    return time.time()


# --------------------------------------------------------------------------- thread truth


def thread_truth(raws: list[bytes]) -> tuple[list[str], dict[str, str]]:
    """Message-IDs in order and each message's thread (the Message-ID of its root).

    Generated replies name their parent in In-Reply-To, which is always generated earlier.
    """
    ids: list[str] = []
    root: dict[str, str] = {}
    for raw in raws:
        msg = email.message_from_bytes(raw, policy=compat32)
        own = _MSGID_RE.findall(str(msg.get("Message-ID", "")))[0]
        parent = _MSGID_RE.findall(str(msg.get("In-Reply-To", "")))
        root[own] = root.get(parent[0], parent[0]) if parent else own
        ids.append(own)
    return ids, root


# --------------------------------------------------------------------------- the fake Gmail


def request_kind(request: web.Request) -> str:
    """token | batch | profile | history | list | get | other."""
    path = request.path.rstrip("/")
    if request.method == "POST" and path == "/token":
        return "token"
    if request.method == "POST" and path == "/batch/gmail/v1":
        return "batch"
    match = _API_PATH_RE.match(path)
    if match is None:
        return "other"
    if match["profile"]:
        return "profile"
    if match["history"]:
        return "history"
    return "get" if match["message_id"] else "list"


@dataclass
class Tripwire:
    """Fires `action(peer_port)` on the first request matching `predicate(kind, query)`,
    then holds that request `hold` seconds before the fake answers it."""

    name: str
    predicate: Callable[[str, str], bool]
    action: Callable[[int | None], Any]
    hold: float = 0.0
    fired_at: float | None = None
    result: Any = None
    done: threading.Event = field(default_factory=threading.Event)


class Tripwires:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[Tripwire] = []

    def arm(self, wire: Tripwire) -> Tripwire:
        with self._lock:
            self._armed.append(wire)
        return wire

    def disarm(self, wire: Tripwire) -> None:
        with self._lock:
            if wire in self._armed:
                self._armed.remove(wire)

    def take(self, kind: str, query: str) -> Tripwire | None:
        with self._lock:
            for wire in self._armed:
                if wire.predicate(kind, query):
                    self._armed.remove(wire)
                    return wire
        return None


def tripwire_middleware(wires: Tripwires):
    @web.middleware
    async def middleware(request: web.Request, handler):
        wire = wires.take(request_kind(request), request.query_string)
        if wire is not None:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            wire.fired_at = _now()
            loop = asyncio.get_running_loop()
            try:
                wire.result = await loop.run_in_executor(
                    None, wire.action, peer[1] if peer else None
                )
            finally:
                wire.done.set()
            if wire.hold:
                await asyncio.sleep(wire.hold)
        return await handler(request)

    return middleware


@contextlib.contextmanager
def fake_gmail_with_tripwires(fake: Any, wires: Tripwires) -> Iterator[str]:
    """Serve `fake` (devtools.fake_gmail.make_app) from a thread, tripwires first; yields the
    base URL."""
    from devtools.fake_gmail import make_app

    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        app = make_app(fake)
        app.middlewares.append(tripwire_middleware(wires))
        runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        stop = asyncio.Event()
        box.update(url=f"http://{host}:{port}/", loop=asyncio.get_running_loop(), stop=stop)
        started.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as error:  # reported through `box` to the caller
            box["error"] = error
            started.set()

    thread = threading.Thread(target=run, name="fake-gmail", daemon=True)
    thread.start()
    started.wait(timeout=10)
    if "url" not in box:
        raise RuntimeError("fake Gmail did not start") from box.get("error")
    try:
        yield box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=10)


def lost_response_action() -> str | None:
    """The fake's "lost response" fault action when it has one (processed, then the
    connection closed before the answer), found among the actions FaultRule accepts."""
    import inspect

    from devtools import fake_gmail

    try:
        source = inspect.getsource(fake_gmail.FaultRule)
    except (OSError, TypeError):
        return None
    for name in dict.fromkeys(re.findall(r"[\"']([a-z][a-z_]+)[\"']", source)):
        if name in _KNOWN_ACTIONS or not any(k in name for k in ("lost", "lose", "after")):
            continue
        try:
            fake_gmail.FaultRule(endpoint="batch", action=name)
        except (ValueError, TypeError):
            continue
        return name
    return None


def gmail_fault_rules(quick: bool) -> list[Any]:
    """Random Gmail faults for the fault window (seeded by the fake's RNG)."""
    from devtools.fake_gmail import FaultRule

    p = 0.10 if quick else 0.06
    rules = [
        FaultRule("history", "status", status=429, retry_after=1, times=None, probability=p),
        FaultRule("history", "status", status=503, times=None, probability=p / 2),
        FaultRule("list", "status", status=500, times=None, probability=p),
        FaultRule("profile", "status", status=503, times=None, probability=p),
        FaultRule("batch", "status", status=503, times=None, probability=p),
        FaultRule("batch", "drop", times=None, probability=p / 2),
        FaultRule("batch_part", "status", status=500, times=None, probability=p / 3),
        FaultRule("batch_part", "status", status=429, times=None, probability=p / 3),
        FaultRule("token", "status", status=503, times=None, probability=p / 2),
        FaultRule("history", "drop", times=None, probability=p / 2),
    ]
    lost = lost_response_action()
    if lost is not None:
        for endpoint in ("batch", "history", "list", "profile", "batch_part"):
            with contextlib.suppress(ValueError, TypeError):
                rules.append(FaultRule(endpoint, lost, times=None, probability=p / 2))
    return rules


# --------------------------------------------------------------------------- workers


@dataclass
class Slot:
    index: int
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    log_offset: int = 0
    killed_by_harness: bool = False
    restart_due: float | None = None
    restart_delay: float = RESTART_DELAY_SECONDS


class Supervisor:
    """N `ticketing worker` processes, each started again after it exits (any reason)."""

    def __init__(self, count: int, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.cmd, self.env = cmd, env
        self.slots = [Slot(i, log_dir / f"worker-{i}.log") for i in range(count)]
        self.exits: list[dict[str, Any]] = []
        self.starts = 0
        self.last_restart_at = 0.0
        self._lock = threading.RLock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.t0 = _now()

    def _spawn(self, slot: Slot) -> None:
        slot.log_path.parent.mkdir(parents=True, exist_ok=True)
        with slot.log_path.open("ab") as log:
            slot.log_offset = log.tell()
            log.write(f"=== start {_now() - self.t0:.1f}s ===\n".encode())
            log.flush()
            slot.proc = subprocess.Popen(  # noqa: S603
                self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        slot.started_at = _now()
        slot.killed_by_harness = False
        slot.restart_due = None
        self.starts += 1

    def start(self) -> None:
        self.t0 = _now()
        with self._lock:
            for slot in self.slots:
                self._spawn(slot)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _log_tail(self, slot: Slot, lines: int = 25) -> str:
        try:
            with slot.log_path.open("rb") as log:
                log.seek(slot.log_offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _watch(self) -> None:
        while not self._stopping:
            with self._lock:
                for slot in self.slots:
                    if self._stopping:
                        break
                    if slot.proc is not None and slot.proc.poll() is not None:
                        code = slot.proc.returncode
                        exit_info = {
                            "worker": slot.index,
                            "pid": slot.proc.pid,
                            "exit_code": code,
                            "at_s": round(_now() - self.t0, 1),
                            "ran_s": round(_now() - slot.started_at, 1),
                            "by_harness": slot.killed_by_harness,
                        }
                        self_exits = sum(1 for e in self.exits if not e["by_harness"])
                        if not slot.killed_by_harness and self_exits < 20:
                            exit_info["log_tail"] = self._log_tail(slot)
                        self.exits.append(exit_info)
                        if _now() - slot.started_at >= RESTART_RESET_AFTER_SECONDS:
                            slot.restart_delay = RESTART_DELAY_SECONDS
                        slot.proc = None
                        slot.restart_due = _now() + slot.restart_delay
                        slot.restart_delay = min(RESTART_DELAY_MAX_SECONDS, slot.restart_delay * 2)
                    if slot.proc is None and slot.restart_due and _now() >= slot.restart_due:
                        self._spawn(slot)
                        self.last_restart_at = _now()
            time.sleep(0.1)

    def live_pids(self) -> dict[int, Slot]:
        with self._lock:
            return {
                s.proc.pid: s for s in self.slots if s.proc is not None and s.proc.poll() is None
            }

    def kill(self, slot: Slot) -> int | None:
        with self._lock:
            if slot.proc is None or slot.proc.poll() is not None:
                return None
            slot.killed_by_harness = True
            slot.proc.send_signal(signal.SIGKILL)
            return slot.proc.pid

    def kill_random(self, rng: random.Random, min_age: float = 2.0) -> int | None:
        with self._lock:
            live = [s for s in self.live_pids().values() if _now() - s.started_at >= min_age]
            if not live:
                live = list(self.live_pids().values())
            return self.kill(rng.choice(live)) if live else None

    def kill_owner_of(self, local_port: int | None) -> int | None:
        """SIGKILL the worker whose TCP connection has this local port (a request the fake
        Gmail is holding); None when no live worker owns it."""
        if local_port is None:
            return None
        for pid, slot in self.live_pids().items():
            with contextlib.suppress(psutil.Error):
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    if conn.laddr and conn.laddr.port == local_port:
                        return self.kill(slot)
        return None

    def stop(self) -> list[int | None]:
        """SIGTERM every worker (a graceful stop), SIGKILL after 30 s; exit codes."""
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            procs = [s.proc for s in self.slots if s.proc is not None]
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            codes = []
            for proc in procs:
                try:
                    codes.append(proc.wait(timeout=30))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    codes.append(proc.wait())
            return codes

    def log_errors(self, top: int = 15) -> list[tuple[str, int]]:
        """The most frequent error lines of all worker logs (exception lines, ERRORs)."""
        counts: Counter[str] = Counter()
        pattern = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Violation|Timeout)\b.*)$")
        for slot in self.slots:
            with contextlib.suppress(OSError):
                for line in slot.log_path.read_text(
                    encoding="utf-8", errors="replace"
                ).splitlines():
                    line = line.strip()
                    match = pattern.match(line)
                    if match:
                        counts[re.sub(r"\d+", "N", match.group(1))[:200]] += 1
        return counts.most_common(top)


# --------------------------------------------------------------------------- the database side


def try_query(url: str, query: str, params: list[Any] | None = None) -> list[dict] | None:
    """Rows of one query on a fresh connection, or None while the database is down."""
    try:
        with psycopg.connect(url, connect_timeout=2, row_factory=dict_row, autocommit=True) as c:
            return c.execute(query, params or []).fetchall()
    except psycopg.Error:
        return None


def progress(url: str, mailbox_id: str) -> dict[str, Any] | None:
    rows = try_query(
        url,
        "SELECT count(*) AS occurrences,"
        " count(DISTINCT gmail_message_id) FILTER (WHERE state = 'routed') AS routed,"
        " count(*) FILTER (WHERE state = 'failed') AS failed,"
        " extract(epoch FROM max(routed_at))::float8 AS last_routed"
        " FROM core.message_occurrences WHERE mailbox_id = %s",
        [mailbox_id],
    )
    return rows[0] if rows else None


def outcome(
    url: str, mailbox_id: str, gmail_to_rfc: dict[str, str], root: dict[str, str]
) -> dict[str, Any]:
    """Lost, duplicated and wrong-ticket counts against the thread truth."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        occurrences = conn.execute(
            "SELECT o.gmail_message_id, o.state::text AS state, o.message_id, o.last_error,"
            " tm.ticket_id FROM core.message_occurrences o"
            " LEFT JOIN core.ticket_messages tm ON tm.message_id = o.message_id"
            " WHERE o.mailbox_id = %s",
            [mailbox_id],
        ).fetchall()
        merged = {
            r["id"]: r["merged_into_ticket_id"]
            for r in conn.execute(
                "SELECT id, merged_into_ticket_id FROM core.tickets"
                " WHERE merged_into_ticket_id IS NOT NULL"
            )
        }
        canonical = Counter(
            r["rfc"]
            for r in conn.execute(
                "SELECT btrim(rfc_message_id, '<>') AS rfc FROM core.messages"
                " WHERE rfc_message_id IS NOT NULL"
            )
        )
        routed_twice = conn.execute(
            "SELECT ticket_id, count(*) AS n FROM core.ticket_events WHERE type = 'routed'"
            " GROUP BY ticket_id HAVING count(*) > 1 ORDER BY ticket_id LIMIT 20"
        ).fetchall()
        tickets = conn.execute(
            "SELECT count(*) AS n FROM core.tickets WHERE merged_into_ticket_id IS NULL"
        ).fetchone()["n"]

    def final(ticket: int | None) -> int | None:
        seen = set()
        while ticket in merged and ticket not in seen:
            seen.add(ticket)
            ticket = merged[ticket]
        return ticket

    by_gmail: dict[str, list[dict]] = defaultdict(list)
    for row in occurrences:
        by_gmail[row["gmail_message_id"]].append(row)
    lost: list[dict[str, Any]] = []
    duplicated: list[dict[str, Any]] = []
    ticket_of: dict[str, int] = {}
    for gmail_id, rfc in gmail_to_rfc.items():
        rows = by_gmail.get(gmail_id, [])
        if len(rows) > 1 or canonical.get(rfc.strip("<>"), 0) > 1:
            duplicated.append(
                {"rfc": rfc, "occurrences": len(rows), "canonical": canonical.get(rfc.strip("<>"))}
            )
        routed = [r for r in rows if r["state"] == "routed" and r["ticket_id"] is not None]
        if not routed:
            lost.append(
                {
                    "rfc": rfc,
                    "gmail_id": gmail_id,
                    "states": [r["state"] for r in rows] or ["never discovered"],
                    "error": next((r["last_error"] for r in rows if r["last_error"]), None),
                }
            )
            continue
        ticket_of[rfc] = final(routed[0]["ticket_id"])
    # Wrong ticket: a message outside its thread's main ticket (a split), or in a ticket
    # whose main thread is another one (a merge).
    thread_tickets: dict[str, Counter[int]] = defaultdict(Counter)
    ticket_threads: dict[int, Counter[str]] = defaultdict(Counter)
    for rfc, ticket in ticket_of.items():
        thread_tickets[root[rfc]][ticket] += 1
        ticket_threads[ticket][root[rfc]] += 1
    main_ticket = {t: c.most_common(1)[0][0] for t, c in thread_tickets.items()}
    main_thread = {t: c.most_common(1)[0][0] for t, c in ticket_threads.items()}
    wrong = [
        rfc
        for rfc, ticket in ticket_of.items()
        if ticket != main_ticket[root[rfc]] or main_thread[ticket] != root[rfc]
    ]
    states = Counter(r["state"] for r in occurrences)
    return {
        "lost": len(lost),
        "duplicated": len(duplicated) + len(routed_twice),
        "duplicated_messages": len(duplicated),
        "tickets_routed_twice": len(routed_twice),
        "wrong_ticket": len(wrong),
        "threads_truth": len(set(root.values())),
        "threads_split": sum(1 for c in thread_tickets.values() if len(c) > 1),
        "tickets_mixing_threads": sum(1 for c in ticket_threads.values() if len(c) > 1),
        "tickets": tickets,
        "occurrence_states": dict(states),
        "lost_sample": lost[:10],
        "lost_by_state": dict(Counter(",".join(x["states"]) for x in lost)),
        "duplicated_sample": duplicated[:10],
        "routed_twice_sample": routed_twice[:10],
        "wrong_sample": wrong[:10],
    }


def arrival_latency(url: str, mailbox_id: str, arrived_at: dict[str, float]) -> dict[str, Any]:
    """Seconds from a message's arrival in Gmail (history arrivals) until it was routed,
    and from the last arrival until the last of them was routed."""
    rows = try_query(
        url,
        "SELECT gmail_message_id, extract(epoch FROM min(routed_at))::float8 AS routed"
        " FROM core.message_occurrences WHERE mailbox_id = %s AND routed_at IS NOT NULL"
        " GROUP BY 1",
        [mailbox_id],
    )
    routed = {r["gmail_message_id"]: r["routed"] for r in rows or []}
    waits = [routed[g] - t for g, t in arrived_at.items() if g in routed]
    found = {k: round(v, 1) for k, v in summary(waits).items()}
    if arrived_at and len(waits) == len(arrived_at):
        found["last_arrival_to_all_routed"] = round(
            max(routed[g] for g in arrived_at) - max(arrived_at.values()), 1
        )
    return found


def evidence(url: str, mailbox_id: str) -> dict[str, Any]:
    """What was left behind: jobs by state, unfinished jobs, the DLQ, failed attempts."""
    queries = {
        "jobs": "SELECT task_name, status::text AS status, count(*) AS n FROM procrastinate_jobs"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        "unfinished_jobs": "SELECT id, task_name, status::text AS status, attempts, args,"
        " lock, queueing_lock, worker_id, scheduled_at::text AS scheduled_at"
        " FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        " AND task_name NOT IN ('mailbox_sync_due', 'retry_stalled_jobs') ORDER BY id LIMIT 20",
        "dlq": "SELECT job_id, task_name, attempts, args, error_class,"
        " left(error_message, 300) AS error_message, failed_at::text AS failed_at"
        " FROM ops.dlq ORDER BY job_id LIMIT 20",
        "failed_attempts": "SELECT task_name, error_class,"
        " left(regexp_replace(error_message, '\\d+', 'N', 'g'), 200) AS error, count(*) AS n"
        " FROM core.job_failures GROUP BY 1, 2, 3 ORDER BY n DESC LIMIT 20",
        "mailbox": "SELECT state, backfill_state, backfill_pages, history_id, blocked_reason,"
        " paused_until::text AS paused_until, last_error, consecutive_failures, jobs"
        " FROM ops.mailbox_sync WHERE mailbox_id = %s",
        "stalled_workers": "SELECT count(*) AS n FROM procrastinate_workers"
        " WHERE last_heartbeat < now() - interval '30 seconds'",
    }
    found: dict[str, Any] = {}
    for name, query in queries.items():
        rows = try_query(url, query, [mailbox_id] if "%s" in query else [])
        found[name] = rows if rows is not None else "query failed"
    return found


# --------------------------------------------------------------------------- the run


@dataclass
class Plan:
    messages: int
    backfill: int
    trickle: int
    burst: int
    kills: int
    db_restarts: int
    outage_seconds: float
    arrival_seconds: float
    tail_seconds: float
    drain_timeout: float
    quick: bool
    history_kills: bool = True


def make_plan(args: argparse.Namespace) -> Plan:
    if args.control:
        args.kills = args.db_restarts = args.outage_seconds = 0
        args.no_gmail_faults = args.no_history_kills = True
    if args.quick:
        return Plan(
            messages=args.messages or 200, backfill=120, trickle=0, burst=80,
            kills=0 if args.control else 1, db_restarts=0 if args.control else 1,
            outage_seconds=0, arrival_seconds=0, tail_seconds=3,
            drain_timeout=args.drain_timeout or 40, quick=True,
        )  # fmt: skip
    n = args.messages or 3000
    backfill = n // 2
    burst = min(HISTORY_PAGE + 200, n - backfill)
    return Plan(
        messages=n, backfill=backfill, trickle=n - backfill - burst, burst=burst,
        kills=args.kills, db_restarts=args.db_restarts, outage_seconds=args.outage_seconds,
        arrival_seconds=args.arrival_seconds, tail_seconds=args.tail_seconds,
        drain_timeout=args.drain_timeout or 180, quick=False,
        history_kills=not args.no_history_kills,
    )  # fmt: skip


class Run:
    """One fault run: state shared by the timeline, tripwires and the monitor."""

    def __init__(self, args: argparse.Namespace, plan: Plan) -> None:
        self.args, self.plan = args, plan
        self.rng = random.Random(args.seed)
        self.events: list[dict[str, Any]] = []
        self.t0 = _now()
        self.db_lock = threading.Lock()
        self.last_fault_end = 0.0
        self.samples: list[dict[str, Any]] = []
        self.history_wires: list[Tripwire] = []

    def event(self, kind: str, **detail: Any) -> None:
        entry = {"t": round(_now() - self.t0, 1), "kind": kind, **detail}
        self.events.append(entry)
        if not self.args.quiet:
            print(f"  [{entry['t']:7.1f}s] {kind} {detail or ''}", file=sys.stderr, flush=True)

    def fault_ended(self) -> None:
        self.last_fault_end = max(self.last_fault_end, _now())


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devtools.fake_gmail import FakeGmail

    plan = make_plan(args)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    raws = generate_messages(plan.messages, args.seed, corpus_templates())
    ids, root = thread_truth(raws)
    generate_s = time.monotonic() - started
    fake = FakeGmail(seed=args.seed)
    wires = Tripwires()
    gmail_to_rfc: dict[str, str] = {}
    arrived_at: dict[str, float] = {}  # history arrivals: when the fake Gmail got them

    def deliver(indexes: range, backfill: bool = False) -> None:
        for i in indexes:
            gmail_id = fake.add_message(JOURNAL_EMAIL, raws[i])
            gmail_to_rfc[gmail_id] = ids[i]
            if not backfill:
                arrived_at[gmail_id] = _now()

    deliver(range(plan.backfill), backfill=True)
    lost_action = lost_response_action()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-faults-")))
        if args.keep_logs:
            work = Path(tempfile.mkdtemp(prefix="bench-faults-logs-"))
        pg = stack.enter_context(private_postgres())
        base_url = stack.enter_context(fake_gmail_with_tripwires(fake, wires))
        url = pg.url
        migrate(url)
        server_version = (try_query(url, "SHOW server_version") or [{}])[0].get("server_version")
        settings = with_fake_gmail(
            Settings(app_env="test", secret_key=BENCH_SECRET, local_blob_dir=work / "blobs"),
            base_url,
            base_url + "token",
        )
        seed_organization(url)
        mailbox_id = register_gmail_mailbox(
            settings,
            url,
            organization=ORGANIZATION,
            email=JOURNAL_EMAIL,
            refresh_token=fake.issue_refresh_token(JOURNAL_EMAIL),
        )["mailbox_id"]
        cmd = [str(REPO_ROOT / ".venv" / "bin" / "ticketing"), "worker",
               "--concurrency", str(args.concurrency)]  # fmt: skip
        supervisor = Supervisor(args.workers, cmd, worker_env(settings, url), work / "logs")
        r = Run(args, plan)
        gmail_rules = [] if args.no_gmail_faults else gmail_fault_rules(plan.quick)
        for rule in gmail_rules:
            fake.inject(rule)
        supervisor.start()
        r.t0 = supervisor.t0
        r.event("workers started", workers=args.workers, concurrency=args.concurrency)
        timeline = threading.Thread(
            target=(quick_timeline if plan.quick else full_timeline),
            args=(r, pg, fake, wires, supervisor, deliver),
            name="timeline",
            daemon=True,
        )
        timeline.start()
        # Monitor until the timeline is over and everything is routed (or the drain limit).
        deadline: float | None = None
        final = None
        while True:
            time.sleep(SAMPLE_SECONDS)
            row = progress(url, mailbox_id)
            if row is not None:
                final = row
                r.samples.append({"t": round(_now() - r.t0, 1), **row})
                if not args.quiet and len(r.samples) % 10 == 0:
                    print(
                        f"  {_now() - r.t0:7.1f}s  occurrences {row['occurrences']}  routed "
                        f"{row['routed']}/{plan.messages}  failed {row['failed']}  worker "
                        f"exits {len(supervisor.exits)}",
                        file=sys.stderr,
                        flush=True,
                    )
            if timeline.is_alive():
                continue
            if deadline is None:
                deadline = r.last_fault_end + plan.drain_timeout
            if final is not None and final["routed"] >= plan.messages:
                break
            if _now() > deadline:
                r.event("drain limit reached", seconds=plan.drain_timeout)
                break
        exit_codes = supervisor.stop()
        fake.clear_faults()
        r.event("workers stopped", exit_codes=exit_codes)
        if not pg.running():
            pg.start()
        result_outcome = outcome(url, mailbox_id, gmail_to_rfc, root)
        latency = arrival_latency(url, mailbox_id, arrived_at)
        left = evidence(url, mailbox_id)
        dlq_size = len(left["dlq"]) if isinstance(left["dlq"], list) else None
        last_routed = (final or {}).get("last_routed")
        drain = None
        if final is not None and final["routed"] >= plan.messages and last_routed:
            drain = max(0.0, last_routed - r.last_fault_end)
        self_exits = [e for e in supervisor.exits if not e["by_harness"]]
        result = {
            "benchmark": "faults",
            "mode": "quick" if plan.quick else "full",
            "messages": plan.messages,
            "seed": args.seed,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "plan": dataclasses.asdict(plan),
            "database": f"private PostgreSQL {server_version} ({pg.bin}), port {pg.port}",
            "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_at_start},
            "lost_response_action": lost_action,
            "generate_s": round(generate_s, 2),
            **{k: result_outcome[k] for k in ("lost", "duplicated", "wrong_ticket")},
            "routed": (final or {}).get("routed"),
            "drain_seconds_after_last_fault": round(drain, 1) if drain is not None else None,
            "last_fault_end_s": round(r.last_fault_end - r.t0, 1),
            "history_arrival_to_routed_s": latency,
            "run_seconds": round(_now() - r.t0, 1),
            "operator_actions_taken": 0,
            "dlq_size": dlq_size,
            "operator_action_needed": result_outcome["lost"] > 0 or bool(dlq_size),
            "worker_self_exits": self_exits,
            "worker_kills_by_harness": sum(1 for e in supervisor.exits if e["by_harness"]),
            "worker_starts": supervisor.starts,
            "final_stop_exit_codes": exit_codes,
            "outcome": result_outcome,
            "faults": r.events,
            "gmail_faults_fired": [
                {"endpoint": f.endpoint, "action": f.action, "status": f.status, "fired": f.fired}
                for f in gmail_rules
            ],
            "fake_gmail_requests": dict(fake.counts),
            "evidence": left,
            "worker_log_errors": supervisor.log_errors(),
            "postgres_log_tail": pg.log_tail(1500),
            "routed_timeline": r.samples[:: max(1, len(r.samples) // 30)],
        }
        if args.keep_logs:
            result["logs"] = str(work / "logs")
            with contextlib.suppress(OSError):
                shutil.copy(pg.logfile, work / "logs" / "postgres.log")
    result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> dict[str, bool]:
    drain = result["drain_seconds_after_last_fault"]
    return {
        "no_lost": result["lost"] == 0,
        "no_duplicated": result["duplicated"] == 0,
        "no_wrong_ticket": result["wrong_ticket"] == 0,
        "no_operator_action": not result["operator_action_needed"],
        "drained_within_30s": drain is not None and drain <= DRAIN_TARGET_SECONDS,
        "no_worker_self_exit": not result["worker_self_exits"],
    }


# --------------------------------------------------------------------------- timelines


def _db_stop_start(r: Run, pg: Any, mode: str, down_seconds: float, why: str) -> None:
    with r.db_lock:
        r.event("db stop", mode=mode, why=why)
        began = _now()
        pg.stop(mode)
        stopped = _now()
        time.sleep(down_seconds)
        pg.start()
        r.event(
            "db up",
            down_s=round(_now() - stopped, 1),
            pg_ctl_stop_s=round(stopped - began, 1),
        )
        r.fault_ended()


def _wait_until(r: Run, t: float) -> None:
    delay = r.t0 + t - _now()
    if delay > 0:
        time.sleep(delay)


def _clear_gmail_faults(r: Run, fake: Any) -> None:
    fake.clear_faults()
    r.event("gmail faults cleared")
    r.fault_ended()


def quick_timeline(r: Run, pg, fake, wires: Tripwires, supervisor: Supervisor, deliver) -> None:
    """CI size: arrivals during the first history sync, then a kill inside a batch fetch
    and one fast restart; Gmail faults throughout."""
    plan = r.plan
    arrivals = wires.arm(
        Tripwire(
            "arrivals during the first history sync",
            lambda kind, query: kind == "history",
            lambda port: deliver(range(plan.backfill, plan.messages)),
        )
    )
    if arrivals.done.wait(timeout=30):
        r.event("arrivals delivered", messages=plan.messages - plan.backfill)
    else:
        wires.disarm(arrivals)
        deliver(range(plan.backfill, plan.messages))
        r.event("arrivals delivered without a history request seen (fallback)")
    if plan.kills:
        kill = wires.arm(
            Tripwire(
                "kill inside a Gmail batch fetch",
                lambda kind, query: kind == "batch",
                supervisor.kill_owner_of,
                hold=0.5,
            )
        )
        if kill.done.wait(timeout=20):
            r.event("worker SIGKILL (inside a batch fetch)", pid=kill.result)
            r.fault_ended()
        else:
            wires.disarm(kill)
            r.event("not fired", tripwire=kill.name)
        time.sleep(1.0)
    if plan.db_restarts:
        _db_stop_start(r, pg, "fast", 0.5, "restart")
    time.sleep(plan.tail_seconds)
    _clear_gmail_faults(r, fake)
    # A killed worker's fault ends when it runs again.
    time.sleep(RESTART_DELAY_SECONDS + 0.2)
    r.last_fault_end = max(r.last_fault_end, supervisor.last_restart_at)


def full_timeline(r: Run, pg, fake, wires: Tripwires, supervisor: Supervisor, deliver) -> None:
    plan = r.plan
    # 1. An outage while a backfill page is in flight: the fake holds the listing request
    #    of page 2 (page 1 has a checkpoint), the database stops, the page is answered.
    down: dict[str, float] = {}

    def stop_db(_port: int | None) -> None:
        r.db_lock.acquire()
        r.event("db stop", mode="immediate", why="outage during a backfill page")
        began = _now()
        pg.stop("immediate")
        down["at"] = _now()
        down["stop_s"] = down["at"] - began

    outage = wires.arm(
        Tripwire(
            "outage during a backfill page",
            lambda kind, query: kind == "list" and "pageToken=" in query,
            stop_db,
            hold=2.0,
        )
    )
    if plan.outage_seconds > 0:
        if not outage.done.wait(timeout=60):
            wires.disarm(outage)
            r.event("no backfill page seen within 60 s; outage now (fallback)")
            stop_db(None)
        time.sleep(max(0.0, down["at"] + plan.outage_seconds - _now()))
        pg.start()
        r.event(
            "db up",
            down_s=round(_now() - down["at"], 1),
            pg_ctl_stop_s=round(down.get("stop_s", 0.0), 1),
        )
        r.db_lock.release()
        r.fault_ended()
    else:
        wires.disarm(outage)
    # 2. Arrivals: a trickle, with one burst larger than a history page in the middle.
    start = _now() - r.t0 + 5
    end = start + plan.arrival_seconds
    window_end = end + plan.tail_seconds
    first = plan.backfill
    schedule: list[tuple[float, Callable[[], None]]] = []
    trickle = list(range(first + plan.burst, plan.messages))
    burst = range(first, first + plan.burst)
    # The burst comes first in Message-ID order so that replies still follow their parents.
    burst_at = start + plan.arrival_seconds / 3

    def add_burst() -> None:
        deliver(burst)
        r.event("arrivals: burst", messages=len(burst), over_one_history_page=len(burst) > 500)
        if plan.history_kills:
            arm_history_kills(r, wires, supervisor)

    schedule.append((burst_at, add_burst))
    tick_at = burst_at + 1
    ticks = max(1, int(end - tick_at))
    per_tick = max(1, -(-len(trickle) // ticks))
    for offset in range(0, len(trickle), per_tick):
        chunk = trickle[offset : offset + per_tick]
        schedule.append((tick_at, lambda chunk=chunk: deliver(range(chunk[0], chunk[-1] + 1))))
        tick_at += 1.0
    if trickle:
        schedule.append((tick_at, lambda: r.event("arrivals: trickle done", messages=len(trickle))))
    # 3. Random kills and database restarts spread over the window.
    span = (start, window_end - 5)
    for _ in range(plan.kills):
        at = r.rng.uniform(*span)

        def kill() -> None:
            pid = supervisor.kill_random(r.rng)
            r.event("worker SIGKILL (random)", pid=pid)
            r.fault_ended()

        schedule.append((at, kill))
    slots = plan.db_restarts
    for i in range(slots):
        width = (span[1] - span[0]) / max(1, slots)
        at = span[0] + width * i + r.rng.uniform(0.2, 0.8) * width
        mode = ("fast", "immediate")[i % 2]
        schedule.append(
            (at, lambda mode=mode: _db_stop_start(r, pg, mode, r.rng.uniform(0.5, 3), "restart"))
        )
    schedule.append((window_end, lambda: _clear_gmail_faults(r, fake)))
    schedule.sort(key=lambda item: item[0])
    for at, action in schedule:
        _wait_until(r, at)
        action()
    # Wait for the history-sync kills, which the next sync after the burst sets off.
    for wire in r.history_wires:
        if not wire.done.wait(timeout=5):
            wires.disarm(wire)
            r.event("not fired", tripwire=wire.name)
    time.sleep(RESTART_DELAY_SECONDS + 0.2)
    r.last_fault_end = max(r.last_fault_end, supervisor.last_restart_at)


def arm_history_kills(r: Run, wires: Tripwires, supervisor: Supervisor) -> None:
    """After the burst: SIGKILL the worker whose history sync asks Gmail next, and later
    one asking for a following page of a walk (a request with a page token)."""

    def kill_first(port: int | None) -> int | None:
        pid = supervisor.kill_owner_of(port)
        r.event("worker SIGKILL inside a history sync", pid=pid)
        r.fault_ended()
        wires.arm(paged)
        return pid

    def kill_paged(port: int | None) -> int | None:
        pid = supervisor.kill_owner_of(port)
        r.event("worker SIGKILL inside a history sync (page 2+ request)", pid=pid)
        r.fault_ended()
        return pid

    paged = Tripwire(
        "kill on a history request with a page token",
        lambda kind, query: kind == "history" and "pageToken=" in query,
        kill_paged,
        hold=1.0,
    )
    first = Tripwire(
        "kill on the first history request after the burst",
        lambda kind, query: kind == "history",
        kill_first,
        hold=1.0,
    )
    r.history_wires = [first, paged]
    wires.arm(first)


# --------------------------------------------------------------------------- CLI


def table(result: dict[str, Any]) -> str:
    t = result["targets"]

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    o = result["outcome"]
    lines = [
        f"faults ({result['mode']}): {result['messages']} messages, seed {result['seed']}, "
        f"{result['workers']} workers x {result['concurrency']}, lost-response action: "
        f"{result['lost_response_action']}",
        f"  lost {result['lost']} ({mark(t['no_lost'])})  duplicated {result['duplicated']} "
        f"({mark(t['no_duplicated'])})  wrong ticket {result['wrong_ticket']} "
        f"({mark(t['no_wrong_ticket'])})  tickets {o['tickets']} for "
        f"{o['threads_truth']} threads",
        f"  drain after last fault: {result['drain_seconds_after_last_fault']} s "
        f"({mark(t['drained_within_30s'])}; last fault ended at "
        f"{result['last_fault_end_s']} s, run {result['run_seconds']} s)",
        f"  history arrival -> routed s: {result['history_arrival_to_routed_s']}",
        f"  worker exits on their own: {len(result['worker_self_exits'])} "
        f"({mark(t['no_worker_self_exit'])}); harness kills {result['worker_kills_by_harness']}"
        f"; operator action needed: {result['operator_action_needed']} (DLQ "
        f"{result['dlq_size']}, {mark(t['no_operator_action'])})",
    ]
    for exit_info in result["worker_self_exits"][:10]:
        lines.append(
            f"    worker {exit_info['worker']} pid {exit_info['pid']} exit "
            f"{exit_info['exit_code']} at {exit_info['at_s']} s (ran {exit_info['ran_s']} s)"
        )
    if o["lost"]:
        lines.append(f"  lost by state: {o['lost_by_state']}")
    jobs = result["evidence"].get("jobs")
    if isinstance(jobs, list):
        lines.append(
            "  jobs: " + ", ".join(f"{j['task_name']}/{j['status']} {j['n']}" for j in jobs)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", type=int, help="default 3000 (quick: 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--kills", type=int, default=12, help="random worker SIGKILLs")
    parser.add_argument(
        "--db-restarts", type=int, default=4, help="restarts, alternating fast and immediate"
    )
    parser.add_argument(
        "--outage-seconds", type=float, default=60, help="outage during a backfill page (0: none)"
    )
    parser.add_argument("--arrival-seconds", type=float, default=60, help="trickle duration")
    parser.add_argument(
        "--tail-seconds",
        type=float,
        default=70,
        help="faults go on this long after the last arrival (one periodic sync at least)",
    )
    parser.add_argument("--drain-timeout", type=float, help="seconds after the last fault")
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke size (200 messages, 2 faults)"
    )
    parser.add_argument("--no-gmail-faults", action="store_true", help="no Gmail fault rules")
    parser.add_argument(
        "--no-history-kills", action="store_true", help="no kills inside history syncs"
    )
    parser.add_argument(
        "--control", action="store_true", help="no faults at all (checks the harness and truth)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.quick and args.workers == 3:
        args.workers, args.concurrency = 2, 2
    # A SIGKILLed worker leaves requests half-read: aiohttp logs each one; not news here.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    result = run(args)
    print(table(result), file=sys.stderr, flush=True)
    print(json.dumps(result, default=str), flush=True)
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
