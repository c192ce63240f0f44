"""Twilio background work: reconcile holds whose callback never came, renew and release numbers.

The rules (what is stale, what is due, what a renewal costs, when a past-due
number goes) are SQL's; this module asks Twilio what happened and reports it.

Twilio does not redeliver a status callback the worker failed to take: it
retries once, only when the connection failed, all within 15 seconds
(https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides), and
a 5xx answer is only logged at Twilio. So reconciliation looks every open hold
older than two minutes up in the Calls API (`billing.claim_holds_to_check`),
and a call whose settlement was lost is settled within minutes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client as TwilioClient

from workers.service.db import RpcError, SyncDatabase
from workers.service.logs import log

TERMINAL = {"completed", "busy", "no-answer", "failed", "canceled"}


def _call_status(twilio: TwilioClient, call_sid: str) -> dict[str, str] | None:
    """What Twilio knows of a call, as the status callback would have said it.

    The dialed leg's own fields when there is one (SQL bills its talk time);
    else the parent's, with Twilio's <Dial action> fields saying that nothing
    answered. None while the call is still running.
    """
    call = twilio.calls(call_sid).fetch()
    if call.status not in TERMINAL:
        return None
    legs = twilio.calls.list(parent_call_sid=call_sid, limit=20)
    answered = [leg for leg in legs if leg.status == "completed"]
    leg = answered[0] if answered else (legs[0] if legs else None)
    if leg is not None:
        return {
            "CallSid": str(leg.sid),
            "ParentCallSid": call_sid,
            "CallStatus": str(leg.status),
            "CallDuration": str(leg.duration or "0"),
            "Direction": str(leg.direction or ""),
            "Source": "reconciliation",
        }
    fields = {"CallSid": call_sid, "CallStatus": str(call.status), "Source": "reconciliation"}
    if call.status == "completed":
        fields |= {"DialCallStatus": "no-answer", "DialCallDuration": "0"}
    return fields


def reconcile_holds(
    db: SyncDatabase, twilio: TwilioClient, limit: int = 100, at: datetime | None = None
) -> dict[str, int]:
    """Settle open holds from Twilio's Calls API, through the callback's SQL function.

    SQL hands out the holds to look up (every open hold older than two minutes,
    at most every two minutes, claimed so that several job processes share them).
    A call that ended with no answered child leg (a `<Dial>` that failed before
    creating one) is reported as such and billed nothing. `at` overrides the
    clock (tests).
    """
    counts = {"settled": 0, "unknown": 0, "running": 0, "released": 0, "errors": 0}
    for hold in db.rows("select * from billing.claim_holds_to_check(%s, %s)", (at, limit)):
        sid = hold["call_sid"]
        try:
            fields = _call_status(twilio, sid)
        except TwilioRestException as exc:
            if exc.status == 404:
                counts["unknown"] += 1  # Twilio never heard of it: the expiry releases it
            else:
                counts["errors"] += 1
            continue
        except TwilioException:
            counts["errors"] += 1
            continue
        if fields is None:
            counts["running"] += 1
            continue
        try:
            result = db.call("select billing.apply_call_status(%s::jsonb)", (json.dumps(fields),))
        except RpcError as exc:
            log("reconciliation refused", call_sid=sid, reason=exc.message)
            counts["errors"] += 1
            continue
        if result.get("outcome") in ("settled", "duplicate"):
            counts["settled"] += 1
        else:
            counts["running"] += 1
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
