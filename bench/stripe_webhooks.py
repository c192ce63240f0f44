"""Load benchmark of the Stripe webhook endpoint of `callbalance serve`.

For each worker count asked for (`--workers 1,2`): a fresh database in a
durable embedded Postgres (fsync on, as in production), migrated; `callbalance
serve --workers N` in a subprocess; then `--concurrency` keep-alive connections
post signed `checkout.session.completed` events (distinct users and payment
intents, Stripe's real signature scheme) for `--duration` seconds after a short
warm-up. Prints events/s, p50/p90/p99/max latency, the worker's peak RSS
(its whole process tree, and the largest single process), CPU seconds spent
by the worker, Postgres and this client, errors, and checks the ledger after:
`monitoring.ledger_drift` empty, one credit per accepted event and their sum.

With `--pooler both` (the default when Debian's `pgbouncer` is installed) each
worker count runs twice: the worker connected to Postgres directly, then through
PgBouncer in transaction mode (`workers/local/pgbouncer.py`), as on Supabase.

The client is a minimal asyncio HTTP/1.1 client so that it costs the 2-core
machine as little CPU as possible; it still shares the cores with the server
and Postgres, so compare figures measured in the same run.

    .venv/bin/python bench/stripe_webhooks.py                 # workers 1 and 2, 30 s each
    .venv/bin/python bench/stripe_webhooks.py --workers 1 --duration 10
    .venv/bin/python bench/stripe_webhooks.py --workers 2 --duration 15 --pooler both
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.local.embedded_pg import EmbeddedPostgres, free_port  # noqa: E402
from workers.local.pgbouncer import PgBouncer, pgbouncer_binary  # noqa: E402
from workers.local.standins.signing import stripe_signature  # noqa: E402
from workers.ops.migrate import migrate  # noqa: E402

WEBHOOK_SECRET = "whsec_bench_secret"  # noqa: S105 - a local benchmark secret
AMOUNT_CENTS = 1000


@dataclass
class Result:
    workers: int
    duration: float
    label: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    applied: int = 0
    warmup_applied: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    peak_rss_tree_mb: float = 0.0
    peak_rss_process_mb: float = 0.0
    cpu_worker_s: float = 0.0
    cpu_postgres_s: float = 0.0
    cpu_client_s: float = 0.0
    cpu_pooler_s: float = 0.0
    ledger: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return len(self.latencies_ms) / self.duration if self.duration else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def checkout_event(user_id: str, n: int) -> bytes:
    """A `checkout.session.completed` event shaped like Stripe's (about 1.6 kB)."""
    session_id = f"cs_test_bench{n:012d}{uuid.uuid4().hex[:8]}"
    metadata = {"purpose": "topup", "user_id": user_id}
    event = {
        "id": f"evt_bench{n:012d}{uuid.uuid4().hex[:12]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": session_id,
                "object": "checkout.session",
                "amount_subtotal": AMOUNT_CENTS,
                "amount_total": AMOUNT_CENTS,
                "cancel_url": "http://127.0.0.1:3000/billing?topup=cancel",
                "client_reference_id": user_id,
                "created": int(time.time()) - 30,
                "currency": "usd",
                "customer": f"cus_bench{n:012d}",
                "customer_creation": None,
                "customer_details": {
                    "address": None,
                    "email": f"bench-{n}@example.test",
                    "name": None,
                    "phone": None,
                    "tax_exempt": "none",
                    "tax_ids": [],
                },
                "customer_email": None,
                "expires_at": int(time.time()) + 86400,
                "livemode": False,
                "locale": None,
                "metadata": metadata,
                "mode": "payment",
                "payment_intent": f"pi_bench{n:012d}{uuid.uuid4().hex[:8]}",
                "payment_method_types": ["card"],
                "payment_status": "paid",
                "status": "complete",
                "submit_type": None,
                "success_url": "http://127.0.0.1:3000/billing?topup=success",
                "ui_mode": "hosted",
                "url": None,
            }
        },
    }
    return json.dumps(event, indent=2).encode()


# -- the database ---------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


