"""The Stripe worker through the real HTTP stack: signed webhooks credit exactly once."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from tests.system import OLD_WEBHOOK_SECRET, System, running_system, stripe_event


@pytest.fixture(scope="module")
def system(module_db: str, pooled_module_db: str) -> Iterator[System]:
    with running_system(module_db, pooled_url=pooled_module_db) as running:
        yield running


def pi_id() -> str:
    return f"pi_{uuid.uuid4().hex[:24]}"


def checkout(user: str, cents: int, intent: str, **extra: Any) -> dict[str, Any]:
    session = {
        "id": f"cs_test_{uuid.uuid4().hex[:20]}",
        "object": "checkout.session",
        "mode": "payment",
        "amount_total": cents,
        "currency": "usd",
        "customer": f"cus_{user[:8]}",
        "payment_intent": intent,
        "payment_status": "paid",
        "status": "complete",
        "metadata": {"purpose": "topup", "user_id": user},
    }
    session.update(extra)
    return stripe_event("checkout.session.completed", session)


def untouched(system: System, user: str) -> None:
    assert system.ledger(user) == []
    assert system.balance(user) == Decimal("0.00")


def test_checkout_completed_credits_the_amount_paid(system: System) -> None:
    user = system.new_user("classic")
    intent = pi_id()
    response = system.post_stripe(checkout(user, 5000, intent))
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "applied"
    assert system.balance(user) == Decimal("50.00")
    [row] = system.ledger(user)
    assert (row["type"], row["amount"], row["stripe_payment_intent_id"]) == (
        "credit",
        Decimal("50.00"),
        intent,
    )
    assert (
        system.one("select stripe_customer_id from public.call_balance where user_id = %s", (user,))
        == f"cus_{user[:8]}"
    )


def test_seed_route_is_the_same_handler(system: System) -> None:
    user = system.new_user()
    response = system.post_stripe(checkout(user, 1000, pi_id()), path="/api/stripe/webhook")
    assert response.status_code == 200
    assert system.balance(user) == Decimal("10.00")


@pytest.mark.parametrize(
    ("signature", "why"),
    [
        ("", "missing"),
        ("t=1,v1=deadbeef", "forged"),
        ("garbage", "malformed header"),
    ],
)
def test_bad_signatures_are_refused_and_write_nothing(
    system: System, signature: str, why: str
) -> None:
    user = system.new_user()
    response = system.post_stripe(checkout(user, 5000, pi_id()), signature=signature)
    assert response.status_code == 400, why
    assert response.json()["error"] == "invalid signature"
    untouched(system, user)


def test_stale_and_wrong_secret_are_refused(system: System) -> None:
    user = system.new_user()
    stale = system.post_stripe(checkout(user, 5000, pi_id()), timestamp=int(time.time()) - 301)
    wrong = system.post_stripe(checkout(user, 5000, pi_id()), secret="whsec_someone_else")
    assert (stale.status_code, wrong.status_code) == (400, 400)
    untouched(system, user)


def test_a_rotated_secret_still_verifies(system: System) -> None:
    user = system.new_user()
    response = system.post_stripe(checkout(user, 500, pi_id()), secret=OLD_WEBHOOK_SECRET)
    assert response.status_code == 200
    assert system.balance(user) == Decimal("5.00")


def test_tampered_body_is_refused(system: System) -> None:
    user = system.new_user()
    event = checkout(user, 500, pi_id())
    from workers.local.standins.signing import stripe_signature

    header = stripe_signature(json.dumps(event).encode(), "whsec_test_current")
    event["data"]["object"]["amount_total"] = 500000
    assert system.post_stripe(event, signature=header).status_code == 400
    untouched(system, user)


def test_malformed_unknown_and_foreign_events_are_acknowledged_without_effect(
    system: System,
) -> None:
    user = system.new_user()
    malformed = system.post_stripe(b"{not json")
    unknown = system.post_stripe(stripe_event("invoice.paid", {"id": "in_1", "metadata": {}}))
    foreign = system.post_stripe(checkout(user, 5000, pi_id(), metadata={"order": "shop-42"}))
    subscription = system.post_stripe(
        stripe_event("customer.subscription.deleted", {"id": "sub_1"})
    )
    for response in (malformed, unknown, foreign, subscription):
        assert response.status_code == 200
        assert response.json()["outcome"].startswith("skipped")
    untouched(system, user)


def test_unpaid_checkout_waits_for_the_async_payment(system: System) -> None:
    user = system.new_user()
    intent = pi_id()
    first = system.post_stripe(checkout(user, 1000, intent, payment_status="unpaid"))
    assert first.json()["outcome"].startswith("skipped")
    untouched(system, user)
    later = checkout(user, 1000, intent)
    later["type"] = "checkout.session.async_payment_succeeded"
    assert system.post_stripe(later).json()["outcome"] == "applied"
    assert system.balance(user) == Decimal("10.00")


def test_the_same_event_five_times_in_sequence_credits_once(system: System) -> None:
    user = system.new_user()
    event = checkout(user, 1000, pi_id())
    outcomes = [system.post_stripe(event).json()["outcome"] for _ in range(5)]
    assert outcomes == ["applied"] + ["duplicate event"] * 4
    assert system.balance(user) == Decimal("10.00")
    assert len(system.ledger(user)) == 1


def test_the_same_event_five_times_concurrently_credits_once(system: System) -> None:
    user = system.new_user()
    event = checkout(user, 1000, pi_id())
    with ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _i: system.post_stripe(event), range(5)))
    assert [r.status_code for r in responses] == [200] * 5
    assert system.balance(user) == Decimal("10.00")
    assert len(system.ledger(user)) == 1


def test_checkout_and_its_payment_intent_credit_once_in_either_order(system: System) -> None:
    for first_is_intent in (False, True):
        user = system.new_user()
        intent = pi_id()
        session = checkout(user, 1000, intent)
        pi_event = stripe_event(
            "payment_intent.succeeded",
            {
                "id": intent,
                "object": "payment_intent",
                "currency": "usd",
                "amount": 1000,
                "amount_received": 1000,
                "customer": f"cus_{user[:8]}",
                "payment_method": "pm_card_1",
                "setup_future_usage": "off_session",
                "status": "succeeded",
                "metadata": {"purpose": "topup", "user_id": user},
            },
        )
        order = [pi_event, session] if first_is_intent else [session, pi_event]
        for event in order:
            assert system.post_stripe(event).status_code == 200
        assert system.balance(user) == Decimal("10.00")
        assert len(system.ledger(user)) == 1
        saved = system.one(
            "select stripe_payment_method_id from public.call_balance where user_id = %s", (user,)
        )
        assert saved == "pm_card_1"


def charge_event(kind: str, intent: str, refunded: int, charge_id: str) -> dict[str, Any]:
    return stripe_event(
        kind,
        {
            "id": charge_id,
            "object": "charge",
            "currency": "usd",
            "amount": 5000,
            "amount_refunded": refunded,
            "payment_intent": intent,
            "refunded": refunded == 5000,
        },
    )


def test_refunds_reverse_only_the_newly_refunded_part(system: System) -> None:
    user = system.new_user()
    intent = pi_id()
    system.post_stripe(checkout(user, 5000, intent))
    system.post_stripe(charge_event("charge.refunded", intent, 1000, "ch_r1"))
    assert system.balance(user) == Decimal("40.00")
    # Stripe sends the cumulative amount refunded: 30 more, not 40.
    system.post_stripe(charge_event("charge.refunded", intent, 4000, "ch_r1"))
    assert system.balance(user) == Decimal("10.00")
    # A replay of the older event changes nothing.
    system.post_stripe(charge_event("charge.refunded", intent, 1000, "ch_r1"))
    assert system.balance(user) == Decimal("10.00")
    assert system.drift() == []


def test_a_refund_before_the_checkout_ends_in_the_right_balance(system: System) -> None:
    user = system.new_user()
    intent = pi_id()
    early = system.post_stripe(charge_event("charge.refunded", intent, 2000, "ch_early"))
    assert early.status_code == 200
    assert system.balance(user) == Decimal("0.00")
    system.post_stripe(checkout(user, 5000, intent))
    assert system.balance(user) == Decimal("30.00")
    assert system.drift() == []


def test_disputes_reverse_then_restore_when_won(system: System) -> None:
    user = system.new_user()
    intent = pi_id()
    system.post_stripe(checkout(user, 5000, intent))
    dispute = {
        "id": "dp_" + uuid.uuid4().hex[:16],
        "object": "dispute",
        "currency": "usd",
        "amount": 5000,
        "payment_intent": intent,
        "charge": "ch_x",
        "status": "needs_response",
    }
    system.post_stripe(stripe_event("charge.dispute.created", dispute))
    assert system.balance(user) == Decimal("0.00")
    alerts = system.rows("select type from public.billing_alerts where user_id = %s", (user,))
    assert any(a["type"] == "dispute" for a in alerts)
    lost = dict(dispute, status="lost")
    system.post_stripe(stripe_event("charge.dispute.closed", lost))
    assert system.balance(user) == Decimal("0.00")
    won = dict(dispute, status="won")
    system.post_stripe(stripe_event("charge.dispute.closed", won))
    system.post_stripe(stripe_event("charge.dispute.closed", won))
    assert system.balance(user) == Decimal("50.00")
    assert system.drift() == []


def test_absurd_amounts_are_refused_and_write_nothing(system: System) -> None:
    user = system.new_user()
    ids = []
    for cents in (0, -500, 10_000_01, 10**15):
        event = checkout(user, cents, pi_id())
        ids.append(event["id"])
        response = system.post_stripe(event)
        assert response.status_code == 200
        assert response.json()["outcome"].startswith("refused"), cents
    untouched(system, user)
    # The refusal rolled back the dedupe row too: nothing of these events was kept.
    assert (
        system.one("select count(*) from public.stripe_events where event_id = any(%s)", (ids,))
        == 0
    )


def test_seed_flow_add_50_through_checkout(system: System) -> None:
    """Seed 000: click "Add $50" → Stripe checkout → webhook → balance +$50, one ledger row."""
    user = system.new_user("classic")
    system.pay_checkout(user, 5000)
    assert system.wait_for(lambda: system.balance(user) == Decimal("50.00"))
    [row] = system.ledger(user)
    assert row["type"] == "credit" and row["stripe_payment_intent_id"].startswith("pi_")
    assert system.stripe.dispatcher.wait_idle(10)
    assert system.one(
        "select stripe_payment_method_id is not null from public.call_balance where user_id = %s",
        (user,),
    )


def test_every_request_is_one_json_log_line_without_secrets(system: System) -> None:
    user = system.new_user()
    event = checkout(user, 1000, pi_id())
    system.post_stripe(event)
    system.post_stripe(event, secret="whsec_someone_else")
    lines = [line for line in system.log_lines() if line.get("event_id") == event["id"]]
    assert lines and lines[-1]["outcome"] == "applied"
    assert lines[-1]["event_type"] == "checkout.session.completed"
    assert lines[-1]["status"] == 200 and lines[-1]["latency_ms"] >= 0
    rejected = [line for line in system.log_lines() if line.get("outcome") == "rejected"]
    assert rejected and rejected[-1]["status"] == 400
    with open(system.log_path, encoding="utf-8") as handle:
        text = handle.read()
    for secret in ("whsec_test_current", "whsec_test_rotated_out", "sk_test_callbalance"):
        assert secret not in text


def test_a_body_over_one_mebibyte_is_refused_before_it_is_read(system: System) -> None:
    user = system.new_user()
    event = checkout(user, 1000, pi_id())
    event["padding"] = "x" * (2 * 1024 * 1024)
    response = system.post_stripe(event)
    assert response.status_code == 413
    assert response.json()["error"] == "payload too large"
    untouched(system, user)
