"""`ticketing`: the one command-line entry point (demo, migrate, serve, worker, parse, import-mbox,
mailbox-register)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.log import access_logger

from kernel import db
from kernel.migrate import migrate
from kernel.settings import ConfigError, Settings, load_settings

log = logging.getLogger("ticketing")


def _migrate_if_embedded(settings: Settings, url: str, force: bool) -> None:
    # The embedded database belongs to this checkout: keep it current without a manual step.
    if force or db.uses_embedded(settings):
        migrate(url)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    result = migrate(db.database_url(settings))
    applied = ", ".join(result.applied) or "none pending"
    print(f"migrations applied: {applied}; sql code {result.code_hash[:12]} installed")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from app.server import create_app

    if args.processes > 1 and db.uses_embedded(settings):
        print("serve: --processes above 1 needs DATABASE_URL", file=sys.stderr)
        return 2
    url = db.database_url(settings)
    _migrate_if_embedded(settings, url, args.migrate)
    print(f"API on http://{args.host}:{args.port} (database: {_describe(settings)})", flush=True)
    if args.processes > 1:
        return _serve_processes(args)
    web.run_app(
        create_app(settings, url),
        host=args.host,
        port=args.port,
        print=None,
        access_log=access_logger if settings.access_log else None,
        reuse_port=args.reuse_port,
    )
    return 0


def _serve_processes(args: argparse.Namespace) -> int:
    """Run `args.processes` single-process servers sharing the port (SO_REUSEPORT).

    One Python process serves on one core; the kernel spreads connections over the
    processes. A stop signal is passed on to every child; the first child to exit stops
    the others.
    """
    import subprocess
    import time

    cmd = [sys.executable, "-m", "cli.main", "serve", "--host", args.host, "--port",
           str(args.port), "--processes", "1", "--reuse-port"]  # fmt: skip
    children = [subprocess.Popen(cmd) for _ in range(args.processes)]  # noqa: S603
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:  # a second signal would cut a child's graceful shutdown short
            stopping = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        stop(signal.SIGTERM, None)
        codes = [child.wait() for child in children]
    return 0 if not any(codes) else 1


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from worker.app import app, make_connector

    url = db.database_url(settings)
    _migrate_if_embedded(settings, url, args.migrate)

    from worker.pipeline import Runtime
    from worker.runner import run_supervised, run_until_idle

    runtime = Runtime.from_settings(settings)

    async def run() -> None:
        connector = make_connector(url, max_size=args.concurrency + 2)
        with app.replace_connector(connector) as worker_app:
            if args.until_idle:
                async with worker_app.open_async():
                    await run_until_idle(
                        worker_app,
                        concurrency=args.concurrency,
                        stalled_after=args.stalled_after,
                        runtime=runtime,
                    )
                return
            # Runs until SIGTERM or SIGINT, riding out database restarts and outages.
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            await run_supervised(
                worker_app,
                url,
                stop,
                concurrency=args.concurrency,
                sync_poll_seconds=settings.sync_poll_seconds,
                runtime=runtime,
            )

    try:
        asyncio.run(run())
    finally:
        runtime.close()
    return 0


def cmd_import_mbox(settings: Settings, args: argparse.Namespace) -> int:
    from cli.importer import import_mbox
    from kernel.blobstore import blob_store_from_settings

    url = db.database_url(settings)
    _migrate_if_embedded(settings, url, force=False)
    result = import_mbox(
        url, args.file, args.mailbox, args.organization, blob_store_from_settings(settings)
    )
    print(json.dumps(result))
    if args.run_worker:
        args.concurrency, args.until_idle, args.stalled_after, args.migrate = 4, True, None, False
        return cmd_worker(settings, args)
    return 0


def cmd_parse(settings: Settings, args: argparse.Namespace) -> int:
    from worker.mime import parse_files

    errors = parse_files(args.files, sys.stdout, journal_address=args.journal_address)
    return 1 if errors else 0


def cmd_mailbox_register(settings: Settings, args: argparse.Namespace) -> int:
    """Register a Gmail journal mailbox from an existing refresh token (encrypted at rest)."""
    from cli.mailbox_admin import RegistrationError, register_gmail_mailbox

    if args.refresh_token_file is not None:
        token = Path(args.refresh_token_file).read_text(encoding="utf-8")
    else:
        token = os.environ.get(args.refresh_token_env, "")
    try:
        result = register_gmail_mailbox(
            settings,
            db.database_url(settings),
            organization=args.organization,
            email=args.email,
            refresh_token=token,
            backfill=not args.no_backfill,
        )
    except (RegistrationError, ConfigError, OSError) as exc:
        print(f"mailbox-register: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def cmd_org_create(settings: Settings, args: argparse.Namespace) -> int:
    """Create an organisation with its first admin (and verified Workspace domains)."""
    from cli.org_admin import OrganizationError, create_organization

    url = db.database_url(settings)
    _migrate_if_embedded(settings, url, force=False)
    try:
        result = create_organization(
            url,
            name=args.name,
            admin_email=args.admin,
            domains=args.domain,
            join_policy=args.join_policy,
            domain_join_role=args.domain_role,
        )
    except OrganizationError as exc:
        print(f"org-create: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """The product end to end on a sample mailbox: embedded database, fake Gmail, pipeline, API."""
    from cli.demo import run_demo

    logging.getLogger().setLevel(logging.WARNING)  # the progress bar tells what happens
    result = run_demo(
        settings,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        serve=not args.no_serve,
        reset=args.reset,
    )
    return 0 if result.tickets > 0 else 1


def _describe(settings: Settings) -> str:
    return (
        "embedded, " + str(settings.embedded_pg_dir)
        if db.uses_embedded(settings)
        else "DATABASE_URL"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from cli.demo import DEFAULT_DATA_DIR

    demo = sub.add_parser(
        "demo",
        help="run the product on a bundled sample mailbox (embedded PostgreSQL, fake Gmail), "
        "then serve the API",
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="database and blobs of the demo (default: var/demo)",
    )
    demo.add_argument(
        "--no-serve", action="store_true", help="stop after the pipeline and the summary"
    )
    demo.add_argument("--reset", action="store_true", help="delete the data directory first")
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("migrate", help="apply migrations and reload the SQL code").set_defaults(
        func=cmd_migrate
    )

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        help="API processes sharing the port, e.g. one per core (needs DATABASE_URL)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument(
        "--migrate", action="store_true", help="migrate first (always when embedded)"
    )
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a procrastinate worker")
    worker.add_argument("--concurrency", type=int, default=4)
    worker.add_argument(
        "--until-idle", action="store_true", help="exit once no job is waiting or running"
    )
    worker.add_argument(
        "--stalled-after",
        type=float,
        default=None,
        help="with --until-idle: seconds without heartbeat before a dead worker's jobs are "
        "retried at start (default: the SQL limit, logic.stalled_worker_seconds())",
    )
    worker.add_argument(
        "--migrate", action="store_true", help="migrate first (always when embedded)"
    )
    worker.set_defaults(func=cmd_worker)

    parse = sub.add_parser(
        "parse", help="parse .eml files and print one JSON object per file (no database)"
    )
    parse.add_argument("files", nargs="+", metavar="FILE")
    parse.add_argument(
        "--journal-address", help="the journal mailbox's own address (skipped in Delivered-To)"
    )
    parse.set_defaults(func=cmd_parse)

    importer = sub.add_parser(
        "import-mbox", help="feed an mbox (e.g. Google Takeout) through the ingestion pipeline"
    )
    importer.add_argument("file", type=Path, metavar="FILE")
    importer.add_argument("--mailbox", required=True, metavar="EMAIL", help="journal address")
    importer.add_argument(
        "--organization", default="Default", help="organisation (created if absent)"
    )
    importer.add_argument(
        "--run-worker", action="store_true", help="then process the pipeline until idle"
    )
    importer.set_defaults(func=cmd_import_mbox)

    register = sub.add_parser(
        "mailbox-register", help="register a Gmail journal mailbox from a refresh token"
    )
    register.add_argument("--organization", required=True, help="organization name")
    register.add_argument("--email", required=True, help="the journal mailbox's address")
    token_source = register.add_mutually_exclusive_group(required=True)
    token_source.add_argument("--refresh-token-file", metavar="FILE")
    token_source.add_argument("--refresh-token-env", metavar="VAR")
    register.add_argument(
        "--no-backfill", action="store_true", help="do not queue the initial backfill"
    )
    register.set_defaults(func=cmd_mailbox_register)

    org = sub.add_parser(
        "org-create", help="create an organisation and its first admin (Sign in with Google)"
    )
    org.add_argument("--name", required=True, help="the organisation's name")
    org.add_argument(
        "--admin", required=True, metavar="EMAIL", help="its first admin's Google e-mail"
    )
    org.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="D",
        help="a verified Google Workspace domain of the organisation (the hd claim); repeatable",
    )
    org.add_argument(
        "--join-policy",
        choices=("invite_only", "domain"),
        default=None,
        help="invite_only (default): invited e-mails only; domain: anyone of --domain joins",
    )
    org.add_argument(
        "--domain-role",
        choices=("agent", "viewer"),
        default=None,
        help="the role people joining by domain get (default agent)",
    )
    org.set_defaults(func=cmd_org_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        settings.check_startup()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(settings, args)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"{args.command}: the address is already in use ({exc})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
