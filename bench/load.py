"""The whole system (`callbalance up`) at a steady mixed load, then pgbench on the same server.

Open-loop arrivals at fixed rates (a late answer never slows the next
request, so latencies are not flattered), for `--minutes`:
- calls: Twilio's signed voice request (`/twilio/voice`, a hold), then the
  signed status callback with a duration within `<Dial timeLimit>`
  (`/twilio/call-status`, the settlement);
- Stripe webhooks: signed `checkout.session.completed` events posted to the
  worker as Stripe posts them (one in ten is a repeated delivery);
- `billing_me` read as users through PostgREST-style sessions;
- top-ups through the Edge Function and the stand-in's checkout (which then
  sends its own webhooks).
Prints throughput, p50/p99 per entry point, errors (must be 0), Postgres and
worker memory, ledger writes/s; then pgbench `tpcb-like` for comparison on the
same server, and the ledger invariant.

    .venv/bin/python bench/load.py                    # 5 minutes
    .venv/bin/python bench/load.py --minutes 1 --calls 10 --webhooks 10 --reads 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reliability.http1 import HttpError, Pool  # noqa: E402
from reliability.running import RunningUp  # noqa: E402
from workers.local.embedded_pg import default_bindir  # noqa: E402
from workers.local.standins.signing import stripe_signature, twilio_signature  # noqa: E402
from workers.local.standins.twilio import parse_dial  # noqa: E402
from workers.ops.users import create_user  # noqa: E402


@dataclass
class Stats:
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    memory_mb: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    refused: int = 0

    def ok(self, name: str, started: float) -> None:
        self.latency_ms[name].append((time.perf_counter() - started) * 1000)

    def error(self, name: str, what: str) -> None:
        self.errors[name][what] += 1


@dataclass
class User:
    id: str
    plan: str
    jwt: str


@dataclass
class Load:
    state: dict[str, str]
    users: list[User]
    stats: Stats
    worker: Pool
    functions: Pool
    stripe: Pool
    pool: AsyncConnectionPool[Any]
    rng: random.Random
    sent_events: list[tuple[bytes, str]] = field(default_factory=list)

    # -- Twilio -----------------------------------------------------------------------

    async def twilio_post(self, url: str, params: dict[str, str]) -> tuple[int, str]:
        signature = twilio_signature(url, params, self.state["twilio_auth_token"])
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        }
        status, body = await self.worker.request("POST", url, urlencode(params).encode(), headers)
        return status, body.decode()

    async def call(self) -> None:
        user = self.rng.choice(self.users)
        sid = "CA" + uuid.uuid4().hex
        voice = {
            "AccountSid": self.state["twilio_account_sid"],
            "CallSid": sid,
            "From": f"client:{user.id}",
            "To": "+14155550123",
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        started = time.perf_counter()
        try:
            status, twiml = await self.twilio_post(self.state["twilio_voice_url"], voice)
        except HttpError as exc:
            self.stats.error("POST /twilio/voice", str(exc)[:40])
            return
        if status != 200:
            self.stats.error("POST /twilio/voice", f"HTTP {status}")
            return
        self.stats.ok("POST /twilio/voice", started)
        dial = parse_dial(twiml)
        if dial is None:
            self.stats.refused += 1  # the balance was short: a correct answer, not an error
            return
        seconds = min(dial.time_limit, self.rng.randint(1, 600))
        callback = {
            "AccountSid": self.state["twilio_account_sid"],
            "CallSid": "CA" + uuid.uuid4().hex,
            "ParentCallSid": sid,
            "CallStatus": "completed",
            "CallDuration": str(seconds),
            "Direction": "outbound-dial",
            "ApiVersion": "2010-04-01",
        }
        started = time.perf_counter()
        try:
            status, text = await self.twilio_post(self.state["twilio_status_url"], callback)
        except HttpError as exc:
            self.stats.error("POST /twilio/call-status", str(exc)[:40])
            return
        if status != 200 or "settled" not in text:
            self.stats.error("POST /twilio/call-status", f"HTTP {status}")
            return
        self.stats.ok("POST /twilio/call-status", started)

    # -- Stripe -------------------------------------------------------------------------

    async def webhook(self) -> None:
        if self.sent_events and self.rng.random() < 0.1:
            payload, _ = self.rng.choice(self.sent_events)  # Stripe delivers at least once
        else:
            user = self.rng.choice(self.users)
            event = {
                "id": "evt_load" + uuid.uuid4().hex[:20],
                "object": "event",
                "api_version": "2026-10-28.endive",
                "created": int(time.time()),
                "type": "checkout.session.completed",
                "livemode": False,
                "data": {
                    "object": {
                        "id": "cs_test_load" + uuid.uuid4().hex[:16],
                        "object": "checkout.session",
                        "amount_total": 1000,
                        "currency": "usd",
                        "customer": None,
                        "payment_intent": "pi_load" + uuid.uuid4().hex[:20],
                        "payment_status": "paid",
                        "status": "complete",
                        "metadata": {"purpose": "topup", "user_id": user.id},
                    }
                },
            }
            payload = json.dumps(event, indent=2).encode()
            self.sent_events.append((payload, user.id))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": stripe_signature(payload, self.state["stripe_webhook_secret"]),
        }
        started = time.perf_counter()
        try:
            status, body = await self.worker.request(
                "POST", self.state["stripe_webhook_url"], payload, headers
            )
        except HttpError as exc:
            self.stats.error("POST /stripe/webhook", str(exc)[:40])
            return
        # A repeat may overtake its first delivery: either copy may be the one applied.
        if status != 200 or not any(
            outcome in body for outcome in (b'"applied"', b'"duplicate event"')
        ):
            self.stats.error("POST /stripe/webhook", f"HTTP {status}")
            return
        self.stats.ok("POST /stripe/webhook", started)

    # -- the frontend --------------------------------------------------------------------

    async def billing_me(self) -> None:
        user = self.rng.choice(self.users)
        claims = json.dumps({"sub": user.id, "role": "authenticated", "aud": "authenticated"})
        started = time.perf_counter()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("select set_config('role', 'authenticated', true)")
                await conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
                cur = await conn.execute("select public.billing_me()")
                await cur.fetchone()
        except psycopg.Error as exc:
            self.stats.error("rpc billing_me", type(exc).__name__)
            return
        self.stats.ok("rpc billing_me", started)

    async def top_up(self) -> None:
        user = self.rng.choice(self.users)
        amount = 50 if user.plan == "classic" else 10
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {user.jwt}", "Content-Type": "application/json"}
        try:
            status, body = await self.functions.request(
                "POST",
                self.state["functions_url"] + "/top-up",
                json.dumps({"amount": amount}).encode(),
                headers,
            )
        except HttpError as exc:
            self.stats.error("edge top-up", str(exc)[:40])
            return
        if status != 200:
            self.stats.error("edge top-up", f"HTTP {status}")
            return
        self.stats.ok("edge top-up", started)
        url = json.loads(body)["url"] + "/pay"
        try:
            paid, _ = await self.stripe.request("POST", url, b"", {"Accept": "application/json"})
        except HttpError as exc:
            self.stats.error("checkout pay (stand-in)", str(exc)[:40])
            return
        if paid != 200:
            self.stats.error("checkout pay (stand-in)", f"HTTP {paid}")


async def steady(
    rate: float,
    until: float,
    op: Callable[[], Awaitable[None]],
    inflight: set[asyncio.Task[None]],
    stats: Stats,
    name: str,
    cap: int,
) -> None:
    """Start `op` `rate` times a second until `until`, whatever the answers' latency.

    Past `cap` requests in flight the system has fallen behind: the arrival is
    counted as shed (an error) instead of piling up without bound.
    """
    if rate <= 0:
        return
    interval = 1.0 / rate
    next_at = time.perf_counter()
    while next_at < until:
        if len(inflight) >= cap:
            stats.error(name, "shed: too many requests in flight")
        else:
            task = asyncio.ensure_future(op())
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


def cpu_seconds(up: RunningUp) -> dict[str, float]:
    """CPU seconds used so far by Postgres and each of `up`'s children (whole process trees)."""
    import psutil

    roots: dict[str, int | None] = {"postgres": up.postmaster_pid()}
    for name in ("worker", "jobs", "functions", "stripe-standin", "twilio-standin"):
        child = up.child(name)
        roots[name] = child.pid if child is not None else None
    out: dict[str, float] = {}
    for name, pid in roots.items():
        if pid is None:
            continue
        total = 0.0
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                try:
                    times = proc.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
                except psutil.Error:
                    continue
        except psutil.Error:
            continue
        out[name] = total
    return out


