"""Stripe lifecycles through the real entry points: bank debits that settle later, failed
refunds, refunds with disputes, the key's mode, the pinned API version, idempotency keys
Stripe forgets, and the webhook endpoint command.

Payments are made with stripe-python against the stand-in, whose webhooks reach the
worker signed; the charger and the look-up job run as the jobs run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from tests.system import STRIPE_KEY, System, running_system, stripe_event
from workers.service import auto_refill
from workers.service.db import SyncDatabase
from workers.service.providers import make_stripe_client
from workers.service.stripe_events import ENABLED_EVENTS

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def system(module_db: str, pooled_module_db: str) -> Iterator[System]:
    with running_system(module_db, pooled_url=pooled_module_db) as running:
        yield running


@pytest.fixture
def jobs_db(system: System) -> Iterator[SyncDatabase]:
    db = SyncDatabase(system.pooled_url)
    yield db
    db.close()


@pytest.fixture
def client(system: System) -> stripe.StripeClient:
    return make_stripe_client(STRIPE_KEY, system.stripe_url)


def control(system: System, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.post(f"{system.stripe_url}/_control/{path}", json=body or {}, timeout=10)
    assert response.status_code == 200, response.text
    assert system.stripe.dispatcher.wait_idle(20)
    return response.json()


def idle(system: System) -> None:
    assert system.stripe.dispatcher.wait_idle(20)


def top_up(system: System, client: stripe.StripeClient, user: str, cents: int, method: str) -> str:
    """A top-up Checkout paid with `method` (card, us_bank_account), saved for later; a bank
    debit is settled at once. Returns the payment intent."""
    purpose = {"purpose": "topup", "user_id": user}
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": cents,
                        "product_data": {"name": "Call balance top-up"},
                    },
                }
            ],
            "metadata": purpose,
            "payment_intent_data": {"setup_future_usage": "off_session", "metadata": purpose},
            "customer_creation": "always",
            "success_url": "https://app.example.test/ok",
            "cancel_url": "https://app.example.test/cancel",
        }
    )
    paid = httpx.post(
        f"{system.stripe_url}/checkout/{session.id}/pay", data={"method": method}, timeout=10
    )
    assert paid.status_code == 200, paid.text
    idle(system)
    if method != "card":
        assert system.balance(user) == Decimal("0.00")  # processing: nothing yet
        control(system, f"checkout/{session.id}/async", {"outcome": "succeeded"})
    assert system.balance(user) == Decimal(cents) / 100
    intent = client.v1.checkout.sessions.retrieve(session.id).payment_intent
    assert isinstance(intent, str)
    return intent


def enable_auto_refill(system: System, user: str) -> None:
    with psycopg.connect(system.db_url) as conn, conn.transaction():
        conn.execute("set local role authenticated")
        claims = json.dumps({"sub": user, "role": "authenticated"})
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        conn.execute("select public.update_auto_refill_settings(true, 50, 10)")


def spend(system: System, user: str, seconds: int) -> None:
    sid = "CA" + uuid.uuid4().hex
    system.service("select billing.authorize_call(%s, %s::uuid)", (sid, user))
    system.service("select billing.settle_call(%s, %s::uuid, %s)", (sid, user, seconds))


def customer_of(system: System, user: str) -> str:
    return str(
        system.one("select stripe_customer_id from public.call_balance where user_id = %s", (user,))
    )


def intents_of(system: System, customer: str) -> list[dict[str, Any]]:
    with system.stripe.lock:
        return [
            dict(o)
            for o in system.stripe.objects.values()
            if o.get("object") == "payment_intent" and o["customer"] == customer
        ]


def request_row(system: System, user: str) -> dict[str, Any]:
    rows = system.rows(
        "select * from public.refill_requests where user_id = %s order by created_at desc", (user,)
    )
    return rows[0]


def age_attempt(system: System, user: str, interval: str) -> None:
    """As if the request's attempt and its claim were `interval` older."""
    system.rows(
        "update public.refill_requests set claimed_at = claimed_at - %s::interval, "
        "attempt_started_at = attempt_started_at - %s::interval "
        "where user_id = %s and status = 'processing' returning id",
        (interval, interval, user),
    )


