"""Twilio background work: reconcile holds whose callback never came, renew and release numbers.

The rules (what is stale, what is due, what a renewal costs, when a past-due
number goes) are SQL's; this module asks Twilio what happened and reports it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client as TwilioClient

from workers.db import RpcError, SyncDatabase
from workers.logs import log

UNANSWERED = {"busy", "no-answer", "failed", "canceled"}


def _duration_of(twilio: TwilioClient, call_sid: str) -> int | None:
    """Seconds to bill for a finished call; None while unknown or still running."""
    call = twilio.calls(call_sid).fetch()
    if call.status == "completed":
        # The dialed legs carry the answered time; without any, the call itself.
        legs = twilio.calls.list(parent_call_sid=call_sid, limit=20)
        durations = [int(leg.duration or 0) for leg in legs if leg.status == "completed"]
        return sum(durations) if legs else int(call.duration or 0)
    if call.status in UNANSWERED:
        return 0
    return None


def reconcile_holds(
    db: SyncDatabase, twilio: TwilioClient, limit: int = 100, at: datetime | None = None
) -> dict[str, int]:
    """Settle overdue holds from Twilio's Calls API; `at` overrides the clock (tests)."""
    counts = {"settled": 0, "unknown": 0, "running": 0, "released": 0, "errors": 0}
    for hold in db.rows("select * from billing.stale_holds(%s, %s)", (at, limit)):
        sid = hold["call_sid"]
        try:
            seconds = _duration_of(twilio, sid)
        except TwilioRestException as exc:
            if exc.status == 404:
                counts["unknown"] += 1  # Twilio never heard of it: the expiry releases it
            else:
                counts["errors"] += 1
            continue
        except TwilioException:
            counts["errors"] += 1
            continue
        if seconds is None:
            counts["running"] += 1
            continue
        meta = json.dumps({"source": "reconciliation"})
        try:
            db.call(
                "select billing.settle_call(%s, %s::uuid, %s, %s::jsonb)",
                (sid, str(hold["user_id"]), seconds, meta),
            )
            counts["settled"] += 1
        except RpcError as exc:
            log("reconciliation refused", call_sid=sid, reason=exc.message)
            counts["errors"] += 1
    counts["released"] = int(db.call("select billing.release_expired_holds(%s)", (at,)) or 0)
    return counts


def renew_numbers(db: SyncDatabase, at: datetime | None = None) -> dict[str, Any]:
    result: dict[str, Any] = db.call("select billing.renew_numbers(%s)", (at,))
    return result


def release_numbers(db: SyncDatabase, twilio: TwilioClient, limit: int = 50) -> dict[str, int]:
    counts = {"released": 0, "errors": 0}
    for number in db.rows("select * from billing.numbers_to_release(%s)", (limit,)):
        sid = number.get("provider_sid")
        try:
            if sid:
                twilio.incoming_phone_numbers(sid).delete()
        except TwilioRestException as exc:
            if exc.status != 404:  # already gone at Twilio counts as released
                counts["errors"] += 1
                log("number release failed; retried next run", number_id=str(number["id"]))
                continue
        except TwilioException:
            counts["errors"] += 1
            continue
        db.call("select billing.mark_number_released(%s)", (str(number["id"]),))
        counts["released"] += 1
    return counts


def cancel_stale_purchases(db: SyncDatabase, at: datetime | None = None) -> dict[str, int]:
    """Cancel purchases pending past their time (SQL decides which, and refunds them)."""
    counts = {"cancelled": 0, "errors": 0}
    for purchase in db.rows("select * from billing.stale_number_purchases(%s, 50)", (at,)):
        try:
            db.call(
                "select billing.cancel_number(%s, %s)",
                (str(purchase["id"]), "the purchase did not complete"),
            )
            counts["cancelled"] += 1
        except RpcError as exc:
            log("stale purchase not cancelled", number_id=str(purchase["id"]), reason=exc.message)
            counts["errors"] += 1
    return counts


def reconcile_numbers(
    db: SyncDatabase,
    twilio: TwilioClient,
    voice_url: str,
    at: datetime | None = None,
    min_age: timedelta = timedelta(minutes=10),
) -> dict[str, int]:
    """Finish what a purchase that died half-way left behind.

    Pending purchases past their time are cancelled (the charge reversed by SQL);
    numbers Twilio holds with this system's voice URL that no purchase records,
    bought more than `min_age` ago, are released at Twilio.
    """
    counts = {"released": 0, **cancel_stale_purchases(db, at)}
    cutoff = (at or datetime.now(UTC)) - min_age
    try:
        held = [
            n
            for n in twilio.incoming_phone_numbers.list(limit=1000)
            if n.voice_url == voice_url and n.date_created is not None and n.date_created < cutoff
        ]
    except TwilioException:
        counts["errors"] += 1
        return counts
    sids = [str(n.sid) for n in held]
    unknown = {
        r["sid"] for r in db.rows("select * from billing.unknown_number_sids(%s) as sid", (sids,))
    }
    for sid in sids:
        if sid not in unknown:
            continue
        try:
            twilio.incoming_phone_numbers(sid).delete()
            counts["released"] += 1
        except TwilioException:
            counts["errors"] += 1
    return counts
