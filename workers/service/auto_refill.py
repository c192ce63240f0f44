"""The auto-refill charger: claim queued refills, charge the saved card off-session.

The amount, the card and the idempotency key all come from
`billing.claim_refills`; this module only talks to Stripe. The idempotency
key is fixed per attempt before the call, so a crash after Stripe charged and
a re-run of the same claim replays Stripe's answer instead of charging again.
Whatever PaymentIntent comes back goes to `billing.record_refill_attempt`,
which decides: `succeeded` is credited at once (idempotent on the payment
intent, so the webhook that follows is a duplicate), `processing` (a bank
debit) stays in flight until Stripe settles it by webhook, anything else is a
failed attempt; a decline or a required authentication is a failed attempt
for `billing.fail_refill`, not a crash. Attempts whose outcome is unknown for
23 hours are looked up at Stripe (`reconcile_once`), never retried with a key
Stripe may have forgotten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import stripe

from workers.service.db import RpcError, SyncDatabase
from workers.service.logs import log


@dataclass(frozen=True)
class RefillOutcome:
    request_id: str
    outcome: str


def charge(stripe_client: stripe.StripeClient, request: dict[str, Any]) -> stripe.PaymentIntent:
    """Confirm the saved method off-session, with no `return_url`: Stripe requires one when
    the intent may use redirect-based methods, so say none may (`allow_redirects: never`);
    cards and bank debits (us_bank_account, sepa_debit, with the mandate saved with the
    method) never redirect."""
    return stripe_client.v1.payment_intents.create(
        params={
            "amount": int(request["amount_cents"]),
            "currency": request["currency"],
            "customer": request["stripe_customer_id"],
            "payment_method": request["stripe_payment_method_id"],
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "off_session": True,
            "confirm": True,
            "description": "Call Balance auto-refill",
            "metadata": {
                "purpose": "auto_refill",
                "user_id": str(request["user_id"]),
                "refill_request_id": str(request["id"]),
                "refill_attempt": request["idempotency_key"],
            },
        },
        options={"idempotency_key": request["idempotency_key"]},
    )


def run_once(
    db: SyncDatabase, stripe_client: stripe.StripeClient, limit: int = 10
) -> list[RefillOutcome]:
    outcomes = []
    for request in db.rows("select * from billing.claim_refills(%s)", (limit,)):
        outcomes.append(process(db, stripe_client, request))
    return outcomes


def record(
    db: SyncDatabase, request: dict[str, Any], intent: stripe.PaymentIntent | None
) -> RefillOutcome:
    """Hand the attempt's PaymentIntent (None: none exists) to SQL, which decides."""
    request_id = str(request["id"])
    payload = json.dumps(intent.to_dict(recursive=True)) if intent is not None else None
    try:
        result = db.call(
            "select billing.record_refill_attempt(%s::uuid, %s, %s::jsonb)",
            (request_id, request["idempotency_key"], payload),
        )
    except RpcError as exc:
        log("auto-refill outcome refused", refill_request_id=request_id, reason=exc.message)
        return RefillOutcome(request_id, f"refused: {exc.message}")
    outcome = str(result.get("outcome"))
    log("auto-refill " + outcome, refill_request_id=request_id, payment_intent=intent and intent.id)
    return RefillOutcome(request_id, outcome)


def process(
    db: SyncDatabase, stripe_client: stripe.StripeClient, request: dict[str, Any]
) -> RefillOutcome:
    request_id = str(request["id"])
    if not request.get("stripe_customer_id") or not request.get("stripe_payment_method_id"):
        db.call(
            "select billing.fail_refill(%s, %s, %s)",
            (request_id, "no saved payment method", request["idempotency_key"]),
        )
        return RefillOutcome(request_id, "failed: no saved payment method")
    try:
        intent = charge(stripe_client, request)
    except stripe.CardError as exc:
        code = exc.code or "card_error"
        error = exc.error
        decline = getattr(error, "decline_code", None) if error is not None else None
        db.call(
            "select billing.fail_refill(%s, %s, %s)",
            (request_id, decline or code, request["idempotency_key"]),
        )
        log("auto-refill declined", refill_request_id=request_id, code=decline or code)
        return RefillOutcome(request_id, f"failed: {decline or code}")
    except stripe.StripeError as exc:
        # Network trouble or a Stripe outage (a stored 500 is replayed under the same key):
        # the attempt stays in flight, is retried with the same key while Stripe keeps it
        # (23 hours), then looked up (`reconcile_once`), never charged under a new key.
        log("auto-refill deferred", refill_request_id=request_id, error=type(exc).__name__)
        return RefillOutcome(request_id, f"deferred: {type(exc).__name__}")
    # succeeded: credited now (the webhook that follows is a duplicate); processing (a
    # bank debit): in flight until Stripe settles it by webhook; anything else failed.
    return record(db, request, intent)


def find_intent(
    stripe_client: stripe.StripeClient, request: dict[str, Any]
) -> stripe.PaymentIntent | None:
    """The attempt's PaymentIntent: by the stored id, else by `metadata.refill_attempt`."""
    if request.get("stripe_payment_intent_id"):
        return stripe_client.v1.payment_intents.retrieve(str(request["stripe_payment_intent_id"]))
    key = str(request["idempotency_key"]).replace("'", "")
    found = stripe_client.v1.payment_intents.search(
        params={"query": f"metadata['refill_attempt']:'{key}'", "limit": 1}
    )
    return found.data[0] if found.data else None


def reconcile_once(
    db: SyncDatabase, stripe_client: stripe.StripeClient, limit: int = 10
) -> list[RefillOutcome]:
    """Attempts unknown for 23 hours: look the PaymentIntent up, never retry the old key."""
    outcomes = []
    for request in db.rows("select * from billing.claim_refill_lookups(%s)", (limit,)):
        try:
            intent = find_intent(stripe_client, request)
        except stripe.StripeError as exc:
            log(
                "auto-refill look-up deferred",
                refill_request_id=str(request["id"]),
                error=type(exc).__name__,
            )
            outcomes.append(RefillOutcome(str(request["id"]), "deferred"))
            continue
        outcomes.append(record(db, request, intent))
    return outcomes