# -- 1 and 7: a bank debit that ends processing is in flight, charged once -----------


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_a_processing_bank_debit_refill_charges_the_customer_once(
    system: System, jobs_db: SyncDatabase, client: stripe.StripeClient, outcome: str
) -> None:
    user = system.new_user("classic")
    top_up(system, client, user, 900, "us_bank_account")
    enable_auto_refill(system, user)
    spend(system, user, 60)  # $8.90: below the $10 threshold
    outcomes = auto_refill.run_once(jobs_db, client)
    assert [o.outcome for o in outcomes] == ["processing"]
    idle(system)  # payment_intent.processing reaches the worker too
    customer = customer_of(system, user)
    refill = [i for i in intents_of(system, customer) if i["metadata"].get("purpose")]
    refill = [i for i in refill if i["metadata"]["purpose"] == "auto_refill"]
    assert len(refill) == 1 and refill[0]["status"] == "processing"
    # Confirmed off-session without return_url: no redirect-based method allowed.
    assert refill[0]["automatic_payment_methods"] == {"allow_redirects": "never", "enabled": True}
    assert request_row(system, user)["awaiting_settlement_since"] is not None
    # Hours later, more calls and more job runs: no new attempt, no new key.
    key = request_row(system, user)["idempotency_key"]
    age_attempt(system, user, "3 hours")
    spend(system, user, 60)
    assert auto_refill.run_once(jobs_db, client) == []
    assert auto_refill.reconcile_once(jobs_db, client) == []
    assert request_row(system, user)["idempotency_key"] == key
    assert (
        len([i for i in intents_of(system, customer) if i["metadata"].get("refill_attempt")]) == 1
    )
    # The bank settles; the outcome comes by webhook.
    control(system, f"payment_intents/{refill[0]['id']}/settle", {"outcome": outcome})
    row = request_row(system, user)
    if outcome == "succeeded":
        assert system.balance(user) == Decimal("58.80")
        assert row["status"] == "succeeded"
        assert len([c for c in system.stripe.charges() if c["customer"] == customer]) == 2
    else:
        assert system.balance(user) == Decimal("8.80")
        assert row["status"] == "pending" and row["last_error"] == "insufficient_funds"
    system.stripe.dispatcher.redeliver([e["id"] for e in system.stripe.events_of()])
    idle(system)
    assert system.balance(user) == Decimal("58.80" if outcome == "succeeded" else "8.80")
    assert system.drift() == []


# -- 2: a failed refund gives back what it took, once, in either order ---------------


def refund_events(system: System, charge: str) -> list[dict[str, Any]]:
    return [
        e
        for e in system.stripe.events_of()
        if (
            e["type"] in ("refund.created", "refund.updated", "refund.failed")
            and e["data"]["object"]["charge"] == charge
        )
        or (
            e["type"] in ("charge.refunded", "charge.refund.updated")
            and charge in (e["data"]["object"].get("id"), e["data"]["object"].get("charge"))
        )
    ]


def test_a_failed_refund_restores_what_it_took_once(
    system: System, client: stripe.StripeClient
) -> None:
    user = system.new_user("classic")
    intent = top_up(system, client, user, 5000, "us_bank_account")
    refund = client.v1.refunds.create(params={"payment_intent": intent, "amount": 2000})
    assert refund.status == "pending"
    idle(system)
    assert system.balance(user) == Decimal("30.00")  # a pending refund counts
    control(system, f"refunds/{refund.id}/settle", {"outcome": "failed"})
    assert system.balance(user) == Decimal("50.00")
    charge = str(refund.charge)
    assert client.v1.charges.retrieve(charge).amount_refunded == 0
    system.stripe.dispatcher.redeliver([e["id"] for e in refund_events(system, charge)])
    idle(system)
    assert system.balance(user) == Decimal("50.00")
    # A later refund of the same payment debits what it refunds.
    client.v1.refunds.create(params={"payment_intent": intent, "amount": 1000})
    idle(system)
    assert system.balance(user) == Decimal("40.00")
    assert system.drift() == []


def test_a_failed_refund_reported_before_the_refund_takes_nothing(
    system: System, client: stripe.StripeClient
) -> None:
    user = system.new_user("classic")
    intent = top_up(system, client, user, 5000, "us_bank_account")
    control(system, "webhooks", {"mode": "drop"})
    try:
        refund = client.v1.refunds.create(params={"payment_intent": intent, "amount": 2000})
        control(system, f"refunds/{refund.id}/settle", {"outcome": "failed"})
    finally:
        control(system, "webhooks", {"mode": "normal"})
    events = refund_events(system, str(refund.charge))
    assert next(e["type"] for e in events) == "refund.created"
    for event in reversed(events):  # refund.failed first, refund.created last
        response = system.post_stripe(json.dumps(event).encode())
        assert response.status_code == 200, response.text
    assert system.balance(user) == Decimal("50.00")
    assert [r["reason"] for r in system.ledger(user)] == ["topup"]


# -- 3: a refund and a dispute together never reverse more than the payment ---------


def test_a_refund_and_a_chargeback_never_take_more_than_was_paid(
    system: System, client: stripe.StripeClient
) -> None:
    user = system.new_user("classic")
    intent = top_up(system, client, user, 5000, "card")
    client.v1.refunds.create(params={"payment_intent": intent, "amount": 2000})
    idle(system)
    assert system.balance(user) == Decimal("30.00")
    control(system, "disputes", {"payment_intent": intent, "amount": 5000})
    assert system.balance(user) == Decimal("0.00")  # $30 more, not $50
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": intent})
    assert refused.value.code == "charge_disputed"
    # A fully refunded payment cannot be disputed at all.
    other = system.new_user("classic")
    paid = top_up(system, client, other, 5000, "card")
    client.v1.refunds.create(params={"payment_intent": paid})
    idle(system)
    response = httpx.post(
        f"{system.stripe_url}/_control/disputes", json={"payment_intent": paid}, timeout=10
    )
    assert response.status_code == 400
    assert system.balance(other) == Decimal("0.00")
    assert system.drift() == []


