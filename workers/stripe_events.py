"""Stripe webhooks: verify, pick the handler for the event type, one transaction, answer.

Handlers are pure: they read the event and name the SQL to run (or why to
skip it). `process_event` runs it in one transaction together with
`billing.record_stripe_event`, so a replayed event id does nothing and the
dedupe is committed only with its effect. Amounts stay in Stripe's integer
cents; SQL converts them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import stripe

from workers.db import Database

Json = dict[str, Any]


class BadSignature(Exception):
    """The Stripe-Signature header is missing, forged, stale or for another secret."""


@dataclass(frozen=True)
class Step:
    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class Plan:
    """What an event asks of the database: steps, or the reason there are none."""

    object_id: str | None = None
    steps: list[Step] = field(default_factory=list)
    skip: str | None = None


def verify(payload: bytes, header: str | None, secrets: list[str], tolerance: int = 300) -> None:
    """Accept the payload when any configured secret signed it within `tolerance` seconds."""
    if not header:
        raise BadSignature("missing Stripe-Signature header")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                payload.decode("utf-8", errors="replace"), header, secret, tolerance
            )
            return
        except (stripe.SignatureVerificationError, TypeError, ValueError):
            # TypeError: compare_digest refuses a header with non-ASCII characters.
            continue
    raise BadSignature("no configured secret matches the Stripe-Signature header")


def _metadata(obj: Json) -> Json:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _id(value: Any) -> str | None:
    """An object id whether Stripe sent it as a string or expanded."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _cents(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def checkout_paid(event: Json) -> Plan:
    session: Json = event["data"]["object"]
    meta = _metadata(session)
    if meta.get("purpose") != "topup" or not meta.get("user_id"):
        return Plan(skip="not a top-up of this system")
    if session.get("payment_status") != "paid":
        return Plan(skip=f"payment_status is {session.get('payment_status')!r}; waiting")
    intent, amount, user = (
        _id(session.get("payment_intent")),
        _cents(session.get("amount_total")),
        meta["user_id"],
    )
    if intent is None or amount is None:
        return Plan(skip="session without payment_intent or amount_total")
    steps = [
        Step(
            "select billing.credit_topup(%s::uuid, %s::bigint, %s, 'topup', %s::jsonb)",
            (user, amount, intent, json.dumps({"checkout_session_id": session.get("id")})),
        )
    ]
    customer = _id(session.get("customer"))
    if customer:
        steps.append(Step("select billing.set_stripe_customer(%s::uuid, %s)", (user, customer)))
    return Plan(object_id=intent, steps=steps)


def intent_succeeded(event: Json) -> Plan:
    intent: Json = event["data"]["object"]
    meta = _metadata(intent)
    purpose, user = meta.get("purpose"), meta.get("user_id")
    if purpose not in ("topup", "auto_refill") or not user:
        return Plan(skip="not a payment of this system")
    amount = _cents(intent.get("amount_received")) or _cents(intent.get("amount"))
    if amount is None:
        return Plan(skip="payment intent without an amount")
    extra = (
        {"refill_request_id": meta["refill_request_id"]} if meta.get("refill_request_id") else {}
    )
    steps = [
        Step(
            "select billing.credit_topup(%s::uuid, %s::bigint, %s, %s, %s::jsonb)",
            (user, amount, intent["id"], purpose, json.dumps(extra)),
        )
    ]
    customer, method = _id(intent.get("customer")), _id(intent.get("payment_method"))
    if customer and method and (purpose == "auto_refill" or intent.get("setup_future_usage")):
        steps.append(
            Step("select billing.save_payment_method(%s::uuid, %s, %s)", (user, customer, method))
        )
    return Plan(object_id=intent["id"], steps=steps)


def intent_failed(event: Json) -> Plan:
    intent: Json = event["data"]["object"]
    meta = _metadata(intent)
    if meta.get("purpose") != "auto_refill" or not meta.get("refill_request_id"):
        return Plan(skip="not an auto-refill of this system")
    error = intent.get("last_payment_error") or {}
    code = error.get("decline_code") or error.get("code") or "payment_failed"
    return Plan(
        object_id=intent["id"],
        steps=[
            Step(
                "select billing.fail_refill(%s::uuid, %s, %s)",
                (meta["refill_request_id"], code, meta.get("refill_attempt")),
            )
        ],
    )


def charge_refunded(event: Json) -> Plan:
    charge: Json = event["data"]["object"]
    intent, refunded = _id(charge.get("payment_intent")), _cents(charge.get("amount_refunded"))
    if intent is None or refunded is None:
        return Plan(skip="refund of a charge without a payment intent")
    return Plan(
        object_id=charge.get("id"),
        steps=[
            Step(
                "select billing.reverse_refund(%s, %s::bigint, %s::jsonb)",
                (intent, refunded, json.dumps({"charge_id": charge.get("id")})),
            )
        ],
    )


def _dispute(dispute: Json, function: str) -> Plan:
    intent, amount = _id(dispute.get("payment_intent")), _cents(dispute.get("amount"))
    if intent is None or amount is None or not isinstance(dispute.get("id"), str):
        return Plan(skip="dispute without a payment intent")
    sql = f"select billing.{function}(%s, %s, %s::bigint)"
    return Plan(object_id=dispute["id"], steps=[Step(sql, (intent, dispute["id"], amount))])


def dispute_created(event: Json) -> Plan:
    return _dispute(event["data"]["object"], "reverse_dispute")


def dispute_closed(event: Json) -> Plan:
    dispute: Json = event["data"]["object"]
    if dispute.get("status") != "won":
        return Plan(skip=f"dispute closed as {dispute.get('status')!r}; the reversal stands")
    return _dispute(dispute, "restore_dispute")


def acknowledge(reason: str) -> Callable[[Json], Plan]:
    return lambda _event: Plan(skip=reason)


HANDLERS: dict[str, Callable[[Json], Plan]] = {
    "checkout.session.completed": checkout_paid,
    "checkout.session.async_payment_succeeded": checkout_paid,
    "checkout.session.async_payment_failed": acknowledge(
        "delayed payment failed; nothing to credit"
    ),
    "payment_intent.succeeded": intent_succeeded,
    "payment_intent.payment_failed": intent_failed,
    "charge.refunded": charge_refunded,
    "charge.dispute.created": dispute_created,
    "charge.dispute.closed": dispute_closed,
    "customer.subscription.deleted": acknowledge("this system sells no subscriptions"),
}


def plan_for(event: Any) -> Plan:
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        return Plan(skip="not a Stripe event")
    handler = HANDLERS.get(str(event.get("type")))
    if handler is None:
        return Plan(skip="event type not handled")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return Plan(skip="event without data.object")
    return handler(event)


async def process_event(db: Database, event: Json, plan: Plan) -> str:
    """Run the plan with the event's dedupe in one transaction; return the outcome."""
    async with db.service() as conn:
        cur = await conn.execute(
            "select billing.record_stripe_event(%s, %s, %s) as first",
            (event["id"], event["type"], plan.object_id),
        )
        row = await cur.fetchone()
        if row is None or not row["first"]:
            return "duplicate event"
        for step in plan.steps:
            await conn.execute(step.sql, step.params)
    return "applied"
