"""Faults: a mixed workload against `callbalance up` while a nemesis breaks things.

    .venv/bin/python -m reliability.faults                        # 60 s, 24 users
    .venv/bin/python -m reliability.faults --duration 600 --users 60 --seed 7

The run (the Jepsen "bank" idea: money is conserved whatever happens):
1. `callbalance up` on free ports with a temporary state directory; the Stripe
   stand-in's retry schedule is compressed (Stripe retries for days).
2. Users sign up (both plans); each tops up through checkout, starter users get
   their free number, about half turn auto-refill on.
3. For `--duration` seconds: the workload (calls through voice + status
   callbacks, top-ups, refunds, numbers, auto-refill settings, `billing_me`)
   while the nemesis injects faults (see `reliability.nemesis`).
4. Heal: Postgres up, worker and jobs restarted, faults cleared. Time passes:
   the jobs' reconciliations run with the clock five hours on (calls whose
   callbacks were lost twice are settled from Twilio's Calls API; number
   purchases that died half-way are cancelled and numbers no account owns are
   released); every Stripe event is delivered once more, as Stripe's retries
   would.
5. Check every user against what the outside world paid and used
   (`reliability.checks`) and print the table. Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from reliability.checks import Invariant, check_all, gather
from reliability.nemesis import EDGE_KILL, KINDS, Nemesis
from reliability.running import RunningUp, control
from reliability.workload import Driver, Record, User, World, read_plans
from workers.service import twilio_jobs
from workers.service.db import SyncDatabase
from workers.service.providers import make_twilio_client

# Stripe retries a failed delivery for days; here the same schedule, compressed.
RETRY_DELAYS = [0.5, 1.0, 2.0, 4.0, 8.0, 15.0]


@dataclass
class Report:
    ops: dict[str, Counter[str]]
    faults: Counter[str]
    invariants: list[Invariant]
    duration: float
    users: int
    seed: int
    memory_mb: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return sum(len(i.violations) for i in self.invariants)

    def render(self, limit: int = 20) -> str:
        lines = [
            f"fault run: {self.duration:.0f} s, {self.users} users, seed {self.seed}",
            "",
            f"  {'operation':<26}{'attempted':>10}{'ok':>8}{'refused':>9}{'unavailable':>13}",
        ]
        for kind, counts in sorted(self.ops.items()):
            lines.append(
                f"  {kind:<26}{sum(counts.values()):>10}{counts['ok']:>8}"
                f"{counts['refused']:>9}{counts['unavailable']:>13}"
            )
        lines += ["", f"  {'fault injected':<52}{'count':>7}"]
        for kind, count in sorted(self.faults.items()):
            lines.append(f"  {kind:<52}{count:>7}")
        lines += ["", f"  {'invariant':<62}{'checked':>8}{'violations':>12}"]
        for inv in self.invariants:
            lines.append(f"  {inv.name:<62}{inv.checked:>8}{len(inv.violations):>12}")
        lines.append(f"  {'total':<62}{'':>8}{self.violations:>12}")
        for inv in self.invariants:
            for message in inv.violations[:limit]:
                lines.append(f"  ! {inv.name}: {message}")
        if self.memory_mb:
            peak = ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(self.memory_mb.items()))
            lines += ["", f"  peak memory (PSS): {peak}"]
        if self.latency_ms:
            lines += ["", f"  {'operation, outcome':<40}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}"]
            for name, values in sorted(self.latency_ms.items()):
                ordered = sorted(values)
                p50 = ordered[len(ordered) // 2]
                p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
                lines.append(f"  {name:<40}{len(ordered):>6}{p50:>10.0f}{p99:>10.0f}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        for error in self.harness_errors[:limit]:
            lines.append(f"  harness error: {error}")
        return "\n".join(lines)


def _echo(line: str) -> None:
    print(line, flush=True)


def setup_users(world: World, count: int, seed: int) -> list[User]:
    """Sign up, first top-up, the free number on starter, auto-refill on for about half."""
    rng = random.Random(seed)
    plans = [p for p in ("starter", "classic") if p in world.plans]
    users = [world.sign_up("starter" if i % 5 < 3 else plans[-1]) for i in range(count)]
    errors: list[str] = []

    def prepare(user: User) -> None:
        local = random.Random(rng.random())
        with httpx.Client() as http:
            if world.plans[user.plan].sells_numbers:
                for _ in range(3):
                    if world.buy_number(http, local, user) == "ok":
                        break
            for _ in range(3):
                if world.top_up(http, local, user) == "ok":
                    break
            else:
                errors.append(f"{user.email}: no first top-up")

    threads = [threading.Thread(target=prepare, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    control(world.state["stripe_api_base"], "POST", "/_control/webhooks/wait?timeout=60")
    for user in users:
        if rng.random() < 0.5:
            world.auto_refill(rng, user)
    if errors:
        raise RuntimeError("; ".join(errors))
    return users


def reconcile_after_the_run(state: dict[str, str]) -> dict[str, dict[str, int]]:
    """The jobs' reconciliations, with the clock moved on past every deadline.

    Calls whose status callbacks were lost are settled from Twilio's Calls API;
    number purchases that died half-way are cancelled, and numbers Twilio holds
    that no account owns are released.
    """
    db = SyncDatabase(state["database_url"])
    twilio = make_twilio_client(
        state["twilio_account_sid"], state["twilio_auth_token"], state["twilio_api_base"]
    )
    later = datetime.now(UTC) + timedelta(hours=5)
    calls: Counter[str] = Counter()
    numbers: Counter[str] = Counter()
    try:
        for _ in range(20):
            counts = twilio_jobs.reconcile_holds(db, twilio, limit=1000, at=later)
            calls.update(counts)
            if not (counts["settled"] or counts["errors"]):
                break
        for _ in range(20):
            done = twilio_jobs.reconcile_numbers(db, twilio, state["twilio_voice_url"], at=later)
            numbers.update(done)
            if not (done["cancelled"] or done["released"]):
                break
    finally:
        db.close()
    return {"calls": dict(calls), "numbers": dict(numbers)}


def wait_quiet(state: dict[str, str], timeout: float = 180) -> bool:
    """Until no webhook is in flight, no new event appears and no refill is due."""
    stripe = state["stripe_api_base"]
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        idle = control(stripe, "POST", "/_control/webhooks/wait?timeout=30", timeout=60)["idle"]
        events = int(control(stripe, "GET", "/_control/state", timeout=60)["events"])
        with psycopg.connect(state["database_url"]) as conn:
            row = conn.execute(
                "select count(*) from public.refill_requests "
                "where status = 'pending' and next_attempt_at <= now()"
            ).fetchone()
        due = int(row[0]) if row else 0
        if idle and events == last and due == 0:
            return True
        last = events
        time.sleep(3)
    return False


def run(
    duration: float,
    users: int,
    seed: int,
    threads: int = 8,
    state_dir: Path | None = None,
    echo: Callable[[str], None] = _echo,
    kill_edge_functions: bool = False,
) -> Report:
    owned = state_dir is None
    base = state_dir or Path(tempfile.mkdtemp(prefix="callbalance-faults-"))
    up = RunningUp(base / "state")
    notes: list[str] = []
    echo(f"starting callbalance up in {up.state_dir}")
    state = up.start()
    try:
        control(
            state["stripe_api_base"], "POST", "/_control/webhooks", {"retry_delays": RETRY_DELAYS}
        )
        plans = read_plans(state["database_url"])
        world = World(state, plans, Record())
        echo(f"signing up {users} users")
        people = setup_users(world, users, seed)
        # With the Edge Functions killed, buy numbers often enough to be caught mid-purchase.
        weights = {"buy-number": 30.0} if kill_edge_functions else None
        driver = Driver(
            world, people, threads=min(threads, len(people)), seed=seed, weights=weights
        )
        kinds = [*KINDS, EDGE_KILL] if kill_edge_functions else list(KINDS)
        nemesis = Nemesis(up, seed=seed, kinds=kinds)
        memory: dict[str, float] = {}
        echo(f"workload and nemesis for {duration:.0f} s")
        driver.start()
        nemesis.start()
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            for name, mb in up.memory().items():
                memory[name] = max(memory.get(name, 0.0), mb)
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        nemesis.finish()
        driver.finish()
        echo("healing: Postgres, worker and jobs back, faults cleared")
        nemesis.heal()
        reconciled = reconcile_after_the_run(state)
        notes.append(f"reconciliation after the run: {reconciled}")
        if not wait_quiet(state):
            notes.append("the system was still busy when the redelivery started")
        redelivered = control(
            state["stripe_api_base"], "POST", "/_control/webhooks/redeliver", {}, timeout=120
        )["redelivered"]
        echo(f"redelivering all {len(redelivered)} Stripe events once more")
        if not wait_quiet(state, timeout=600):
            notes.append("the system was still busy when the checks started")
        evidence = gather(state)
        invariants = check_all(evidence, world.record, people, plans)
        faults = Counter(nemesis.injected)
        faults.update(world.record.twilio_faults)
        retried = sum(
            1 for d in evidence.deliveries if d.get("status") is None or d["status"] >= 300
        )
        faults["webhook deliveries failed or dropped (retried)"] += retried
        notes += [line for line in nemesis.log if "postgres" in line]
        return Report(
            ops=dict(world.record.ops),
            faults=faults,
            invariants=invariants,
            duration=duration,
            users=users,
            seed=seed,
            memory_mb=memory,
            latency_ms=dict(world.record.latency_ms),
            notes=notes,
            harness_errors=driver.errors + nemesis.errors,
        )
    finally:
        code = up.stop()
        if code not in (0, None):
            notes.append(f"callbalance up exited with {code}:\n{up.log_tail()}")
        if owned:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8, help="concurrent users")
    parser.add_argument("--state-dir", type=Path, help="keep the system's files here")
    parser.add_argument(
        "--kill-edge-functions",
        action="store_true",
        help="also kill -9 the Edge Functions (Deno) mid-request",
    )
    args = parser.parse_args(argv)
    report = run(
        args.duration,
        args.users,
        args.seed,
        args.threads,
        args.state_dir,
        kill_edge_functions=args.kill_edge_functions,
    )
    print(report.render(), flush=True)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