def sample_memory(up: RunningUp, stats: Stats, stop: threading.Event) -> None:
    while not stop.wait(2.0):
        for name, mb in up.memory().items():
            stats.memory_mb[name].append(mb)


async def run_load(
    state: dict[str, str], users: list[User], args: argparse.Namespace, stats: Stats
) -> float:
    worker = Pool(state["worker_url"], 48)
    functions = Pool(state["functions_url"], 8)
    stripe = Pool(state["stripe_api_base"], 8)
    async with AsyncConnectionPool(
        state["database_url"], min_size=4, max_size=16, open=False
    ) as pool:
        await pool.open(wait=True)
        load = Load(state, users, stats, worker, functions, stripe, pool, random.Random(args.seed))
        started = time.perf_counter()
        until = started + args.minutes * 60
        inflight: set[asyncio.Task[None]] = set()
        cap = args.max_inflight
        await asyncio.gather(
            steady(args.calls, until, load.call, inflight, stats, "call", cap),
            steady(args.webhooks, until, load.webhook, inflight, stats, "webhook", cap),
            steady(args.reads, until, load.billing_me, inflight, stats, "billing_me", cap),
            steady(args.topups, until, load.top_up, inflight, stats, "top-up", cap),
        )
        if inflight:
            await asyncio.gather(*inflight)
        for p in (worker, functions, stripe):
            p.close()
        return time.perf_counter() - started


