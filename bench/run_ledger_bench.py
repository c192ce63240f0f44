"""Benchmark billing.settle_call next to pgbench's built-in tpcb-like, on one server.

    .venv/bin/python bench/run_ledger_bench.py [--duration 10] [--rounds 3] [--accounts 1000]

Starts a throwaway durable embedded Postgres (fsync on), applies the
migrations, creates `--accounts` classic accounts with money and ten settled
calls each, initializes pgbench's tables at `--scale`, then measures:

- tpcb-like at 1 and 8 clients (the yardstick),
- bench/settle_call.sql at 1 and 8 clients (random accounts; the session acts
  as service_role, so one call is one statement and one transaction),
- bench/settle_call_set_local_role.sql at 8 clients (begin; set local role
  service_role; settle; end — the per-transaction role switch of PostgREST),
- bench/settle_call_with_hold.sql at 8 clients (every call authorized first, as in
  production: the settlement also releases the call's hold; the holds are
  created before each run),
- bench/settle_call_one_account.sql at 8 clients (all on one account's row lock).

With --advisor-search-path (the default), every function of the schemas
billing, public and monitoring that has no search_path setting gets
`set search_path = ''` before the runs, as Supabase's advisor asks (its
function_search_path_mutable lint): the ratio must hold with that setting on
every helper. --workloads picks a subset (e.g. --workloads settle8,hold8).

Each settle workload runs right after a tpcb-like run at the same number of
clients, `--rounds` times, `--duration` seconds each; the report gives each
workload's median tps and the median of its ratios to the tpcb-like run just
before it. Pairing and repeating keep a noisy neighbour (a shared machine)
from favouring one side. The server is destroyed afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.local.embedded_pg import EmbeddedPostgres, default_bindir, free_port  # noqa: E402
from workers.ops.migrate import migrate  # noqa: E402

BENCH = Path(__file__).resolve().parent
TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")


@dataclass(frozen=True)
class Run:
    name: str
    clients: int
    args: tuple[str, ...]
    role: str | None = None  # set for the whole session through PGOPTIONS


def seed_accounts(url: str, accounts: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into auth.users (id, email, raw_app_meta_data) "
            "select md5('bench-' || n)::uuid, 'bench-' || n || '@example.test', "
            '\'{"plan": "classic"}\'::jsonb from generate_series(1, %s) as n',
            (accounts,),
        )
        conn.execute(
            "select billing.credit_topup(md5('bench-' || n)::uuid, 1000000, 'pi_bench_' || n) "
            "from generate_series(1, %s) as n",
            (accounts,),
        )
        # Some history, as a live system has: ten settled calls per account.
        conn.execute("set role service_role")
        conn.execute(
            "select count(billing.settle_call('CA-seed-' || n || '-' || k, "
            "md5('bench-' || n)::uuid, 30 + 7 * k)) "
            "from generate_series(1, %s) as n, generate_series(1, 10) as k",
            (accounts,),
        )
        conn.execute("reset role")
        conn.execute("vacuum analyze")


def pin_search_paths(url: str) -> int:
    """`set search_path = ''` on every function that has none (what the advisor asks)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select p.oid::regprocedure::text from pg_catalog.pg_proc as p "
            "join pg_catalog.pg_namespace as n on n.oid = p.pronamespace "
            "where n.nspname in ('billing', 'public', 'monitoring') and p.prokind = 'f' "
            "and not exists (select from pg_catalog.pg_depend as d "
            "where d.objid = p.oid and d.deptype = 'e') "
            "and not exists (select from pg_catalog.unnest(p.proconfig) as c "
            "where c like 'search_path=%%')"
        ).fetchall()
        for (signature,) in rows:
            conn.execute(f"alter function {signature} set search_path = ''")
    return len(rows)


