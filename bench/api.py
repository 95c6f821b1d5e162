"""API benchmark: tickets seeded straight in SQL, then GET /tickets and GET /tickets/{id}.

    .venv/bin/python -m bench.api --tickets 100000 [--database-url URL] [--duration 10]
        [--concurrency 1,16]

Seeding (one SQL session, generate_series): organisation, queues and rules of
cli.demo.seed_organization; N tickets with 1-3 messages each (messages, contents,
ticket_messages), subjects and bodies drawn Zipf-like from the 5,000 most frequent words of
the corpus' text bodies (bodies from a pool of tickets/5 distinct ones, at most 50,000, so
that each body is parsed once), tickets.search built the way stitching builds it (code and
subject A, requester B, message subjects and senders C, bodies D; config 'simple'), the
search indexes built after the load; VACUUM ANALYZE; CHECKPOINT.

Then `ticketing serve` runs as a subprocess on an ephemeral loopback port (its defaults:
pool of 10, rate limit off), one development login, and a lean keep-alive HTTP/1.1 client
(one connection per concurrent task; it shares the 2 cores with the server) measures each
request kind for --duration seconds at each concurrency: list (limit=50), status=open,
q=<common body word>, q=<rare body word>, page 20 reached by cursor (each walk fetches
pages 1..20; latencies of page 1 and page 20 are reported) and GET /tickets/{id}. Prints
EXPLAIN (ANALYZE, BUFFERS) of each list variant's keyset query run as ticketing_api with
app.org_id set, a human table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import aiohttp
import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.common import (
    BENCH_SECRET,
    bench_database,
    corpus_words,
    cpu_seconds,
    postgres_pids,
    summary,
)
from cli.demo import ADMIN_EMAIL, ORGANIZATION, seed_organization
from kernel import db
from kernel.migrate import migrate
from kernel.settings import REPO_ROOT

PAGES_DEEP = 20
KINDS = ("list", "status_open", "q_common", "q_rare", "deep", "detail")
PAGE_LIMIT = 50

SEED_SQL = """
-- Zipf-like pick: word rank floor(n * random()^3). The word array is a bound constant (a
-- column value would be detoasted again for every word picked).
-- Message bodies come from a pool of distinct generated bodies whose search vectors are
-- computed once: parsing every body of a million tickets would be most of the seeding.
CREATE TEMP TABLE body_pool AS
SELECT g.k,
       b.body,
       setweight(to_tsvector('simple', left(b.body, 10000)), 'D') AS tsv
FROM generate_series(0, %(pool)s - 1) AS g(k),
     LATERAL (SELECT string_agg((%(words)s::text[])[1 + floor(%(nwords)s * random() ^ 3)::int],
                                ' ') AS body
              FROM generate_series(1, 40 + (g.k * 13) %% 160)) b;
CREATE UNIQUE INDEX ON body_pool (k);

CREATE TEMP TABLE stage_ticket AS
SELECT g.i,
       (SELECT string_agg((%(words)s::text[])[1 + floor(%(nwords)s * random() ^ 3)::int], ' ')
        FROM generate_series(1, 3 + (g.i * 7) %% 7)) AS subject,
       'customer' || (g.i * 7919) %% 20000 || '@' ||
           (ARRAY['example.com', 'example.org', 'somenet.foo', 'mail.example.net'])[1 + g.i %% 4]
           AS email,
       'Customer ' || (g.i * 7919) %% 20000 AS name,
       (1 + (g.i * 2654435761) %% 3)::int AS messages,
       random() AS r_status,
       now() - random() * interval '730 days' AS activity
FROM generate_series(1::bigint, %(tickets)s) AS g(i);

CREATE TEMP TABLE stage_msg AS
SELECT row_number() OVER (ORDER BY t.i, k.k) AS mid, t.i AS ticket_id, k.k,
       t.activity - (3 - k.k) * interval '5 hours' AS sent_at,
       (t.i * 7919 + k.k * 104729) %% %(pool)s AS body_k
FROM stage_ticket t, generate_series(1, t.messages) AS k(k);
ANALYZE body_pool;
ANALYZE stage_ticket;
ANALYZE stage_msg;

