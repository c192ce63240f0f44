"""Stripe webhooks: verify the signature, then one SQL call decides and applies the event.

`billing.apply_stripe_event` reads the event as Stripe sent it, dedupes it on
its id and applies its effect in one statement: which fields count, which
currency is credited and which dispute status moves money are rules, so they
live in SQL. This module only checks `Stripe-Signature` and forwards the raw
payload.
"""

from __future__ import annotations

from typing import Any

import stripe

from workers.service.db import Database

Json = dict[str, Any]

# The events `billing.apply_stripe_event` decides: a webhook endpoint must enable every
# one (without the async, refund or dispute-funds events money is silently missed), and
# render them in `stripe.api_version`, the version the SQL rules are written for.
ENABLED_EVENTS: tuple[str, ...] = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.refund.updated",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)


class BadSignature(Exception):
    """The Stripe-Signature header is missing, forged, stale or for another secret."""


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


def describe(result: Json) -> str:
    """The outcome line of an `apply_stripe_event` result, as the webhook answers it."""
    outcome = str(result.get("outcome") or "applied")
    reason = result.get("reason")
    return f"{outcome}: {reason}" if reason else outcome


async def apply_event(db: Database, payload: str, livemode: bool) -> Json:
    """Hand the verified event to SQL with the key's mode (`sk_live_`: True); returns its
    decision (`outcome`, `reason`, `effect`). SQL refuses an event of the other mode or
    rendered in another API version than `billing.stripe_api_version()`."""
    result: Json = await db.call(
        "select billing.apply_stripe_event(%s::jsonb, %s)", (payload, livemode)
    )
    return result