def fresh_database(admin_url: str, name: str, users: int) -> tuple[str, list[str]]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = _with_database(admin_url, name)
    migrate(url, echo=lambda _line: None)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "insert into auth.users (email) "
            "select 'bench-' || g || '@example.test' from generate_series(1, %s) g "
            "returning id",
            (users,),
        ).fetchall()
        conn.execute("analyze")
    return url, [str(r[0]) for r in rows]


def ledger_check(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        drift = conn.execute("select count(*) from monitoring.ledger_drift").fetchone()
        credits = conn.execute(
            "select count(*), coalesce(sum(amount), 0) from public.balance_transactions "
            "where reason = 'topup'"
        ).fetchone()
        events = conn.execute("select count(*) from public.stripe_events").fetchone()
        balances = conn.execute(
            "select coalesce(sum(balance), 0) from public.call_balance"
        ).fetchone()
    assert drift and credits and events and balances
    return {
        "drift_rows": int(drift[0]),
        "credits": int(credits[0]),
        "credited_dollars": credits[1],
        "stripe_events": int(events[0]),
        "balances_dollars": balances[0],
    }


# -- the worker -----------------------------------------------------------------------


@contextmanager
def worker(
    db_url: str, workers: int, log_path: Path, pool_size: int | None, source: Path = ROOT
) -> Iterator[tuple[int, int]]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "DATABASE_URL": db_url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "STRIPE_SECRET_KEY": "sk_test_bench",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "bench_token",
    }
    if pool_size:
        env["DB_POOL_SIZE"] = str(pool_size)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=source,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        ready = 0
        while ready < 5:  # every uvicorn worker process has had a chance to come up
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not become ready")
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            ready = ready + 1 if ok else 0
            time.sleep(0.2)
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_tree = 0
        self.peak_process = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            sizes = []
            for p in tree(self.pid):
                try:
                    sizes.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue
            if sizes:
                self.peak_tree = max(self.peak_tree, sum(sizes))
                self.peak_process = max(self.peak_process, max(sizes))
            self.stop.wait(self.every)


# -- the client -----------------------------------------------------------------------


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        if close:
            self.writer.close()
            self.reader = self.writer = None
        return status, payload


async def load(
    port: int, users: list[str], concurrency: int, warmup: float, duration: float, result: Result
) -> None:
    counter = iter(range(10**9))
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def one_connection() -> None:
        conn = Connection(port)
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            n = next(counter)
            body = checkout_event(users[n % len(users)], n)
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Stripe-Signature": stripe_signature(body, WEBHOOK_SECRET),
            }
            sent = time.perf_counter()
            try:
                status, payload = await conn.post("/stripe/webhook", body, headers)
            except (OSError, asyncio.IncompleteReadError) as exc:
                key = type(exc).__name__
                result.errors[key] = result.errors.get(key, 0) + 1
                conn = Connection(port)
                continue
            done = time.perf_counter()
            ok = status == 200 and b'"applied"' in payload
            if sent >= measure_from:
                if ok:
                    result.latencies_ms.append((done - sent) * 1000)
                    result.applied += 1
            elif ok:
                result.warmup_applied += 1
            if not ok:
                key = f"HTTP {status}: {payload[:80].decode(errors='replace')}"
                result.errors[key] = result.errors.get(key, 0) + 1

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))


# The worker's transaction, from a C client: the same compound query the worker sends (the
# role and the one statement, one round trip, one implicit transaction) and the same event
# body (a template with a fresh event id, payment intent and user, parsed as jsonb).
PGBENCH_SCRIPT = """\\set n random(1, {users})
set local role service_role \\;
select billing.apply_stripe_event(
    replace(replace(replace(t.body, 'USER_ID', u.id::text), 'EVENT_ID', md5(random()::text)),
        'INTENT_ID', md5(random()::text))::jsonb,
    false
)
from public.bench_template as t, public.bench_users as u
where u.n = :n;
"""


