"""Users doing what users do, through the doors the outside world uses, with a record of it.

- A frontend with the user's JWT: PostgREST-style RPC sessions (`set local role
  authenticated` plus the claims) for `billing_me` and the auto-refill settings,
  and the Edge Functions over HTTP for top-ups and numbers.
- Stripe's hosted checkout: the session's pay URL at the Stripe stand-in, which
  then sends the signed webhooks; refunds through Stripe's API.
- Twilio: `play_call` sends the signed voice request, obeys `<Dial timeLimit>`
  and sends the status callback. Like Twilio, a callback whose connection
  failed is retried once (never one that was answered, a 5xx included); the
  harness can also duplicate callbacks or lose them (reconciliation against
  the Calls API then settles the call).

Everything the outside world did is kept in `Record`, the model the checks
compare the database against. Outcomes: `ok`, `refused` (a clear 4xx, or a call
the system declined) and `unavailable` (5xx or no answer: expected while a
fault is active; never a money violation by itself).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from workers.local.standins import twilio as twilio_standin
from workers.local.standins.signing import twilio_signature
from workers.ops.users import create_user

STRIPE_KEY = "sk_test_sandbox"  # the stand-in's key under `callbalance up`


@dataclass(frozen=True)
class Plan:
    id: str
    price_per_minute: Decimal
    free_minutes_monthly: int
    top_up_presets: list[Decimal]
    custom_top_up_min: Decimal | None
    sells_numbers: bool


def read_plans(database_url: str) -> dict[str, Plan]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "select id, price_per_minute, free_minutes_monthly, top_up_presets, "
            "custom_top_up_min, number_monthly_price from public.billing_plans"
        ).fetchall()
    return {
        r["id"]: Plan(
            id=r["id"],
            price_per_minute=Decimal(r["price_per_minute"]),
            free_minutes_monthly=int(r["free_minutes_monthly"]),
            top_up_presets=[Decimal(x) for x in r["top_up_presets"]],
            custom_top_up_min=None
            if r["custom_top_up_min"] is None
            else Decimal(r["custom_top_up_min"]),
            sells_numbers=r["number_monthly_price"] is not None,
        )
        for r in rows
    }


@dataclass
class User:
    id: str
    email: str
    plan: str
    jwt: str
    payments: list[str] = field(default_factory=list)
    numbers: int = 0
    auto_refill: bool = False


@dataclass
class CallRecord:
    user: str
    sid: str
    connected: bool
    duration: int
    outcome: str
    callback_delivered: bool


@dataclass
class NumberRecord:
    user: str
    status: int | None
    charged: Decimal
    is_free: bool
    sid: str | None


@dataclass
class Record:
    """What the outside world did, and what it was told."""

    ops: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    twilio_faults: Counter[str] = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    calls: list[CallRecord] = field(default_factory=list)
    numbers: list[NumberRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def op(self, kind: str, outcome: str, status: int | str | None = None) -> None:
        with self.lock:
            self.ops[kind][outcome] += 1
            if status is not None:
                self.statuses[kind][str(status)] += 1


def outcome_of(status: int | None) -> str:
    if status is None or status >= 500:
        return "unavailable"
    if status >= 400:
        return "refused"
    return "ok"


@dataclass
class World:
    """The running system as the outside world sees it (from `up.json`)."""

    state: dict[str, str]
    plans: dict[str, Plan]
    record: Record = field(default_factory=Record)
    http_timeout: float = 20.0

    # -- the frontend ----------------------------------------------------------------

    def rpc(self, user: User, function: str, args: dict[str, Any] | None = None) -> Any:
        """A public RPC as PostgREST runs it for this user's JWT."""
        claims = json.dumps({"sub": user.id, "role": "authenticated", "aud": "authenticated"})
        args = args or {}
        names = ", ".join(f"{k} => %({k})s" for k in args)
        with (
            psycopg.connect(
                self.state["database_url"], row_factory=dict_row, connect_timeout=5
            ) as conn,
            conn.transaction(),
        ):
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
            row = conn.execute(f"select public.{function}({names}) as result", args).fetchone()
        return None if row is None else row["result"]

    def function(self, http: httpx.Client, user: User, name: str, body: Any) -> httpx.Response:
        return http.post(
            f"{self.state['functions_url']}/{name}",
            headers={"Authorization": f"Bearer {user.jwt}"},
            json=body,
            timeout=self.http_timeout,
        )

    def sign_up(self, plan: str) -> User:
        email = f"rel-{uuid.uuid4().hex[:12]}@example.test"
        made = create_user(self.state["database_url"], email, plan, self.state["jwt_secret"])
        return User(id=made["id"], email=email, plan=plan, jwt=made["jwt"])

    # -- operations --------------------------------------------------------------------

    def top_up(self, http: httpx.Client, rng: random.Random, user: User) -> str:
        plan = self.plans[user.plan]
        choices = list(plan.top_up_presets)
        if plan.custom_top_up_min is not None:
            choices.append(plan.custom_top_up_min + Decimal(rng.randint(0, 40)) / 4)
        amount = rng.choice(choices)
        try:
            started = self.function(http, user, "top-up", {"amount": float(amount)})
        except httpx.HTTPError:
            self.record.op("top-up", "unavailable", "no answer")
            return "unavailable"
        if started.status_code != 200:
            outcome = outcome_of(started.status_code)
            self.record.op("top-up", outcome, started.status_code)
            return outcome
        try:
            paid = http.post(
                started.json()["url"].rstrip("/") + "/pay",
                headers={"Accept": "application/json"},
                timeout=self.http_timeout,
            )
        except httpx.HTTPError:
            self.record.op("top-up", "unavailable", "pay: no answer")
            return "unavailable"
        if paid.status_code == 200:
            user.payments.append(paid.json()["payment_intent"]["id"])
        outcome = outcome_of(paid.status_code)
        self.record.op("top-up", outcome, paid.status_code)
        return outcome

    def refund(self, http: httpx.Client, rng: random.Random, user: User) -> str:
        if not user.payments:
            return self.read(rng, user)
        intent = rng.choice(user.payments)
        data = {"payment_intent": intent}
        if rng.random() < 0.5:
            data["amount"] = str(rng.choice([100, 150, 250]))
        try:
            response = http.post(
                self.state["stripe_api_base"] + "/v1/refunds",
                data=data,
                headers={"Authorization": f"Bearer {STRIPE_KEY}"},
                timeout=self.http_timeout,
            )
            status: int | None = response.status_code
        except httpx.HTTPError:
            status = None
        outcome = outcome_of(status)
        self.record.op("refund", outcome, status if status is not None else "no answer")
        return outcome

    def buy_number(self, http: httpx.Client, rng: random.Random, user: User) -> str:
        try:
            response = http.post(
                f"{self.state['functions_url']}/buy-number",
                headers={"Authorization": f"Bearer {user.jwt}"},
                json={"areaCode": "415"},
                timeout=120,
            )
            status: int | None = response.status_code
        except httpx.HTTPError:
            response, status = None, None
        charged, is_free, sid = Decimal(0), False, None
        if response is not None and status == 200:
            body = response.json()
            charged = Decimal(str(body["charged"]))
            is_free, sid = bool(body["isFree"]), str(body["sid"])
            user.numbers += 1
        with self.record.lock:
            self.record.numbers.append(NumberRecord(user.id, status, charged, is_free, sid))
        outcome = outcome_of(status)
        self.record.op("buy-number", outcome, status if status is not None else "no answer")
        return outcome

    def auto_refill(self, rng: random.Random, user: User) -> str:
        enable = not user.auto_refill or rng.random() < 0.3
        try:
            self.rpc(
                user,
                "update_auto_refill_settings",
                {"p_enabled": enable, "p_amount": 50, "p_threshold": 10},
            )
        except psycopg.errors.RaiseException as exc:  # a PTxxx refusal
            self.record.op("auto-refill settings", "refused", exc.sqlstate)
            return "refused"
        except psycopg.Error as exc:
            status = exc.sqlstate or type(exc).__name__
            outcome = "refused" if (exc.sqlstate or "").startswith("PT") else "unavailable"
            self.record.op("auto-refill settings", outcome, status)
            return outcome
        user.auto_refill = enable
        self.record.op("auto-refill settings", "ok")
        return "ok"

    def read(self, rng: random.Random, user: User) -> str:
        try:
            self.rpc(user, "billing_me")
        except psycopg.Error as exc:
            self.record.op("billing_me", "unavailable", exc.sqlstate or type(exc).__name__)
            return "unavailable"
        self.record.op("billing_me", "ok")
        return "ok"

    def call(self, http: httpx.Client, rng: random.Random, user: User) -> str:
        roll = rng.random()
        seconds = (
            rng.randint(1, 59) if roll < 0.3 else rng.randint(60, 900) if roll < 0.9 else 14400
        )
        dial_outcome = "completed" if rng.random() < 0.85 else rng.choice(["no-answer", "busy"])
        fault = rng.random()
        copies, drop, lose = 1, False, False
        if fault < 0.10:
            copies = rng.randint(2, 3)
            self.record.twilio_faults["status callback duplicated"] += 1
        elif fault < 0.18:
            drop = True
            self.record.twilio_faults["status callback connection lost, Twilio retries"] += 1
        elif fault < 0.21:
            drop, lose = True, True
            self.record.twilio_faults["status callback lost twice (reconciliation)"] += 1
        try:
            played = twilio_standin.play_call(
                voice_url=self.state["twilio_voice_url"],
                auth_token=self.state["twilio_auth_token"],
                account_sid=self.state["twilio_account_sid"],
                params={"From": f"client:{user.id}", "To": "+14155550123"},
                answered_seconds=seconds,
                standin=None,  # recorded below, through this client
                dial_outcome=dial_outcome,
                duplicate_callbacks=copies,
                drop_callbacks=drop,
                timeout=self.http_timeout,
            )
        except httpx.HTTPError:
            # Twilio could not reach the voice URL: the call is not connected.
            self.record.op("call", "unavailable", "voice: no answer")
            return "unavailable"
        self.remember(http, played)
        if played.refused:
            status = played.voice_status
            outcome = "refused" if status == 200 else outcome_of(status)
            self.record.op("call", outcome, f"voice {status}")
            with self.record.lock:
                self.record.calls.append(
                    CallRecord(user.id, played.call_sid, False, 0, outcome, False)
                )
            return outcome
        delivered = any(s is not None and 200 <= s < 300 for s in played.callback_statuses)
        if drop and not lose and played.callback_url:
            # The first connection failed: Twilio's one retry (an answer is never retried).
            time.sleep(rng.uniform(0.2, 1.0))
            retry = _signed_post(
                http, played.callback_url, played.callback_params, self.state["twilio_auth_token"]
            )
            delivered = retry is not None and 200 <= retry < 300
        with self.record.lock:
            self.record.calls.append(
                CallRecord(
                    user.id,
                    played.call_sid,
                    True,
                    played.duration,
                    dial_outcome,
                    delivered,
                )
            )
        self.record.op("call", "ok", "settled" if delivered else "callback lost")
        return "ok"

    def remember(self, http: httpx.Client, played: twilio_standin.PlayedCall) -> None:
        """Record the call at the Twilio stand-in, so its Calls API knows it (reconciliation)."""
        base = self.state["twilio_api_base"].rstrip("/") + "/_control/calls"
        voice = played.voice_params
        records = [
            {
                "sid": played.call_sid,
                "from": voice.get("From", ""),
                "to": voice.get("To", ""),
                "status": "completed",
                "duration": played.duration,
                "direction": voice.get("Direction", "inbound"),
            }
        ]
        if played.dial is not None and played.child_sid is not None:
            records.append(
                {
                    "sid": played.child_sid,
                    "from": played.caller_id or voice.get("From", ""),
                    "to": played.dial_target or "",
                    "status": played.dial_outcome or "completed",
                    "duration": played.duration,
                    "direction": "outbound-dial",
                    "parent_call_sid": played.call_sid,
                }
            )
        for body in records:
            http.post(base, json=body, timeout=self.http_timeout).raise_for_status()


