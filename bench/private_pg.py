"""A private PostgreSQL server that a benchmark may stop, crash and restart at will.

The fault benchmark restarts its database; it must never touch a server other work
depends on. This starts one of its own: `initdb` into a temporary directory, listening on
a free loopback port (never 5432) and on a Unix socket inside that directory. The
binaries are those the `pgserver` wheel bundles (a dependency, so a fresh machine has them;
PostgreSQL 16.2 in the pinned 0.1.4), else the Debian package's /usr/lib/postgresql/15/bin.

Running as root (containers), the server runs as an unprivileged user as PostgreSQL
requires: `pgserver`'s own service user, created the way pgserver creates it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")
SERVICE_USER = "pgserver"
# Stop modes of pg_ctl: "fast" (clean shutdown, clients disconnected) and "immediate"
# (every process killed at once; crash recovery on the next start).
STOP_MODES = ("fast", "immediate")


def postgres_bin_dir() -> Path:
    """pgserver's bundled binaries, else the distribution's PostgreSQL 15."""
    # Located without importing pgserver (its import sets up runtime directories).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "pg_ctl").is_file():
            return bundled
    if (DEBIAN_BIN / "pg_ctl").is_file():
        return DEBIAN_BIN
    raise RuntimeError("no PostgreSQL binaries: install pgserver or postgresql-15")


def free_loopback_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now (never 5432)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 5432:
            return port


class PrivatePostgres:
    """One PostgreSQL cluster in `root`; start(), stop(mode), restart(mode)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.bin = postgres_bin_dir()
        self.root = root
        self.pgdata = root / "pgdata"
        self.socket_dir = root / "socket"
        self.logfile = root / "postgres.log"
        self.port = port or free_loopback_port()
        self.user: str | None = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.user = SERVICE_USER
            self._ensure_service_user()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ensure_service_user(self) -> None:
        import pwd

        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            subprocess.run(  # noqa: S603
                ["useradd", "-s", "/bin/sh", SERVICE_USER],  # noqa: S607
                check=True,
                capture_output=True,
            )
        # The service user must be able to reach the binaries and the data directory.
        for path in (self.root, *self.root.parents):
            mode = path.stat().st_mode
            with contextlib.suppress(PermissionError):
                path.chmod(mode | 0o055)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.user,
        )

    def init(self) -> None:
        """initdb (trust authentication, UTF-8) and the server settings of a bench."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.user is not None:
            shutil.chown(self.root, self.user)
            shutil.chown(self.socket_dir, self.user)
        self._run(
            "initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "-U",
            "postgres", "--no-instructions",
        )  # fmt: skip
        with (self.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# bench.private_pg\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\n"
                "logging_collector = off\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.logfile), "-w", "-t", "60",
                  "start")  # fmt: skip
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        if mode not in STOP_MODES:
            raise ValueError(f"unknown stop mode {mode!r}")
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        done = subprocess.run(  # noqa: S603
            [str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            check=False,
            user=self.user,
        )
        return done.returncode == 0

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.logfile.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def private_postgres(keep: bool = False) -> Iterator[PrivatePostgres]:
    """A fresh private cluster, started; stopped (immediately) and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="bench-private-pg-"))
    server = PrivatePostgres(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            with contextlib.suppress(subprocess.SubprocessError):
                server.stop("immediate")
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