def database_ceiling(
    server: EmbeddedPostgres, args: argparse.Namespace, logs: Path
) -> tuple[float, float]:
    """The worker's one statement per event from pgbench (a C client): events/s, mean ms."""
    users = 20_000
    url, user_ids = fresh_database(server.url, "bench_webhooks_pgbench", users)
    body = checkout_event("USER_ID", 0).decode()
    template = body.replace(json.loads(body)["id"], "evt_EVENT_ID")
    template = re.sub(r'"pi_bench[0-9a-f]+"', '"pi_INTENT_ID"', template)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table public.bench_users (n integer primary key, id uuid not null)")
        with conn.cursor().copy("copy public.bench_users (n, id) from stdin") as copy:
            for n, user in enumerate(user_ids, start=1):
                copy.write_row((n, user))
        conn.execute("create table public.bench_template (body text not null)")
        conn.execute("insert into public.bench_template (body) values (%s)", (template,))
        conn.execute("grant select on public.bench_users, public.bench_template to service_role")
        conn.execute("analyze public.bench_users")
    script = logs / "credit.pgbench.sql"
    script.write_text(PGBENCH_SCRIPT.format(users=users))
    from workers.local.embedded_pg import default_bindir

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
        check=True,
    ).stdout
    tps = latency = float("nan")
    for line in out.splitlines():
        if line.startswith("tps ="):
            tps = float(line.split()[2])
        elif line.startswith("latency average"):
            latency = float(line.split()[3])
    return tps, latency


def postgres_tree(data_dir: Path) -> list[psutil.Process]:
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    return tree(pid)


def run_one(
    server: EmbeddedPostgres,
    workers: int,
    args: argparse.Namespace,
    logs: Path,
    bouncer: PgBouncer | None = None,
    bouncer_pid: int | None = None,
) -> Result:
    name = f"bench_webhooks_w{workers}" + ("_pooled" if bouncer else "")
    # Enough users that each event of the run credits another account.
    expected = int((args.duration + args.warmup) * 3000)
    users = min(args.users or expected, 40_000)
    url, user_ids = fresh_database(server.url, name, users)
    label = f"{args.label}, through PgBouncer" if bouncer else f"{args.label}, direct"
    result = Result(workers=workers, duration=args.duration, label=label)
    log_path = logs / f"worker-w{workers}-{args.label}{'-pooled' if bouncer else ''}.log"
    worker_url = bouncer.pooled(url) if bouncer else url
    with worker(worker_url, workers, log_path, args.pool_size, args.worker_source) as (
        pid,
        port,
    ):
        sampler = RssSampler(pid)
        sampler.start()
        worker_procs, pg_procs = tree(pid), postgres_tree(server.data_dir)
        cpu_w0, cpu_pg0 = cpu_seconds(worker_procs), cpu_seconds(pg_procs)
        pooler_procs = tree(bouncer_pid) if bouncer_pid else []
        cpu_pool0 = cpu_seconds(pooler_procs)
        client0 = time.process_time()
        import uvloop

        uvloop.run(load(port, user_ids, args.concurrency, args.warmup, args.duration, result))
        result.cpu_client_s = time.process_time() - client0
        result.cpu_worker_s = cpu_seconds(worker_procs) - cpu_w0
        result.cpu_postgres_s = cpu_seconds(postgres_tree(server.data_dir)) - cpu_pg0
        result.cpu_pooler_s = cpu_seconds(pooler_procs) - cpu_pool0
        sampler.stop.set()
        sampler.join()
        result.peak_rss_tree_mb = sampler.peak_tree / 2**20
        result.peak_rss_process_mb = sampler.peak_process / 2**20
    result.ledger = ledger_check(url)
    return result


