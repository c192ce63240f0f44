"""The Stripe stand-in's lifecycles through stripe-python: what it refuses at confirmation,
the 500 it replays under a key, and the key it forgets after 24 hours."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from workers.local.standins.serving import StandinServer
from workers.local.standins.stripe import StripeStandin, StripeStandinConfig, create_app
from workers.service.providers import make_stripe_client


@pytest.fixture
def standin() -> Iterator[tuple[StripeStandin, str]]:
    state = StripeStandin(StripeStandinConfig())
    with StandinServer(create_app(state)) as server:
        yield state, server.base_url
    state.close()


def saved_card(state: StripeStandin, client: stripe.StripeClient) -> tuple[str, str]:
    customer = client.v1.customers.create(params={"email": "ada@example.com"})
    return customer.id, state.create_payment_method(customer.id)["id"]


def charge_params(customer: str, pm: str, **extra: Any) -> Any:
    return {
        "amount": 5000,
        "currency": "usd",
        "customer": customer,
        "payment_method": pm,
        "off_session": True,
        "confirm": True,
        **extra,
    }


def test_confirming_without_return_url_needs_redirects_ruled_out(
    standin: tuple[StripeStandin, str],
) -> None:
    state, base = standin
    client = make_stripe_client("sk_test_x", base, max_network_retries=0)
    customer, pm = saved_card(state, client)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.create(params=charge_params(customer, pm))
    assert refused.value.param == "return_url"
    never = {"enabled": True, "allow_redirects": "never"}
    intent = client.v1.payment_intents.create(
        params=charge_params(customer, pm, automatic_payment_methods=never)
    )
    assert intent.status == "succeeded"
    # A bank debit saved without a mandate cannot be charged off-session.
    bank = state._new_bank_debit(customer, None, "sepa_debit", mandate=False)
    with pytest.raises(stripe.InvalidRequestError) as no_mandate:
        client.v1.payment_intents.create(
            params=charge_params(customer, bank["id"], automatic_payment_methods=never)
        )
    assert no_mandate.value.code == "payment_intent_mandate_invalid"
    with_mandate = state._new_bank_debit(customer, None, "sepa_debit", mandate=True)
    pending = client.v1.payment_intents.create(
        params=charge_params(customer, with_mandate["id"], automatic_payment_methods=never)
    )
    assert pending.status == "processing"


def test_a_stored_500_is_replayed_until_the_key_is_pruned(
    standin: tuple[StripeStandin, str],
) -> None:
    state, base = standin
    client = make_stripe_client("sk_test_x", base, max_network_retries=0)
    customer, pm = saved_card(state, client)
    params = charge_params(
        customer, pm, automatic_payment_methods={"enabled": True, "allow_redirects": "never"}
    )
    fault = {"mode": "stored_error", "count": 1, "path_prefix": "/v1/payment_intents"}
    assert httpx.post(f"{base}/_control/faults", json=fault).status_code == 200
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.payment_intents.create(params=params, options={"idempotency_key": "k-1"})
    charged = client.v1.payment_intents.list(params={"customer": customer}).data
    assert len(charged) == 1 and charged[0].status == "succeeded"  # it ran, once
    bad = httpx.post(f"{base}/_control/clock", json={"advance": -1})
    assert bad.status_code == 400
    assert httpx.post(f"{base}/_control/clock", json={"advance": 24 * 3600}).status_code == 200
    # Pruned: the same key now charges again. Never retry with a day-old key.
    client.v1.payment_intents.create(params=params, options={"idempotency_key": "k-1"})
    assert len(client.v1.payment_intents.list(params={"customer": customer}).data) == 2
    found = client.v1.payment_intents.search(params={"query": f"customer:'{customer}'"})
    assert len(found.data) == 2


def test_webhook_endpoints_refuse_what_stripe_refuses(standin: tuple[StripeStandin, str]) -> None:
    _, base = standin
    client = make_stripe_client("sk_test_x", base, max_network_retries=0)
    params: Any = {"url": "https://example.test/hook", "enabled_events": ["charge.unknown"]}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.webhook_endpoints.create(params=params)
    assert refused.value.param == "enabled_events[0]"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.create(params={"url": "https://example.test/hook"})  # type: ignore[typeddict-item]
    made = client.v1.webhook_endpoints.create(
        params={"url": "https://example.test/hook", "enabled_events": ["refund.failed"]}
    )
    assert made.secret and made.secret.startswith("whsec_")
    listed = client.v1.webhook_endpoints.list()
    assert [e.id for e in listed.data] == [made.id]
    assert "secret" not in listed.data[0]
