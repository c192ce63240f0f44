"""Webhook delivery as Stripe does it: signed, retried, and droppable, duplicable or
delayable on request from the control API."""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from workers.local.standins.signing import stripe_signature
from workers.local.standins.stripe.common import (
    DELIVERY_MODES,
    DeliveryMode,
    Obj,
    StripeStandinConfig,
)

# --------------------------------------------------------------------------
# Webhook delivery
# --------------------------------------------------------------------------


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    event_id: str = field(compare=False)
    url: str = field(compare=False)
    attempt: int = field(compare=False, default=1)
    copies: int = field(compare=False, default=1)


class WebhookDispatcher:
    """Delivers events to endpoints in a background thread, retrying failures.

    Modes: `normal` (in creation order), `drop` (recorded, never sent),
    `duplicate` (each delivery sent `copies` times concurrently), `delay`
    (`delay` seconds late), `reorder` (events held until `window` are waiting,
    then sent newest first; `flush()` releases the rest).
    """

    def __init__(self, config: StripeStandinConfig, lookup: Callable[[str], Obj | None]) -> None:
        self.config = config
        self._lookup = lookup
        self.mode: DeliveryMode = "normal"
        self.copies = 2
        self.delay = 1.0
        self.window = 3
        self.deliveries: list[Obj] = []
        self._heap: list[_Job] = []
        self._held: list[str] = []
        self._seq = 0
        self._in_flight = 0
        self._generation = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stripe-webhook")
        self._http = httpx.Client(timeout=config.delivery_timeout)
        self._thread = threading.Thread(target=self._run, name="stripe-webhooks", daemon=True)
        self._thread.start()

    # -- scheduling -------------------------------------------------------

    def set_mode(
        self,
        mode: str,
        *,
        copies: int | None = None,
        delay: float | None = None,
        window: int | None = None,
    ) -> None:
        if mode not in DELIVERY_MODES:
            raise ValueError(f"unknown delivery mode {mode!r}; one of {DELIVERY_MODES}")
        with self._cond:
            self.mode = mode  # type: ignore[assignment]
            if copies is not None:
                self.copies = max(1, copies)
            if delay is not None:
                self.delay = max(0.0, delay)
            if window is not None:
                self.window = max(1, window)
        if mode != "reorder":
            self.flush()

    def submit(self, event: Obj) -> None:
        """Schedule the first delivery of a new event according to the mode."""
        with self._cond:
            urls = list(self.config.webhook_urls)
            if self.mode == "drop":
                for url in urls:
                    self.deliveries.append(self._record(event["id"], event["type"], url, 1))
                return
            if self.mode == "reorder":
                self._held.append(event["id"])
                if len(self._held) >= self.window:
                    self._release_held()
                return
            due = time.monotonic() + (self.delay if self.mode == "delay" else 0.0)
            copies = self.copies if self.mode == "duplicate" else 1
            for url in urls:
                self._push(event["id"], url, due=due, copies=copies)

    def redeliver(self, event_ids: Iterable[str]) -> None:
        """Send events again (as Stripe's "resend"), whatever the mode."""
        with self._cond:
            now = time.monotonic()
            for event_id in event_ids:
                for url in self.config.webhook_urls:
                    self._push(event_id, url, due=now)

    def flush(self) -> None:
        with self._cond:
            self._release_held()

    def _release_held(self) -> None:
        now = time.monotonic()
        held, self._held = self._held, []
        for event_id in reversed(held):
            for url in self.config.webhook_urls:
                self._push(event_id, url, due=now)

    def _push(
        self, event_id: str, url: str, *, due: float, attempt: int = 1, copies: int = 1
    ) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Job(due, self._seq, event_id, url, attempt, copies))
        self._cond.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued or in flight (held reorder events excepted)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def deliveries_of(self, event_id: str | None = None) -> list[Obj]:
        with self._cond:
            return [
                dict(d) for d in self.deliveries if event_id is None or d["event_id"] == event_id
            ]

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._in_flight + len(self._held)

    def reset(self, wait: float = 5.0) -> None:
        """Forget queued events and records; wait (up to `wait` s) for a delivery in flight."""
        with self._cond:
            self._generation += 1
            self._heap.clear()
            self._held.clear()
            self.mode = "normal"
            self._cond.notify_all()
            deadline = time.monotonic() + wait
            while self._in_flight and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            self.deliveries.clear()

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # -- the delivery thread ----------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        wait = self._heap[0].due - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                job = heapq.heappop(self._heap)
                self._in_flight += 1
                generation = self._generation
            try:
                self._deliver(job, generation)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _deliver(self, job: _Job, generation: int) -> None:
        event = self._lookup(job.event_id)
        if event is None:
            return
        if job.copies > 1:
            futures = [
                self._pool.submit(self._send, event, job.url, job.attempt, generation)
                for _ in range(job.copies)
            ]
            ok = any([f.result() for f in futures])
        else:
            ok = self._send(event, job.url, job.attempt, generation)
        if not ok and job.attempt <= len(self.config.retry_delays):
            with self._cond:
                if not self._stopped and generation == self._generation:
                    due = time.monotonic() + float(self.config.retry_delays[job.attempt - 1])
                    self._push(job.event_id, job.url, due=due, attempt=job.attempt + 1)

    def _send(self, event: Obj, url: str, attempt: int, generation: int) -> bool:
        payload = json.dumps(event, indent=2).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": stripe_signature(payload, self.config.webhook_secret),
        }
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        answer: Any = None
        try:
            response = self._http.post(url, content=payload, headers=headers)
            status = response.status_code
            # Stripe keeps the endpoint's response body with each delivery attempt.
            try:
                answer = response.json()
            except ValueError:
                answer = response.text[:1000]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        record = self._record(event["id"], event["type"], url, attempt, status=status, error=error)
        record["response"] = answer
        record["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        with self._cond:
            if generation == self._generation:
                self.deliveries.append(record)
        return status is not None and 200 <= status < 300

    @staticmethod
    def _record(
        event_id: str,
        event_type: str,
        url: str,
        attempt: int,
        *,
        status: int | None = None,
        error: str | None = None,
    ) -> Obj:
        return {
            "event_id": event_id,
            "type": event_type,
            "url": url,
            "attempt": attempt,
            "status": status,
            "error": error,
            "dropped": status is None and error is None,
            "at": time.time(),
        }