INSERT INTO core.tickets (id, organization_id, number, subject, status, priority,
                          requester_email, requester_name, original_recipient,
                          assignee_queue_id, tags, created_at, updated_at, last_message_at,
                          last_activity_at, routed_at, message_count, search)
OVERRIDING SYSTEM VALUE
SELECT t.i, %(org)s, 1000 + t.i, t.subject,
       (CASE WHEN t.r_status < 0.10 THEN 'new' WHEN t.r_status < 0.45 THEN 'open'
             WHEN t.r_status < 0.60 THEN 'pending' WHEN t.r_status < 0.85 THEN 'resolved'
             WHEN t.r_status < 0.97 THEN 'closed' ELSE 'spam' END)::core.ticket_status,
       (ARRAY['low', 'normal', 'normal', 'normal', 'high', 'urgent'])[1 + t.i %% 6]
           ::core.ticket_priority,
       t.email, t.name, 'notmuch@notmuchmail.org',
       (%(queues)s::uuid[])[1 + t.i %% cardinality(%(queues)s::uuid[])],
       CASE WHEN t.i %% 5 = 0 THEN ARRAY['list'] ELSE '{}' END,
       t.activity - interval '10 hours', t.activity, t.activity, t.activity, t.activity,
       t.messages,
       logic.ticket_search_vector('T-' || (1000 + t.i), t.subject, t.email, t.name)
       || setweight(to_tsvector('simple', repeat('re ', t.messages - 1) || t.subject || ' '
                                || t.email || ' ' || t.name), 'C')
       || p1.tsv || coalesce(p2.tsv, '') || coalesce(p3.tsv, '')
FROM stage_ticket t
JOIN body_pool p1 ON p1.k = (t.i * 7919 + 1 * 104729) %% %(pool)s
LEFT JOIN body_pool p2 ON t.messages >= 2 AND p2.k = (t.i * 7919 + 2 * 104729) %% %(pool)s
LEFT JOIN body_pool p3 ON t.messages >= 3 AND p3.k = (t.i * 7919 + 3 * 104729) %% %(pool)s;

-- Messages and their links are consistent by construction: no foreign key checks, and
-- no message_count trigger (the tickets above carry their counts).
SET session_replication_role = replica;

INSERT INTO core.messages (id, organization_id, strict_signature, loose_fingerprint,
                           rfc_message_id, subject, normalized_subject, from_name, from_address,
                           to_addresses, sent_at, snippet, created_at)
OVERRIDING SYSTEM VALUE
SELECT m.mid, %(org)s, 'bench:' || m.mid, 'bench:' || m.mid,
       '<bench.' || m.mid || '@bench.example>',
       CASE WHEN m.k = 1 THEN t.subject ELSE 'Re: ' || t.subject END, t.subject,
       t.name, t.email,
       jsonb_build_array(jsonb_build_object('name', '', 'address', 'notmuch@notmuchmail.org')),
       m.sent_at, left(p.body, 200), m.sent_at
FROM stage_msg m JOIN stage_ticket t ON t.i = m.ticket_id JOIN body_pool p ON p.k = m.body_k;

INSERT INTO core.message_contents (message_id, organization_id, text_body, body_sha256)
SELECT m.mid, %(org)s, p.body, md5(p.body)
FROM stage_msg m JOIN body_pool p ON p.k = m.body_k;

INSERT INTO core.ticket_messages (message_id, organization_id, ticket_id, stitch_reason,
                                  stitch_confidence, linked_at)
SELECT m.mid, %(org)s, m.ticket_id,
       CASE WHEN m.k = 1 THEN 'new_ticket' ELSE 'in_reply_to' END, 'high', m.sent_at
FROM stage_msg m;

RESET session_replication_role;

