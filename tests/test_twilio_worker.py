"""The Twilio worker through the real HTTP stack, with calls played as Twilio plays them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import stripe

from tests.system import ACCOUNT_SID, AUTH_TOKEN, System, running_system
from workers.local.standins import twilio as twilio_standin
from workers.local.standins.signing import twilio_signature
from workers.service import twilio_jobs
from workers.service.db import SyncDatabase
from workers.service.jobs import Jobs
from workers.service.providers import make_twilio_client


def twilio_factory() -> tuple[Any, twilio_standin.TwilioStandin]:
    standin = twilio_standin.TwilioStandin(
        twilio_standin.TwilioStandinConfig(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    )
    return twilio_standin.create_app(standin), standin


@pytest.fixture(scope="module")
def system(module_db: str, pooled_module_db: str) -> Iterator[System]:
    with running_system(module_db, twilio_factory, pooled_url=pooled_module_db) as running:
        yield running


@pytest.fixture
def jobs_db(system: System) -> Iterator[SyncDatabase]:
    db = SyncDatabase(system.pooled_url)
    yield db
    db.close()


def twilio_client(system: System) -> Any:
    return make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, system.twilio_url)


def fund(system: System, user: str, cents: int) -> None:
    system.service(
        "select billing.credit_topup(%s::uuid, %s, %s)", (user, cents, f"pi_{uuid.uuid4().hex}")
    )


def give_number(system: System, user: str) -> str:
    number = f"+1415555{uuid.uuid4().int % 10000:04d}"
    purchase = system.service("select billing.reserve_number(%s::uuid, %s)", (user, number))
    system.service(
        "select billing.confirm_number(%s::uuid, %s)",
        (purchase["purchaseId"], "PN" + uuid.uuid4().hex),
    )
    return number


def use_free_minutes(system: System, user: str) -> None:
    sid = "CA" + uuid.uuid4().hex
    system.service("select billing.authorize_call(%s, %s::uuid)", (sid, user))
    system.service("select billing.settle_call(%s, %s::uuid, %s)", (sid, user, 200 * 60))


def play(system: System, user: str, seconds: int, **options: Any) -> twilio_standin.PlayedCall:
    return twilio_standin.play_call(
        voice_url=system.worker_url + "/twilio/voice",
        status_url=system.worker_url + "/twilio/call-status",
        auth_token=AUTH_TOKEN,
        params={"From": f"client:{user}", "To": "+14155550123"},
        answered_seconds=seconds,
        standin=system.twilio,
        account_sid=ACCOUNT_SID,
        **options,
    )


def holds(system: System, user: str) -> list[dict[str, Any]]:
    return system.rows("select * from public.call_holds where user_id = %s", (user,))


def voice_params(user: str) -> dict[str, str]:
    return {
        "CallSid": "CA" + uuid.uuid4().hex,
        "AccountSid": ACCOUNT_SID,
        "From": f"client:{user}",
        "To": "+14155550123",
        "Direction": "inbound",
        "CallStatus": "ringing",
    }


# -- signatures ------------------------------------------------------------------


def test_a_valid_signature_is_answered_with_twiml(system: System) -> None:
    user = system.new_user("classic")
    fund(system, user, 100)
    response = system.post_twilio("/twilio/voice", voice_params(user))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert '<Dial callerId="+15005550006" timeLimit="600">' in response.text


@pytest.mark.parametrize("attack", ["forged", "wrong_url", "missing", "extra_param", "wrong_token"])
def test_bad_signatures_are_refused_and_hold_nothing(system: System, attack: str) -> None:
    user = system.new_user("classic")
    fund(system, user, 100)
    params = voice_params(user)
    url = system.worker_url + "/twilio/voice"
    signature = twilio_signature(url, params, AUTH_TOKEN)
    if attack == "forged":
        signature = "bm90IGEgc2lnbmF0dXJl"
    elif attack == "wrong_url":
        signature = twilio_signature("https://evil.example/twilio/voice", params, AUTH_TOKEN)
    elif attack == "missing":
        signature = ""
    elif attack == "extra_param":
        params = {**params, "To": "+19005550000"}
    elif attack == "wrong_token":
        signature = twilio_signature(url, params, "another-token")
    response = system.post_twilio("/twilio/voice", params, signature=signature)
    assert response.status_code == 403
    assert holds(system, user) == []
    status = system.post_twilio(
        "/twilio/call-status",
        {"CallSid": params["CallSid"], "CallStatus": "completed", "CallDuration": "60"},
        signature=signature,
    )
    assert status.status_code == 403


# -- the second document's call rules ------------------------------------------------


def test_no_active_number_is_refused(system: System) -> None:
    user = system.new_user("starter")
    call = play(system, user, 60)
    assert call.refused and "<Say>" in call.twiml and "<Hangup />" in call.twiml
    assert "phone number" in call.twiml
    assert holds(system, user) == []


def test_free_minutes_allow_a_call_at_zero_balance(system: System) -> None:
    user = system.new_user("starter")
    give_number(system, user)
    call = play(system, user, 7 * 60 + 5)
    assert not call.refused
    assert call.time_limit == 200 * 60  # the whole allowance, nothing paid
    row = system.rows(
        "select balance, free_minutes_remaining from public.call_balance where user_id = %s",
        (user,),
    )[0]
    assert row == {"balance": Decimal("0.00"), "free_minutes_remaining": 192}


def test_no_free_minutes_and_under_5_dollars_is_refused_with_the_minimum(system: System) -> None:
    user = system.new_user("starter")
    give_number(system, user)
    use_free_minutes(system, user)
    fund(system, user, 499)
    call = play(system, user, 60)
    assert call.refused
    assert "at least 5.00 dollars is required" in call.twiml
    assert [h for h in holds(system, user) if h["released_at"] is None] == []


def test_time_limit_is_what_the_held_funds_buy(system: System) -> None:
    user = system.new_user("classic")
    fund(system, user, 123)  # $1.23 at $0.10/min buys 12 whole minutes
    call = play(system, user, 3600)
    assert call.time_limit == 720
    assert call.duration == 720  # Twilio cut the call at its limit
    assert system.balance(user) == Decimal("0.03")


def test_time_limit_is_capped_at_four_hours(system: System) -> None:
    user = system.new_user("classic")
    fund(system, user, 100_000)
    call = play(system, user, 60)
    assert call.time_limit == 14400


def test_invalid_destination_holds_nothing(system: System) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    params = {**voice_params(user), "To": "not-a-number'); drop table x;--"}
    response = system.post_twilio("/twilio/voice", params)
    assert response.status_code == 200 and "<Hangup />" in response.text
    assert "<Dial" not in response.text
    assert holds(system, user) == []


def test_inbound_calls_bill_the_numbers_owner(system: System) -> None:
    user = system.new_user("starter")
    number = give_number(system, user)
    call = twilio_standin.play_call(
        voice_url=system.worker_url + "/twilio/voice",
        auth_token=AUTH_TOKEN,
        params={"From": "+12125550199", "To": number},
        answered_seconds=90,
        standin=system.twilio,
        account_sid=ACCOUNT_SID,
    )
    assert not call.refused and call.dial is not None
    assert call.dial.noun == "Sip" and call.dial.target == "sip:agent@ai.example.test"
    remaining = system.one(
        "select free_minutes_remaining from public.call_balance where user_id = %s", (user,)
    )
    assert remaining == 198


def test_twenty_concurrent_calls_cannot_overdraw(system: System) -> None:
    user = system.new_user("classic")
    fund(system, user, 500)
    with ThreadPoolExecutor(20) as pool:
        calls = list(pool.map(lambda _i: play(system, user, 10_000), range(20)))
    limits = [c.time_limit or 0 for c in calls if not c.refused]
    # Each call's limit is whole minutes; together they buy at most $5.
    assert sum(limit // 60 for limit in limits) * Decimal("0.10") <= Decimal("5.00")
    assert sum(limits) > 0
    assert system.balance(user) >= Decimal("0.00")
    assert system.drift() == []


# -- settlement ----------------------------------------------------------------------


def test_duplicate_callbacks_settle_once(system: System) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    call = play(system, user, 241, duplicate_callbacks=5)
    assert call.callback_statuses == [200] * 5
    assert system.balance(user) == Decimal("9.50")  # 4 min 1 s → 5 minutes → $0.50
    logs = system.rows("select * from public.twilio_call_logs where user_id = %s", (user,))
    assert len(logs) == 1 and logs[0]["billed_minutes"] == 5


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed", "canceled"])
def test_unanswered_calls_release_the_hold_and_cost_nothing(system: System, outcome: str) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    play(system, user, 120, dial_outcome=outcome)
    assert system.balance(user) == Decimal("10.00")
    assert all(h["released_at"] is not None for h in holds(system, user))


def test_malformed_callbacks_are_refused(system: System) -> None:
    bad = system.post_twilio(
        "/twilio/call-status",
        {"CallSid": "CA" + "1" * 32, "CallStatus": "completed", "CallDuration": "-5"},
    )
    assert bad.status_code == 400


def test_callback_before_voice_then_reconciliation(system: System, jobs_db: SyncDatabase) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    call = play(system, user, 125, callbacks_before_voice=True)
    assert system.balance(user) <= Decimal("10.00")
    later = datetime.now(UTC) + timedelta(hours=5)
    twilio_jobs.reconcile_holds(jobs_db, twilio_client(system), at=later)
    assert system.balance(user) == Decimal("9.70")  # 125 s → 3 min
    assert holds(system, user)[0]["released_at"] is not None
    assert call.call_sid


def test_a_missing_callback_is_settled_from_the_calls_api(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    play(system, user, 61, drop_callbacks=True)
    assert system.balance(user) == Decimal("10.00")
    counts = twilio_jobs.reconcile_holds(
        jobs_db, twilio_client(system), at=datetime.now(UTC) + timedelta(hours=5)
    )
    assert counts["settled"] >= 1
    assert system.balance(user) == Decimal("9.80")  # 61 s → 2 min
    twilio_jobs.reconcile_holds(
        jobs_db, twilio_client(system), at=datetime.now(UTC) + timedelta(hours=6)
    )
    assert system.balance(user) == Decimal("9.80")


def test_a_hold_twilio_never_heard_of_expires(system: System, jobs_db: SyncDatabase) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    system.post_twilio("/twilio/voice", voice_params(user))
    assert holds(system, user)[0]["released_at"] is None
    counts = twilio_jobs.reconcile_holds(
        jobs_db, twilio_client(system), at=datetime.now(UTC) + timedelta(hours=5)
    )
    assert counts["unknown"] == 1 and counts["released"] >= 1
    assert holds(system, user)[0]["released_at"] is not None
    assert system.balance(user) == Decimal("10.00")


# -- renewals ----------------------------------------------------------------------


def paid_number(system: System, user: str) -> dict[str, Any]:
    give_number(system, user)  # the free one
    bought = twilio_client(system).incoming_phone_numbers.create(
        area_code="415", voice_url=system.worker_url + "/twilio/voice"
    )
    purchase = system.service(
        "select billing.reserve_number(%s::uuid, %s)", (user, bought.phone_number)
    )
    assert purchase["charged"] == 2
    system.service(
        "select billing.confirm_number(%s::uuid, %s)", (purchase["purchaseId"], bought.sid)
    )
    return {"sid": bought.sid, "phone_number": bought.phone_number}


def test_renewal_charges_a_due_number_once_even_from_two_jobs(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("starter")
    fund(system, user, 1000)
    paid_number(system, user)
    assert system.balance(user) == Decimal("8.00")
    due = datetime.now(UTC) + timedelta(days=32)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _i: twilio_jobs.renew_numbers(jobs_db, due), range(2)))
    twilio_jobs.renew_numbers(jobs_db, due)
    assert system.balance(user) == Decimal("6.00")
    assert system.drift() == []


def test_unpaid_renewal_goes_past_due_then_is_released_at_twilio(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("starter")
    fund(system, user, 200)
    number = paid_number(system, user)
    assert system.balance(user) == Decimal("0.00")
    due = datetime.now(UTC) + timedelta(days=32)
    twilio_jobs.renew_numbers(jobs_db, due)
    status = system.one(
        "select status from public.user_phone_numbers where provider_sid = %s", (number["sid"],)
    )
    assert status == "past_due"
    alerts = system.rows("select type from public.billing_alerts where user_id = %s", (user,))
    assert "number_past_due" in {a["type"] for a in alerts}
    twilio_jobs.renew_numbers(jobs_db, due + timedelta(days=8))
    released = twilio_jobs.release_numbers(jobs_db, twilio_client(system))
    assert released["released"] == 1
    assert number["sid"] in {n["sid"] for n in system.twilio.released}
    assert (
        system.one(
            "select status from public.user_phone_numbers where provider_sid = %s", (number["sid"],)
        )
        == "released"
    )


def test_a_top_up_while_past_due_renews_instead(system: System, jobs_db: SyncDatabase) -> None:
    user = system.new_user("starter")
    fund(system, user, 200)
    number = paid_number(system, user)
    due = datetime.now(UTC) + timedelta(days=32)
    twilio_jobs.renew_numbers(jobs_db, due)
    fund(system, user, 1000)
    twilio_jobs.renew_numbers(jobs_db, due + timedelta(days=1))
    assert (
        system.one(
            "select status from public.user_phone_numbers where provider_sid = %s", (number["sid"],)
        )
        == "active"
    )
    assert system.balance(user) == Decimal("8.00")


def test_a_purchase_that_died_half_way_is_refunded_and_its_number_released(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("starter")
    fund(system, user, 1000)
    give_number(system, user)  # the free one; the next costs $2
    voice_url = system.worker_url + "/twilio/voice"
    purchase = system.service("select billing.reserve_number(%s::uuid, %s)", (user, "+14155557001"))
    assert purchase["charged"] == 2 and system.balance(user) == Decimal("8.00")
    # Twilio sold the number; the function died before confirming it.
    orphan = twilio_client(system).incoming_phone_numbers.create(
        area_code="415", voice_url=voice_url
    )
    owner = system.new_user("starter")
    fund(system, owner, 1000)
    kept = paid_number(system, owner)  # a recorded number stays
    early = twilio_jobs.reconcile_numbers(jobs_db, twilio_client(system), voice_url)
    assert early == {"cancelled": 0, "released": 0, "errors": 0}  # too recent to judge
    later = datetime.now(UTC) + timedelta(minutes=11)
    counts = twilio_jobs.reconcile_numbers(jobs_db, twilio_client(system), voice_url, at=later)
    assert counts["cancelled"] >= 1 and counts["errors"] == 0
    assert system.balance(user) == Decimal("10.00")
    assert (
        system.one(
            "select status from public.user_phone_numbers where id = %s", (purchase["purchaseId"],)
        )
        == "cancelled"
    )
    released = {n["sid"] for n in system.twilio.released}
    assert orphan.sid in released and kept["sid"] not in released
    assert system.drift() == []


def test_the_jobs_refund_a_purchase_that_died_half_way_within_15_minutes(
    system: System, jobs_db: SyncDatabase
) -> None:
    """Not only the hourly run: a purchase pending 10 minutes is cancelled by the next
    5-minute pass, so a charge for a number never bought is returned within 15 minutes."""
    user = system.new_user("starter")
    fund(system, user, 1000)
    give_number(system, user)
    purchase = system.service("select billing.reserve_number(%s::uuid, %s)", (user, "+14155557002"))
    assert system.balance(user) == Decimal("8.00")
    jobs = Jobs(
        db=jobs_db,
        stripe_client=stripe.StripeClient("sk_test_unused"),
        twilio=twilio_client(system),
        voice_url=system.worker_url + "/twilio/voice",
    )
    [schedule] = [s for s in jobs.schedules() if s.name == "number purchases"]
    stale_after = timedelta(minutes=10)  # billing.stale_number_purchases' default
    assert timedelta(seconds=schedule.every) + stale_after <= timedelta(minutes=15)
    with psycopg.connect(system.db_url) as conn:  # the purchase started 10½ minutes ago
        conn.execute(
            "update public.user_phone_numbers set created_at = now() - interval '630 seconds' "
            "where id = %s",
            (purchase["purchaseId"],),
        )
    result = schedule.run()
    assert isinstance(result, dict) and result["cancelled"] >= 1, result
    assert system.balance(user) == Decimal("10.00")
    assert (
        system.one(
            "select status from public.user_phone_numbers where id = %s", (purchase["purchaseId"],)
        )
        == "cancelled"
    )


# -- call legs: what a call may be billed ----------------------------------------------


def child_callback(parent_sid: str, status: str, seconds: int | str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "CallSid": "CA" + uuid.uuid4().hex,
        "ParentCallSid": parent_sid,
        "CallStatus": status,
        "CallDuration": str(seconds),
        "Direction": "outbound-dial",
    }


def log_of(system: System, call_sid: str) -> dict[str, Any]:
    return system.rows("select * from public.twilio_call_logs where call_sid = %s", (call_sid,))[0]


def test_a_call_is_never_billed_past_its_hold(system: System) -> None:
    user = system.new_user("classic")
    fund(system, user, 50)
    params = voice_params(user)
    voice = system.post_twilio("/twilio/voice", params)
    assert 'timeLimit="300"' in voice.text
    status = system.post_twilio(
        "/twilio/call-status", child_callback(params["CallSid"], "completed", 3600)
    )
    assert status.status_code == 200, status.text
    assert system.balance(user) == Decimal("0.00")  # 5 held minutes, not 60
    log = log_of(system, params["CallSid"])
    assert (log["billed_minutes"], log["duration"], log["unbilled_seconds"]) == (5, 300, 3300)
    alerts = system.rows(
        "select kind, user_id::text as user_id from public.operator_alerts "
        "where metadata ->> 'callSid' = %s",
        (params["CallSid"],),
    )
    assert alerts == [{"kind": "call_overrun", "user_id": user}]


def test_a_callback_after_the_hold_expired_never_overdraws(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("classic")
    fund(system, user, 100)
    first = voice_params(user)
    system.post_twilio("/twilio/voice", first)
    jobs_db.call("select billing.release_expired_holds('infinity')")
    play(system, user, 600)  # the released dollar pays another 10-minute call
    assert system.balance(user) == Decimal("0.00")
    late = system.post_twilio(
        "/twilio/call-status", child_callback(first["CallSid"], "completed", 600)
    )
    assert late.status_code == 200, late.text
    assert system.balance(user) == Decimal("0.00")
    assert log_of(system, first["CallSid"])["unbilled_seconds"] == 600
    assert system.drift() == []


@pytest.mark.parametrize("parent_callback", ["before", "after"])
def test_only_the_answered_legs_talk_time_is_billed(system: System, parent_callback: str) -> None:
    owner = system.new_user("starter")
    number = give_number(system, owner)
    use_free_minutes(system, owner)
    fund(system, owner, 1000)
    call = twilio_standin.play_call(
        voice_url=system.worker_url + "/twilio/voice",
        status_url=system.worker_url + "/twilio/call-status",
        auth_token=AUTH_TOKEN,
        params={"From": "+12125550199", "To": number},
        answered_seconds=59,
        ring_seconds=20,
        pre_dial_seconds=4,
        parent_callback=parent_callback,
        standin=system.twilio,
        account_sid=ACCOUNT_SID,
    )
    assert call.parent_duration == 83 and call.duration == 59
    assert call.parent_callback_status == 200 and call.callback_statuses == [200]
    assert system.balance(owner) == Decimal("9.98")  # one minute at $0.02, not two
    assert log_of(system, call.call_sid)["duration"] == 59


@pytest.mark.parametrize("outcome", ["no-answer", "busy"])
def test_an_unanswered_dial_bills_nothing_when_the_parent_reports_first(
    system: System, outcome: str
) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    call = play(system, user, 120, ring_seconds=30, dial_outcome=outcome, parent_callback="before")
    assert call.parent_duration == 30 and call.parent_callback_status == 200
    assert system.balance(user) == Decimal("10.00")
    assert all(h["released_at"] is not None for h in holds(system, user))


def test_a_dialed_leg_that_never_reports_is_settled_from_its_own_duration(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    call = play(system, user, 59, ring_seconds=40, drop_callbacks=True)
    parent = system.post_twilio(
        "/twilio/call-status",
        {
            "AccountSid": ACCOUNT_SID,
            "CallSid": call.call_sid,
            "CallStatus": "completed",
            "CallDuration": str(call.parent_duration),
            "Direction": "inbound",
        },
    )
    assert parent.json()["outcome"] == "parent_ended"
    assert system.balance(user) == Decimal("10.00")
    # Due as soon as the parent has been over for 2 minutes, not after the call's whole limit.
    counts = twilio_jobs.reconcile_holds(
        jobs_db, twilio_client(system), at=datetime.now(UTC) + timedelta(minutes=3)
    )
    assert counts["settled"] == 1
    assert system.balance(user) == Decimal("9.90")  # the child's 59 s, not the parent's 99 s


def test_reconciliation_bills_nothing_when_no_leg_answered(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    params = voice_params(user)
    system.post_twilio("/twilio/voice", params)
    system.twilio.record_call(sid=params["CallSid"], status="completed", duration=45)
    counts = twilio_jobs.reconcile_holds(
        jobs_db, twilio_client(system), at=datetime.now(UTC) + timedelta(hours=5)
    )
    assert counts["settled"] >= 1
    assert system.balance(user) == Decimal("10.00")
    assert log_of(system, params["CallSid"])["billed_minutes"] == 0


def test_a_call_across_the_first_of_the_month_uses_its_own_months_minutes(
    system: System,
) -> None:
    owner = system.new_user("starter")
    number = give_number(system, owner)
    params = {**voice_params(owner), "From": "+12125550199", "To": number}
    assert "<Dial" in system.post_twilio("/twilio/voice", params).text
    # Authorized ten minutes before this month began (the account untouched since).
    system.rows(
        "update public.call_holds set created_at = date_trunc('month', now(), 'UTC') "
        "- interval '10 minutes' where call_sid = %s returning 1",
        (params["CallSid"],),
    )
    system.rows(
        "update public.call_balance set free_minutes_last_reset = date_trunc('month', now(), "
        "'UTC') - interval '10 days' where user_id = %s returning 1",
        (owner,),
    )
    status = system.post_twilio(
        "/twilio/call-status", child_callback(params["CallSid"], "completed", 50 * 60)
    )
    assert status.status_code == 200, status.text
    assert log_of(system, params["CallSid"])["free_minutes_used"] == 50
    remaining = system.one(
        "select free_minutes_remaining from public.call_balance where user_id = %s", (owner,)
    )
    assert remaining == 200  # the new month's allowance is whole
    assert system.balance(owner) == Decimal("0.00")


def test_strangers_hear_nothing_of_the_owners_balance(system: System) -> None:
    owner = system.new_user("starter")
    number = give_number(system, owner)
    use_free_minutes(system, owner)
    fund(system, owner, 100)
    params = {**voice_params(owner), "From": "+12125550199", "To": number}
    response = system.post_twilio("/twilio/voice", params)
    assert response.status_code == 200 and "<Dial" not in response.text
    assert "This number cannot take calls right now." in response.text
    assert "balance" not in response.text.lower() and "dollars" not in response.text
    assert [h for h in holds(system, owner) if h["released_at"] is None] == []


@pytest.mark.parametrize("destination", ["+19005550100", "+19765550100", "+442071234567"])
def test_outbound_calls_only_reach_the_plans_destinations(system: System, destination: str) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    params = {**voice_params(user), "To": destination}
    response = system.post_twilio("/twilio/voice", params)
    assert "<Dial" not in response.text
    assert "Calls to that number are not allowed on your plan." in response.text
    assert holds(system, user) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"CallDuration": "99999999"},
        {"CallDuration": "86401"},
        {"CallDuration": "1e3"},
        {"ParentCallSid": "CA' or 1=1 --"},
        {"CallStatus": ""},
        {"CallSid": "CA\x00" + "1" * 31},
    ],
)
def test_bad_callbacks_are_refused_and_change_nothing(
    system: System, fields: dict[str, str]
) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    params = voice_params(user)
    system.post_twilio("/twilio/voice", params)
    response = system.post_twilio(
        "/twilio/call-status", {**child_callback(params["CallSid"], "completed", 60), **fields}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid callback"
    assert system.balance(user) == Decimal("10.00")
    assert [h["released_at"] for h in holds(system, user)] == [None]


def test_an_unknown_client_identity_holds_nothing(system: System) -> None:
    stranger = str(uuid.uuid4())
    response = system.post_twilio("/twilio/voice", voice_params(stranger))
    assert "<Dial" not in response.text and "not known" in response.text
    assert system.rows("select * from public.call_holds where user_id = %s", (stranger,)) == []


# -- what Twilio never sends: a child for a failed dial, a second try after a 503 ------------


def callback_answers(system: System, status: int) -> int:
    return sum(
        1
        for line in system.log_lines()
        if line.get("path") == "/twilio/call-status" and line.get("status") == status
    )


@pytest.mark.parametrize("parent_callback", ["after", "none"])
def test_a_dial_that_fails_before_a_child_leg_bills_nothing(
    system: System, jobs_db: SyncDatabase, parent_callback: str
) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    # An invalid caller id: <Dial> creates no child; the parent rings 20 s, hears 25 s of TwiML.
    call = play(
        system,
        user,
        120,
        ring_seconds=20,
        pre_dial_seconds=25,
        dial_error=13214,
        parent_callback=parent_callback,
    )
    assert call.child_sid is None and call.callback_statuses == []
    client = twilio_client(system)
    assert client.calls.list(parent_call_sid=call.call_sid) == []
    assert client.calls(call.call_sid).fetch().duration == "45"
    if parent_callback == "after":
        assert call.parent_callback_status == 200
    assert system.balance(user) == Decimal("10.00")
    counts = twilio_jobs.reconcile_holds(
        jobs_db, client, at=datetime.now(UTC) + timedelta(minutes=3)
    )
    assert counts["settled"] >= 1
    assert system.balance(user) == Decimal("10.00")  # not a minute of the parent's 45 s
    log = log_of(system, call.call_sid)
    assert (log["billed_minutes"], log["duration"], log["billed_amount"]) == (0, 0, 0)
    assert all(h["released_at"] is not None for h in holds(system, user))


def test_a_settlement_lost_to_a_503_is_settled_by_reconciliation_within_minutes(
    system: System, jobs_db: SyncDatabase
) -> None:
    user = system.new_user("classic")
    fund(system, user, 1000)
    answered_503 = callback_answers(system, 503)
    # The database refuses the worker's settlement for this call: both callbacks answer 503.
    grant = "execute on function billing.apply_call_status(jsonb)"
    with psycopg.connect(system.db_url, autocommit=True) as conn:
        conn.execute(f"revoke {grant} from service_role")
        try:
            call = play(system, user, 61, ring_seconds=15)
        finally:
            conn.execute(f"grant {grant} to service_role")
    assert call.callback_statuses == [503] and call.parent_callback_status == 503
    # Twilio sends each callback once: nothing arrives again.
    assert system.wait_for(lambda: callback_answers(system, 503) >= answered_503 + 2)
    assert callback_answers(system, 503) == answered_503 + 2
    assert system.balance(user) == Decimal("10.00")
    [hold] = holds(system, user)
    assert hold["released_at"] is None and hold["max_seconds"] == 6000

    # Three minutes on, not when the 100-minute limit runs out: the Calls API settles it.
    counts = twilio_jobs.reconcile_holds(
        jobs_db, twilio_client(system), at=datetime.now(UTC) + timedelta(minutes=3)
    )
    assert counts["settled"] >= 1
    assert system.balance(user) == Decimal("9.80")  # the child's 61 s → 2 min, as the callback
    log = log_of(system, call.call_sid)
    assert (log["duration"], log["billed_minutes"]) == (61, 2)
    # The callback, had it been taken, would have billed the same: a replay is a duplicate.
    replay = system.post_twilio("/twilio/call-status", call.callback_params)
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert system.balance(user) == Decimal("9.80")
