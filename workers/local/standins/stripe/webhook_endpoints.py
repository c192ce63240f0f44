"""Webhook endpoints: created with the events to enable and the API version to render.

Stripe (https://docs.stripe.com/api/webhook_endpoints/create): `url` and
`enabled_events` are required (`['*']` for all events); `api_version` pins the
version events are rendered in for this endpoint, else the account's default
(https://docs.stripe.com/webhooks/versioning); the signing `secret` is returned
only at creation. Here each endpoint is recorded and listed; deliveries still
go to the configured URLs, rendered in the stand-in's version, signed with its
secret.
"""

from __future__ import annotations

import re
import secrets

from workers.local.standins.stripe.common import Obj, _Ctx, _invalid, _metadata, _now, new_id
from workers.local.standins.stripe.disputes import Disputes

# The event types this stand-in knows (Stripe's list is longer; an unknown one is refused).
KNOWN_EVENTS: frozenset[str] = frozenset(
    {
        "*",
        "charge.dispute.closed",
        "charge.dispute.created",
        "charge.dispute.funds_reinstated",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.updated",
        "charge.failed",
        "charge.refund.updated",
        "charge.refunded",
        "charge.succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.completed",
        "checkout.session.expired",
        "customer.created",
        "customer.updated",
        "payment_intent.created",
        "payment_intent.payment_failed",
        "payment_intent.processing",
        "payment_intent.succeeded",
        "payment_method.attached",
        "payment_method.detached",
        "refund.created",
        "refund.failed",
        "refund.updated",
    }
)
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?")


class WebhookEndpoints(Disputes):
    """`/v1/webhook_endpoints`: create, retrieve, list, delete."""

    def create_webhook_endpoint(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        url = params.get("url")
        if not url:
            raise _invalid("Missing required param: url.", "url", "parameter_missing")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", str(url)):
            raise _invalid("Invalid URL: must be an absolute http(s) URL.", "url", "url_invalid")
        events = params.get("enabled_events")
        if not isinstance(events, list) or not events:
            raise _invalid(
                "Missing required param: enabled_events.", "enabled_events", "parameter_missing"
            )
        for i, event in enumerate(events):
            if event not in KNOWN_EVENTS:
                raise _invalid(
                    f"Invalid enabled_events[{i}]: unknown event type {event!r}.",
                    f"enabled_events[{i}]",
                )
        version = params.get("api_version") or None
        if version is not None and not _VERSION.fullmatch(str(version)):
            raise _invalid(f"Invalid Stripe API version: {version}", "api_version")
        endpoint: Obj = {
            "id": new_id("we_"),
            "object": "webhook_endpoint",
            "api_version": version,
            "application": None,
            "created": _now(),
            "description": params.get("description") or None,
            "enabled_events": [str(e) for e in events],
            "livemode": False,
            "metadata": _metadata(params),
            "status": "enabled",
            "url": str(url),
        }
        self.objects[endpoint["id"]] = endpoint
        created = dict(endpoint, secret="whsec_" + secrets.token_hex(16))
        return created

    def retrieve_webhook_endpoint(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("webhook_endpoint", ids[0])

    def list_webhook_endpoints(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._list("webhook_endpoint", params, "/v1/webhook_endpoints")

    def delete_webhook_endpoint(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        self._get("webhook_endpoint", ids[0])
        del self.objects[ids[0]]
        return {"id": ids[0], "object": "webhook_endpoint", "deleted": True}