def report(r: Result) -> list[str]:
    accepted = r.applied + r.warmup_applied
    led = r.ledger
    invariant_ok = (
        led["drift_rows"] == 0
        and led["credits"] == accepted
        and led["stripe_events"] == accepted
        and float(led["credited_dollars"]) == accepted * AMOUNT_CENTS / 100
    )
    errors = sum(r.errors.values())
    per_cpu = len(r.latencies_ms) / r.cpu_worker_s if r.cpu_worker_s else float("nan")
    lines = [
        f"serve --workers {r.workers} ({r.label})",
        f"  events/s            {r.events_per_second:9.1f}   (target ≥ 1000)",
        f"  latency p50         {r.percentile(0.50):9.2f} ms",
        f"  latency p90         {r.percentile(0.90):9.2f} ms",
        f"  latency p99         {r.percentile(0.99):9.2f} ms   (target < 25)",
        f"  latency max         {max(r.latencies_ms, default=float('nan')):9.2f} ms",
        f"  peak RSS, tree      {r.peak_rss_tree_mb:9.1f} MB   (target < 150)",
        f"  peak RSS, 1 process {r.peak_rss_process_mb:9.1f} MB",
        f"  CPU s: worker {r.cpu_worker_s:.1f}, postgres {r.cpu_postgres_s:.1f}, "
        f"client {r.cpu_client_s:.1f}"
        + (f", pgbouncer {r.cpu_pooler_s:.1f}" if r.cpu_pooler_s else "")
        + f" over {r.duration + 0.0:.0f} s (+ warm-up)",
        f"  events per worker CPU-second {per_cpu:9.1f}",
        f"  errors              {errors:9d}   {dict(r.errors) if r.errors else ''}",
        f"  ledger: drift rows {led['drift_rows']}, credits {led['credits']} "
        f"(accepted {accepted}), stripe_events {led['stripe_events']}, "
        f"credited ${led['credited_dollars']} — {'intact' if invariant_ok else 'BROKEN'}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated uvicorn worker counts")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=0, help="accounts (default: one per event)")
    parser.add_argument("--pool-size", type=int, default=None, help="DB_POOL_SIZE of the worker")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    parser.add_argument(
        "--worker-source",
        type=Path,
        default=ROOT,
        help="run `callbalance serve` from this source tree (to compare a patched copy)",
    )
    parser.add_argument("--label", default="checkout", help="names this variant in the output")
    parser.add_argument(
        "--pooler",
        choices=("off", "on", "both"),
        default="both",
        help="the worker direct, through PgBouncer in transaction mode, or both (default)",
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the pgbench run of the same SQL"
    )
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="callbalance-bench-"))
    server = EmbeddedPostgres(base / "pgdata", port=free_port(), durable=True)
    server.start()
    print(f"machine: {os.cpu_count()} CPUs, Postgres (durable) on port {server.port}, logs {base}")
    failed = False
    tps = float("nan")
    bouncer, bouncer_proc = None, None
    if args.pooler != "off":
        binary = pgbouncer_binary()
        if binary is None:
            if args.pooler == "on":
                server.destroy()
                raise SystemExit(
                    "--pooler on needs the pgbouncer binary (apt-get install pgbouncer)"
                )
            print("pgbouncer is not installed: the runs through the pooler are skipped")
        else:
            bouncer_dir = base / "pgbouncer"
            bouncer_dir.mkdir()
            bouncer_dir.chmod(0o755)
            bouncer = PgBouncer(server.url, bouncer_dir, port=free_port(), binary=binary)
            bouncer_proc = bouncer.start(base / "pgbouncer.log")
            print(f"PgBouncer (transaction mode) on port {bouncer.port}", flush=True)
    variants: list[PgBouncer | None] = []
    if args.pooler in ("off", "both"):
        variants.append(None)
    if bouncer is not None:
        variants.append(bouncer)
    try:
        if not args.no_ceiling:
            tps, latency = database_ceiling(server, args, base)
            print(
                f"database alone (pgbench, the same one-statement transaction per event, "
                f"{args.concurrency} clients): {tps:.1f} events/s, mean {latency:.2f} ms",
                flush=True,
            )
        for count in [int(x) for x in args.workers.split(",") if x.strip()]:
            for variant in variants:
                pid = bouncer_proc.pid if variant is not None and bouncer_proc else None
                result = run_one(server, count, args, base, variant, pid)
                print("\n".join(report(result)), flush=True)
                print(
                    f"  ratio to the database alone {result.events_per_second / tps:9.2f}   "
                    "(target ≥ 0.8)",
                    flush=True,
                )
                failed = failed or bool(result.errors) or result.ledger["drift_rows"] != 0
    finally:
        if bouncer_proc is not None:
            bouncer_proc.terminate()
            bouncer_proc.wait(timeout=10)
        if args.keep:
            server.stop()
            print(f"kept {base}")
        else:
            server.destroy()
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
