"""Auto-refill end to end against the Stripe stand-in: one charge per refill, whatever happens."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.system import STRIPE_KEY, System, running_system
from workers.service import auto_refill
from workers.service.db import SyncDatabase
from workers.service.providers import make_stripe_client


@pytest.fixture(scope="module")
def system(module_db: str, pooled_module_db: str) -> Iterator[System]:
    with running_system(module_db, pooled_url=pooled_module_db) as running:
        yield running


@pytest.fixture
def jobs_db(system: System) -> Iterator[SyncDatabase]:
    db = SyncDatabase(system.pooled_url)
    yield db
    db.close()


def top_up_with_saved_card(system: System, user: str, cents: int) -> str:
    """Pay a checkout with the card saved for later; return the customer id."""
    system.pay_checkout(user, cents)
    expected = Decimal(cents) / 100
    assert system.wait_for(lambda: system.balance(user) == expected)
    assert system.wait_for(
        lambda: system.one(
            "select stripe_payment_method_id is not null from public.call_balance "
            "where user_id = %s",
            (user,),
        )
    )
    customer = system.one(
        "select stripe_customer_id from public.call_balance where user_id = %s", (user,)
    )
    assert customer
    return str(customer)


def enable_auto_refill(system: System, user: str, amount: int = 50, threshold: int = 10) -> None:
    with psycopg.connect(system.db_url) as conn, conn.transaction():
        conn.execute("set local role authenticated")
        claims = json.dumps({"sub": user, "role": "authenticated"})
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        conn.execute("select public.update_auto_refill_settings(true, %s, %s)", (amount, threshold))


def call(system: System, user: str, seconds: int) -> dict[str, Any]:
    sid = "CA" + uuid.uuid4().hex
    system.service("select billing.authorize_call(%s, %s::uuid)", (sid, user))
    result: dict[str, Any] = system.service(
        "select billing.settle_call(%s, %s::uuid, %s)", (sid, user, seconds)
    )
    return result


def charges_of(system: System, customer: str) -> list[dict[str, Any]]:
    return [c for c in system.stripe.charges() if c.get("customer") == customer]


def requests_of(system: System, user: str) -> set[str]:
    rows = system.rows("select id from public.refill_requests where user_id = %s", (user,))
    return {str(r["id"]) for r in rows}


def failures_of(system: System, user: str) -> int:
    return int(
        system.one(
            "select auto_refill_failures from public.call_balance where user_id = %s", (user,)
        )
    )


def request_status(system: System, user: str) -> list[str]:
    rows = system.rows(
        "select status from public.refill_requests where user_id = %s order by created_at", (user,)
    )
    return [str(r["status"]) for r in rows]


def test_seed_flow_balance_9_auto_refill_50_make_a_call(
    system: System, jobs_db: SyncDatabase
) -> None:
    """Seed 000: balance $9, auto-refill on at $50, make a call → topped up."""
    user = system.new_user("classic")
    customer = top_up_with_saved_card(system, user, 900)
    enable_auto_refill(system, user)
    call(system, user, 60)  # 1 minute at $0.10 → $8.90, below the $10 threshold
    assert system.balance(user) == Decimal("8.90")
    outcomes = auto_refill.run_once(jobs_db, make_stripe_client(STRIPE_KEY, system.stripe_url))
    assert [o.outcome for o in outcomes] == ["charged"]
    assert system.balance(user) == Decimal("58.90")
    assert len(charges_of(system, customer)) == 2  # the top-up and one refill
    assert system.stripe.dispatcher.wait_idle(10)
    assert system.balance(user) == Decimal("58.90")  # the webhook that follows is a duplicate
    refill = system.ledger(user)[-1]
    assert refill["amount"] == Decimal("50.00") and refill["type"] == "credit"
    assert system.one(
        "select last_refill_at is not null from public.call_balance where user_id = %s", (user,)
    )
    assert system.drift() == []


def test_a_burst_of_debits_charges_once(system: System, jobs_db: SyncDatabase) -> None:
    user = system.new_user("classic")
    customer = top_up_with_saved_card(system, user, 1200)
    enable_auto_refill(system, user)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _i: call(system, user, 120), range(20)))
    assert system.balance(user) == Decimal("8.00")  # 20 calls of 2 minutes at $0.10 = $4
    stripe_client = make_stripe_client(STRIPE_KEY, system.stripe_url)
    for _ in range(3):
        auto_refill.run_once(jobs_db, stripe_client)
    assert len(charges_of(system, customer)) == 2
    assert system.balance(user) == Decimal("58.00")


def test_three_declines_turn_auto_refill_off_with_an_alert(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("classic")
    customer = top_up_with_saved_card(system, user, 1000)
    enable_auto_refill(system, user)
    system.stripe.set_card_behaviour(customer, "decline", "insufficient_funds")
    stripe_client = make_stripe_client(STRIPE_KEY, system.stripe_url)
    call(system, user, 60)
    outcomes = []
    for attempt in range(1, 4):
        outcomes += [
            o.outcome
            for o in auto_refill.run_once(jobs_db, stripe_client)
            if o.request_id in requests_of(system, user)
        ]
        # Wait until this attempt's outcome is final — its failure counted and its
        # payment_failed webhook delivered and answered — before skipping the backoff,
        # so a late webhook cannot land after the reset.
        assert system.stripe.dispatcher.wait_idle(10)
        assert system.wait_for(lambda n=attempt: failures_of(system, user) == n)
        with psycopg.connect(system.db_url) as conn:
            conn.execute(
                "update public.refill_requests set next_attempt_at = now() "
                "where user_id = %s and status = 'pending'",
                (user,),
            )
    assert outcomes == ["failed: insufficient_funds"] * 3
    assert system.stripe.dispatcher.wait_idle(10)  # payment_failed webhooks count no extra failure
    state = system.rows(
        "select auto_refill_enabled, balance from public.call_balance where user_id = %s", (user,)
    )[0]
    assert state == {"auto_refill_enabled": False, "balance": Decimal("9.90")}
    alerts = {
        a["type"]
        for a in system.rows("select type from public.billing_alerts where user_id = %s", (user,))
    }
    assert "auto_refill_disabled" in alerts
    assert charges_of(system, customer) and len(charges_of(system, customer)) == 1


def test_a_crash_after_charging_reruns_with_the_same_key(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("classic")
    customer = top_up_with_saved_card(system, user, 1000)
    enable_auto_refill(system, user)
    call(system, user, 60)
    stripe_client = make_stripe_client(STRIPE_KEY, system.stripe_url)
    [claimed] = [
        r
        for r in jobs_db.rows("select * from billing.claim_refills(100)")
        if str(r["user_id"]) == user
    ]
    auto_refill.charge(stripe_client, claimed)  # Stripe charged; then the job died
    assert system.stripe.dispatcher.wait_idle(10)
    with psycopg.connect(system.db_url) as conn:
        conn.execute(
            "update public.refill_requests set claimed_at = now() - interval '11 minutes' "
            "where id = %s and status = 'processing'",
            (claimed["id"],),
        )
    for _ in range(2):
        auto_refill.run_once(jobs_db, stripe_client)
    assert len(charges_of(system, customer)) == 2  # the top-up and exactly one refill
    assert system.balance(user) == Decimal("59.90")
    assert system.drift() == []


def test_the_jobs_process_refills_within_a_second_of_the_debit(system: System) -> None:
    user = system.new_user("classic")
    top_up_with_saved_card(system, user, 1000)
    enable_auto_refill(system, user)
    env = dict(system.env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "jobs", "--poll-seconds", "60"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # The jobs listen for NOTIFY before the debit (a condition, not a pause): the refill
        # is then picked up by the notification, or by the first poll if that runs later.
        assert system.wait_for(
            lambda: (
                system.one(
                    "select count(*) from pg_stat_activity "
                    "where query = 'listen refill_requests' and datname = current_database()"
                )
                >= 1
            ),
            timeout=30,
        )
        call(system, user, 60)
        started = time.monotonic()
        assert system.wait_for(lambda: system.balance(user) == Decimal("59.90"), timeout=10)
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"refill took {elapsed:.2f}s"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_a_top_up_after_a_declined_refill_cancels_the_queued_request(
    system: System, jobs_db: SyncDatabase
) -> None:
    """Balance $110, threshold $20: the request left over from a declined attempt is
    never charged."""
    user = system.new_user("classic")
    customer = top_up_with_saved_card(system, user, 1000)
    stripe_client = make_stripe_client(STRIPE_KEY, system.stripe_url)
    system.stripe.set_card_behaviour(customer, "decline", "insufficient_funds")
    enable_auto_refill(system, user, amount=50, threshold=20)  # $10 < $20: queued at once
    [declined] = [
        o.outcome
        for o in auto_refill.run_once(jobs_db, stripe_client)
        if o.request_id in requests_of(system, user)
    ]
    assert declined == "failed: insufficient_funds"
    assert system.stripe.dispatcher.wait_idle(10)
    assert system.wait_for(lambda: request_status(system, user) == ["pending"])

    system.stripe.set_card_behaviour(customer, "ok")
    system.pay_checkout(user, 10000)  # the customer tops up $100 through signed webhooks
    assert system.wait_for(lambda: system.balance(user) == Decimal("110.00"))
    assert system.wait_for(lambda: request_status(system, user) == ["cancelled"])

    with psycopg.connect(system.db_url) as conn:  # the backoff is over
        conn.execute(
            "update public.refill_requests set next_attempt_at = now() where user_id = %s",
            (user,),
        )
    outcomes = auto_refill.run_once(jobs_db, stripe_client)
    assert not [o for o in outcomes if o.request_id in requests_of(system, user)]
    refills = [
        c
        for c in system.stripe.charges()
        if (c.get("metadata") or {}).get("user_id") == user
        and c.get("status") == "succeeded"
        and (c.get("metadata") or {}).get("purpose") == "auto_refill"
    ]
    assert refills == [], "no refill was charged"
    assert [r["reason"] for r in system.ledger(user)] == ["topup", "topup"]
    assert system.balance(user) == Decimal("110.00")
    assert system.drift() == []


def test_a_request_claimed_above_the_threshold_is_cancelled_not_charged(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("classic")
    customer = top_up_with_saved_card(system, user, 1500)
    enable_auto_refill(system, user, amount=50, threshold=20)  # $15 < $20: queued
    assert request_status(system, user) == ["pending"]
    enable_auto_refill(system, user, amount=50, threshold=10)  # now $15 ≥ $10
    outcomes = auto_refill.run_once(jobs_db, make_stripe_client(STRIPE_KEY, system.stripe_url))
    assert not [o for o in outcomes if o.request_id in requests_of(system, user)]
    assert request_status(system, user) == ["cancelled"]
    assert len(charges_of(system, customer)) == 1
    assert system.balance(user) == Decimal("15.00")


def test_sub_cent_and_infinite_settings_are_refused_and_nothing_is_stored(
    system: System,
) -> None:
    user = system.new_user("classic")
    top_up_with_saved_card(system, user, 1000)
    before = system.rows("select * from public.call_balance where user_id = %s", (user,))
    for amount, threshold in (
        ("49.995", "4.996"),
        ("50", "10.001"),
        ("Infinity", "10"),
        ("50", "-Infinity"),
        ("NaN", "10"),
        ("50", "1e30"),
        ("-50", "10"),
    ):
        with pytest.raises(psycopg.Error) as refused:
            enable_auto_refill(system, user, amount=amount, threshold=threshold)  # type: ignore[arg-type]
        assert refused.value.sqlstate == "PT400", (amount, threshold, refused.value)
        message = refused.value.diag.message_primary or ""
        assert message.endswith("."), message
    assert system.rows("select * from public.call_balance where user_id = %s", (user,)) == before
    assert request_status(system, user) == []
