"""The `ticketing` command as a separate process: environment, a free port, a served API.

Shared by the command-line tests and the schemathesis run (and the private PostgreSQL's port).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

TICKETING = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without DATABASE_URL and APP_ENV, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "APP_ENV"}}
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """`ticketing serve ARGS...` in the background, its output in `log_path`."""
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            [*TICKETING, "serve", *args], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        ) as process,
    ):
        yield process


def healthz_once_up(port: int, process: subprocess.Popen, seconds: float):
    """GET /healthz as soon as the server answers; None if it exits or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return http_get(f"http://127.0.0.1:{port}/healthz")
        except OSError:
            time.sleep(0.2)
    return None


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