def create_holds(url: str, accounts: int, count: int) -> None:
    """Open holds for the next `count` calls of settle_call_with_hold.sql."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "delete from public.call_holds where call_sid like 'CAhold-%%' and released_at is null"
        )
        conn.execute("vacuum public.call_holds")
        row = conn.execute("select nextval('public.bench_hold_seq')").fetchone()
        start = row[0] if row else 0
        conn.execute(
            "insert into public.call_holds (call_sid, user_id, held_amount, held_free_minutes, "
            "max_seconds, created_at, expires_at) "
            "select 'CAhold-' || n, md5('bench-' || (n %% %s + 1))::uuid, 0, 0, 3600, now(), "
            "now() + interval '75 minutes' from generate_series(%s::bigint, %s::bigint) as n",
            (accounts, start + 1, start + count),
        )
        conn.execute("analyze public.call_holds")


def pgbench(bindir: Path, url: str, *args: str, role: str | None = None) -> str:
    result = subprocess.run(
        [str(bindir / "pgbench"), *args, url],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGOPTIONS": f"-c role={role}" if role else ""},
    )
    if result.returncode != 0:
        raise SystemExit(f"pgbench {' '.join(args)} failed:\n{result.stderr}\n{result.stdout}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each workload")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale for tpcb-like")
    parser.add_argument(
        "--advisor-search-path",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="set search_path = '' on every function without one first (default: on)",
    )
    parser.add_argument(
        "--workloads",
        default="settle1,settle8,local-role8,hold8,one8",
        help="comma-separated subset of settle1,settle8,local-role8,hold8,one8",
    )
    options = parser.parse_args()

    bindir = default_bindir()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data", port=free_port(), durable=True)
        server.start()
        try:
            url = server.url
            print(f"server: PostgreSQL at {url} (durable), {os.cpu_count()} CPUs", flush=True)
            migrate(url, echo=lambda _line: None)
            if options.advisor_search_path:
                pinned = pin_search_paths(url)
                print(f"search_path = '' set on {pinned} functions that had none", flush=True)
            seed_accounts(url, options.accounts)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("create sequence public.bench_hold_seq")
                conn.execute("grant usage on sequence public.bench_hold_seq to service_role")
            pgbench(bindir, url, "-i", "-q", "-s", str(options.scale))
            common = ("-T", str(options.duration), "-M", "prepared", "-n")
            accounts = ("-D", f"accounts={options.accounts}")
            settle = ("-f", str(BENCH / "settle_call.sql"), *accounts)
            local_role = ("-f", str(BENCH / "settle_call_set_local_role.sql"), *accounts)
            one = ("-f", str(BENCH / "settle_call_one_account.sql"))
            hold = ("-f", str(BENCH / "settle_call_with_hold.sql"), *accounts)
            service = "service_role"
            tpcb1 = Run("tpcb-like", 1, ("-b", "tpcb-like", "-c", "1", "-j", "1"))
            tpcb8 = Run("tpcb-like", 8, ("-b", "tpcb-like", "-c", "8", "-j", "2"))
            # Each settle workload runs right after the tpcb-like run it is compared with.
            pairs = {
                "settle1": (tpcb1, Run("settle_call", 1, (*settle, "-c", "1", "-j", "1"), service)),
                "settle8": (tpcb8, Run("settle_call", 8, (*settle, "-c", "8", "-j", "2"), service)),
                "local-role8": (
                    tpcb8,
                    Run("settle_call, set local role", 8, (*local_role, "-c", "8", "-j", "2")),
                ),
                "hold8": (
                    tpcb8,
                    Run("settle_call, with hold", 8, (*hold, "-c", "8", "-j", "2"), service),
                ),
                "one8": (
                    tpcb8,
                    Run("settle_call, one account", 8, (*one, "-c", "8", "-j", "2"), service),
                ),
            }
            chosen = [name.strip() for name in options.workloads.split(",") if name.strip()]
            unknown = sorted(set(chosen) - set(pairs))
            if unknown:
                raise SystemExit(f"unknown workloads: {', '.join(unknown)}")
            runs = [run for name in chosen for run in pairs[name]]
            samples: dict[tuple[str, int], list[float]] = {}
            ratios: dict[tuple[str, int], list[float]] = {}
            for round_number in range(1, options.rounds + 1):
                previous = 0.0
                for run in runs:
                    if run.name == "settle_call, with hold":
                        create_holds(url, options.accounts, options.duration * 10_000)
                    out = pgbench(bindir, url, *common, *run.args, role=run.role)
                    match = TPS.search(out)
                    if match is None:
                        raise SystemExit(f"no tps in pgbench output:\n{out}")
                    tps = float(match.group(1))
                    key = (run.name, run.clients)
                    samples.setdefault(key, []).append(tps)
                    if run.name == "tpcb-like":
                        previous = tps
                    else:
                        ratios.setdefault(key, []).append(tps / previous)
                    print(
                        f"  round {round_number}: {run.name} @ {run.clients}: {tps:,.0f} tps",
                        flush=True,
                    )
            results = {key: statistics.median(values) for key, values in samples.items()}
            with psycopg.connect(url) as conn:
                drift = conn.execute("select count(*) from monitoring.ledger_drift").fetchone()
                calls = conn.execute("select count(*) from public.twilio_call_logs").fetchone()
        finally:
            server.destroy()

    print()
    print("| workload | clients | median tps | median ratio to the tpcb-like run before it |")
    print("|---|---:|---:|---:|")
    for key, tps in results.items():
        ratio = f"{statistics.median(ratios[key]):.2f}x" if key in ratios else "1.00x"
        print(f"| {key[0]} | {key[1]} | {tps:,.0f} | {ratio} |")
    print()
    settled = calls[0] if calls else 0
    print(f"calls settled: {settled}; ledger drift rows: {drift[0] if drift else '?'}")


if __name__ == "__main__":
    main()
