"""The invariants, checked against what the outside world paid and used.

The model is what the providers and the users saw, never the database itself:
- money in: the Stripe stand-in's succeeded charges (and their refunds);
- usage: the calls Twilio played (the call player's record), with their real
  durations after `<Dial timeLimit>`;
- numbers: the purchases the Edge Function confirmed to the user, and the
  numbers the Twilio stand-in holds;
- webhooks: every delivery the worker acknowledged with a 2xx.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from reliability.running import control
from reliability.workload import Plan, Record, User

CENT = Decimal("0.01")


@dataclass
class Invariant:
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, ok: bool, message: str) -> None:
        self.checked += 1
        if not ok:
            self.violations.append(message)


@dataclass
class Evidence:
    """Everything the checks read, gathered once after the run has settled."""

    charges: list[dict[str, Any]]
    events: dict[str, dict[str, Any]]
    deliveries: list[dict[str, Any]]
    twilio_numbers: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    balances: dict[str, Decimal]
    drift: list[dict[str, Any]]
    call_logs: list[dict[str, Any]]
    active_holds: list[dict[str, Any]]
    refills: list[dict[str, Any]]
    numbers: list[dict[str, Any]]
    recorded_events: set[str]


def gather(state: dict[str, str]) -> Evidence:
    stripe, twilio = state["stripe_api_base"], state["twilio_api_base"]
    events = {e["id"]: e for e in control(stripe, "GET", "/_control/events", timeout=120)}
    with psycopg.connect(state["database_url"], row_factory=dict_row) as conn:

        def rows(query: str) -> list[dict[str, Any]]:
            return conn.execute(query).fetchall()

        return Evidence(
            charges=control(stripe, "GET", "/_control/charges", timeout=120),
            events=events,
            deliveries=control(stripe, "GET", "/_control/deliveries", timeout=120),
            twilio_numbers=control(twilio, "GET", "/_control/state", timeout=120)["numbers"],
            ledger=rows(
                "select user_id::text, amount, type, reason, balance_before, balance_after, "
                "stripe_payment_intent_id, idempotency_key, created_at "
                "from public.balance_transactions order by created_at, id"
            ),
            balances={
                r["user_id"]: Decimal(r["balance"])
                for r in rows("select user_id::text, balance from public.call_balance")
            },
            drift=rows("select user_id::text, balance, ledger_sum from monitoring.ledger_drift"),
            call_logs=rows(
                "select user_id::text, call_sid, duration, billed_minutes, free_minutes_used, "
                "billed_amount, price_per_minute from public.twilio_call_logs"
            ),
            active_holds=rows(
                "select call_sid, user_id::text from public.call_holds where released_at is null"
            ),
            refills=rows(
                "select id::text, user_id::text, status, stripe_payment_intent_id "
                "from public.refill_requests"
            ),
            numbers=rows(
                "select user_id::text, status, provider_sid, is_free, charged_amount "
                "from public.user_phone_numbers"
            ),
            recorded_events={
                r["event_id"] for r in rows("select event_id from public.stripe_events")
            },
        )


def _dollars(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def check_all(
    evidence: Evidence, record: Record, users: list[User], plans: dict[str, Plan]
) -> list[Invariant]:
    ours = {u.id for u in users}
    by_user = {u.id: u for u in users}
    ledger_by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in evidence.ledger:
        ledger_by_user[row["user_id"]].append(row)
    credits = {
        row["idempotency_key"].removeprefix("payment:"): row
        for row in evidence.ledger
        if row["idempotency_key"].startswith("payment:")
    }

    # -- balance = sum(ledger) ------------------------------------------------------------
    conservation = Invariant("balance = sum(ledger), ledger_drift empty")
    conservation.check(not evidence.drift, f"monitoring.ledger_drift has rows: {evidence.drift}")
    for user in users:
        total = sum((Decimal(r["amount"]) for r in ledger_by_user[user.id]), Decimal(0))
        conservation.check(
            evidence.balances.get(user.id) == total,
            f"{user.email}: balance {evidence.balances.get(user.id)} but ledger sums to {total}",
        )

    # -- payments: credited exactly once, refunds reversed -----------------------------
    payments = Invariant("every succeeded Stripe payment credited exactly once")
    paid: dict[str, dict[str, Any]] = {}
    for charge in evidence.charges:
        meta = charge.get("metadata") or {}
        if meta.get("purpose") not in ("topup", "auto_refill") or meta.get("user_id") not in ours:
            continue
        intent = charge["payment_intent"]
        paid[intent] = charge
        credit = credits.get(intent)
        payments.check(
            credit is not None,
            f"payment {intent} of {_dollars(charge['amount'])} was never credited",
        )
        if credit is None:
            continue
        payments.check(
            Decimal(credit["amount"]) == _dollars(charge["amount"])
            and credit["user_id"] == meta["user_id"],
            f"payment {intent}: credited {credit['amount']} to {credit['user_id']}, "
            f"Stripe took {_dollars(charge['amount'])} from {meta['user_id']}",
        )
        reversed_ = -sum(
            (
                Decimal(r["amount"])
                for r in ledger_by_user[credit["user_id"]]
                if r["stripe_payment_intent_id"] == intent and r["reason"] == "refund"
            ),
            Decimal(0),
        )
        payments.check(
            reversed_ == _dollars(charge["amount_refunded"]),
            f"payment {intent}: Stripe refunded {_dollars(charge['amount_refunded'])}, "
            f"the ledger reversed {reversed_}",
        )
    for intent, credit in credits.items():
        if credit["user_id"] in ours:
            payments.check(
                intent in paid, f"{intent}: credited {credit['amount']} without a Stripe payment"
            )

    # -- refills: never charged twice --------------------------------------------------
    refills = Invariant("no refill charged twice")
    per_request = Counter(
        (c.get("metadata") or {}).get("refill_request_id")
        for c in paid.values()
        if (c.get("metadata") or {}).get("purpose") == "auto_refill"
    )
    known = {r["id"] for r in evidence.refills}
    for request_id, count in per_request.items():
        refills.check(count == 1, f"refill request {request_id} was charged {count} times")
        refills.check(request_id in known, f"a refill charge names unknown request {request_id}")
    for request in evidence.refills:
        if request["user_id"] in ours and request["status"] == "succeeded":
            refills.check(
                per_request.get(request["id"], 0) == 1,
                f"refill request {request['id']} succeeded without exactly one Stripe charge",
            )

    # -- calls: billed once, right minutes, right money --------------------------------
    calls = Invariant("every completed call billed exactly once with the right minutes")
    logs = {row["call_sid"]: row for row in evidence.call_logs}
    played = {c.sid: c for c in record.calls}
    minutes_by_user: Counter[str] = Counter()
    for call in record.calls:
        log = logs.get(call.sid)
        if call.connected:
            minutes = math.ceil(call.duration / 60)
            minutes_by_user[call.user] += minutes
            calls.check(log is not None, f"call {call.sid} ({call.duration} s) was never billed")
            if log is not None:
                calls.check(
                    log["duration"] == call.duration and log["billed_minutes"] == minutes,
                    f"call {call.sid}: {call.duration} s should bill {minutes} min, "
                    f"billed {log['billed_minutes']} min for {log['duration']} s",
                )
        else:
            calls.check(
                log is None or log["billed_minutes"] == 0,
                f"call {call.sid} was not connected but billed {log and log['billed_minutes']}",
            )
    for sid, log in logs.items():
        if log["user_id"] in ours:
            calls.check(sid in played, f"call {sid} was billed but nobody placed it")
    calls.check(
        not [h for h in evidence.active_holds if h["user_id"] in ours],
        f"holds still open after reconciliation: {evidence.active_holds[:5]}",
    )
    money = Invariant("call money = (minutes - free minutes) x the plan's price")
    for user in users:
        plan = plans[user.plan]
        used = minutes_by_user[user.id]
        expected = Decimal(used - min(plan.free_minutes_monthly, used)) * plan.price_per_minute
        debited = -sum(
            (Decimal(r["amount"]) for r in ledger_by_user[user.id] if r["reason"] == "call"),
            Decimal(0),
        )
        money.check(
            debited == expected,
            f"{user.email} ({plan.id}): {used} min should cost {expected}, debited {debited}",
        )

    # -- no overdraft by calls ---------------------------------------------------------
    overdraft = Invariant("no account overdrawn by calls that obeyed timeLimit")
    for user in users:
        rows = ledger_by_user[user.id]
        reversed_total = -sum(
            (Decimal(r["amount"]) for r in rows if r["type"] == "refund"), Decimal(0)
        )
        # Only a reversal (refund, dispute) may take a balance below zero: without them,
        # what the calls spent was there to spend.
        overdraft.check(
            evidence.balances.get(user.id, Decimal(0)) + reversed_total >= 0,
            f"{user.email}: balance {evidence.balances.get(user.id)} with {reversed_total} "
            "reversed: calls spent money the account never had",
        )
        if reversed_total == 0:
            for row in rows:
                if row["reason"] == "call":
                    overdraft.check(
                        Decimal(row["balance_after"]) >= 0,
                        f"{user.email}: a call took the balance to {row['balance_after']}",
                    )

    # -- numbers -------------------------------------------------------------------------
    numbers = Invariant("numbers: charged only for numbers received, held at Twilio")
    at_twilio = {n["sid"] for n in evidence.twilio_numbers}
    live = {n["provider_sid"]: n for n in evidence.numbers if n["status"] in ("active", "past_due")}
    for user in users:
        if not plans[user.plan].sells_numbers:
            continue
        mine = [n for n in evidence.numbers if n["user_id"] == user.id]
        numbers.check(
            not [n for n in mine if n["status"] == "pending"],
            f"{user.email}: a number purchase is left pending (charged, never finished)",
        )
        attempts = [n for n in record.numbers if n.user == user.id]
        got = [n for n in attempts if n.status == 200]
        told = sum((n.charged for n in got), Decimal(0))
        if any(n.status is None for n in attempts):
            # A purchase went unanswered: hold the ledger to the numbers the user has.
            told = sum(
                (
                    Decimal(n["charged_amount"])
                    for n in mine
                    if n["status"] in ("active", "past_due")
                ),
                Decimal(0),
            )
        debited = -sum(
            (
                Decimal(r["amount"])
                for r in ledger_by_user[user.id]
                if r["reason"] in ("number_purchase", "number_cancel")
            ),
            Decimal(0),
        )
        numbers.check(
            debited == told,
            f"{user.email}: bought numbers for {told} (as answered), the ledger took {debited}",
        )
        if not any(n.status is None for n in attempts):
            numbers.check(
                len([n for n in mine if n["status"] in ("active", "past_due")]) == len(got),
                f"{user.email}: {len(got)} purchases answered 200, "
                f"{[n['status'] for n in mine]} in the database",
            )
    for sid in live:
        numbers.check(sid in at_twilio, f"number {sid} is active but Twilio does not hold it")
    for sid in at_twilio:
        numbers.check(sid in live, f"Twilio holds number {sid} that nobody has")

    # -- acknowledged webhooks -------------------------------------------------------------
    acked = Invariant("no acknowledged webhook lost")
    seen: set[str] = set()
    for delivery in evidence.deliveries:
        status = delivery.get("status")
        if status is None or not 200 <= status < 300 or delivery["event_id"] in seen:
            continue
        seen.add(delivery["event_id"])
        event = evidence.events.get(delivery["event_id"])
        if event is None:
            continue
        answer = delivery.get("response")
        outcome = str(answer.get("outcome", "")) if isinstance(answer, dict) else ""
        if outcome.startswith("skipped"):
            continue
        acked.check(
            event["id"] in evidence.recorded_events,
            f"event {event['id']} ({event['type']}) was acknowledged but not recorded",
        )

    del by_user
    return [conservation, payments, refills, calls, money, overdraft, numbers, acked]
