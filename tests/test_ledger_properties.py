"""Random sequences of money operations against a plain-Python model of the rules.

Top-ups (with replays), calls (with replayed callbacks), refunds before and
after their payment, reversals, number purchases and month changes are
applied to the database and to the model; after every step the balances,
free minutes and the ledger's invariants must agree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.supa import create_user

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Plan:
    rate: Decimal
    free: int
    minimum: Decimal
    number: Decimal | None


PLANS = {
    "classic": Plan(rate=Decimal("0.10"), free=0, minimum=Decimal("0"), number=None),
    "starter": Plan(rate=Decimal("0.02"), free=200, minimum=Decimal("5"), number=Decimal("2")),
}
CENTS = Decimal("0.01")


@dataclass
class Account:
    plan: str
    balance: Decimal = Decimal("0")
    free: int = 0
    claimed_free_number: bool = False
    credited: dict[int, Decimal] = field(default_factory=dict)  # payment index → amount
    refunded: dict[int, Decimal] = field(default_factory=dict)  # payment index → reversed
    pending_refund: dict[int, Decimal] = field(default_factory=dict)  # cumulative, not applied
    settled: set[int] = field(default_factory=set)
    reversal_keys: set[int] = field(default_factory=set)


class Model:
    """The rules of DESIGN.md, in plain Python."""

    def __init__(self) -> None:
        self.accounts = {plan: Account(plan=plan, free=PLANS[plan].free) for plan in PLANS}

    def new_month(self) -> None:
        for account in self.accounts.values():
            account.free = PLANS[account.plan].free

    def _apply_refund(self, account: Account, payment: int, cumulative: Decimal) -> None:
        target = min(cumulative, account.credited[payment])
        delta = target - account.refunded.get(payment, Decimal("0"))
        if delta > 0:
            account.balance -= delta
            account.refunded[payment] = target

    def topup(self, plan: str, payment: int, amount: Decimal) -> None:
        account = self.accounts[plan]
        if payment in account.credited:
            return
        account.credited[payment] = amount
        account.balance += amount
        if payment in account.pending_refund:
            self._apply_refund(account, payment, account.pending_refund.pop(payment))

    def refund(self, plan: str, payment: int, cumulative: Decimal) -> None:
        account = self.accounts[plan]
        if payment in account.credited:
            self._apply_refund(account, payment, cumulative)
        else:
            previous = account.pending_refund.get(payment, Decimal("0"))
            account.pending_refund[payment] = max(previous, cumulative)

    def call(self, plan: str, sid: int, seconds: int) -> None:
        account = self.accounts[plan]
        if sid in account.settled:
            return
        account.settled.add(sid)
        minutes = (seconds + 59) // 60
        free_used = min(minutes, account.free)
        account.free -= free_used
        # A call never takes a balance below zero: the minutes it cannot pay go unbilled.
        rate = PLANS[plan].rate
        paid = min(minutes - free_used, int(max(account.balance, Decimal("0")) // rate))
        account.balance -= paid * rate

    def reversal(self, plan: str, key: int, amount: Decimal) -> None:
        account = self.accounts[plan]
        if key not in account.reversal_keys:
            account.reversal_keys.add(key)
            account.balance -= amount

    def buy_number(self, plan: str) -> str:
        """'free', 'charged', 'PT402' or 'PT403'."""
        account = self.accounts[plan]
        price = PLANS[plan].number
        if price is None:
            return "PT403"
        if not account.claimed_free_number:
            account.claimed_free_number = True
            return "free"
        needed = price if account.free > 0 else max(price, PLANS[plan].minimum)
        if account.balance < needed:
            return "PT402"
        account.balance -= price
        return "charged"


plan_names = st.sampled_from(sorted(PLANS))
operations = st.one_of(
    st.tuples(
        st.just("topup"),
        plan_names,
        st.integers(0, 4),
        st.sampled_from([500, 1000, 5000, 10000, 1, 99_999]),
    ),
    st.tuples(st.just("call"), plan_names, st.integers(0, 6), st.integers(0, 7200)),
    st.tuples(st.just("refund"), plan_names, st.integers(0, 4), st.integers(1, 12_000)),
    st.tuples(st.just("reversal"), plan_names, st.integers(0, 2), st.integers(1, 3000)),
    st.tuples(st.just("number"), plan_names, st.just(0), st.just(0)),
    st.tuples(st.just("month"), st.just("starter"), st.just(0), st.just(0)),
)


def _one(db: Conn, sql: str, params: Any = ()) -> Any:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(operations, min_size=1, max_size=20))
def test_random_sequences_match_the_model(db: Conn, steps: list[tuple[str, str, int, int]]) -> None:
    db.execute("savepoint example")
    try:
        _run(db, steps)
    finally:
        db.execute("rollback to savepoint example")


def _run(db: Conn, steps: list[tuple[str, str, int, int]]) -> None:
    month = datetime(2026, 11, 10, 9, tzinfo=UTC)
    db.execute("select set_config('billing.now', %s, true)", (month.isoformat(),))
    run = uuid.uuid4().hex[:8]
    users = {plan: create_user(db, plan=plan) for plan in PLANS}
    model = Model()
    phone = 0
    for op, plan, index, value in steps:
        user = users[plan]
        with db.transaction():
            if op == "topup":
                pi = f"pi_{run}_{plan}_{index}"
                credited = model.accounts[plan].credited.get(index)
                if credited is None:
                    db.execute("select billing.credit_topup(%s, %s, %s)", (user, value, pi))
                    model.topup(plan, index, (Decimal(value) / 100).quantize(CENTS))
                else:
                    # A replay of the same payment intent.
                    cents = int(credited * 100)
                    result = _one(db, "select billing.credit_topup(%s, %s, %s)", (user, cents, pi))
                    assert result["duplicate"] is True
            elif op == "call":
                db.execute(
                    "select billing.settle_call(%s, %s, %s)",
                    (f"CA_{run}_{plan}_{index}", user, value),
                )
                model.call(plan, index, value)
            elif op == "refund":
                db.execute(
                    "select billing.reverse_refund(%s, %s)", (f"pi_{run}_{plan}_{index}", value)
                )
                model.refund(plan, index, (Decimal(value) / 100).quantize(CENTS))
            elif op == "reversal":
                db.execute(
                    "select billing.reverse_payment(%s, %s, %s, 'refund')",
                    (user, value, f"rev_{run}_{plan}_{index}"),
                )
                model.reversal(plan, index, (Decimal(value) / 100).quantize(CENTS))
            elif op == "number":
                phone += 1
                expected = model.buy_number(plan)
                number = f"+1415{int(run, 16) % 10_000_000:07d}{phone:02d}"[:16]
                try:
                    with db.transaction():
                        result = _one(db, "select billing.reserve_number(%s, %s)", (user, number))
                    outcome = "free" if result["isFree"] else "charged"
                except psycopg.Error as exc:
                    outcome = exc.sqlstate or "error"
                assert outcome == expected, (op, plan, model.accounts[plan])
            elif op == "month":
                month = datetime(
                    month.year + (month.month // 12), month.month % 12 + 1, 1, 1, tzinfo=UTC
                )
                db.execute("select set_config('billing.now', %s, true)", (month.isoformat(),))
                model.new_month()
        _check(db, users, model)


def _check(db: Conn, users: dict[str, uuid.UUID], model: Model) -> None:
    for plan, user in users.items():
        account = model.accounts[plan]
        db.execute(
            "select set_config('request.jwt.claims', %s, true)",
            (f'{{"sub": "{user}", "role": "authenticated"}}',),
        )
        me = _one(db, "select public.billing_me()")
        db.execute("select set_config('request.jwt.claims', '', true)")
        assert Decimal(str(me["balance"])) == account.balance, plan
        assert me["freeMinutesRemaining"] == account.free, plan
    assert _one(db, "select count(*) from monitoring.ledger_drift") == 0
    assert (
        _one(db, "select count(*) from public.call_balance where free_minutes_remaining < 0") == 0
    )
    assert (
        _one(
            db,
            "select count(*) from public.balance_transactions "
            "where balance_after <> balance_before + amount",
        )
        == 0
    )
