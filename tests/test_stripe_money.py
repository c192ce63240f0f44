"""Money moves only as Stripe moved it: disputes and currencies, through signed webhooks.

Payments are made at the Stripe stand-in with the real SDK, and its webhooks
reach the worker signed; the stand-in opens inquiries and chargebacks as
Stripe does (an inquiry withdraws nothing; a chargeback's withdrawal and
reinstatement come as their own events).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.system import STRIPE_KEY, System, running_system, stripe_event
from workers.service.providers import make_stripe_client


@pytest.fixture(scope="module")
def system(module_db: str, pooled_module_db: str) -> Iterator[System]:
    with running_system(module_db, pooled_url=pooled_module_db) as running:
        yield running


def pay(system: System, user: str, amount: int, currency: str = "usd") -> str:
    """A top-up Checkout paid at the stand-in; returns its payment intent once delivered."""
    session = system.pay_checkout(user, amount, currency)
    assert system.stripe.dispatcher.wait_idle(20)
    intent = (
        make_stripe_client(STRIPE_KEY, system.stripe_url)
        .v1.checkout.sessions.retrieve(session)
        .payment_intent
    )
    assert isinstance(intent, str)
    return intent


def control(system: System, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    response = httpx.post(f"{system.stripe_url}/_control/{path}", json=body or {}, timeout=10)
    assert response.status_code == 200, response.text
    assert system.stripe.dispatcher.wait_idle(20)
    result: dict[str, object] = response.json()
    return result


def reasons(system: System, user: str) -> list[str]:
    return [row["reason"] for row in system.ledger(user)]


def test_an_inquiry_moves_no_money_and_its_close_gives_nothing_back(system: System) -> None:
    user = system.new_user()
    intent = pay(system, user, 5000)
    assert system.balance(user) == Decimal("50.00")
    dispute = control(system, "disputes", {"payment_intent": intent, "inquiry": True})
    assert dispute["status"] == "warning_needs_response"
    assert system.balance(user) == Decimal("50.00")
    control(system, f"disputes/{dispute['id']}/close", {"status": "warning_closed"})
    assert system.balance(user) == Decimal("50.00")
    assert reasons(system, user) == ["topup"]
    delivered = [d for d in system.stripe.dispatcher.deliveries_of() if d["status"] == 200]
    assert {"charge.dispute.created", "charge.dispute.closed"} <= {d["type"] for d in delivered}


def test_a_chargeback_debits_once_and_reinstated_funds_come_back_once(system: System) -> None:
    user = system.new_user()
    intent = pay(system, user, 5000)
    dispute = control(system, "disputes", {"payment_intent": intent, "amount": 2000})
    # Stripe sends created and funds_withdrawn for the one withdrawal.
    sent = [
        e["type"]
        for e in system.stripe.events_of()
        if e["data"]["object"].get("id") == dispute["id"]
    ]
    assert sent == ["charge.dispute.created", "charge.dispute.funds_withdrawn"]
    assert system.balance(user) == Decimal("30.00")
    control(system, f"disputes/{dispute['id']}/close", {"status": "won"})
    assert system.balance(user) == Decimal("50.00")
    assert reasons(system, user) == ["topup", "dispute", "dispute_won"]
    # Every dispute event delivered again changes nothing.
    ids = [
        e["id"] for e in system.stripe.events_of() if e["data"]["object"].get("id") == dispute["id"]
    ]
    system.stripe.dispatcher.redeliver(ids)
    assert system.stripe.dispatcher.wait_idle(20)
    assert system.balance(user) == Decimal("50.00")
    assert system.drift() == []


def test_an_inquiry_that_becomes_a_chargeback_debits_then(system: System) -> None:
    user = system.new_user()
    intent = pay(system, user, 5000)
    dispute = control(system, "disputes", {"payment_intent": intent, "inquiry": True})
    assert system.balance(user) == Decimal("50.00")
    control(system, f"disputes/{dispute['id']}/escalate")
    assert system.balance(user) == Decimal("0.00")
    control(system, f"disputes/{dispute['id']}/close", {"status": "lost"})
    assert system.balance(user) == Decimal("0.00")
    assert reasons(system, user) == ["topup", "dispute"]


@pytest.mark.parametrize(
    "order",
    [
        ["funds_reinstated", "closed", "created", "funds_withdrawn"],
        ["funds_withdrawn", "closed", "funds_reinstated", "created"],
    ],
)
def test_chargeback_events_in_any_order_end_whole(system: System, order: list[str]) -> None:
    user = system.new_user()
    intent = pay(system, user, 5000)
    dispute_id = "dp_" + uuid.uuid4().hex[:16]
    statuses = {
        "created": "needs_response",
        "funds_withdrawn": "needs_response",
        "funds_reinstated": "won",
        "closed": "won",
    }
    for name in order:
        dispute = {
            "id": dispute_id,
            "object": "dispute",
            "amount": 5000,
            "currency": "usd",
            "payment_intent": intent,
            "status": statuses[name],
        }
        response = system.post_stripe(stripe_event(f"charge.dispute.{name}", dispute))
        assert response.status_code == 200
    assert system.balance(user) == Decimal("50.00")
    assert system.drift() == []


def test_a_payment_in_another_currency_credits_nothing_and_alerts_the_operator(
    system: System,
) -> None:
    user = system.new_user()
    intent = pay(system, user, 1000, currency="jpy")
    assert system.balance(user) == Decimal("0.00")
    assert system.ledger(user) == []
    events = [
        e["id"]
        for e in system.stripe.events_of()
        if e["type"] in ("checkout.session.completed", "payment_intent.succeeded")
        and intent in (e["data"]["object"].get("payment_intent"), e["data"]["object"].get("id"))
    ]
    assert len(events) == 2
    recorded = {r["event_id"] for r in system.rows("select event_id from public.stripe_events")}
    assert set(events) <= recorded
    alerts = system.rows(
        "select * from monitoring.operator_alerts where metadata ->> 'paymentIntentId' = %s",
        (intent,),
    )
    assert len(alerts) == 1
    assert alerts[0]["metadata"]["currency"] == "jpy"
    assert alerts[0]["metadata"]["eventId"] in events
    assert "JPY" in alerts[0]["message"]


def test_a_signed_checkout_in_rupees_is_answered_not_credited(system: System) -> None:
    user = system.new_user()
    intent = f"pi_{uuid.uuid4().hex[:24]}"
    session = {
        "id": f"cs_test_{uuid.uuid4().hex[:20]}",
        "object": "checkout.session",
        "amount_total": 1000,
        "currency": "inr",
        "payment_intent": intent,
        "payment_status": "paid",
        "metadata": {"purpose": "topup", "user_id": user},
    }
    response = system.post_stripe(stripe_event("checkout.session.completed", session))
    assert response.status_code == 200
    assert response.json()["outcome"].startswith("not credited")
    assert system.balance(user) == Decimal("0.00")
    assert (
        system.one(
            "select count(*) from public.operator_alerts where metadata ->> 'paymentIntentId' = %s",
            (intent,),
        )
        == 1
    )