SELECT setval(pg_get_serial_sequence('core.tickets', 'id'), %(tickets)s);
SELECT setval(pg_get_serial_sequence('core.messages', 'id'), (SELECT max(mid) FROM stage_msg));
INSERT INTO core.ticket_counters (organization_id, next_number)
VALUES (%(org)s, 1001 + %(tickets)s)
ON CONFLICT (organization_id) DO UPDATE SET next_number = excluded.next_number;
"""


def seed(database_url: str, tickets: int, words: list[str]) -> dict[str, Any]:
    """Seed `tickets` tickets into the demo organisation; seconds and sizes."""
    t0 = time.monotonic()
    org = seed_organization(database_url)
    params = {
        "words": words,
        "nwords": len(words),
        "tickets": tickets,
        "org": org["organization_id"],
        "queues": list(org["queues"].values()),
        # Distinct message bodies: enough that a rare word stays rare at every size.
        "pool": min(max(tickets // 5, 1000), 50_000),
    }
    with db.connect(database_url, "bench-api-seed") as conn:
        # The search indexes are built once after the load rather than maintained row by row.
        search_indexes = conn.execute(
            "SELECT c.relname AS name, pg_get_indexdef(c.oid) AS ddl FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
            "WHERE i.indrelid = 'core.tickets'::regclass AND a.amname = 'gin'"
        ).fetchall()
        for index in search_indexes:
            conn.execute(f"DROP INDEX core.{index['name']}")
        for statement in SEED_SQL.split(";\n"):
            if statement.strip():
                conn.execute(statement, params)
        conn.execute("SET maintenance_work_mem = '1GB'")
        for index in search_indexes:
            conn.execute(index["ddl"])
        conn.execute("RESET maintenance_work_mem")
        conn.commit()
        messages = conn.execute("SELECT count(*) AS n FROM core.messages").fetchone()["n"]
        # The counts were written directly, not by the trigger: check them once.
        wrong_counts = conn.execute(
            "SELECT count(*) AS n FROM core.tickets t LEFT JOIN (SELECT ticket_id, count(*) AS n "
            "FROM core.ticket_messages GROUP BY ticket_id) c ON c.ticket_id = t.id "
            "WHERE t.message_count <> coalesce(c.n, 0)"
        ).fetchone()["n"]
        if wrong_counts:
            raise RuntimeError(f"seeding left {wrong_counts} tickets with a wrong message_count")
    seed_s = time.monotonic() - t0
    with db.connect(database_url, "bench-api-seed", autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) core.tickets, core.messages, core.message_contents, "
                     "core.ticket_messages")  # fmt: skip
        # Write the load and the vacuum's hint bits out now: the server's own checkpoint
        # would otherwise flush gigabytes while the first kinds are measured.
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            print("  (no CHECKPOINT: needs superuser or pg_checkpoint; the first kinds may "
                  "be measured while the server writes the load out)", file=sys.stderr)  # fmt: skip
        sizes = {
            r["relname"]: r["size"]
            for r in conn.execute(
                "SELECT c.relname, pg_size_pretty(pg_total_relation_size(c.oid)) AS size "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'core' AND c.relname IN ('tickets', 'messages', "
                "'message_contents', 'ticket_messages')"
            )
        }
    return {
        "organization_id": org["organization_id"],
        "tickets": tickets,
        "messages": messages,
        "seed_s": round(seed_s, 1),
        "vacuum_analyze_s": round(time.monotonic() - t0 - seed_s, 1),
        "sizes": sizes,
    }


def pick_query_words(database_url: str, words: list[str]) -> dict[str, dict[str, Any]]:
    """A common and a rare body word, with how many tickets each matches."""
    picked = {
        "q_common": words[min(50, len(words) - 1)],
        "q_rare": words[min(2000, len(words) - 1)],
    }
    out = {}
    with db.connect(database_url, "bench-api") as conn:
        for kind, word in picked.items():
            matches = conn.execute(
                "SELECT count(*) AS n FROM core.tickets WHERE search @@ to_tsquery('simple', %s)",
                [word],
            ).fetchone()["n"]
            out[kind] = {"word": word, "matching_tickets": matches}
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def api_server(
    database_url: str, processes: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`ticketing serve` on a free loopback port; stopped (SIGTERM, then SIGKILL) afterwards."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "APP_ENV": "test",
        "SECRET_KEY": BENCH_SECRET,
        "ALLOW_DEV_LOGIN": "true",
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
    }
    cmd = [str(REPO_ROOT / ".venv" / "bin" / "ticketing"), "serve", "--host", "127.0.0.1",
           "--port", str(port), "--processes", str(processes)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ticketing serve exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("ticketing serve did not listen within 30 s") from None
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def login(base: str) -> str:
    """Development login as the demo admin; the session cookie as a Cookie header value."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{base}/auth/csrf") as response:
            csrf = (await response.json())["csrf_token"]
        body = {"email": ADMIN_EMAIL, "organization_name": ORGANIZATION}
        async with session.post(
            f"{base}/auth/dev/login", json=body, headers={"x-csrf-token": csrf}
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"dev login failed: {response.status} {await response.text()}")
        return "; ".join(f"{c.key}={c.value}" for c in session.cookie_jar)


