"""A local stand-in for the parts of the Stripe API this project uses.

State lives in memory. Requests are form-encoded exactly as Stripe's SDKs send
them (`line_items[0][price]=...`), responses carry Stripe's JSON shapes and
error envelope, `Idempotency-Key` is honoured as Stripe honours it, and paying
a checkout session (or confirming a payment intent) sends signed webhook events
to the configured URLs from a background thread, with retries.

Besides `/v1/...` the app serves:

- `GET /checkout/{id}`: a minimal pay page; `POST /checkout/{id}/pay` pays it
  (form fields `card=ok|declined|authentication_required`, `method=card|delayed`).
- `/_control/...`: test and fault-injection controls (see `create_app`).

Point stripe-python at it with
`stripe.StripeClient(key, base_addresses={"api": base_url})`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import heapq
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx
from fastapi import Body, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from workers.local.standins import persist
from workers.local.standins.signing import stripe_signature

Obj = dict[str, Any]

API_VERSION = "2025-09-30.clover"
DEFAULT_PRICES: dict[str, int] = {"price_5USD": 500, "price_10USD": 1000}
CardBehaviour = Literal["ok", "decline", "authentication_required"]
CARD_BEHAVIOURS: tuple[str, ...] = ("ok", "decline", "authentication_required")
DeliveryMode = Literal["normal", "drop", "duplicate", "delay", "reorder"]
DELIVERY_MODES: tuple[str, ...] = ("normal", "drop", "duplicate", "delay", "reorder")


# --------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------


class StripeError(Exception):
    """An API error answered with Stripe's `{"error": {...}}` envelope."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: Obj | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}

    def body(self) -> Obj:
        error: Obj = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def _missing(kind: str, ident: str, param: str | None = None) -> StripeError:
    return StripeError(
        404 if param is None else 400,
        "invalid_request_error",
        f"No such {kind}: '{ident}'",
        code="resource_missing",
        param=param or "id",
    )


def _invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, "invalid_request_error", message, code=code, param=param)


def new_id(prefix: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(24))


def parse_form(pairs: Iterable[tuple[str, str]]) -> Obj:
    """Decode Stripe's bracketed form encoding into nested dicts and lists.

    `a[b][0][c]=1` becomes `{"a": {"b": [{"c": "1"}]}}`; `a[]=x` appends.
    """
    root: Obj = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", key.replace("][", "]["))
        if not parts:
            continue
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "[]":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    result: Obj = _listify(root)
    return result


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("true", "1", "yes", "on")


def _int(params: Obj, name: str, *, required: bool = False) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise _invalid(f"Missing required param: {name}.", name, "parameter_missing")
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise _invalid(f"Invalid integer: {raw}", name, "parameter_invalid_integer") from None


def _metadata(params: Obj, name: str = "metadata") -> dict[str, str]:
    raw = params.get(name) or {}
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise _invalid("Invalid object", name)
    return {str(k): str(v) for k, v in raw.items()}


def _now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass
class StripeStandinConfig:
    """How the stand-in behaves; every field can also be changed at run time."""

    webhook_urls: list[str] = field(default_factory=list)
    webhook_secret: str = "whsec_standin"  # noqa: S105 - a local test secret
    # None: any `sk_test_`/`rk_test_` key is accepted.
    api_key: str | None = None
    prices: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    currency: str = "usd"
    # Seconds to wait before each retry of a failed delivery (Stripe retries for days).
    retry_delays: Sequence[float] = (1.0, 5.0, 30.0, 120.0, 600.0)
    delivery_timeout: float = 10.0
    # Base URL used in checkout `url`s; None: the URL the request came in on.
    public_url: str | None = None
    api_version: str = API_VERSION
    # Where objects, events and idempotency keys are kept between runs (None: memory only).
    state_file: str | None = None


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


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


@dataclass
class Fault:
    """Applies to the next `count` API requests matching `method`/`path_prefix`.

    `fail`: answer `status` without doing anything (nothing is stored under the
    idempotency key). `timeout`: do the request, store its result under the
    idempotency key, then hold the response for `sleep` seconds.
    """

    mode: Literal["fail", "timeout"]
    count: int = 1
    status: int = 500
    sleep: float = 30.0
    method: str | None = None
    path_prefix: str | None = None
    should_retry: bool | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.count <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path_prefix and not path.startswith(self.path_prefix))


@dataclass
class _Ctx:
    request_id: str
    idempotency_key: str | None
    base_url: str


@dataclass
class _Stored:
    fingerprint: tuple[str, str, tuple[tuple[str, str], ...]]
    status: int
    body: Obj


Handler = Callable[[Obj, tuple[str, ...], _Ctx], Obj]


# --------------------------------------------------------------------------
# The stand-in
# --------------------------------------------------------------------------


