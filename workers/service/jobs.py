"""`callbalance jobs`: the background loop.

- auto-refill: wakes on `NOTIFY refill_requests` (within a second of the
  debit that enqueued it) when a session connection is configured
  (`DATABASE_SESSION_URL`: `LISTEN` cannot work through a transaction-mode
  pooler), and polls every `poll_seconds` in any case;
- reconciliation of holds without a status callback, every minute;
- purchases that died half-way, every 5 minutes: a purchase pending for 10
  minutes is cancelled and refunded within 15 minutes of its start;
- number renewals and releases, hourly.
Several processes may run at once: every claim is `for update skip locked`
and every SQL step is idempotent. SIGTERM stops the loop between steps.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import psycopg
import stripe
from twilio.rest import Client as TwilioClient

from workers.service import auto_refill, twilio_jobs
from workers.service.db import SyncDatabase, connect
from workers.service.logs import log


@dataclass
class Schedule:
    every: float
    run: Callable[[], object]
    name: str
    next_at: float = 0.0


@dataclass
class Jobs:
    db: SyncDatabase
    stripe_client: stripe.StripeClient
    twilio: TwilioClient
    poll_seconds: float = 5.0
    reconcile_seconds: float = 60.0
    renew_seconds: float = 3600.0
    purchase_seconds: float = 300.0
    voice_url: str | None = None
    listen_url: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def refills(self) -> object:
        charged = auto_refill.run_once(self.db, self.stripe_client)
        return charged + auto_refill.reconcile_once(self.db, self.stripe_client)

    def reconcile(self) -> object:
        return twilio_jobs.reconcile_holds(self.db, self.twilio)

    def renew(self) -> object:
        renewed = twilio_jobs.renew_numbers(self.db)
        released = twilio_jobs.release_numbers(self.db, self.twilio)
        return {"renewals": renewed, "releases": released}

    def purchases(self) -> object:
        """Cancel (and refund) purchases that died half-way; release their orphans at Twilio."""
        if self.voice_url:
            return twilio_jobs.reconcile_numbers(self.db, self.twilio, self.voice_url)
        return twilio_jobs.cancel_stale_purchases(self.db)

    def schedules(self) -> list[Schedule]:
        return [
            Schedule(self.poll_seconds, self.refills, "auto-refill"),
            Schedule(self.reconcile_seconds, self.reconcile, "reconcile holds"),
            Schedule(self.purchase_seconds, self.purchases, "number purchases"),
            Schedule(self.renew_seconds, self.renew, "renew numbers"),
        ]

    def run(self) -> None:
        schedules = self.schedules()
        wake = threading.Event()
        if self.listen_url:
            threading.Thread(target=self._listen, args=(wake,), daemon=True).start()
            log("jobs started", refills="LISTEN refill_requests on DATABASE_SESSION_URL")
        else:
            log(
                "jobs started",
                refills=f"no DATABASE_SESSION_URL: polling every {self.poll_seconds:g} s",
            )
        while not self.stop.is_set():
            now = time.monotonic()
            woken = wake.is_set()
            wake.clear()
            for schedule in schedules:
                due = now >= schedule.next_at or (woken and schedule.name == "auto-refill")
                if due and not self.stop.is_set():
                    self._run_step(schedule)
                    schedule.next_at = time.monotonic() + schedule.every
            wait = max(0.0, min(s.next_at for s in schedules) - time.monotonic())
            wake.wait(timeout=min(wait, 1.0))
        log("jobs stopped")

    def _run_step(self, schedule: Schedule) -> None:
        started = time.perf_counter()
        try:
            result = schedule.run()
        except Exception as exc:  # a failed step is retried on its next turn
            log("job failed", logging.ERROR, job=schedule.name, error=repr(exc))
            return
        if result:
            log(
                "job ran",
                job=schedule.name,
                result=result,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    def _listen(self, wake: threading.Event) -> None:
        while not self.stop.is_set():
            try:
                assert self.listen_url is not None
                with connect(self.listen_url, autocommit=True) as conn:
                    conn.execute("listen refill_requests")
                    while not self.stop.is_set():
                        for _note in conn.notifies(timeout=1.0, stop_after=1):
                            wake.set()
            except psycopg.Error:
                self.stop.wait(1.0)


def run_jobs(poll_seconds: float) -> int:
    """`callbalance jobs`: the loop with the environment's clients, until SIGINT or SIGTERM."""
    from workers.service.logs import setup_logging
    from workers.service.providers import make_stripe_client, make_twilio_client
    from workers.service.settings import load_settings

    settings = load_settings()
    setup_logging()
    db = SyncDatabase(settings.database_url)
    jobs = Jobs(
        db=db,
        stripe_client=make_stripe_client(settings.stripe_secret_key, settings.stripe_api_base),
        twilio=make_twilio_client(
            settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base
        ),
        poll_seconds=poll_seconds,
        voice_url=settings.public_url + "/twilio/voice",
        listen_url=settings.database_session_url,
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