class KeepAliveClient:
    """One persistent HTTP/1.1 connection issuing GETs one at a time.

    A general-purpose client (aiohttp's) costs the load generator more CPU per request than
    the server spends on a cached-plan list request; on a 2-core machine that CPU is taken
    from the server. This one only writes a request and reads a Content-Length body.
    """

    def __init__(self, base: str, cookie: str) -> None:
        parts = base.removeprefix("http://").split(":")
        self.host, self.port = parts[0], int(parts[1])
        self.headers = f"Host: {self.host}\r\nCookie: {cookie}\r\n\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[float, int, bytes]:
        """(milliseconds, status, body) of GET `path`."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        t0 = time.perf_counter()
        self.writer.write(f"GET {path} HTTP/1.1\r\n".encode() + self.headers)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        body = await self.reader.readexactly(length)
        return (time.perf_counter() - t0) * 1000, status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def measure(
    base: str,
    cookie: str,
    kind: str,
    path_params: dict[str, str],
    concurrency: int,
    duration: float,
    max_ticket_id: int,
    seed: int,
) -> dict[str, Any]:
    """Run `kind` for `duration` seconds with `concurrency` client tasks."""
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[int, int] = defaultdict(int)
    deadline = time.monotonic() + duration
    cursors_seen: list[str] = []

    async def one(task: int) -> None:
        client = KeepAliveClient(base, cookie)
        try:
            await requests_until_deadline(task, client)
        finally:
            client.close()

    async def requests_until_deadline(task: int, client: KeepAliveClient) -> None:
        rng = random.Random(seed * 1000 + task)
        while time.monotonic() < deadline:
            if kind == "detail":
                ms, status, _ = await client.get(f"/tickets/{rng.randint(1, max_ticket_id)}")
                latencies["request"].append(ms)
                statuses[status] += 1
            elif kind == "deep":
                cursor = None
                for page in range(1, PAGES_DEEP + 1):
                    url = f"/tickets?limit={PAGE_LIMIT}"
                    if cursor:
                        url += f"&cursor={cursor}"
                    ms, status, body = await client.get(url)
                    statuses[status] += 1
                    latencies["all_pages"].append(ms)
                    if page == 1:
                        latencies["page_1"].append(ms)
                    if page == PAGES_DEEP:
                        latencies["request"].append(ms)
                    cursor = json.loads(body).get("next_cursor") if status == 200 else None
                    if page == PAGES_DEEP - 1 and cursor and not cursors_seen:
                        cursors_seen.append(cursor)
                    if not cursor:
                        break  # a walk always ends by page 20, even past the deadline
            else:
                query = "&".join(f"{k}={v}" for k, v in path_params.items())
                ms, status, _ = await client.get(f"/tickets?limit={PAGE_LIMIT}&{query}")
                latencies["request"].append(ms)
                statuses[status] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - t0
    requests = sum(statuses.values())
    result = {
        "kind": kind,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": requests,
        "rps": round(requests / elapsed, 1),
        "statuses": dict(statuses),
        "latency_ms": {k: round(v, 2) for k, v in summary(latencies["request"]).items()},
    }
    if kind == "deep":
        result["page_1_latency_ms"] = {
            k: round(v, 2) for k, v in summary(latencies["page_1"]).items()
        }
        result["cursor_page_20"] = cursors_seen[0] if cursors_seen else None
    return result


def explain(
    database_url: str, org_id: str, words: dict[str, dict[str, Any]], cursor: str | None
) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of each list variant's keyset query, as the API role."""
    after = ("infinity", 9223372036854775807)
    if cursor:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        after = (decoded["t"], decoded["id"])
    n = PAGE_LIMIT + 1
    window = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    variants = {
        "list": ("api.ticket_page_all(NULL, NULL, NULL, NULL, %s, %s, %s)", ["infinity", 9223372036854775807, n]),
        "status_open": ("api.ticket_page_status('open', NULL, NULL, NULL, %s, %s, %s)", ["infinity", 9223372036854775807, n]),
        # The search's first window (api.ticket_list widens it when it holds too few), its
        # bound a constant as there, so that the recent-search index may answer.
        "q_common": ("api.ticket_page_search(NULL, websearch_to_tsquery('simple', %s), NULL, NULL, %s, %s, %s, %s)",
                     [words["q_common"]["word"], "infinity", 9223372036854775807, n, window]),
        "q_rare": ("api.ticket_page_search(NULL, websearch_to_tsquery('simple', %s), NULL, NULL, %s, %s, %s, %s)",
                   [words["q_rare"]["word"], "infinity", 9223372036854775807, n, window]),
        "page_20": ("api.ticket_page_all(NULL, NULL, NULL, NULL, %s, %s, %s)", [after[0], after[1], n]),
    }  # fmt: skip
    plans = {}
    with db.connect(database_url, "bench-api-explain") as conn:
        # The planner settings api.ticket_list runs its queries with (SET clauses of the
        # function), but for plan_cache_mode: these statements are planned for their values.
        settings = conn.execute(
            "SELECT split_part(c, '=', 1) AS name, split_part(c, '=', 2) AS value "
            "FROM pg_proc, unnest(proconfig) AS c "
            "WHERE oid = 'api.ticket_list(text, text, text, text, integer, text)'::regprocedure "
            "AND c NOT LIKE 'plan_cache_mode=%%'"
        ).fetchall()
        for name, (call, params) in variants.items():
            with conn.transaction(force_rollback=True):
                conn.execute("SET LOCAL ROLE ticketing_api")
                conn.execute("SELECT set_config('app.org_id', %s, true)", [org_id])
                for setting in settings:
                    conn.execute(
                        "SELECT set_config(%s, %s, true)", [setting["name"], setting["value"]]
                    )
                rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM {call}", params)
                plans[name] = "\n".join(r["QUERY PLAN"] for r in rows)
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL ROLE ticketing_api")
            conn.execute("SELECT set_config('app.org_id', %s, true)", [org_id])
            rows = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT api.ticket_list(NULL, NULL, NULL, NULL, 50, NULL)"
            )
            plans["ticket_list_call"] = "\n".join(r["QUERY PLAN"] for r in rows)
    return plans


