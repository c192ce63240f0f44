"""The nemesis: one fault every few seconds, from a seeded schedule.

Kinds:
- `kill -9 postgres`: the postmaster is killed mid-load; `up` notices and starts
  it again on the same data directory (crash recovery), at most twice a minute
  here, within `up`'s budget of three;
- `kill -9 worker`, `kill -9 jobs`: `up` restarts them (at most twice a minute
  each, within `up`'s own restart budget of three a minute);
- Stripe webhook deliveries `drop` (never sent), `duplicate` (2 to 5 copies at
  once), `delay` and `reorder` for a few seconds; failed deliveries are retried
  by the stand-in, as Stripe retries them (on a compressed schedule);
- the Stripe API failing requests (`fail`: 500/503 without doing anything) or
  timing out after doing them (`timeout`: the charge is made, the answer comes
  late), sometimes with the jobs process killed while it waits for the answer.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from reliability.running import RunningUp, control

KINDS: list[tuple[str, float]] = [
    ("kill -9 postgres", 3),
    ("kill -9 worker", 3),
    ("kill -9 jobs", 2),
    ("webhooks dropped", 2),
    ("webhooks duplicated", 2),
    ("webhooks delayed", 2),
    ("webhooks reordered", 2),
    ("stripe api fails", 2),
    ("stripe api times out after charging", 2),
]
# Not in the default mix: an Edge Function killed between charging for a number and
# confirming it (see `python -m reliability.faults --kill-edge-functions`).
EDGE_KILL = ("kill -9 functions", 3)


@dataclass
class Nemesis:
    up: RunningUp
    seed: int
    every: tuple[float, float] = (2.5, 5.0)
    kinds: list[tuple[str, float]] = field(default_factory=lambda: list(KINDS))
    injected: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    _kills: dict[str, deque[float]] = field(
        default_factory=lambda: {
            "worker": deque(),
            "jobs": deque(),
            "functions": deque(),
            "postgres": deque(),
        }
    )
    _thread: threading.Thread | None = None

    @property
    def stripe(self) -> str:
        return self.up.state["stripe_api_base"]

    def note(self, kind: str, detail: str = "") -> None:
        self.injected[kind] += 1
        self.log.append(f"{time.strftime('%H:%M:%S')} {kind} {detail}".rstrip())

    # -- the faults ---------------------------------------------------------------------

    def kill_postgres(self, rng: random.Random) -> None:
        """`kill -9` of the postmaster; `up` notices and recovers it (crash recovery)."""
        kills = self._kills["postgres"]
        now = time.monotonic()
        while kills and now - kills[0] > 65:
            kills.popleft()
        if len(kills) >= 2 or not self.up.postgres_alive():
            return  # stay inside `up`'s budget of three Postgres restarts a minute
        pid = self.up.kill_postgres()
        if pid is None:
            return
        kills.append(now)
        started = time.monotonic()
        deadline = started + 90
        # Until a new postmaster serves (the signal takes a moment to land).
        while self.up.postmaster_pid() == pid or not self.up.postgres_alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postgres was not recovered:\n{self.up.log_tail()}")
            time.sleep(0.1)
        self.note("kill -9 postgres", f"pid {pid}, back in {time.monotonic() - started:.1f} s")

    def kill_child(self, name: str) -> None:
        kills = self._kills[name]
        now = time.monotonic()
        while kills and now - kills[0] > 65:
            kills.popleft()
        if len(kills) >= 2 or self.up.child(name) is None:
            return  # stay inside `up`'s restart budget; wait for the last restart
        if name == "worker" and not self.up.worker_ready():
            return
        pid = self.up.kill_child(name)
        if pid is not None:
            kills.append(now)
            self.note(f"kill -9 {name}", f"pid {pid}")

    def webhooks(self, rng: random.Random, kind: str) -> None:
        options: dict[str, dict[str, object]] = {
            "webhooks dropped": {"mode": "drop"},
            "webhooks duplicated": {"mode": "duplicate", "copies": rng.randint(2, 5)},
            "webhooks delayed": {"mode": "delay", "delay": round(rng.uniform(0.5, 4.0), 1)},
            "webhooks reordered": {"mode": "reorder", "window": rng.randint(2, 6)},
        }
        settings = options[kind]
        control(self.stripe, "POST", "/_control/webhooks", settings)
        period = rng.uniform(1.5, 5.0)
        self.note(kind, f"{settings} for {period:.1f} s")
        self.stop.wait(period)
        control(self.stripe, "POST", "/_control/webhooks", {"mode": "normal"})

    def stripe_fails(self, rng: random.Random) -> None:
        fault = {
            "mode": "fail",
            "count": rng.randint(1, 4),
            "status": rng.choice([500, 503]),
            "path_prefix": rng.choice(
                ["/v1/payment_intents", "/v1/checkout/sessions", "/v1/refunds", "/v1/customers"]
            ),
        }
        control(self.stripe, "POST", "/_control/faults", fault)
        self.note("stripe api fails", str(fault))

    def stripe_times_out(self, rng: random.Random) -> None:
        path = rng.choice(["/v1/payment_intents", "/v1/refunds", "/v1/checkout/sessions"])
        fault = {"mode": "timeout", "count": 1, "sleep": rng.uniform(2, 8), "path_prefix": path}
        control(self.stripe, "POST", "/_control/faults", fault)
        detail = f"{path}, answer {fault['sleep']:.1f} s late"
        if path == "/v1/payment_intents" and rng.random() < 0.5:
            # An auto-refill charge in flight when the jobs process dies.
            self.stop.wait(1.5)
            self.kill_child("jobs")
            detail += ", jobs killed while waiting"
        self.note("stripe api times out after charging", detail)

    # -- the schedule --------------------------------------------------------------------

    def inject(self, rng: random.Random) -> None:
        kind = rng.choices([k for k, _ in self.kinds], weights=[w for _, w in self.kinds])[0]
        if kind == "kill -9 postgres":
            self.kill_postgres(rng)
        elif kind == "kill -9 worker":
            self.kill_child("worker")
        elif kind == "kill -9 jobs":
            self.kill_child("jobs")
        elif kind == "kill -9 functions":
            self.kill_child("functions")
        elif kind.startswith("webhooks"):
            self.webhooks(rng, kind)
        elif kind == "stripe api fails":
            self.stripe_fails(rng)
        else:
            self.stripe_times_out(rng)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        self.stop.wait(rng.uniform(*self.every))
        while not self.stop.is_set():
            try:
                self.inject(rng)
            except Exception as exc:  # reported; the run goes on
                self.errors.append(repr(exc))
            self.stop.wait(rng.uniform(*self.every))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def heal(self, timeout: float = 120) -> None:
        """Everything back to normal: Postgres up, worker and jobs running, no armed faults."""
        if not self.up.postgres_alive():
            self.up.restart_postgres(timeout)
        control(self.stripe, "DELETE", "/_control/faults")
        control(self.stripe, "POST", "/_control/webhooks", {"mode": "normal"})
        for name in ("worker", "jobs", "functions"):
            if not self.up.wait_child(name, timeout):
                raise RuntimeError(f"{name} did not come back:\n{self.up.log_tail()}")