def setup_users(state: dict[str, str], count: int) -> list[User]:
    """Sign up; a first top-up through checkout; starter users get their free number."""

    def one(i: int) -> User:
        plan = "starter" if i % 2 else "classic"
        made = create_user(
            state["database_url"],
            f"load-{uuid.uuid4().hex[:10]}@example.test",
            plan,
            state["jwt_secret"],
        )
        user = User(made["id"], plan, made["jwt"])
        auth = {"Authorization": f"Bearer {user.jwt}"}
        with httpx.Client(timeout=60) as http:
            if plan == "starter":
                http.post(
                    state["functions_url"] + "/buy-number", json={"areaCode": "415"}, headers=auth
                ).raise_for_status()
            session = http.post(
                state["functions_url"] + "/top-up",
                json={"amount": 50 if plan == "classic" else 10},
                headers=auth,
            )
            session.raise_for_status()
            http.post(
                session.json()["url"] + "/pay", headers={"Accept": "application/json"}
            ).raise_for_status()
        return user

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def pgbench(state: dict[str, str], seconds: int, clients: int) -> str:
    bindir = default_bindir()
    info = psycopg.conninfo.conninfo_to_dict(state["database_url"])
    with psycopg.connect(state["database_url"], autocommit=True) as conn:
        conn.execute("drop database if exists pgbench")
        conn.execute("create database pgbench")
    info["dbname"] = "pgbench"
    url = psycopg.conninfo.make_conninfo("", **info)
    subprocess.run(
        [str(bindir / "pgbench"), "-i", "-q", "-s", "10", url], check=True, capture_output=True
    )
    out = subprocess.run(
        [
            str(bindir / "pgbench"),
            "-n",
            "-b",
            "tpcb-like",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "\n".join(
        line for line in out.splitlines() if line.startswith(("tps", "latency", "number of"))
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--calls", type=float, default=15.0, help="calls per second")
    parser.add_argument("--webhooks", type=float, default=15.0, help="Stripe events per second")
    parser.add_argument("--reads", type=float, default=30.0, help="billing_me per second")
    parser.add_argument("--topups", type=float, default=1.0, help="checkout top-ups per second")
    parser.add_argument("--pgbench-seconds", type=int, default=60)
    parser.add_argument("--pgbench-clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-inflight", type=int, default=256, help="requests in flight before shedding"
    )
    args = parser.parse_args(argv)

    up = RunningUp(Path(tempfile.mkdtemp(prefix="callbalance-load-")) / "state")
    print(f"starting callbalance up in {up.state_dir}", flush=True)
    state = up.start()
    stats = Stats()
    try:
        print(f"signing up {args.users} users (a top-up each, numbers on starter)", flush=True)
        users = setup_users(state, args.users)
        with psycopg.connect(state["database_url"]) as conn:
            before = conn.execute("select count(*) from public.balance_transactions").fetchone()
        stop = threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(up, stats, stop), daemon=True)
        sampler.start()
        print(
            f"load for {args.minutes:g} min: {args.calls:g} calls/s, {args.webhooks:g} "
            f"webhooks/s, {args.reads:g} billing_me/s, {args.topups:g} top-ups/s",
            flush=True,
        )
        import uvloop

        cpu_before, client_before = cpu_seconds(up), time.process_time()
        elapsed = uvloop.run(run_load(state, users, args, stats))
        cpu_after, client_cpu = cpu_seconds(up), time.process_time() - client_before
        stop.set()
        sampler.join()
        with psycopg.connect(state["database_url"]) as conn:
            after = conn.execute("select count(*) from public.balance_transactions").fetchone()
            drift = conn.execute("select count(*) from monitoring.ledger_drift").fetchone()
        ledger_rows = (after[0] if after else 0) - (before[0] if before else 0)

        print(f"\n{'entry point':<30}{'requests':>9}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}")
        for name, values in sorted(stats.latency_ms.items()):
            print(
                f"{name:<30}{len(values):>9}{len(values) / elapsed:>8.1f}"
                f"{statistics.median(values):>9.1f}{percentile(values, 0.99):>9.1f}"
            )
        total_errors = sum(sum(c.values()) for c in stats.errors.values())
        print(f"\nerrors: {total_errors}  {dict((k, dict(v)) for k, v in stats.errors.items())}")
        print(f"calls refused for a short balance: {stats.refused}")
        print(
            f"ledger writes: {ledger_rows} rows, {ledger_rows / elapsed:.1f}/s; "
            f"ledger_drift rows: {drift[0] if drift else '?'}"
        )
        print(
            "memory (PSS, MB): "
            + ", ".join(
                f"{k} peak {max(v):.0f} / mean {statistics.mean(v):.0f}"
                for k, v in sorted(stats.memory_mb.items())
            )
        )
        used = {k: cpu_after[k] - v for k, v in cpu_before.items() if k in cpu_after}
        used["load generator"] = client_cpu
        print(
            f"CPU seconds over {elapsed:.0f} s on {os.cpu_count()} CPUs: "
            + ", ".join(f"{k} {v:.0f}" for k, v in sorted(used.items(), key=lambda kv: -kv[1]))
        )
        print(
            f"\npgbench tpcb-like on the same server ({args.pgbench_clients} clients, "
            f"{args.pgbench_seconds} s, scale 10):"
        )
        print(pgbench(state, args.pgbench_seconds, args.pgbench_clients))
        return 1 if total_errors or (drift and drift[0]) else 0
    finally:
        up.stop()
        shutil.rmtree(up.state_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
