"""Smoke runs of the benchmarks (bench/): tiny sizes, as subprocesses, a few seconds each.

Benchmarks are not tests; this only proves the harness still runs end to end against the
current product and reports sane figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Long: each benchmark at its smoke size, in subprocesses.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SERVER_URL = os.environ.get("TEST_DATABASE_URL")


def _run(module: str, *args: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", module, *args]
    if SERVER_URL:
        cmd += ["--database-url", SERVER_URL]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=timeout, check=False)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, stderr[-4000:]
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    assert lines, stderr[-4000:]
    return json.loads(lines[-1])


def test_ingest_smoke() -> None:
    result = _run("bench.ingest", "--messages", "60", "--concurrency", "4", "--quiet", timeout=180)
    assert result["messages"] == 60
    assert result["occurrences"] == 60
    assert result["routed"] == 60
    assert result["failed"] == 0
    assert not result["timed_out"]
    assert result["msgs_per_s"] > 0
    assert result["tickets"] > 0
    assert set(result["stages"]) == {"fetch", "parse", "stitch", "route"}
    assert result["cpu_seconds"]["workers"] > 0
    assert result["peak_worker_rss_mb"] > 0


def test_api_smoke() -> None:
    result = _run("bench.api", "--tickets", "2000", "--duration", "0.5", timeout=180)
    assert result["tickets"] == 2000
    assert 2000 <= result["messages"] <= 6000
    kinds = {(r["kind"], r["concurrency"]) for r in result["results"]}
    expected = {"list", "status_open", "q_common", "q_rare", "deep", "detail"}
    assert kinds == {(k, c) for k in expected for c in (1, 16)}
    for r in result["results"]:
        assert r["requests"] > 0, r
        assert set(r["statuses"]) <= {"200"}, r  # JSON keys are strings
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"], r
    assert result["query_words"]["q_common"]["matching_tickets"] > 0
    assert set(result["explain"]) >= {"list", "status_open", "q_common", "page_20"}
    assert "Index" in result["explain"]["list"]


def test_live_smoke() -> None:
    """bench.live with push on: 3 s at 10 msg/s and a burst of 50, against running workers
    and the API receiving pushes. Every message exactly once; latency bound generous (the
    poll interval is 60 s, so anything far below it came by push)."""
    result = _run(
        "bench.live",
        "--push", "on", "--rate", "10", "--duration", "3", "--burst", "50", "--singles", "1",
        "--settle", "1",
        timeout=180,
    )  # fmt: skip
    (mode,) = result["modes"]
    assert mode["push"] and mode["sync_poll_seconds"] == 60
    check = mode["check"]
    assert check["delivered"] == 1 + 30 + 50
    assert mode["ingested_exactly_once"], check
    assert check["routed"] == check["occurrences"] == check["messages"] == check["delivered"]
    assert check["gmail_fetches"]["total"] == check["delivered"]
    assert check["failed"] == 0
    assert mode["pushes_by_status"].get("204", 0) > 0
    assert set(mode["pushes_by_status"]) == {"204"}
    for phase in ("single", "steady", "burst"):
        latency = mode["latency"][phase]["arrival_to_routed_s"]
        assert 0 < latency["p50"] <= latency["p95"] < 20, (phase, latency)
    assert mode["single_median"]["routed_at"] > 0


def test_faults_smoke() -> None:
    """A SIGKILLed worker, a database restart and Gmail faults lose, double and misfile
    nothing (bench.faults --quick: its own private PostgreSQL, never TEST_DATABASE_URL,
    because it restarts the server)."""
    cmd = [sys.executable, "-m", "bench.faults", "--quick", "--quiet"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=180, check=False)
    stderr = done.stderr.decode("utf-8", "replace")
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    assert lines, stderr[-4000:]
    result = json.loads(lines[-1])
    report = (
        stderr[-3000:]
        + "\n"
        + json.dumps(
            {k: result[k] for k in ("faults", "worker_self_exits", "evidence")}, default=str
        )[:6000]
    )
    assert result["messages"] == 200
    assert result["lost"] == 0, report
    assert result["duplicated"] == 0, report
    assert result["wrong_ticket"] == 0, report
    assert result["routed"] == 200, report
