"""`callbalance simulate`: a whole customer journey through the running system, checked.

Everything goes in as the outside world would send it: a frontend with the
user's JWT (reads through a PostgREST-style session: role `authenticated`
plus the verified claims), the Edge Functions over HTTP, Stripe paying a
checkout and sending signed webhooks (the Stripe stand-in), Twilio sending
signed voice and status requests (the call player). Each step prints the
balance and free minutes after it and checks them against the figures of the
source documents; any mismatch makes the command exit non-zero.

The month rollover uses the billing clock (`billing.now`, a transaction
setting honoured only for sessions not opened by PostgREST's authenticator).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from psycopg.rows import dict_row

from workers.local.standins import twilio as twilio_standin
from workers.local.up import read_state
from workers.ops.users import create_user
from workers.service.db import connect
from workers.service.providers import make_stripe_client


class Mismatch(AssertionError):
    """A figure that differs from what the source documents say."""


@dataclass
class Step:
    name: str
    balance: Decimal
    free_minutes: int
    expected: str
    ok: bool


@dataclass
class Journey:
    state: dict[str, str]
    plan: str
    email: str = field(default_factory=lambda: f"sim-{uuid.uuid4().hex[:10]}@example.test")
    steps: list[Step] = field(default_factory=list)
    user_id: str = ""
    token: str = ""
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    # -- as the frontend ------------------------------------------------------------
    def rpc(self, function: str, args: dict[str, Any] | None = None, now: str | None = None) -> Any:
        """Call a public RPC the way PostgREST does for this user's JWT."""
        claims = jwt.decode(
            self.token, self.state["jwt_secret"], algorithms=["HS256"], audience="authenticated"
        )
        args = args or {}
        names = ", ".join(f"{k} => %({k})s" for k in args)
        with (
            connect(self.state["database_url"], row_factory=dict_row) as conn,
            conn.transaction(),
        ):
            if now:
                conn.execute("select set_config('billing.now', %s, true)", (now,))
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            row = conn.execute(f"select public.{function}({names}) as result", args).fetchone()
        assert row is not None
        return row["result"]

    def me(self, now: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.rpc("billing_me", now=now)
        return result

    def function(self, name: str, body: dict[str, Any] | None = None) -> httpx.Response:
        url = f"{self.state['functions_url']}/{name}"
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is None:
            return self.http.get(url, headers=headers)
        return self.http.post(url, headers=headers, json=body)

    # -- as Stripe ------------------------------------------------------------------
    def top_up(self, dollars: int) -> None:
        response = self.function("top-up", {"amount": dollars})
        if response.status_code != 200:
            raise Mismatch(f"top-up {dollars}: HTTP {response.status_code} {response.text}")
        paid = self.http.post(response.json()["url"].rstrip("/") + "/pay")
        if paid.status_code >= 400:
            raise Mismatch(f"paying the checkout failed: {paid.status_code} {paid.text}")

    def refund_latest(self, reason: str) -> None:
        rows = self.rows_as_user(
            "select stripe_payment_intent_id from public.balance_transactions "
            "where reason = %s and stripe_payment_intent_id is not null "
            "order by created_at desc limit 1",
            (reason,),
        )
        if not rows:
            raise Mismatch(f"no {reason} payment to refund")
        stripe = make_stripe_client("sk_test_sandbox", self.state["stripe_api_base"])
        stripe.v1.refunds.create(params={"payment_intent": rows[0]["stripe_payment_intent_id"]})

    def rows_as_user(self, query: str, params: Any) -> list[dict[str, Any]]:
        claims = json.dumps({"sub": self.user_id, "role": "authenticated"})
        with (
            connect(self.state["database_url"], row_factory=dict_row) as conn,
            conn.transaction(),
        ):
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
            return conn.execute(query, params).fetchall()

    # -- as Twilio ------------------------------------------------------------------
    def call(self, seconds: int, outcome: str = "completed") -> twilio_standin.PlayedCall:
        return twilio_standin.play_call(
            voice_url=self.state["public_url"] + "/twilio/voice",
            auth_token=self.state["twilio_auth_token"],
            account_sid=self.state["twilio_account_sid"],
            params={"From": f"client:{self.user_id}", "To": "+14155550123"},
            answered_seconds=seconds,
            standin=self.state["twilio_api_base"] or None,
            dial_outcome=outcome,
        )

    # -- checking -------------------------------------------------------------------
    def wait_for_balance(self, expected: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if Decimal(str(self.me()["balance"])) == Decimal(expected):
                return
            time.sleep(0.1)

    def check(self, name: str, balance: str, free: int, **extra: Any) -> dict[str, Any]:
        state = self.me()
        actual_balance = Decimal(str(state["balance"])).quantize(Decimal("0.01"))
        actual_free = int(state["freeMinutesRemaining"])
        ok = actual_balance == Decimal(balance) and actual_free == free
        for key, want in extra.items():
            ok = ok and state.get(key) == want
        self.steps.append(
            Step(name, actual_balance, actual_free, f"${balance}, {free} free min", ok)
        )
        if not ok:
            raise Mismatch(
                f"{self.plan}/{name}: expected ${balance} and {free} free minutes "
                f"{extra or ''}, got ${actual_balance} and {actual_free} ({state})"
            )
        return state

    def expect(self, name: str, condition: bool, detail: str) -> None:
        me = self.me()
        self.steps.append(
            Step(
                name,
                Decimal(str(me["balance"])).quantize(Decimal("0.01")),
                int(me["freeMinutesRemaining"]),
                detail,
                condition,
            )
        )
        if not condition:
            raise Mismatch(f"{self.plan}/{name}: {detail}")

    def sign_up(self) -> None:
        user = create_user(
            self.state["database_url"], self.email, self.plan, self.state["jwt_secret"]
        )
        self.user_id, self.token = user["id"], user["jwt"]


def next_month_start() -> str:
    now = datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return datetime(year, month, 1, 0, 5, tzinfo=UTC).isoformat()


def starter_journey(j: Journey) -> None:
    """Seed 003: $0.02/min, 200 free minutes a month, $5 minimum, $2 numbers, first free."""
    j.sign_up()
    j.check("sign up", "0.00", 200, hasClaimedFreeNumber=False)
    number = j.function("buy-number", {"areaCode": "415"})
    j.expect(
        "first number is free at $0",
        number.status_code == 200 and number.json()["isFree"],
        f"HTTP {number.status_code} {number.text[:120]}",
    )
    j.check("after the free number", "0.00", 200, hasClaimedFreeNumber=True)
    j.call(7 * 60 + 5)  # 7 min 5 s → 8 minutes, all free
    j.check("call 7m05s on free minutes", "0.00", 192)
    j.call(192 * 60)
    j.check("call 192 min uses the rest", "0.00", 0)
    j.top_up(10)
    j.wait_for_balance("10.00")
    j.check("top-up $10", "10.00", 0)
    j.call(4 * 60 + 55)  # 5 minutes at $0.02
    j.check("paid call 4m55s = $0.10", "9.90", 0)
    j.call(14400)  # the 4-hour cap: 240 minutes at $0.02
    j.check("paid call 240 min = $4.80", "5.10", 0)
    j.rpc("update_auto_refill_settings", {"p_enabled": True, "p_amount": 50, "p_threshold": 10})
    j.call(600)  # $0.20 → $4.90, under the $10 threshold
    j.wait_for_balance("54.90")
    j.check("under $10 with auto-refill on → +$50", "54.90", 0)
    j.rpc("update_auto_refill_settings", {"p_enabled": False})
    j.refund_latest("auto_refill")
    j.wait_for_balance("4.90")
    j.check("the $50 refill refunded", "4.90", 0)
    refused = j.function("buy-number", {"areaCode": "415"})
    body = refused.json() if refused.status_code == 402 else {}
    j.expect(
        "second number refused at < $5",
        refused.status_code == 402 and body.get("minRequired") == 5 and body.get("price") == 2,
        f"HTTP {refused.status_code} {refused.text[:160]}",
    )
    j.top_up(10)
    j.wait_for_balance("14.90")
    bought = j.function("buy-number", {"areaCode": "415"})
    j.expect(
        "second number bought for $2",
        bought.status_code == 200 and not bought.json()["isFree"],
        f"HTTP {bought.status_code} {bought.text[:120]}",
    )
    j.check("after the $2 number", "12.90", 0)
    rollover = j.me(now=next_month_start())
    j.expect(
        "month rollover: 200 free minutes again",
        int(rollover["freeMinutesRemaining"]) == 200,
        f"free minutes {rollover['freeMinutesRemaining']}",
    )


def classic_journey(j: Journey) -> None:
    """Seed 000: $0.10/min rounded up, top-ups of $50/$100, auto-refill below $10."""
    j.sign_up()
    state = j.check("sign up", "0.00", 0)
    j.expect("no balance, no calls", not state["canCall"]["allowed"], str(state["canCall"]))
    j.top_up(50)
    j.wait_for_balance("50.00")
    state = j.check("Add $50", "50.00", 0)
    j.expect("$50 ≈ 500 minutes", state["estimatedMinutes"] == 500, str(state["estimatedMinutes"]))
    j.call(5 * 60)
    j.check("5-minute call = $0.50", "49.50", 0)
    j.call(4 * 60 + 1)
    j.check("4 min 1 s bills 5 minutes", "49.00", 0)
    j.call(30, outcome="no-answer")
    j.check("unanswered call is free", "49.00", 0)
    j.call(14400)
    j.check("240-minute call = $24", "25.00", 0)
    j.rpc("update_auto_refill_settings", {"p_enabled": True, "p_amount": 50, "p_threshold": 10})
    j.call(160 * 60)  # $16 → $9.00
    j.wait_for_balance("59.00")
    j.check("balance $9 with auto-refill $50 → topped up", "59.00", 0)
    j.rpc("update_auto_refill_settings", {"p_enabled": False})
    j.refund_latest("topup")
    j.wait_for_balance("9.00")
    j.check("the $50 top-up refunded", "9.00", 0)
    number = j.function("buy-number", {"areaCode": "415"})
    j.expect(
        "this plan sells no numbers", 400 <= number.status_code < 500, f"HTTP {number.status_code}"
    )
    rollover = j.me(now=next_month_start())
    j.expect(
        "month rollover: still no free minutes",
        int(rollover["freeMinutesRemaining"]) == 0,
        str(rollover["freeMinutesRemaining"]),
    )


JOURNEYS: dict[str, Callable[[Journey], None]] = {
    "starter": starter_journey,
    "classic": classic_journey,
}


def run_journey(state: dict[str, str], plan: str) -> Journey:
    journey = Journey(state=state, plan=plan)
    try:
        JOURNEYS[plan](journey)
    except Mismatch as exc:
        journey.steps.append(Step(f"FAILED: {exc}", Decimal(0), 0, "", False))
    except (httpx.HTTPError, psycopg.Error, KeyError, ValueError) as exc:
        journey.steps.append(Step(f"ERROR: {exc!r}", Decimal(0), 0, "", False))
    finally:
        journey.http.close()
    return journey


def render(journey: Journey) -> str:
    lines = [f"{journey.plan} — {journey.email}"]
    width = max(len(s.name) for s in journey.steps) if journey.steps else 10
    width = min(width, 60)
    lines.append(f"  {'step'.ljust(width)}  {'balance':>9}  {'free':>5}  ok   expected")
    for s in journey.steps:
        mark = "ok" if s.ok else "FAIL"
        lines.append(
            f"  {s.name[:width].ljust(width)}  {('$' + str(s.balance)):>9}  "
            f"{s.free_minutes:>5}  {mark:<4} {s.expected}"
        )
        if not s.ok and len(s.name) > width:
            lines.append(f"    {s.name}")
    return "\n".join(lines)


def simulate(state: dict[str, str], plans: list[str], users: int) -> int:
    lock = threading.Lock()
    failures = 0
    jobs = [plan for plan in plans for _ in range(users)]
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        for journey in pool.map(lambda plan: run_journey(state, plan), jobs):
            with lock:
                print(render(journey), flush=True)
                print()
                if not journey.steps or not all(s.ok for s in journey.steps):
                    failures += 1
    print(f"{len(jobs) - failures}/{len(jobs)} journeys matched the source documents")
    return 1 if failures else 0


def simulate_command(state_dir: Path, plan: str, users: int) -> int:
    """`callbalance simulate`: the journeys of one plan (or both) against what `up` started."""
    plans = ["starter", "classic"] if plan == "both" else [plan]
    return simulate(read_state(state_dir), plans, users)
