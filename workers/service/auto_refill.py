"""The auto-refill charger: claim queued refills, charge the saved card off-session.

The amount, the card and the idempotency key all come from
`billing.claim_refills`; this module only talks to Stripe. The idempotency
key is fixed per attempt before the call, so a crash after Stripe charged and
a re-run of the same claim replays Stripe's answer instead of charging again.
A success is credited at once (idempotent on the payment intent, so the
webhook that follows is a duplicate); a decline or a required authentication
is a failed attempt for `billing.fail_refill`, not a crash.
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
    return stripe_client.v1.payment_intents.create(
        params={
            "amount": int(request["amount_cents"]),
            "currency": request["currency"],
            "customer": request["stripe_customer_id"],
            "payment_method": request["stripe_payment_method_id"],
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
        # Network trouble or a Stripe outage: the claim stays in flight and is retried
        # later with the same idempotency key, so Stripe never charges twice.
        log("auto-refill deferred", refill_request_id=request_id, error=type(exc).__name__)
        return RefillOutcome(request_id, f"deferred: {type(exc).__name__}")
    if intent.status != "succeeded":
        db.call(
            "select billing.fail_refill(%s, %s, %s)",
            (request_id, f"status {intent.status}", request["idempotency_key"]),
        )
        return RefillOutcome(request_id, f"failed: status {intent.status}")
    meta = json.dumps({"refill_request_id": request_id})
    try:
        db.call(
            "select billing.credit_topup(%s::uuid, %s, %s, 'auto_refill', %s::jsonb)",
            (
                str(request["user_id"]),
                int(intent.amount_received or intent.amount),
                intent.id,
                meta,
            ),
        )
    except RpcError as exc:
        log("auto-refill credit refused", refill_request_id=request_id, reason=exc.message)
        return RefillOutcome(request_id, f"refused: {exc.message}")
    log("auto-refill charged", refill_request_id=request_id, payment_intent=intent.id)
    return RefillOutcome(request_id, "charged")
