"""`callbalance stripe-webhook create`: the Stripe webhook endpoint the worker needs.

Creates it with the SDK, rendered in the API version the SQL rules are written
for (`stripe.api_version`, which `billing.stripe_api_version()` pins) and with
exactly the events `billing.apply_stripe_event` decides
(`stripe_events.ENABLED_EVENTS`). Prints the endpoint, with its signing
secret (shown by Stripe only at creation) for `STRIPE_WEBHOOK_SECRET`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import stripe

from workers import CommandError
from workers.service.providers import make_stripe_client
from workers.service.stripe_events import ENABLED_EVENTS


def create_endpoint(client: stripe.StripeClient, url: str) -> stripe.WebhookEndpoint:
    # The SDK types both as closed lists of literals; these are among them.
    params: Any = {
        "url": url,
        "enabled_events": list(ENABLED_EVENTS),
        "api_version": stripe.api_version,
        "description": "Call Balance worker",
    }
    return client.v1.webhook_endpoints.create(params=params)


def create_endpoint_command(url: str) -> int:
    key = os.environ.get("STRIPE_SECRET_KEY")
    if not key:
        raise CommandError("STRIPE_SECRET_KEY is not set")
    client = make_stripe_client(key, os.environ.get("STRIPE_API_BASE") or None)
    try:
        endpoint = create_endpoint(client, url)
    except stripe.StripeError as exc:
        raise CommandError(f"Stripe refused the endpoint: {exc.user_message or exc}") from None
    print(json.dumps(endpoint.to_dict(recursive=True), indent=2, sort_keys=True))
    return 0