class StripeStandin:
    """In-memory Stripe: objects, events, idempotency, card behaviour, faults."""

    def __init__(self, config: StripeStandinConfig | None = None) -> None:
        self.config = config or StripeStandinConfig()
        self.lock = threading.RLock()
        self.objects: dict[str, Obj] = {}
        self.events: list[Obj] = []
        self.line_items: dict[str, list[Obj]] = {}
        self.card_behaviour: dict[str, tuple[CardBehaviour, str]] = {}
        self.faults: list[Fault] = []
        self.idempotency: dict[tuple[str, str], _Stored] = {}
        self.request_log: list[Obj] = []
        self.dispatcher = WebhookDispatcher(self.config, self._event_by_id)
        self._seed_prices()
        self._restore()
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"customers"), self.create_customer),
            ("GET", re.compile(r"customers"), self.list_customers),
            ("GET", re.compile(r"customers/search"), self.search_customers),
            ("GET", re.compile(r"customers/([^/]+)"), self.retrieve_customer),
            ("POST", re.compile(r"customers/([^/]+)"), self.update_customer),
            ("GET", re.compile(r"customers/([^/]+)/payment_methods"), self.list_customer_pms),
            ("GET", re.compile(r"prices"), self.list_prices),
            ("GET", re.compile(r"prices/([^/]+)"), self.retrieve_price),
            ("GET", re.compile(r"products/([^/]+)"), self.retrieve_product),
            ("POST", re.compile(r"checkout/sessions"), self.create_checkout_session),
            ("GET", re.compile(r"checkout/sessions"), self.list_checkout_sessions),
            ("GET", re.compile(r"checkout/sessions/([^/]+)"), self.retrieve_checkout_session),
            ("GET", re.compile(r"checkout/sessions/([^/]+)/line_items"), self.list_line_items),
            ("POST", re.compile(r"checkout/sessions/([^/]+)/expire"), self.expire_checkout_session),
            ("POST", re.compile(r"payment_intents"), self.create_payment_intent),
            ("GET", re.compile(r"payment_intents"), self.list_payment_intents),
            ("GET", re.compile(r"payment_intents/([^/]+)"), self.retrieve_payment_intent),
            ("GET", re.compile(r"payment_methods"), self.list_payment_methods),
            ("GET", re.compile(r"payment_methods/([^/]+)"), self.retrieve_payment_method),
            ("POST", re.compile(r"payment_methods/([^/]+)/attach"), self.attach_payment_method),
            ("POST", re.compile(r"payment_methods/([^/]+)/detach"), self.detach_payment_method),
            ("GET", re.compile(r"charges"), self.list_charges),
            ("GET", re.compile(r"charges/([^/]+)"), self.retrieve_charge),
            ("POST", re.compile(r"refunds"), self.create_refund),
            ("GET", re.compile(r"refunds"), self.list_refunds),
            ("GET", re.compile(r"refunds/([^/]+)"), self.retrieve_refund),
            ("GET", re.compile(r"disputes/([^/]+)"), self.retrieve_dispute),
            ("GET", re.compile(r"events"), self.list_events),
            ("GET", re.compile(r"events/([^/]+)"), self.retrieve_event),
        ]

    # -- lifecycle --------------------------------------------------------

    def _seed_prices(self) -> None:
        for price_id, cents in self.config.prices.items():
            self.add_price(price_id, cents)

    def add_price(self, price_id: str, unit_amount: int, currency: str | None = None) -> Obj:
        with self.lock:
            product: Obj = {
                "id": "prod_" + price_id.removeprefix("price_"),
                "object": "product",
                "active": True,
                "created": _now(),
                "description": None,
                "livemode": False,
                "metadata": {},
                "name": f"Top-up {unit_amount / 100:.2f}",
                "type": "service",
            }
            price: Obj = {
                "id": price_id,
                "object": "price",
                "active": True,
                "billing_scheme": "per_unit",
                "created": _now(),
                "currency": currency or self.config.currency,
                "livemode": False,
                "lookup_key": None,
                "metadata": {},
                "nickname": None,
                "product": product["id"],
                "recurring": None,
                "tax_behavior": "unspecified",
                "type": "one_time",
                "unit_amount": unit_amount,
                "unit_amount_decimal": str(unit_amount),
            }
            self.objects[product["id"]] = product
            self.objects[price_id] = price
            return price

    def reset(self) -> None:
        """Forget everything except the configuration; re-seed the prices."""
        # Not under `self.lock`: a delivery in flight may need it to finish.
        self.dispatcher.reset()
        with self.lock:
            self.objects.clear()
            self.events.clear()
            self.line_items.clear()
            self.card_behaviour.clear()
            self.faults.clear()
            self.idempotency.clear()
            self.request_log.clear()
            self._seed_prices()

    def close(self) -> None:
        self.dispatcher.close()

    # -- persistence ------------------------------------------------------

    def _restore(self) -> None:
        saved = persist.load(self.config.state_file)
        if saved is None:
            return
        self.objects.update(saved.get("objects", {}))
        self.events = list(saved.get("events", []))
        self.line_items = dict(saved.get("line_items", {}))
        self.card_behaviour = {
            target: (behaviour, code)
            for target, (behaviour, code) in saved.get("card_behaviour", {}).items()
        }
        for api_key, key, fingerprint, status, body in saved.get("idempotency", []):
            method, path, pairs = fingerprint
            self.idempotency[(api_key, key)] = _Stored(
                (method, path, tuple((k, v) for k, v in pairs)), status, body
            )

    def save(self) -> None:
        """Write objects, events and idempotency keys to the state file, when there is one."""
        if self.config.state_file is None:
            return
        with self.lock:
            persist.save(
                self.config.state_file,
                {
                    "objects": self.objects,
                    "events": self.events,
                    "line_items": self.line_items,
                    "card_behaviour": {t: list(b) for t, b in self.card_behaviour.items()},
                    "idempotency": [
                        [api_key, key, list(stored.fingerprint), stored.status, stored.body]
                        for (api_key, key), stored in self.idempotency.items()
                    ],
                },
            )

    # -- objects ----------------------------------------------------------

    def _get(self, kind: str, ident: str, param: str | None = None) -> Obj:
        obj = self.objects.get(ident)
        if obj is None or obj.get("object") != kind:
            raise _missing(kind.split(".")[-1], ident, param)
        return obj

    def _event_by_id(self, event_id: str) -> Obj | None:
        with self.lock:
            obj = self.objects.get(event_id)
            return copy.deepcopy(obj) if obj is not None else None

    def _list(
        self, kind: str, params: Obj, url: str, pred: Callable[[Obj], bool] | None = None
    ) -> Obj:
        # Newest first, as Stripe lists; insertion order breaks ties within a second.
        items = [
            o
            for o in reversed(self.objects.values())
            if o.get("object") == kind and (pred is None or pred(o))
        ]
        return self._page(items, params, url)

    @staticmethod
    def _page(items: list[Obj], params: Obj, url: str) -> Obj:
        limit = max(1, min(100, _int(params, "limit") or 10))
        after = params.get("starting_after")
        if after:
            ids = [o["id"] for o in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return {
            "object": "list",
            "data": copy.deepcopy(items[:limit]),
            "has_more": len(items) > limit,
            "url": url,
        }

    def _expand(self, obj: Obj, paths: Iterable[str]) -> Obj:
        result = copy.deepcopy(obj)
        for path in paths:
            self._expand_path(result, path.split("."))
        return result

    def _expand_path(self, node: Any, parts: list[str]) -> None:
        if not parts or not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(node.get("data"), list):
            for item in node["data"]:
                self._expand_path(item, rest)
            return
        value = node.get(head)
        if isinstance(value, str) and value in self.objects:
            node[head] = copy.deepcopy(self.objects[value])
        self._expand_path(node.get(head), rest)

    # -- events -----------------------------------------------------------

    def emit(self, event_type: str, obj: Obj, ctx: _Ctx | None = None) -> Obj:
        """Record an event for `obj` (a snapshot) and schedule its delivery."""
        with self.lock:
            event: Obj = {
                "id": new_id("evt_"),
                "object": "event",
                "api_version": self.config.api_version,
                "created": _now(),
                "data": {"object": copy.deepcopy(obj)},
                "livemode": False,
                "pending_webhooks": len(self.config.webhook_urls),
                "request": {
                    "id": ctx.request_id if ctx else None,
                    "idempotency_key": ctx.idempotency_key if ctx else None,
                },
                "type": event_type,
            }
            self.objects[event["id"]] = event
            self.events.append(event)
            self.dispatcher.submit(event)
            return event

    def list_events(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        wanted = params.get("type")
        items = [e for e in reversed(self.events) if not wanted or e["type"] == wanted]
        return self._page(items, params, "/v1/events")

    def retrieve_event(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("event", ids[0])

    # -- customers --------------------------------------------------------

    def create_customer(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer: Obj = {
            "id": new_id("cus_"),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": _now(),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "email": params.get("email"),
            "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": _metadata(params),
            "name": params.get("name"),
            "phone": params.get("phone"),
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self.objects[customer["id"]] = customer
        self.emit("customer.created", customer, ctx)
        return customer

    def retrieve_customer(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("customer", ids[0])

    def update_customer(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer = self._get("customer", ids[0])
        for name in ("email", "name", "description", "phone"):
            if name in params:
                customer[name] = params[name] or None
        if "metadata" in params:
            customer["metadata"].update(_metadata(params))
            customer["metadata"] = {k: v for k, v in customer["metadata"].items() if v != ""}
        settings = params.get("invoice_settings")
        if isinstance(settings, dict) and "default_payment_method" in settings:
            pm_id = settings["default_payment_method"] or None
            if pm_id:
                self._get("payment_method", pm_id, "invoice_settings[default_payment_method]")
            customer["invoice_settings"]["default_payment_method"] = pm_id
        self.emit("customer.updated", customer, ctx)
        return customer

    def list_customers(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        email = params.get("email")
        return self._list(
            "customer", params, "/v1/customers", lambda c: not email or c.get("email") == email
        )

    def search_customers(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        """Supports `field:'value'` and `metadata['key']:'value'` clauses joined by AND."""
        query = str(params.get("query") or "")
        clauses = re.findall(
            r"(metadata\[['\"]([^'\"]+)['\"]\]|\w+)\s*:\s*['\"]([^'\"]*)['\"]", query
        )
        if not clauses:
            raise _invalid("Invalid search query.", "query")

        def matches(c: Obj) -> bool:
            for field_name, meta_key, value in clauses:
                actual = c["metadata"].get(meta_key) if meta_key else c.get(field_name)
                if actual != value:
                    return False
            return True

        page = self._list("customer", params, "/v1/customers/search", matches)
        page.update(object="search_result", next_page=None)
        return page

    def list_customer_pms(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        self._get("customer", ids[0])
        return self._list(
            "payment_method",
            params,
            f"/v1/customers/{ids[0]}/payment_methods",
            lambda pm: pm["customer"] == ids[0],
        )

    # -- prices -----------------------------------------------------------

    def retrieve_price(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("price", ids[0])

    def list_prices(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._list("price", params, "/v1/prices")

    def retrieve_product(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("product", ids[0])

    # -- checkout sessions ------------------------------------------------

    def create_checkout_session(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        mode = params.get("mode")
        if mode != "payment":
            raise _invalid("This stand-in supports `mode=payment` only.", "mode")
        customer_id = params.get("customer") or None
        if customer_id:
            self._get("customer", customer_id, "customer")
        raw_items = params.get("line_items")
        if not isinstance(raw_items, list) or not raw_items:
            raise _invalid(
                "You must specify `line_items` in `payment` mode.",
                "line_items",
                "parameter_missing",
            )
        session_id = new_id("cs_test_")
        items: list[Obj] = []
        currency: str | None = None
        for i, raw in enumerate(raw_items):
            items.append(self._line_item(raw, i))
            if currency and items[-1]["currency"] != currency:
                raise _invalid("All line items must use the same currency.", "line_items")
            currency = items[-1]["currency"]
        total = sum(int(item["amount_total"]) for item in items)
        pi_data = params.get("payment_intent_data") or {}
        if not isinstance(pi_data, dict):
            raise _invalid("Invalid object", "payment_intent_data")
        sfu = pi_data.get("setup_future_usage") or None
        if sfu not in (None, "off_session", "on_session"):
            raise _invalid(
                f"Invalid setup_future_usage: {sfu}", "payment_intent_data[setup_future_usage]"
            )
        session: Obj = {
            "id": session_id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": _now(),
            "currency": currency,
            "customer": customer_id,
            "customer_creation": params.get("customer_creation")
            or (None if customer_id else "if_required"),
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": _now() + 24 * 3600,
            "invoice": None,
            "livemode": False,
            "locale": None,
            "metadata": _metadata(params),
            "mode": "payment",
            "payment_intent": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "submit_type": None,
            "success_url": params.get("success_url"),
            "ui_mode": "hosted",
            "url": f"{ctx.base_url}/checkout/{session_id}",
        }
        self.objects[session_id] = session
        self.line_items[session_id] = items
        # Kept aside (not part of Stripe's session shape): what the payment intent gets.
        self.objects["_pid_" + session_id] = {
            "object": "_payment_intent_data",
            "metadata": _metadata(pi_data),
            "setup_future_usage": sfu,
            "description": pi_data.get("description"),
        }
        return session

    def _line_item(self, raw: Any, index: int) -> Obj:
        if not isinstance(raw, dict):
            raise _invalid("Invalid line item", f"line_items[{index}]")
        quantity = _int(raw, "quantity") or 1
        if raw.get("price"):
            price: Obj = copy.deepcopy(
                self._get("price", raw["price"], f"line_items[{index}][price]")
            )
        elif isinstance(raw.get("price_data"), dict):
            data = raw["price_data"]
            unit = _int(data, "unit_amount", required=True)
            product_data = data.get("product_data") or {}
            if not data.get("currency"):
                raise _invalid(
                    "Missing required param: line_items[0][price_data][currency].",
                    f"line_items[{index}][price_data][currency]",
                    "parameter_missing",
                )
            product_id = data.get("product") or new_id("prod_")
            if not data.get("product"):
                self.objects[product_id] = {
                    "id": product_id,
                    "object": "product",
                    "active": False,
                    "created": _now(),
                    "livemode": False,
                    "metadata": _metadata(product_data) if isinstance(product_data, dict) else {},
                    "name": (product_data or {}).get("name", "Item"),
                }
            price = {
                "id": new_id("price_"),
                "object": "price",
                "active": False,
                "created": _now(),
                "currency": str(data["currency"]).lower(),
                "livemode": False,
                "metadata": {},
                "product": product_id,
                "type": "one_time",
                "unit_amount": unit,
                "unit_amount_decimal": str(unit),
            }
        else:
            raise _invalid(
                "You must specify either `price` or `price_data` in each line item.",
                f"line_items[{index}]",
            )
        amount = int(price["unit_amount"]) * quantity
        product = self.objects.get(price["product"], {})
        return {
            "id": new_id("li_"),
            "object": "item",
            "amount_discount": 0,
            "amount_subtotal": amount,
            "amount_tax": 0,
            "amount_total": amount,
            "currency": price["currency"],
            "description": product.get("name"),
            "price": price,
            "quantity": quantity,
        }

    def retrieve_checkout_session(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("checkout.session", ids[0])

    def list_checkout_sessions(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        pi, cus = params.get("payment_intent"), params.get("customer")
        return self._list(
            "checkout.session",
            params,
            "/v1/checkout/sessions",
            lambda s: (not pi or s["payment_intent"] == pi) and (not cus or s["customer"] == cus),
        )

    def list_line_items(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        self._get("checkout.session", ids[0])
        return self._page(
            self.line_items.get(ids[0], []), params, f"/v1/checkout/sessions/{ids[0]}/line_items"
        )

    def expire_checkout_session(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        session = self._get("checkout.session", ids[0])
        if session["status"] != "open":
            raise _invalid(
                f"Only Checkout Sessions with a status of `open` can be expired; "
                f"this one is `{session['status']}`."
            )
        session["status"] = "expired"
        self.emit("checkout.session.expired", session, ctx)
        return session

    def pay_checkout(
        self, session_id: str, *, card: str = "ok", method: str = "card", email: str | None = None
    ) -> tuple[int, Obj]:
        """Pay an open session as a customer on the hosted page would.

        `card`: ok | declined | authentication_required; `method`: card | delayed
        (completes unpaid; settle later with `settle_delayed`). Returns the HTTP
        status and `{"session", "payment_intent"}` or an error envelope.
        """
        with self.lock:
            session = self.objects.get(session_id)
            if session is None or session.get("object") != "checkout.session":
                return 404, _missing("checkout.session", session_id).body()
            if session["status"] != "open":
                err = _invalid(f"This Checkout Session is {session['status']}.")
                return 400, err.body()
            pid = self.objects["_pid_" + session_id]
            customer_id = session["customer"]
            if customer_id is None and (
                pid["setup_future_usage"] or session["customer_creation"] == "always"
            ):
                customer_id = self.create_customer(
                    {"email": email or session["customer_email"]}, (), self._ctx()
                )["id"]
                session["customer"] = customer_id
            customer = self.objects.get(customer_id) if customer_id else None
            pm = self._new_payment_method(
                customer_id if pid["setup_future_usage"] else None,
                email or (customer or {}).get("email") or session["customer_email"],
            )
            behaviour, decline_code = self._behaviour(pm["id"], customer_id)
            if card in ("declined", "decline"):
                behaviour, decline_code = "decline", "generic_decline"
            elif card in CARD_BEHAVIOURS and card != "ok":
                behaviour = card  # type: ignore[assignment]
                decline_code = card
            session["customer_details"] = {
                "address": None,
                "email": pm["billing_details"]["email"],
                "name": None,
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            }
            pi = self._new_payment_intent(
                amount=session["amount_total"],
                currency=session["currency"],
                customer=customer_id,
                payment_method=pm["id"],
                metadata=dict(pid["metadata"]),
                setup_future_usage=pid["setup_future_usage"],
                description=pid["description"],
            )
            ctx = self._ctx()
            if method == "delayed":
                pi["status"] = "processing"
                session.update(status="complete", payment_status="unpaid", payment_intent=pi["id"])
                self.emit("checkout.session.completed", session, ctx)
                self.emit("payment_intent.processing", pi, ctx)
                return 200, {"session": copy.deepcopy(session), "payment_intent": copy.deepcopy(pi)}
            if behaviour != "ok":
                error = self._fail_payment(pi, pm, behaviour, decline_code, ctx)
                session["payment_intent"] = pi["id"]
                return 402, error.body()
            charge = self._succeed_payment(pi, pm)
            session.update(status="complete", payment_status="paid", payment_intent=pi["id"])
            self.emit("checkout.session.completed", session, ctx)
            self.emit("payment_intent.succeeded", pi, ctx)
            self.emit("charge.succeeded", charge, ctx)
            return 200, {"session": copy.deepcopy(session), "payment_intent": copy.deepcopy(pi)}

    def settle_delayed(self, session_id: str, outcome: str) -> Obj:
        """Finish a `method=delayed` payment: `succeeded` or `failed`."""
        with self.lock:
            session = self._get("checkout.session", session_id)
            pi = self.objects.get(session["payment_intent"] or "")
            if pi is None or pi["status"] != "processing":
                raise _invalid("This Checkout Session has no payment in processing.")
            pm = self.objects[pi["payment_method"]]
            ctx = self._ctx()
            if outcome == "succeeded":
                charge = self._succeed_payment(pi, pm)
                session["payment_status"] = "paid"
                self.emit("checkout.session.async_payment_succeeded", session, ctx)
                self.emit("payment_intent.succeeded", pi, ctx)
                self.emit("charge.succeeded", charge, ctx)
            elif outcome == "failed":
                self._record_failure(pi, pm, "decline", "generic_decline")
                self.emit("checkout.session.async_payment_failed", session, ctx)
                self.emit("payment_intent.payment_failed", pi, ctx)
            else:
                raise _invalid("outcome must be `succeeded` or `failed`", "outcome")
            return session

    # -- payment methods --------------------------------------------------

    def _new_payment_method(self, customer_id: str | None, email: str | None = None) -> Obj:
        pm: Obj = {
            "id": new_id("pm_"),
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {"address": None, "email": email, "name": None, "phone": None},
            "card": {
                "brand": "visa",
                "checks": {"address_line1_check": None, "cvc_check": "pass"},
                "country": "US",
                "display_brand": "visa",
                "exp_month": 12,
                "exp_year": time.gmtime().tm_year + 3,
                "fingerprint": secrets.token_hex(8),
                "funding": "credit",
                "last4": "4242",
                "networks": {"available": ["visa"], "preferred": None},
                "wallet": None,
            },
            "created": _now(),
            "customer": customer_id,
            "livemode": False,
            "metadata": {},
            "type": "card",
        }
        self.objects[pm["id"]] = pm
        return pm

    def create_payment_method(self, customer_id: str | None = None) -> Obj:
        """A card payment method (attached when `customer_id` is given)."""
        with self.lock:
            if customer_id:
                self._get("customer", customer_id, "customer")
            return copy.deepcopy(self._new_payment_method(customer_id))

    def retrieve_payment_method(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("payment_method", ids[0])

    def list_payment_methods(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer = params.get("customer")
        pm_type = params.get("type")
        return self._list(
            "payment_method",
            params,
            "/v1/payment_methods",
            lambda pm: (
                (not customer or pm["customer"] == customer)
                and (not pm_type or pm["type"] == pm_type)
            ),
        )

    def attach_payment_method(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        pm = self._get("payment_method", ids[0])
        customer_id = params.get("customer")
        if not customer_id:
            raise _invalid("Missing required param: customer.", "customer", "parameter_missing")
        self._get("customer", customer_id, "customer")
        if pm["customer"] and pm["customer"] != customer_id:
            raise _invalid(
                "The payment method you provided has already been attached to a customer."
            )
        pm["customer"] = customer_id
        self.emit("payment_method.attached", pm, ctx)
        return pm

    def detach_payment_method(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        pm = self._get("payment_method", ids[0])
        if not pm["customer"]:
            raise _invalid("The payment method you provided is not attached to a customer.")
        pm["customer"] = None
        self.emit("payment_method.detached", pm, ctx)
        return pm

    def set_card_behaviour(
        self, target: str, behaviour: str, decline_code: str | None = None
    ) -> None:
        """Make charges on a payment method (`pm_...`) or a customer's cards (`cus_...`)
        succeed (`ok`), decline (`decline`, with `decline_code`, default
        `generic_decline`) or need authentication (`authentication_required`)."""
        if behaviour not in CARD_BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {CARD_BEHAVIOURS}")
        with self.lock:
            if target not in self.objects:
                raise KeyError(target)
            code = decline_code or (
                "generic_decline" if behaviour == "decline" else "authentication_required"
            )
            self.card_behaviour[target] = (behaviour, code)  # type: ignore[assignment]

    def _behaviour(self, pm_id: str | None, customer_id: str | None) -> tuple[CardBehaviour, str]:
        for key in (pm_id, customer_id):
            if key and key in self.card_behaviour:
                return self.card_behaviour[key]
        return ("ok", "")

    # -- payment intents and charges --------------------------------------

    def _new_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        customer: str | None,
        payment_method: str | None,
        metadata: dict[str, str],
        setup_future_usage: str | None = None,
        description: str | None = None,
    ) -> Obj:
        pi_id = new_id("pi_")
        pi: Obj = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic",
            "client_secret": f"{pi_id}_secret_{secrets.token_hex(12)}",
            "confirmation_method": "automatic",
            "created": _now(),
            "currency": currency,
            "customer": customer,
            "description": description,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "receipt_email": None,
            "setup_future_usage": setup_future_usage,
            "status": "requires_payment_method"
            if payment_method is None
            else "requires_confirmation",
        }
        self.objects[pi_id] = pi
        return pi

    def _new_charge(self, pi: Obj, pm: Obj, *, failed: bool = False, code: str = "") -> Obj:
        charge: Obj = {
            "id": new_id("ch_"),
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0 if failed else pi["amount"],
            "amount_refunded": 0,
            "balance_transaction": None if failed else new_id("txn_"),
            "billing_details": pm["billing_details"],
            "captured": not failed,
            "created": _now(),
            "currency": pi["currency"],
            "customer": pi["customer"],
            "description": pi["description"],
            "disputed": False,
            "failure_code": "card_declined" if failed else None,
            "failure_message": "Your card was declined." if failed else None,
            "livemode": False,
            "metadata": dict(pi["metadata"]),
            "outcome": {
                "network_status": "declined_by_network" if failed else "approved_by_network",
                "reason": code or None,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline."
                if failed
                else "Payment complete.",
                "type": "issuer_declined" if failed else "authorized",
            },
            "paid": not failed,
            "payment_intent": pi["id"],
            "payment_method": pm["id"],
            "payment_method_details": {
                "card": {
                    "brand": pm["card"]["brand"],
                    "country": pm["card"]["country"],
                    "exp_month": pm["card"]["exp_month"],
                    "exp_year": pm["card"]["exp_year"],
                    "fingerprint": pm["card"]["fingerprint"],
                    "funding": pm["card"]["funding"],
                    "last4": pm["card"]["last4"],
                },
                "type": "card",
            },
            "receipt_url": None,
            "refunded": False,
            "status": "failed" if failed else "succeeded",
        }
        self.objects[charge["id"]] = charge
        return charge

    def _succeed_payment(self, pi: Obj, pm: Obj) -> Obj:
        charge = self._new_charge(pi, pm)
        pi.update(
            status="succeeded",
            amount_received=pi["amount"],
            latest_charge=charge["id"],
            payment_method=pm["id"],
            last_payment_error=None,
        )
        return charge

    def _record_failure(self, pi: Obj, pm: Obj, behaviour: str, decline_code: str) -> StripeError:
        charge = self._new_charge(pi, pm, failed=True, code=decline_code)
        if behaviour == "authentication_required":
            code = "authentication_required"
            message = "Your card was declined. This transaction requires authentication."
        else:
            code = "card_declined"
            message = "Your card was declined."
        charge["failure_code"] = code
        last_error = {
            "charge": charge["id"],
            "code": code,
            "decline_code": decline_code,
            "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
            "message": message,
            "payment_method": copy.deepcopy(pm),
            "type": "card_error",
        }
        pi.update(
            status="requires_payment_method",
            last_payment_error=last_error,
            latest_charge=charge["id"],
            payment_method=None,
        )
        return StripeError(
            402,
            "card_error",
            message,
            code=code,
            extra={
                "charge": charge["id"],
                "decline_code": decline_code,
                "payment_intent": copy.deepcopy(pi),
                "payment_method": copy.deepcopy(pm),
            },
        )

    def _fail_payment(
        self, pi: Obj, pm: Obj, behaviour: str, decline_code: str, ctx: _Ctx
    ) -> StripeError:
        error = self._record_failure(pi, pm, behaviour, decline_code)
        self.emit("charge.failed", self.objects[pi["latest_charge"]], ctx)
        self.emit("payment_intent.payment_failed", pi, ctx)
        return error

    def create_payment_intent(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        amount = _int(params, "amount", required=True)
        assert amount is not None
        currency = params.get("currency")
        if not currency:
            raise _invalid("Missing required param: currency.", "currency", "parameter_missing")
        if amount < 50:
            raise _invalid("Amount must be at least $0.50 usd", "amount", "amount_too_small")
        customer_id = params.get("customer") or None
        if customer_id:
            self._get("customer", customer_id, "customer")
        pm_id = params.get("payment_method") or None
        pm = self._get("payment_method", pm_id, "payment_method") if pm_id else None
        if pm is not None and pm["customer"] and pm["customer"] != customer_id:
            raise _invalid(
                f"The provided PaymentMethod {pm_id} belongs to another customer.",
                "payment_method",
            )
        if pm is not None and customer_id and pm["customer"] is None:
            raise _invalid(
                f"The provided PaymentMethod {pm_id} was not attached to customer {customer_id}.",
                "payment_method",
            )
        confirm = _truthy(params.get("confirm", "false"))
        off_session = params.get("off_session")
        if off_session is not None and not confirm:
            raise _invalid("You can only set `off_session` when `confirm` is true.", "off_session")
        pi = self._new_payment_intent(
            amount=amount,
            currency=str(currency).lower(),
            customer=customer_id,
            payment_method=pm_id,
            metadata=_metadata(params),
            setup_future_usage=params.get("setup_future_usage") or None,
            description=params.get("description"),
        )
        self.emit("payment_intent.created", pi, ctx)
        if not confirm:
            return pi
        if pm is None:
            raise _invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                "payment_method",
                "payment_intent_unexpected_state",
            )
        behaviour, decline_code = self._behaviour(pm["id"], customer_id)
        if behaviour == "authentication_required" and not _truthy(off_session or "false"):
            pi.update(
                status="requires_action",
                next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}},
            )
            return pi
        if behaviour != "ok":
            raise self._fail_payment(pi, pm, behaviour, decline_code, ctx)
        charge = self._succeed_payment(pi, pm)
        self.emit("payment_intent.succeeded", pi, ctx)
        self.emit("charge.succeeded", charge, ctx)
        return pi

    def retrieve_payment_intent(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("payment_intent", ids[0])

    def list_payment_intents(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer = params.get("customer")
        return self._list(
            "payment_intent",
            params,
            "/v1/payment_intents",
            lambda pi: not customer or pi["customer"] == customer,
        )

    def retrieve_charge(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("charge", ids[0])

    def list_charges(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer, pi = params.get("customer"), params.get("payment_intent")
        return self._list(
            "charge",
            params,
            "/v1/charges",
            lambda c: (
                (not customer or c["customer"] == customer)
                and (not pi or c["payment_intent"] == pi)
            ),
        )

    # -- refunds and disputes ---------------------------------------------

    def create_refund(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        if params.get("charge"):
            charge = self._get("charge", params["charge"], "charge")
        elif params.get("payment_intent"):
            pi = self._get("payment_intent", params["payment_intent"], "payment_intent")
            if pi["status"] != "succeeded" or not pi["latest_charge"]:
                raise _invalid(
                    f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                    "payment_intent",
                )
            charge = self.objects[pi["latest_charge"]]
        else:
            raise _invalid("One of `charge` or `payment_intent` is required.", "charge")
        if charge["status"] != "succeeded":
            raise _invalid(f"Charge {charge['id']} has not succeeded.", "charge")
        remaining = charge["amount"] - charge["amount_refunded"]
        amount = _int(params, "amount")
        amount = remaining if amount is None else amount
        if remaining <= 0:
            raise _invalid(
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount <= 0 or amount > remaining:
            raise _invalid(
                f"Refund amount ({amount / 100:.2f}) is greater than unrefunded amount on "
                f"charge ({remaining / 100:.2f})",
                "amount",
                "amount_too_large",
            )
        refund: Obj = {
            "id": new_id("re_"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": new_id("txn_"),
            "charge": charge["id"],
            "created": _now(),
            "currency": charge["currency"],
            "destination_details": {"card": {"type": "refund"}, "type": "card"},
            "metadata": _metadata(params),
            "payment_intent": charge["payment_intent"],
            "reason": params.get("reason") or None,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        self.objects[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.emit("refund.created", refund, ctx)
        self.emit("charge.refunded", charge, ctx)
        return refund

    def retrieve_refund(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("refund", ids[0])

    def list_refunds(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        charge, pi = params.get("charge"), params.get("payment_intent")
        return self._list(
            "refund",
            params,
            "/v1/refunds",
            lambda r: (
                (not charge or r["charge"] == charge) and (not pi or r["payment_intent"] == pi)
            ),
        )

    def create_dispute(
        self,
        charge_or_pi: str,
        *,
        amount: int | None = None,
        reason: str = "fraudulent",
        inquiry: bool = False,
    ) -> Obj:
        """Open a dispute on a charge (or a payment intent's charge), as a card network does.

        Stripe (https://docs.stripe.com/disputes/how-disputes-work): an inquiry
        (a retrieval request, "warning") opens as `warning_needs_response` and
        withdraws nothing; a chargeback opens as `needs_response` and Stripe
        withdraws the disputed amount at once, so `charge.dispute.created` is
        followed by `charge.dispute.funds_withdrawn`, the withdrawal listed in the
        dispute's `balance_transactions`.
        """
        with self.lock:
            obj = self.objects.get(charge_or_pi)
            if obj is not None and obj.get("object") == "payment_intent":
                obj = self.objects.get(obj["latest_charge"] or "")
            if obj is None or obj.get("object") != "charge" or obj["status"] != "succeeded":
                raise _missing("charge", charge_or_pi, "charge")
            dispute: Obj = {
                "id": new_id("dp_"),
                "object": "dispute",
                "amount": obj["amount"] - obj["amount_refunded"] if amount is None else amount,
                "balance_transactions": [],
                "charge": obj["id"],
                "created": _now(),
                "currency": obj["currency"],
                "evidence": {},
                "is_charge_refundable": inquiry,
                "livemode": False,
                "metadata": {},
                "payment_intent": obj["payment_intent"],
                "reason": reason,
                "status": "warning_needs_response" if inquiry else "needs_response",
            }
            self.objects[dispute["id"]] = dispute
            obj["disputed"] = True
            self.emit("charge.dispute.created", dispute)
            if not inquiry:
                self._move_dispute_funds(dispute, withdraw=True)
            return copy.deepcopy(dispute)

    def _move_dispute_funds(self, dispute: Obj, *, withdraw: bool) -> None:
        """Withdraw or reinstate a chargeback's amount and announce it (lock held)."""
        sign = -1 if withdraw else 1
        dispute["balance_transactions"].append(
            {
                "id": new_id("txn_"),
                "object": "balance_transaction",
                "amount": sign * dispute["amount"],
                "currency": dispute["currency"],
                "created": _now(),
                "description": (
                    f"Chargeback {'withdrawal' if withdraw else 'reversal'} for {dispute['charge']}"
                ),
                "reporting_category": "dispute" if withdraw else "dispute_reversal",
                "source": dispute["id"],
                "type": "adjustment",
            }
        )
        self.emit(
            "charge.dispute.funds_withdrawn" if withdraw else "charge.dispute.funds_reinstated",
            dispute,
        )

    def escalate_dispute(self, dispute_id: str) -> Obj:
        """An inquiry the issuer turns into a chargeback: funds are withdrawn now."""
        with self.lock:
            dispute = self._get("dispute", dispute_id)
            if not str(dispute["status"]).startswith("warning_") or (
                dispute["status"] == "warning_closed"
            ):
                raise _invalid(f"Dispute {dispute_id} is not an open inquiry.")
            dispute["status"] = "needs_response"
            dispute["is_charge_refundable"] = False
            self.emit("charge.dispute.updated", dispute)
            self._move_dispute_funds(dispute, withdraw=True)
            return copy.deepcopy(dispute)

    def close_dispute(self, dispute_id: str, status: str) -> Obj:
        """Close a chargeback as `won` (funds reinstated first) or `lost`; an inquiry as
        `warning_closed` (nothing was withdrawn, nothing comes back)."""
        with self.lock:
            dispute = self._get("dispute", dispute_id)
            inquiry = str(dispute["status"]).startswith("warning_")
            allowed = ("warning_closed",) if inquiry else ("won", "lost")
            if dispute["status"] in ("won", "lost", "warning_closed"):
                raise _invalid(f"Dispute {dispute_id} is already closed.")
            if status not in allowed:
                raise _invalid(f"status must be {' or '.join(f'`{a}`' for a in allowed)}", "status")
            dispute["status"] = status
            if status == "won":
                self._move_dispute_funds(dispute, withdraw=False)
            self.emit("charge.dispute.closed", dispute)
            return copy.deepcopy(dispute)

    def retrieve_dispute(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("dispute", ids[0])

    # -- request handling -------------------------------------------------

    def _ctx(self, base_url: str = "", key: str | None = None) -> _Ctx:
        return _Ctx(new_id("req_"), key, self.config.public_url or base_url)

    def check_auth(self, authorization: str | None) -> str:
        """The API key from an `Authorization` header, or a 401 `StripeError`."""
        if not authorization:
            raise StripeError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        scheme, _, value = authorization.partition(" ")
        key = value.strip()
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(key).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        elif scheme.lower() != "bearer":
            key = ""
        expected = self.config.api_key
        valid = key == expected if expected else key.startswith(("sk_test_", "rk_test_"))
        if not valid:
            shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key
            raise StripeError(401, "invalid_request_error", f"Invalid API Key provided: {shown}")
        return key

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    return fault
            return None

    def handle(
        self,
        method: str,
        path: str,
        params: Obj,
        pairs: list[tuple[str, str]],
        *,
        api_key: str,
        idempotency_key: str | None,
        base_url: str,
    ) -> tuple[int, Obj, dict[str, str]]:
        """Run one `/v1/...` request; returns status, JSON body and extra headers."""
        ctx = self._ctx(base_url, idempotency_key)
        headers = {"Request-Id": ctx.request_id}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        with self.lock:
            stored_key = (
                (api_key, idempotency_key) if idempotency_key and method == "POST" else None
            )
            fingerprint = (method, path, tuple(sorted(pairs)))
            if stored_key is not None:
                stored = self.idempotency.get(stored_key)
                if stored is not None:
                    if stored.fingerprint != fingerprint:
                        err = StripeError(
                            400,
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{idempotency_key}' if you meant to execute a different request.",
                        )
                        return 400, err.body(), headers
                    headers["Idempotent-Replayed"] = "true"
                    return stored.status, copy.deepcopy(stored.body), headers
            try:
                status, body = 200, self._dispatch(method, path, params, ctx)
            except StripeError as err:
                status, body = err.status, err.body()
            body = copy.deepcopy(body)
            if stored_key is not None:
                self.idempotency[stored_key] = _Stored(fingerprint, status, body)
            self.request_log.append(
                {
                    "id": ctx.request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "idempotency_key": idempotency_key,
                    "at": time.time(),
                }
            )
            return status, copy.deepcopy(body), headers

    def _dispatch(self, method: str, path: str, params: Obj, ctx: _Ctx) -> Obj:
        for route_method, pattern, handler in self.routes:
            if route_method != method:
                continue
            match = pattern.fullmatch(path)
            if match:
                result = handler(params, match.groups(), ctx)
                expand = params.get("expand")
                if isinstance(expand, list) and expand:
                    return self._expand(result, [str(p) for p in expand])
                return result
        raise StripeError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({method}: /v1/{path}).",
        )

    # -- control ----------------------------------------------------------

    def state(self) -> Obj:
        with self.lock:
            grouped: dict[str, list[Obj]] = {}
            for obj in self.objects.values():
                kind = obj.get("object", "")
                if kind.startswith("_") or kind == "event":
                    continue
                grouped.setdefault(kind, []).append(obj)
            return copy.deepcopy(
                {
                    "objects": grouped,
                    "card_behaviour": {k: list(v) for k, v in self.card_behaviour.items()},
                    "faults": [vars(f) for f in self.faults if f.count > 0],
                    "webhooks": self.webhook_settings(),
                    "events": len(self.events),
                }
            )

    def webhook_settings(self) -> Obj:
        d = self.dispatcher
        return {
            "urls": list(self.config.webhook_urls),
            "secret": self.config.webhook_secret,
            "mode": d.mode,
            "copies": d.copies,
            "delay": d.delay,
            "window": d.window,
            "retry_delays": list(self.config.retry_delays),
            "pending": d.pending(),
        }

    def events_of(self, event_type: str | None = None) -> list[Obj]:
        with self.lock:
            return copy.deepcopy(
                [e for e in self.events if event_type is None or e["type"] == event_type]
            )

    def charges(self) -> list[Obj]:
        """Successful charges, oldest first (the "what Stripe actually took" model)."""
        with self.lock:
            items = [
                o
                for o in self.objects.values()
                if o.get("object") == "charge" and o["status"] == "succeeded"
            ]
            return copy.deepcopy(items)


# --------------------------------------------------------------------------
# The ASGI app
# --------------------------------------------------------------------------


def _json(status: int, body: Obj, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _control_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"type": "invalid_request_error", "message": message}}, status)


_PAY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Pay {amount}</title></head>
<body style="font-family: sans-serif; max-width: 28rem; margin: 3rem auto">
<h1>Stripe stand-in checkout</h1>
<p>{items}</p>
<p><strong>Total: {amount}</strong> &middot; status: {status} / {payment_status}</p>
<form method="post" action="/checkout/{id}/pay">
  <label>Email <input name="email" value="{email}"></label><br><br>
  <label>Card <select name="card">
    <option value="ok">4242 4242 4242 4242 (succeeds)</option>
    <option value="declined">4000 0000 0000 0002 (declined)</option>
    <option value="authentication_required">4000 0027 6000 3184 (needs authentication)</option>
  </select></label><br><br>
  <label>Method <select name="method">
    <option value="card">card</option><option value="delayed">delayed (bank debit)</option>
  </select></label><br><br>
  <button type="submit">Pay {amount}</button>
</form>
<p><a href="{cancel_url}">Cancel</a></p>
</body></html>
"""


def create_app(
    standin: StripeStandin | None = None, *, config: StripeStandinConfig | None = None
) -> FastAPI:
    """The stand-in as an ASGI app; the state object is `app.state.standin`.

    Control endpoints (JSON bodies):

    - `POST /_control/reset`; `GET /_control/state`
    - `POST /_control/cards` `{target: cus_|pm_, behaviour: ok|decline|authentication_required,
      decline_code?}`; `POST /_control/payment_methods` `{customer}` → a new attached card
    - `POST /_control/disputes` `{charge (or payment intent id), amount?, reason?,
      inquiry?}`; `POST /_control/disputes/{id}/escalate` (an inquiry becomes a
      chargeback); `POST /_control/disputes/{id}/close` `{status: won|lost|warning_closed}`
    - `POST /_control/checkout/{id}/async` `{outcome: succeeded|failed}`
    - `POST /_control/faults` `{mode: fail|timeout, count, status?, sleep?, method?,
      path_prefix?, should_retry?}`; `DELETE /_control/faults`
    - `GET|POST /_control/webhooks` `{urls?, secret?, mode?, copies?, delay?, window?,
      retry_delays?}`; `POST /_control/webhooks/flush`;
      `POST /_control/webhooks/redeliver` `{event_id? | event_ids?}` (all when empty);
      `POST /_control/webhooks/wait?timeout=` → `{idle}`
    - `GET /_control/events?type=`; `GET /_control/deliveries?event_id=`;
      `POST /_control/events` `{type, object}` emits an arbitrary event;
      `GET /_control/requests`; `GET /_control/charges`
    """
    if standin is None:
        standin = StripeStandin(config)
    state = standin
    app = FastAPI(title="Stripe stand-in", docs_url=None, redoc_url=None)
    app.state.standin = state

    @app.middleware("http")
    async def keep_state(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.method != "GET":
            state.save()
        return response

    def base_of(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
    async def api(request: Request, path: str) -> Response:
        method = request.method.upper()
        try:
            api_key = state.check_auth(request.headers.get("authorization"))
        except StripeError as err:
            return _json(err.status, err.body(), {"WWW-Authenticate": 'Basic realm="Stripe"'})
        fault = state.take_fault(method, "/v1/" + path)
        if fault is not None and fault.mode == "fail":
            headers = {"Request-Id": new_id("req_")}
            if fault.should_retry is not None:
                headers["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
            injected = StripeError(
                fault.status,
                "api_error",
                "An unknown error occurred (injected by the stand-in).",
            )
            return _json(fault.status, injected.body(), headers)
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        if method == "POST":
            pairs += parse_qsl((await request.body()).decode(), keep_blank_values=True)
        params = parse_form(pairs)
        status, body, headers = state.handle(
            method,
            path.strip("/"),
            params,
            pairs,
            api_key=api_key,
            idempotency_key=request.headers.get("idempotency-key"),
            base_url=base_of(request),
        )
        headers["Stripe-Version"] = request.headers.get("stripe-version", state.config.api_version)
        if fault is not None and fault.mode == "timeout":
            await asyncio.sleep(fault.sleep)
        return _json(status, body, headers)

    @app.get("/checkout/{session_id}", response_class=HTMLResponse, include_in_schema=False)
    def pay_page(session_id: str) -> HTMLResponse:
        with state.lock:
            session = state.objects.get(session_id)
            if session is None or session.get("object") != "checkout.session":
                return HTMLResponse("<h1>No such checkout session</h1>", status_code=404)
            items = state.line_items.get(session_id, [])
            names = ", ".join(f"{i['quantity']} x {i['description']}" for i in items)
            customer = state.objects.get(session["customer"] or "", {})
            return HTMLResponse(
                _PAY_PAGE.format(
                    id=html.escape(session_id),
                    amount=f"{session['amount_total'] / 100:.2f} {session['currency']}".upper(),
                    items=html.escape(names),
                    status=session["status"],
                    payment_status=session["payment_status"],
                    email=html.escape(customer.get("email") or session["customer_email"] or ""),
                    cancel_url=html.escape(session["cancel_url"] or "#"),
                )
            )

    @app.post("/checkout/{session_id}/pay", include_in_schema=False)
    async def pay(request: Request, session_id: str) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        form.update(dict(request.query_params))
        status, body = state.pay_checkout(
            session_id,
            card=form.get("card", "ok"),
            method=form.get("method", "card"),
            email=form.get("email") or None,
        )
        accept = request.headers.get("accept", "")
        if "text/html" in accept and "application/json" not in accept:
            if status == 200 and body["session"]["success_url"]:
                target = str(body["session"]["success_url"]).replace(
                    "{CHECKOUT_SESSION_ID}", session_id
                )
                link = f'<p><a href="{html.escape(target)}">Continue</a></p>'
            else:
                link = f'<p><a href="/checkout/{html.escape(session_id)}">Back</a></p>'
            message = "Payment received." if status == 200 else body["error"]["message"]
            return HTMLResponse(f"<h1>{html.escape(message)}</h1>{link}", status_code=status)
        return _json(status, body)

    # -- control ----------------------------------------------------------

    @app.post("/_control/reset")
    def reset() -> Obj:
        state.reset()
        return {"ok": True}

    @app.get("/_control/state")
    def dump() -> Obj:
        return state.state()

    @app.post("/_control/cards", response_model=None)
    def cards(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            state.set_card_behaviour(
                str(body.get("target") or body.get("customer") or body.get("payment_method")),
                str(body.get("behaviour", "ok")),
                body.get("decline_code"),
            )
        except KeyError as err:
            return _control_error(f"no such customer or payment method: {err}", 404)
        except ValueError as err:
            return _control_error(str(err))
        return {"ok": True}

    @app.post("/_control/payment_methods", response_model=None)
    def new_pm(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.create_payment_method(body.get("customer"))
        except StripeError as err:
            return _json(err.status, err.body())

    @app.post("/_control/disputes", response_model=None)
    def dispute(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.create_dispute(
                str(body.get("charge") or body.get("payment_intent")),
                amount=body.get("amount"),
                reason=str(body.get("reason") or "fraudulent"),
                inquiry=body.get("inquiry") is True,
            )
        except StripeError as err:
            return _json(err.status, err.body())

    @app.post("/_control/disputes/{dispute_id}/escalate", response_model=None)
    def escalate(dispute_id: str) -> Obj | JSONResponse:
        try:
            return state.escalate_dispute(dispute_id)
        except StripeError as err:
            return _json(err.status, err.body())

    @app.post("/_control/disputes/{dispute_id}/close", response_model=None)
    def close(dispute_id: str, body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.close_dispute(dispute_id, str(body.get("status")))
        except StripeError as err:
            return _json(err.status, err.body())

    @app.post("/_control/checkout/{session_id}/async", response_model=None)
    def settle(session_id: str, body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.settle_delayed(session_id, str(body.get("outcome", "succeeded")))
        except StripeError as err:
            return _json(err.status, err.body())

    @app.post("/_control/faults", response_model=None)
    def add_fault(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        mode = body.get("mode", "fail")
        if mode not in ("fail", "timeout"):
            return _control_error("mode must be `fail` or `timeout`")
        fault = Fault(
            mode=mode,
            count=int(body.get("count", 1)),
            status=int(body.get("status", 500)),
            sleep=float(body.get("sleep", 30.0)),
            method=body.get("method"),
            path_prefix=body.get("path_prefix"),
            should_retry=body.get("should_retry"),
        )
        with state.lock:
            state.faults.append(fault)
        return vars(fault)

    @app.delete("/_control/faults")
    def clear_faults() -> Obj:
        with state.lock:
            state.faults.clear()
        return {"ok": True}

    @app.get("/_control/webhooks")
    def get_webhooks() -> Obj:
        return state.webhook_settings()

    @app.post("/_control/webhooks", response_model=None)
    def set_webhooks(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        if "urls" in body:
            urls = body["urls"]
            state.config.webhook_urls[:] = [urls] if isinstance(urls, str) else list(urls)
        if body.get("secret"):
            state.config.webhook_secret = str(body["secret"])
        if "retry_delays" in body:
            state.config.retry_delays = [float(x) for x in body["retry_delays"]]
        if "mode" in body or any(k in body for k in ("copies", "delay", "window")):
            try:
                state.dispatcher.set_mode(
                    str(body.get("mode", state.dispatcher.mode)),
                    copies=body.get("copies"),
                    delay=body.get("delay"),
                    window=body.get("window"),
                )
            except ValueError as err:
                return _control_error(str(err))
        return state.webhook_settings()

    @app.post("/_control/webhooks/flush")
    def flush() -> Obj:
        state.dispatcher.flush()
        return {"ok": True}

    @app.post("/_control/webhooks/redeliver", response_model=None)
    def redeliver(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        with state.lock:
            if body.get("event_id"):
                wanted = [str(body["event_id"])]
            elif body.get("event_ids"):
                wanted = [str(x) for x in body["event_ids"]]
            else:
                wanted = [e["id"] for e in state.events]
            unknown = [x for x in wanted if x not in state.objects]
            if unknown:
                return _control_error(f"no such event: {unknown[0]}", 404)
        state.dispatcher.redeliver(wanted)
        return {"redelivered": wanted}

    @app.post("/_control/webhooks/wait")
    async def wait(timeout: float = 10.0) -> Obj:
        idle = await asyncio.to_thread(state.dispatcher.wait_idle, timeout)
        return {"idle": idle}

    @app.get("/_control/events")
    def events(type: str | None = None) -> list[Obj]:
        return state.events_of(type)

    @app.post("/_control/events", response_model=None)
    def emit(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        if not body.get("type") or not isinstance(body.get("object"), dict):
            return _control_error("`type` and `object` are required")
        return state.emit(str(body["type"]), body["object"])

    @app.get("/_control/deliveries")
    def deliveries(event_id: str | None = None) -> list[Obj]:
        return state.dispatcher.deliveries_of(event_id)

    @app.get("/_control/requests")
    def requests() -> list[Obj]:
        with state.lock:
            return copy.deepcopy(state.request_log)

    @app.get("/_control/charges")
    def charges() -> list[Obj]:
        return state.charges()

    return app