# -- 4 and 5: the key's mode and the pinned API version ---------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"livemode": True}, "a live-mode event reached a test-mode system"),
        ({"api_version": "2025-09-30.clover"}, "rendered in API version 2025-09-30.clover"),
    ],
)
def test_an_event_of_another_mode_or_version_is_refused_and_logged(
    system: System, change: dict[str, Any], reason: str
) -> None:
    user = system.new_user("classic")
    intent = f"pi_{uuid.uuid4().hex[:24]}"
    session = {
        "id": f"cs_test_{uuid.uuid4().hex[:20]}",
        "object": "checkout.session",
        "amount_total": 5000,
        "currency": "usd",
        "payment_intent": intent,
        "payment_status": "paid",
        "metadata": {"purpose": "topup", "user_id": user},
    }
    event = {**stripe_event("checkout.session.completed", session), **change}
    response = system.post_stripe(event)
    assert response.status_code == 200
    assert response.json()["outcome"].startswith("refused: " + reason)
    assert system.balance(user) == Decimal("0.00")
    alert = system.rows(
        "select * from monitoring.operator_alerts where metadata ->> 'eventId' = %s", (event["id"],)
    )
    assert len(alert) == 1 and alert[0]["kind"] == "stripe_event_refused"
    logged = [line for line in system.log_lines() if line.get("event_id") == event["id"]]
    assert any(
        line.get("msg") == "stripe event refused" and line["level"] == "warning" for line in logged
    ), logged
    # The same event in this system's mode and version is credited.
    fixed = stripe_event("checkout.session.completed", session)
    assert system.post_stripe(fixed).json()["outcome"] == "applied"
    assert system.balance(user) == Decimal("50.00")


def test_the_webhook_endpoint_command_enables_the_events_at_the_pinned_version(
    system: System, client: stripe.StripeClient
) -> None:
    env = {**os.environ, "STRIPE_SECRET_KEY": STRIPE_KEY, "STRIPE_API_BASE": system.stripe_url}
    url = system.worker_url + "/stripe/webhook"
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "stripe-webhook", "create", "--url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["secret"].startswith("whsec_")
    endpoint = client.v1.webhook_endpoints.retrieve(created["id"])
    assert endpoint.api_version == stripe.api_version == "2026-10-28.endive"
    assert endpoint.enabled_events == list(ENABLED_EVENTS)
    assert system.one("select billing.stripe_api_version()") == stripe.api_version
    # Every event enabled is decided by SQL, and the README names each of them.
    readme = README.read_text(encoding="utf-8")
    for event_type in ENABLED_EVENTS:
        assert f"`{event_type}`" in readme, event_type
    bad = subprocess.run(
        [sys.executable, "-m", "workers.cli", "stripe-webhook", "create", "--url", "not a url"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "Invalid URL" in bad.stderr


# -- 6: an attempt unknown for a day is looked up, never retried with the old key ------


def test_a_refill_unknown_for_a_day_is_looked_up_and_charged_once(
    system: System, jobs_db: SyncDatabase, client: stripe.StripeClient
) -> None:
    user = system.new_user("classic")
    top_up(system, client, user, 900, "card")
    enable_auto_refill(system, user)
    customer = customer_of(system, user)
    control(system, "webhooks", {"mode": "drop"})  # the succeeded webhook is lost
    try:
        control(
            system,
            "faults",
            {"mode": "stored_error", "count": 1, "method": "POST", "path_prefix": "/v1/payment"},
        )
        spend(system, user, 60)
        # Stripe charged, answered 500 and stores that 500 under the key: every retry
        # with the key (the SDK's, the next claim's) gets the 500 again.
        assert [o.outcome for o in auto_refill.run_once(jobs_db, client)] == ["deferred: APIError"]
        age_attempt(system, user, "11 minutes")
        assert [o.outcome for o in auto_refill.run_once(jobs_db, client)] == ["deferred: APIError"]
        refills = [i for i in intents_of(system, customer) if i["metadata"].get("refill_attempt")]
        assert len(refills) == 1 and refills[0]["status"] == "succeeded"
        assert system.balance(user) == Decimal("8.90")
        # A day later Stripe may have forgotten the key: it is never used again.
        control(system, "clock", {"advance": 24 * 3600 + 60})
        age_attempt(system, user, "23 hours")
        assert auto_refill.run_once(jobs_db, client) == []
        assert [o.outcome for o in auto_refill.reconcile_once(jobs_db, client)] == ["charged"]
    finally:
        control(system, "webhooks", {"mode": "normal"})
    assert system.balance(user) == Decimal("58.90")
    assert request_row(system, user)["status"] == "succeeded"
    refills = [i for i in intents_of(system, customer) if i["metadata"].get("refill_attempt")]
    assert len(refills) == 1
    assert system.drift() == []