def _signed_post(
    http: httpx.Client, url: str, params: dict[str, str], auth_token: str
) -> int | None:
    headers = {"X-Twilio-Signature": twilio_signature(url, params, auth_token)}
    try:
        return http.post(url, data=params, headers=headers, timeout=20).status_code
    except httpx.HTTPError:
        return None


Operation = Callable[[httpx.Client, random.Random, User], str]


def operations(
    world: World, weights: dict[str, float] | None = None
) -> list[tuple[str, float, Operation]]:
    """The mix: (kind, weight, operation); `weights` overrides some of the weights."""
    mix: list[tuple[str, float, Operation]] = [
        ("call", 40, world.call),
        ("top-up", 16, world.top_up),
        ("billing_me", 18, lambda _http, rng, user: world.read(rng, user)),
        ("refund", 6, world.refund),
        ("buy-number", 5, world.buy_number),
        ("auto-refill settings", 6, lambda _http, rng, user: world.auto_refill(rng, user)),
    ]
    return [(kind, (weights or {}).get(kind, weight), op) for kind, weight, op in mix]


class Driver:
    """Threads taking users in turn (one operation per user at a time) until stopped."""

    def __init__(
        self,
        world: World,
        users: list[User],
        threads: int,
        seed: int,
        weights: dict[str, float] | None = None,
    ) -> None:
        self.world = world
        self.weights = weights
        self.users = users
        self.threads = threads
        self.seed = seed
        self.stop = threading.Event()
        self._free: list[User] = list(users)
        self._cond = threading.Condition()
        self._workers: list[threading.Thread] = []
        self.errors: list[str] = []

    def _take(self, rng: random.Random) -> User | None:
        with self._cond:
            while not self._free and not self.stop.is_set():
                self._cond.wait(0.2)
            if self.stop.is_set():
                return None
            return self._free.pop(rng.randrange(len(self._free)))

    def _give(self, user: User) -> None:
        with self._cond:
            self._free.append(user)
            self._cond.notify()

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        mix = operations(self.world, self.weights)
        weights = [w for _, w, _ in mix]
        with httpx.Client() as http:
            while not self.stop.is_set():
                user = self._take(rng)
                if user is None:
                    return
                kind, _, op = rng.choices(mix, weights=weights)[0]
                if kind == "buy-number" and not self.world.plans[user.plan].sells_numbers:
                    op = mix[0][2]
                started = time.perf_counter()
                try:
                    outcome = op(http, rng, user)
                except Exception as exc:  # a harness bug must not stop the run silently
                    self.errors.append(f"{kind}: {exc!r}")
                    outcome = "error"
                finally:
                    self._give(user)
                with self.world.record.lock:
                    self.world.record.latency_ms[f"{kind} {outcome}"].append(
                        (time.perf_counter() - started) * 1000
                    )
                if outcome == "unavailable":
                    self.stop.wait(rng.uniform(0.2, 0.6))  # as a client backs off

    def start(self) -> None:
        for i in range(self.threads):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._workers.append(thread)

    def finish(self, timeout: float = 120) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