def _cpu_now(server_pid: int, database: str) -> dict[str, float]:
    return {
        "api_server": cpu_seconds(server_pid, children=True),  # its API processes too
        "postgres": sum(cpu_seconds(pid) for pid in postgres_pids(database)),
        "client": cpu_seconds(),
    }


async def load(
    base: str, server_pid: int, database: str, args: argparse.Namespace, words: dict[str, Any]
) -> list[dict[str, Any]]:
    query_params = {
        "list": {},
        "status_open": {"status": "open"},
        "q_common": {"q": words["q_common"]["word"]},
        "q_rare": {"q": words["q_rare"]["word"]},
        "deep": {},
        "detail": {},
    }
    # List kinds first, detail last: detail reads random tickets, which on a database
    # larger than the page cache leaves I/O behind that would slow whatever came next.
    kinds = [(kind, query_params[kind]) for kind in KINDS if kind in args.kinds]
    runs = [(k, c) for k in kinds if k[0] != "detail" for c in args.concurrency]
    runs += [(k, c) for k in kinds if k[0] == "detail" for c in args.concurrency]
    results = []
    cookie = await login(base)
    for (kind, params), concurrency in runs:
        # A short warm-up so that pool connections and caches exist.
        await measure(
            base, cookie, kind, params, concurrency, min(1.0, args.duration / 5),
            args.tickets, 0,
        )  # fmt: skip
        cpu_before = _cpu_now(server_pid, database)
        result = await measure(
            base, cookie, kind, params, concurrency, args.duration, args.tickets, args.seed
        )
        cpu_after = _cpu_now(server_pid, database)
        result["cpu_seconds"] = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after}
        results.append(result)
        print(_row(result), file=sys.stderr, flush=True)
    return results


