"""Load benchmark of the Twilio status callback of `callbalance serve`.

One durable embedded Postgres (fsync on). For the database alone, pgbench
runs the statement the worker runs per event — `select
billing.apply_call_status(<the callback's fields>)` as service_role — each on
a call authorized beforehand. Then `callbalance serve --workers N` in a
subprocess and `--concurrency` keep-alive connections posting signed dialed-leg
status callbacks (CallSid, ParentCallSid = an authorized call, CallStatus
completed, CallDuration 1-600 s; Twilio's real X-Twilio-Signature) for
`--duration` seconds after a short warm-up. Prints events/s and their ratio to
the database alone, p50/p90/p99 latency, the worker's peak RSS, and checks the
ledger after (`monitoring.ledger_drift` empty, one call log per settlement).

The worker, helper client and RSS sampler are those of bench/stripe_webhooks.py.

    .venv/bin/python bench/twilio_callbacks.py                # workers 2, 30 s
    .venv/bin/python bench/twilio_callbacks.py --duration 10
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stripe_webhooks import (  # noqa: E402
    Connection,
    Result,
    RssSampler,
    cpu_seconds,
    fresh_database,
    postgres_tree,
    tree,
    worker,
)

from workers.local.embedded_pg import EmbeddedPostgres, default_bindir, free_port  # noqa: E402
from workers.local.standins.signing import twilio_signature  # noqa: E402

ACCOUNT_SID = "AC" + "0" * 32  # as bench/stripe_webhooks.py configures the worker
AUTH_TOKEN = "bench_token"  # noqa: S105 - a local benchmark secret
HOLDS_PER_USER = 20


def authorized_calls(url: str, calls: int) -> list[str]:
    """Classic accounts with $1,000 each and `calls` authorized calls (holds) among them."""
    users = max(1, calls // HOLDS_PER_USER + 1)
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into auth.users (email, raw_app_meta_data) "
            "select 'tw-' || g || '@example.test', '{\"plan\": \"classic\"}' "
            "from generate_series(1, %s) g",
            (users,),
        )
        conn.execute("create table public.bench_calls (n integer primary key, sid text not null)")
        conn.execute(
            "insert into public.bench_calls (n, sid) "
            "select g, 'CA' || md5('bench-call-' || g) from generate_series(1, %s) g",
            (calls,),
        )
        conn.execute(
            "select count(billing.credit_topup(u.id, 100000, 'pi_tw_' || u.id)) from auth.users u"
        )
        conn.execute(
            "with u as (select id, row_number() over (order by id) - 1 as i from auth.users) "
            "select count(billing.authorize_call(c.sid, u.id)) from public.bench_calls c "
            "join u on u.i = (c.n - 1) %% %s",
            (users,),
        )
        conn.execute("create sequence public.bench_calls_seq")
        conn.execute("grant select on public.bench_calls to service_role")
        conn.execute("grant usage, update on sequence public.bench_calls_seq to service_role")
        sids = [r[0] for r in conn.execute("select sid from public.bench_calls order by n")]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    return sids


# The worker's transaction from a C client: the same compound query (the role and the one
# statement in one round trip and one implicit transaction).
PGBENCH_SCRIPT = """\\set secs random(1, 600)
set local role service_role \\;
select billing.apply_call_status(jsonb_build_object(
    'CallSid', 'CA' || md5(random()::text),
    'ParentCallSid',
    (select c.sid from public.bench_calls as c
        where c.n = (select nextval('public.bench_calls_seq'))),
    'CallStatus', 'completed', 'CallDuration', cast(:secs as text), 'Direction', 'outbound-dial'));
