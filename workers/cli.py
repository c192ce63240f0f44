"""The `callbalance` command: it parses the command line and hands each command on.

Every command lives with what it is about: `up` in `workers.local`, `serve`
and `jobs` in `workers.service`, `migrate`, `simulate`, `report`, `user`,
`change-plan` and `adjust-balance` in `workers.ops`. Each is imported only
when it runs, so the deployed commands never load the local platform.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from workers import CommandError
from workers.paths import STATE_DIR
from workers.service.settings import DEFAULT_SERVE_PORT

DEFAULT_DB_PORT = 54322


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(
        getattr(args, "state_dir", None) or os.environ.get("CALLBALANCE_STATE_DIR") or STATE_DIR
    )


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(
        args.data_dir or os.environ.get("CALLBALANCE_DATA_DIR") or _state_dir(args) / "pgdata"
    )


def _db_port(args: argparse.Namespace) -> int:
    return int(args.db_port or os.environ.get("CALLBALANCE_DB_PORT") or DEFAULT_DB_PORT)


def cmd_up(args: argparse.Namespace) -> int:
    from workers.local.up import Ports, run_up

    ports = Ports(
        db=_db_port(args),
        functions=args.functions_port,
        worker=args.worker_port,
        stripe=args.stripe_port,
        twilio=args.twilio_port,
        pooler=args.pooler_port,
    )
    return run_up(_state_dir(args), ports)


def cmd_migrate(args: argparse.Namespace) -> int:
    from workers.ops.migrate import migrate_command

    url = args.database_url or os.environ.get("DATABASE_URL")
    return migrate_command(url, _data_dir(args), _db_port(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from workers.service.app import serve

    return serve(args.host, args.port, args.workers)


def cmd_jobs(args: argparse.Namespace) -> int:
    from workers.service.jobs import run_jobs

    return run_jobs(args.poll_seconds)


def cmd_report(args: argparse.Namespace) -> int:
    from workers.ops.report import report_command

    return report_command(_state_dir(args), args.json, args.user)


def cmd_user_create(args: argparse.Namespace) -> int:
    from workers.ops.users import create_user_command

    return create_user_command(_state_dir(args), args.email, args.plan)


def cmd_simulate(args: argparse.Namespace) -> int:
    from workers.ops.simulate import simulate_command

    return simulate_command(_state_dir(args), args.plan, args.users)


def cmd_change_plan(args: argparse.Namespace) -> int:
    from workers.ops.accounts import change_plan_command

    return change_plan_command(_state_dir(args), args.user, args.plan, args.key, args.note)


def cmd_adjust_balance(args: argparse.Namespace) -> int:
    from workers.ops.accounts import adjust_balance_command

    direction, amount = (
        ("credit", args.credit) if args.credit is not None else ("debit", args.debit)
    )
    return adjust_balance_command(
        _state_dir(args), args.user, direction, amount, args.reason, args.key
    )


def cmd_stripe_webhook_create(args: argparse.Namespace) -> int:
    from workers.ops.stripe_webhook import create_endpoint_command

    return create_endpoint_command(args.url)


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

    up = add("up", cmd_up, "run the whole system locally until Ctrl-C")
    up.add_argument("--state-dir", help="where data, logs and up.json live (.callbalance)")
    up.add_argument("--db-port", type=int, help=f"embedded Postgres port ({DEFAULT_DB_PORT})")
    up.add_argument("--functions-port", type=int, default=54321)
    up.add_argument("--worker-port", type=int, default=DEFAULT_SERVE_PORT)
    up.add_argument("--stripe-port", type=int, default=12111, help="Stripe stand-in port")
    up.add_argument("--twilio-port", type=int, default=12112, help="Twilio stand-in port")
    up.add_argument("--pooler-port", type=int, default=54329, help="PgBouncer port")

    mig = add("migrate", cmd_migrate, "apply the local platform and pending migrations")
    mig.add_argument("--data-dir", help="embedded Postgres data directory")
    mig.add_argument("--db-port", type=int, help=f"embedded Postgres port ({DEFAULT_DB_PORT})")
    mig.add_argument("--database-url", help="migrate this database instead")
    serve = add("serve", cmd_serve, "run the webhook worker service (Stripe and Twilio)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_SERVE_PORT)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    jobs = add("jobs", cmd_jobs, "run the background jobs: auto-refill, reconciliation, renewals")
    jobs.add_argument("--poll-seconds", type=float, default=5.0)
    report = add("report", cmd_report, "balances, ledger, drift, revenue (non-zero on drift)")
    report.add_argument("--state-dir")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument("--user", metavar="EMAIL", help="one account's history")

    sim = add("simulate", cmd_simulate, "drive a whole customer journey through `up`, checked")
    sim.add_argument("--plan", choices=["starter", "classic", "both"], default="both")
    sim.add_argument("--users", type=int, default=1, help="journeys per plan, in parallel")
    sim.add_argument("--state-dir")

    user = sub.add_parser("user", help="local users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help="create a local user and print a signed JWT")
    create.set_defaults(func=cmd_user_create)
    create.add_argument("--email", required=True)
    create.add_argument("--plan", help="classic or starter (default: the default plan)")
    create.add_argument("--state-dir")

    plan = add("change-plan", cmd_change_plan, "move an account to another plan (support)")
    plan.add_argument("--user", required=True, metavar="EMAIL|ID", help="the account")
    plan.add_argument("--plan", required=True, help="the new plan's id, e.g. classic")
    plan.add_argument("--key", required=True, help="idempotency key, e.g. the ticket id")
    plan.add_argument("--note", help="why, kept in the ledger entry")
    plan.add_argument("--state-dir")

    adjust = add("adjust-balance", cmd_adjust_balance, "credit or debit a balance (support)")
    adjust.add_argument("--user", required=True, metavar="EMAIL|ID", help="the account")
    direction = adjust.add_mutually_exclusive_group(required=True)
    direction.add_argument("--credit", metavar="DOLLARS", help="add this amount, e.g. 5.00")
    direction.add_argument("--debit", metavar="DOLLARS", help="remove this amount")
    adjust.add_argument("--reason", required=True, help="shown to the customer")
    adjust.add_argument("--key", required=True, help="idempotency key, e.g. the ticket id")
    adjust.add_argument("--state-dir")

    hook = sub.add_parser("stripe-webhook", help="the Stripe webhook endpoint")
    hook_sub = hook.add_subparsers(dest="hook_command", required=True)
    hook_create = hook_sub.add_parser(
        "create", help="create it with the pinned API version and the events to enable"
    )
    hook_create.set_defaults(func=cmd_stripe_webhook_create)
    hook_create.add_argument("--url", required=True, help="PUBLIC_URL/stripe/webhook")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"callbalance: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