def _row(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    extra = ""
    if "page_1_latency_ms" in r:
        extra = f"  (page 1 p50 {r['page_1_latency_ms']['p50']:.1f} ms; page 20 above)"
    return (
        f"  c={r['concurrency']:<3} {r['kind']:<12} n={r['requests']:<6} rps {r['rps']:>7.1f}  "
        f"p50 {lat['p50']:>7.1f}  p95 {lat['p95']:>7.1f}  p99 {lat['p99']:>7.1f} ms  "
        f"cpu api {r['cpu_seconds']['api_server']:.1f}s pg {r['cpu_seconds']['postgres']:.1f}s "
        f"client {r['cpu_seconds']['client']:.1f}s"
        f"  statuses {r['statuses']}{extra}"
    )


def seeded_database(database_url: str) -> dict[str, Any]:
    """What an earlier `--keep` run left in `database_url` (no new seeding)."""
    with db.connect(database_url, "bench-api") as conn:
        row = conn.execute(
            "SELECT (SELECT id FROM core.organizations WHERE name = %s) AS organization_id, "
            "(SELECT count(*) FROM core.tickets) AS tickets, "
            "(SELECT count(*) FROM core.messages) AS messages",
            [ORGANIZATION],
        ).fetchone()
    return {**row, "organization_id": str(row["organization_id"]), "seed_s": None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    words = corpus_words()
    with contextlib.ExitStack() as stack:
        if args.reuse_database:
            database_url = args.reuse_database
            migrate(database_url)
            seeded = seeded_database(database_url)
            print(f"reusing {seeded['tickets']} tickets", file=sys.stderr, flush=True)
        else:
            database_url = stack.enter_context(
                bench_database(args.database_url, "api", keep=args.keep)
            )
            migrate(database_url)
            print(f"seeding {args.tickets} tickets ...", file=sys.stderr, flush=True)
            seeded = seed(database_url, args.tickets, words)
            print(f"  seeded in {seeded['seed_s']} s (+ VACUUM ANALYZE, CHECKPOINT {seeded['vacuum_analyze_s']} s): "
                  f"{seeded['messages']} messages; sizes {seeded['sizes']}", file=sys.stderr, flush=True)  # fmt: skip
        args.tickets = seeded["tickets"]
        query_words = pick_query_words(database_url, words)
        with api_server(database_url, args.api_processes) as (base, proc):
            database = conninfo_to_dict(database_url)["dbname"]
            results = asyncio.run(load(base, proc.pid, database, args, query_words))
        cursor = next((r.get("cursor_page_20") for r in results if r.get("cursor_page_20")), None)
        plans = explain(database_url, seeded["organization_id"], query_words, cursor)
    for name, plan in plans.items():
        print(f"\n-- EXPLAIN (ANALYZE, BUFFERS) {name}\n{plan}", file=sys.stderr)
    return {
        "benchmark": "api",
        "database": "embedded" if not (args.database_url or args.reuse_database) else "server",
        "duration_s": args.duration,
        **seeded,
        "query_words": query_words,
        "results": results,
        "explain": plans,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--database-url", help="server URL; a bench_api_* database is created")
    parser.add_argument(
        "--duration", type=float, default=10, help="seconds per kind and concurrency"
    )
    parser.add_argument("--concurrency", default="1,16", help="comma-separated, e.g. 1,16")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated subset of {','.join(KINDS)}",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--api-processes", type=int, default=2, help="`ticketing serve --processes` (one per core)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--reuse-database", metavar="URL", help="measure a database kept by --keep (no seeding)"
    )
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(args.kinds) - set(KINDS):
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    result = run(args)
    print(json.dumps(result, default=str), flush=True)
    bad = [r for r in result["results"] if set(r["statuses"]) - {200, 404}]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