"""


def database_ceiling(server: EmbeddedPostgres, args: argparse.Namespace, logs: Path) -> float:
    url, _ = fresh_database(server.url, "bench_twilio_pgbench", 0)
    authorized_calls(url, int(args.duration * 2500) + 1000)
    script = logs / "status.pgbench.sql"
    script.write_text(PGBENCH_SCRIPT)
    out = subprocess.run(
        [
            str(default_bindir() / "pgbench"),
            "-n",
            "-M",
            "simple",
            "-c",
            str(args.concurrency),
            "-j",
            "2",
            "-T",
            str(int(args.duration)),
            "-f",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{out.stderr[-2000:]}")
    for line in out.stdout.splitlines():
        if line.startswith("tps ="):
            return float(line.split()[2])
    return float("nan")


async def load(port: int, sids: list[str], args: argparse.Namespace, result: Result) -> None:
    import asyncio

    url = f"http://127.0.0.1:{port}/twilio/call-status"
    counter = iter(range(len(sids)))
    start = time.perf_counter()
    measure_from = start + args.warmup
    stop_at = measure_from + args.duration

    async def one_connection() -> None:
        conn = Connection(port)
        while time.perf_counter() < stop_at:
            n = next(counter, None)
            if n is None:
                result.errors["ran out of authorized calls"] = 1
                return
            params = {
                "AccountSid": ACCOUNT_SID,
                "ApiVersion": "2010-04-01",
                "CallSid": "CA" + uuid.uuid4().hex,
                "ParentCallSid": sids[n],
                "CallStatus": "completed",
                "CallDuration": str(random.randint(1, 600)),
                "Direction": "outbound-dial",
                "From": "+15005550006",
                "To": "+14155550123",
                "CallbackSource": "call-progress-events",
                "SequenceNumber": "0",
            }
            body = urlencode(params).encode()
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "TwilioProxy/1.1",
                "X-Twilio-Signature": twilio_signature(url, params, AUTH_TOKEN),
            }
            sent = time.perf_counter()
            try:
                status, payload = await conn.post("/twilio/call-status", body, headers)
            except (OSError, asyncio.IncompleteReadError) as exc:
                key = type(exc).__name__
                result.errors[key] = result.errors.get(key, 0) + 1
                conn = Connection(port)
                continue
            done = time.perf_counter()
            ok = status == 200 and b'"settled' in payload
            if ok and sent >= measure_from:
                result.latencies_ms.append((done - sent) * 1000)
                result.applied += 1
            elif ok:
                result.warmup_applied += 1
            else:
                key = f"HTTP {status}: {payload[:80].decode(errors='replace')}"
                result.errors[key] = result.errors.get(key, 0) + 1

    await asyncio.gather(*(one_connection() for _ in range(args.concurrency)))


def run_http(server: EmbeddedPostgres, args: argparse.Namespace, logs: Path) -> Result:
    url, _ = fresh_database(server.url, "bench_twilio_http", 0)
    sids = authorized_calls(url, int((args.duration + args.warmup) * 2000) + 1000)
    result = Result(workers=args.workers, duration=args.duration, label="call-status")
    with worker(url, args.workers, logs / "worker.log", None) as (pid, port):
        sampler = RssSampler(pid)
        sampler.start()
        worker_procs, pg_procs = tree(pid), postgres_tree(server.data_dir)
        cpu_w0, cpu_pg0 = cpu_seconds(worker_procs), cpu_seconds(pg_procs)
        import uvloop

        uvloop.run(load(port, sids, args, result))
        result.cpu_worker_s = cpu_seconds(worker_procs) - cpu_w0
        result.cpu_postgres_s = cpu_seconds(postgres_tree(server.data_dir)) - cpu_pg0
        sampler.stop.set()
        sampler.join()
        result.peak_rss_tree_mb = sampler.peak_tree / 2**20
        result.peak_rss_process_mb = sampler.peak_process / 2**20
    with psycopg.connect(url) as conn:
        drift = conn.execute("select count(*) from monitoring.ledger_drift").fetchone()
        logs_row = conn.execute("select count(*) from public.twilio_call_logs").fetchone()
    assert drift is not None and logs_row is not None
    result.ledger = {"drift_rows": int(drift[0]), "call_logs": int(logs_row[0])}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="callbalance-bench-twilio-"))
    server = EmbeddedPostgres(base / "pgdata", port=free_port(), durable=True)
    server.start()
    print(f"machine: {os.cpu_count()} CPUs, Postgres (durable) on port {server.port}")
    try:
        ceiling = database_ceiling(server, args, base)
        print(
            f"database alone (pgbench, the same one-statement transaction per event, "
            f"{args.concurrency} clients): {ceiling:.1f} events/s",
            flush=True,
        )
        r = run_http(server, args, base)
        accepted = r.applied + r.warmup_applied
        intact = r.ledger["drift_rows"] == 0 and r.ledger["call_logs"] == accepted
        print(
            "\n".join(
                [
                    f"serve --workers {r.workers}, {args.concurrency} connections, "
                    "signed status callbacks",
                    f"  events/s            {r.events_per_second:9.1f}",
                    f"  ratio to database   {r.events_per_second / ceiling:9.2f}x",
                    f"  latency p50         {r.percentile(0.50):9.2f} ms",
                    f"  latency p90         {r.percentile(0.90):9.2f} ms",
                    f"  latency p99         {r.percentile(0.99):9.2f} ms",
                    f"  peak RSS, tree      {r.peak_rss_tree_mb:9.1f} MB",
                    f"  peak RSS, 1 process {r.peak_rss_process_mb:9.1f} MB",
                    f"  CPU s: worker {r.cpu_worker_s:.1f}, postgres {r.cpu_postgres_s:.1f}",
                    f"  errors              {sum(r.errors.values()):9d}   {r.errors or ''}",
                    f"  ledger: drift rows {r.ledger['drift_rows']}, call logs "
                    f"{r.ledger['call_logs']} (accepted {accepted}) — "
                    f"{'intact' if intact else 'BROKEN'}",
                ]
            ),
            flush=True,
        )
        return 0 if intact and not r.errors else 1
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
