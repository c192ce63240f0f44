"""The `callbalance` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from workers.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError
from workers.migrate import MigrationError, migrate
from workers.paths import STATE_DIR
from workers.settings import DEFAULT_SERVE_PORT, SettingsError

DEFAULT_DB_PORT = 54322


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("CALLBALANCE_DATA_DIR") or STATE_DIR / "pgdata")


def _db_port(args: argparse.Namespace) -> int:
    return int(args.db_port or os.environ.get("CALLBALANCE_DB_PORT") or DEFAULT_DB_PORT)


def _wait_for_stop() -> None:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.wait(0.5):
        pass


def cmd_migrate(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("DATABASE_URL")
    server = None
    if not url:
        server = EmbeddedPostgres(_data_dir(args), port=_db_port(args))
        url = server.start()
    try:
        migrate(url)
    finally:
        if server is not None:
            server.stop()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    url = os.environ.get("DATABASE_URL")
    server = None
    if not url:
        server = EmbeddedPostgres(_data_dir(args), port=_db_port(args))
        print(f"starting embedded Postgres in {server.data_dir} ...", flush=True)
        url = server.start()
    try:
        migrate(url)
        print(f"database: {url}", flush=True)
        print("ready; Ctrl-C stops", flush=True)
        _wait_for_stop()
    finally:
        if server is not None:
            print("stopping Postgres ...", flush=True)
            server.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from workers.settings import load_settings

    load_settings()  # fail fast, naming every missing variable
    uvicorn.run(
        "workers.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level="warning",
    )
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from workers.db import SyncDatabase
    from workers.jobs import Jobs
    from workers.logs import setup_logging
    from workers.providers import make_stripe_client, make_twilio_client
    from workers.settings import load_settings

    settings = load_settings()
    setup_logging()
    db = SyncDatabase(settings.database_url)
    jobs = Jobs(
        db=db,
        stripe_client=make_stripe_client(settings.stripe_secret_key, settings.stripe_api_base),
        twilio=make_twilio_client(
            settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base
        ),
        poll_seconds=args.poll_seconds,
    )

    def handler(signum: int, frame: FrameType | None) -> None:
        jobs.stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        jobs.run()
    finally:
        db.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbalance", description="Call Balance: a prepaid wallet for AI call minutes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=fn)
        return p

    for name, fn, text in (
        ("up", cmd_up, "run the whole system locally until Ctrl-C"),
        ("migrate", cmd_migrate, "apply the local platform and pending migrations"),
    ):
        p = add(name, fn, text)
        p.add_argument("--data-dir", help="embedded Postgres data directory")
        p.add_argument("--db-port", type=int, help=f"embedded Postgres port ({DEFAULT_DB_PORT})")
        if name == "migrate":
            p.add_argument("--database-url", help="migrate this database instead")
    serve = add("serve", cmd_serve, "run the webhook worker service (Stripe and Twilio)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_SERVE_PORT)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    jobs = add("jobs", cmd_jobs, "run the background jobs: auto-refill, reconciliation, renewals")
    jobs.add_argument("--poll-seconds", type=float, default=5.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (EmbeddedPostgresError, MigrationError, SettingsError) as exc:
        print(f"callbalance: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
