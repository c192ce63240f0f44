"""The Stripe stand-in, driven by the real stripe-python SDK over loopback HTTP.

Webhooks are received by a small app that verifies them with the SDK's own
`construct_event`, so the signature scheme is checked by Stripe's code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import stripe
from fastapi import FastAPI, Request, Response

from workers.local.embedded_pg import free_port
from workers.local.standins.__main__ import build
from workers.local.standins.serving import StandinServer
from workers.local.standins.signing import stripe_signature
from workers.local.standins.stripe import (
    StripeStandin,
    StripeStandinConfig,
    create_app,
    parse_form,
)
from workers.service.providers import make_stripe_client

SECRET = "whsec_test_secret"


@dataclass
class Receiver:
    """A webhook endpoint: verifies, records, and fails the first `fail_next` deliveries."""

    secret: str = SECRET
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            payload = await request.body()
            try:
                event = stripe.Webhook.construct_event(
                    payload, request.headers.get("stripe-signature", ""), self.secret
                ).to_dict()
            except stripe.SignatureVerificationError:
                with self.lock:
                    self.rejected += 1
                return Response(status_code=400)
            with self.lock:
                if self.fail_next > 0:
                    self.fail_next -= 1
                    return Response(status_code=500)
                self.events.append(event)
            return Response(status_code=200)

        return app

    def types(self) -> list[str]:
        with self.lock:
            return [e["type"] for e in self.events]

    def of(self, event_type: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["type"] == event_type]

    def clear(self) -> None:
        with self.lock:
            self.events.clear()
            self.rejected = 0
            self.fail_next = 0


@dataclass
class Env:
    standin: StripeStandin
    base_url: str
    receiver: Receiver
    hook_url: str
    client: stripe.StripeClient

    def idle(self) -> None:
        assert self.standin.dispatcher.wait_idle(5.0)

    def pay(self, session_url: str, **form: str) -> httpx.Response:
        return httpx.post(session_url + "/pay", data=form)

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(f"{self.base_url}/_control/{path}", json=body or {})
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[StripeStandin, str, Receiver, str]]:
    receiver = Receiver()
    standin = StripeStandin(StripeStandinConfig(webhook_secret=SECRET, retry_delays=[0.02] * 3))
    with (
        StandinServer(receiver.app()) as hook_server,
        StandinServer(create_app(standin)) as api_server,
    ):
        yield standin, api_server.base_url, receiver, hook_server.base_url + "/hook"
    standin.close()


@pytest.fixture
def env(servers: tuple[StripeStandin, str, Receiver, str]) -> Env:
    standin, base_url, receiver, hook_url = servers
    assert standin.dispatcher.wait_idle(5.0)  # nothing from the previous test still in flight
    standin.reset()
    standin.config.webhook_urls[:] = [hook_url]
    standin.config.webhook_secret = SECRET
    standin.config.retry_delays = [0.02] * 3
    receiver.clear()
    client = make_stripe_client("sk_test_standin", base_url, max_network_retries=0)
    return Env(standin, base_url, receiver, hook_url, client)


def _customer(env: Env, email: str = "ada@example.com") -> stripe.Customer:
    return env.client.v1.customers.create(params={"email": email, "metadata": {"user_id": "u-1"}})


def _checkout(env: Env, customer: str | None, **extra: Any) -> stripe.checkout.Session:
    params: Any = {
        "mode": "payment",
        "line_items": [{"price": "price_5USD", "quantity": 1}],
        "metadata": {"purpose": "topup", "user_id": "u-1"},
        "payment_intent_data": {
            "setup_future_usage": "off_session",
            "metadata": {"purpose": "topup", "user_id": "u-1"},
        },
        "success_url": "https://app.example/ok?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.example/cancel",
        "client_reference_id": "u-1",
    }
    if customer:
        params["customer"] = customer
    params.update(extra)
    return env.client.v1.checkout.sessions.create(params=params)


def _saved_card(env: Env) -> tuple[str, str]:
    """A customer with a card saved by a paid checkout: (customer id, payment method id)."""
    customer = _customer(env)
    assert env.pay(_checkout(env, customer.id).url or "").status_code == 200
    pms = env.client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
    env.idle()
    env.receiver.clear()
    return customer.id, pms.data[0].id


def _refill(env: Env, customer: str, pm: str, key: str, amount: int = 5000) -> stripe.PaymentIntent:
    return env.client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "customer": customer,
            "payment_method": pm,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "off_session": True,
            "confirm": True,
            "metadata": {"purpose": "auto_refill", "refill_request_id": key},
        },
        options={"idempotency_key": key},
    )


# -- the wire format -------------------------------------------------------


def test_parse_form_decodes_stripe_brackets() -> None:
    pairs = [
        ("mode", "payment"),
        ("line_items[0][price_data][product_data][name]", "Top-up"),
        ("line_items[0][price_data][unit_amount]", "700"),
        ("line_items[0][quantity]", "2"),
        ("line_items[1][price]", "price_5USD"),
        ("metadata[user_id]", "u"),
        ("expand[0]", "payment_intent"),
        ("expand[]", "customer"),
    ]
    assert parse_form(pairs) == {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {"product_data": {"name": "Top-up"}, "unit_amount": "700"},
                "quantity": "2",
            },
            {"price": "price_5USD"},
        ],
        "metadata": {"user_id": "u"},
        "expand": ["payment_intent", "customer"],
    }


def test_signature_header_is_what_stripe_verifies() -> None:
    payload = b'{"id": "evt_1", "object": "event"}'
    header = stripe_signature(payload, SECRET, timestamp=int(time.time()))
    assert stripe.WebhookSignature.verify_header(payload.decode(), header, SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload.decode(), header, "whsec_other")
    stale = stripe_signature(payload, SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload.decode(), stale, SECRET, tolerance=300)


# -- auth ------------------------------------------------------------------


def test_missing_or_wrong_key_is_401_in_stripes_shape(env: Env) -> None:
    response = httpx.get(f"{env.base_url}/v1/customers")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(stripe.AuthenticationError):
        make_stripe_client("pk_live_nope", env.base_url).v1.customers.list()
    env.standin.config.api_key = "sk_test_only_this"
    try:
        with pytest.raises(stripe.AuthenticationError):
            env.client.v1.customers.list()
        ok = make_stripe_client("sk_test_only_this", env.base_url)
        assert ok.v1.customers.list().data == []
        basic = httpx.get(f"{env.base_url}/v1/customers", auth=("sk_test_only_this", ""))
        assert basic.status_code == 200
    finally:
        env.standin.config.api_key = None


# -- customers and prices --------------------------------------------------


def test_customers_create_retrieve_list_search(env: Env) -> None:
    ada = _customer(env, "ada@example.com")
    _customer(env, "bob@example.com")
    assert ada.id.startswith("cus_") and ada.to_dict()["metadata"]["user_id"] == "u-1"
    assert env.client.v1.customers.retrieve(ada.id).email == "ada@example.com"
    listed = env.client.v1.customers.list(params={"email": "ada@example.com"})
    assert [c.id for c in listed.data] == [ada.id]
    found = env.client.v1.customers.search(params={"query": "metadata['user_id']:'u-1'"})
    assert len(found.data) == 2
    found = env.client.v1.customers.search(params={"query": "email:'bob@example.com'"})
    assert [c.email for c in found.data] == ["bob@example.com"]
    with pytest.raises(stripe.InvalidRequestError) as err:
        env.client.v1.customers.retrieve("cus_missing")
    assert err.value.http_status == 404 and err.value.code == "resource_missing"


def test_seeded_prices(env: Env) -> None:
    assert env.client.v1.prices.retrieve("price_5USD").unit_amount == 500
    price = env.client.v1.prices.retrieve("price_10USD")
    assert (price.unit_amount, price.currency, price.type) == (1000, "usd", "one_time")


# -- checkout --------------------------------------------------------------


def test_checkout_paid_sends_signed_events_in_order(env: Env) -> None:
    customer = _customer(env)
    session = _checkout(env, customer.id)
    assert session.id.startswith("cs_test_")
    assert session.url == f"{env.base_url}/checkout/{session.id}"
    assert (session.amount_total, session.payment_status, session.status) == (500, "unpaid", "open")
    page = httpx.get(session.url or "")
    assert page.status_code == 200 and "<form" in page.text and "5.00 USD" in page.text

    paid = env.pay(session.url or "")
    assert paid.status_code == 200, paid.text
    env.idle()
    assert env.receiver.rejected == 0
    assert env.receiver.types() == [
        "customer.created",
        "checkout.session.completed",
        "payment_intent.succeeded",
        "charge.succeeded",
    ]
    completed = env.receiver.of("checkout.session.completed")[0]["data"]["object"]
    assert completed["payment_status"] == "paid" and completed["amount_total"] == 500
    assert completed["metadata"] == {"purpose": "topup", "user_id": "u-1"}
    assert completed["customer"] == customer.id
    pi = env.receiver.of("payment_intent.succeeded")[0]["data"]["object"]
    assert completed["payment_intent"] == pi["id"]
    assert pi["metadata"] == {"purpose": "topup", "user_id": "u-1"}
    assert pi["setup_future_usage"] == "off_session"
    charge = env.receiver.of("charge.succeeded")[0]["data"]["object"]
    assert charge["payment_intent"] == pi["id"] and charge["amount"] == 500

    again = env.client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent.latest_charge"]}
    )
    assert again.status == "complete" and again.payment_status == "paid"
    assert isinstance(again.payment_intent, stripe.PaymentIntent)
    assert isinstance(again.payment_intent.latest_charge, stripe.Charge)
    pms = env.client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
    assert [pm.id for pm in pms.data] == [pi["payment_method"]]
    assert env.client.v1.payment_methods.retrieve(pms.data[0].id).card.last4 == "4242"  # type: ignore[union-attr]
    # A session is paid once.
    assert env.pay(session.url or "").status_code == 400


def test_checkout_with_price_data_and_line_items(env: Env) -> None:
    session = _checkout(
        env,
        None,
        line_items=[
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 1250,
                    "product_data": {"name": "Balance top-up"},
                },
                "quantity": 2,
            }
        ],
        customer_email="new@example.com",
    )
    assert session.amount_total == 2500
    items = env.client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.quantity, i.amount_total, i.description) for i in items.data] == [
        (2, 2500, "Balance top-up")
    ]
    with pytest.raises(stripe.InvalidRequestError) as err:
        _checkout(env, None, line_items=[{"price": "price_nope", "quantity": 1}])
    assert err.value.param == "line_items[0][price]"
    # No customer given, but the card is saved: the customer is created on payment.
    assert env.pay(session.url or "").status_code == 200
    paid = env.client.v1.checkout.sessions.retrieve(session.id)
    assert paid.customer and paid.customer.startswith("cus_")  # type: ignore[union-attr]
    assert env.client.v1.customers.retrieve(str(paid.customer)).email == "new@example.com"


def test_checkout_declined_card_leaves_session_open(env: Env) -> None:
    session = _checkout(env, _customer(env).id)
    declined = env.pay(session.url or "", card="declined")
    assert declined.status_code == 402
    assert declined.json()["error"]["code"] == "card_declined"
    env.idle()
    assert "payment_intent.payment_failed" in env.receiver.types()
    assert "checkout.session.completed" not in env.receiver.types()
    assert env.client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert env.pay(session.url or "").status_code == 200


def test_checkout_delayed_payment_completes_later(env: Env) -> None:
    session = _checkout(env, _customer(env).id)
    assert env.pay(session.url or "", method="delayed").status_code == 200
    env.idle()
    completed = env.receiver.of("checkout.session.completed")[0]["data"]["object"]
    assert completed["payment_status"] == "unpaid" and completed["status"] == "complete"
    env.control(f"checkout/{session.id}/async", {"outcome": "succeeded"})
    env.idle()
    succeeded = env.receiver.of("checkout.session.async_payment_succeeded")
    assert succeeded[0]["data"]["object"]["payment_status"] == "paid"
    assert env.receiver.of("payment_intent.succeeded")

    other = _checkout(env, _customer(env, "x@example.com").id)
    env.pay(other.url or "", method="delayed")
    env.control(f"checkout/{other.id}/async", {"outcome": "failed"})
    env.idle()
    assert (
        env.receiver.of("checkout.session.async_payment_failed")[0]["data"]["object"]["id"]
        == other.id
    )


# -- off-session payment intents -------------------------------------------


def test_off_session_charge_is_idempotent(env: Env) -> None:
    customer, pm = _saved_card(env)
    first = _refill(env, customer, pm, "refill-1")
    second = _refill(env, customer, pm, "refill-1")
    assert first.id == second.id and first.status == "succeeded"
    assert first.latest_charge and first.amount_received == 5000
    charges = env.client.v1.charges.list(params={"customer": customer})
    assert [c.amount for c in charges.data] == [5000, 500]
    env.idle()
    assert len(env.receiver.of("payment_intent.succeeded")) == 1
    assert env.receiver.of("payment_intent.succeeded")[0]["data"]["object"]["metadata"] == {
        "purpose": "auto_refill",
        "refill_request_id": "refill-1",
    }
    with pytest.raises(stripe.IdempotencyError):
        _refill(env, customer, pm, "refill-1", amount=10000)
    listed = env.client.v1.payment_intents.list(params={"customer": customer})
    assert len(listed.data) == 2
    assert env.client.v1.payment_intents.retrieve(first.id).status == "succeeded"


def test_declined_card_raises_card_error_with_payment_intent(env: Env) -> None:
    customer, pm = _saved_card(env)
    env.control(
        "cards", {"target": pm, "behaviour": "decline", "decline_code": "insufficient_funds"}
    )
    with pytest.raises(stripe.CardError) as err:
        _refill(env, customer, pm, "refill-d")
    assert err.value.http_status == 402 and err.value.code == "card_declined"
    assert err.value.error is not None
    assert err.value.error.decline_code == "insufficient_funds"
    failed_pi = err.value.error.payment_intent
    assert failed_pi is not None and failed_pi.status == "requires_payment_method"
    assert failed_pi.last_payment_error.code == "card_declined"  # type: ignore[union-attr]
    # The same key replays the same error; no second attempt.
    with pytest.raises(stripe.CardError) as again:
        _refill(env, customer, pm, "refill-d")
    assert again.value.error.payment_intent.id == failed_pi.id  # type: ignore[union-attr]
    env.idle()
    failed = env.receiver.of("payment_intent.payment_failed")
    assert [e["data"]["object"]["id"] for e in failed] == [failed_pi.id]
    assert not env.receiver.of("payment_intent.succeeded")


def test_authentication_required_off_session(env: Env) -> None:
    customer, pm = _saved_card(env)
    env.control("cards", {"target": customer, "behaviour": "authentication_required"})
    with pytest.raises(stripe.CardError) as err:
        _refill(env, customer, pm, "refill-a")
    assert err.value.code == "authentication_required"
    env.idle()
    assert env.receiver.of("payment_intent.payment_failed")
    env.control("cards", {"target": customer, "behaviour": "ok"})
    assert _refill(env, customer, pm, "refill-b").status == "succeeded"


def test_payment_method_of_another_customer_is_refused(env: Env) -> None:
    _, pm = _saved_card(env)
    stranger = _customer(env, "eve@example.com")
    with pytest.raises(stripe.InvalidRequestError):
        _refill(env, stranger.id, pm, "refill-x")
    fresh = env.control("payment_methods", {})
    attached = env.client.v1.payment_methods.attach(fresh["id"], params={"customer": stranger.id})
    assert attached.customer == stranger.id
    assert _refill(env, stranger.id, fresh["id"], "refill-y").status == "succeeded"


# -- refunds and disputes --------------------------------------------------


def test_refunds_carry_cumulative_amount_refunded(env: Env) -> None:
    customer, pm = _saved_card(env)
    pi = _refill(env, customer, pm, "refill-r", amount=1000)
    env.idle()
    env.receiver.clear()
    partial = env.client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 300})
    assert (partial.amount, partial.status, partial.charge) == (300, "succeeded", pi.latest_charge)
    rest = env.client.v1.refunds.create(params={"charge": str(pi.latest_charge)})
    assert rest.amount == 700
    with pytest.raises(stripe.InvalidRequestError):
        env.client.v1.refunds.create(params={"payment_intent": pi.id})
    env.idle()
    refunded = [e["data"]["object"] for e in env.receiver.of("charge.refunded")]
    assert [(c["amount_refunded"], c["refunded"]) for c in refunded] == [(300, False), (1000, True)]


def test_disputes_open_and_close(env: Env) -> None:
    customer, pm = _saved_card(env)
    pi = _refill(env, customer, pm, "refill-dp", amount=2000)
    won = env.control("disputes", {"charge": pi.latest_charge})
    assert won["status"] == "needs_response" and won["amount"] == 2000
    env.control(f"disputes/{won['id']}/close", {"status": "won"})
    lost = env.control("disputes", {"payment_intent": pi.id, "amount": 500})
    env.control(f"disputes/{lost['id']}/close", {"status": "lost"})
    env.idle()
    created = env.receiver.of("charge.dispute.created")
    closed = [e["data"]["object"] for e in env.receiver.of("charge.dispute.closed")]
    assert [e["data"]["object"]["id"] for e in created] == [won["id"], lost["id"]]
    assert [(d["id"], d["status"]) for d in closed] == [(won["id"], "won"), (lost["id"], "lost")]
    assert env.client.v1.disputes.retrieve(lost["id"]).amount == 500


# -- faults ----------------------------------------------------------------


def test_injected_500_is_retried_by_the_sdk(env: Env) -> None:
    env.control("faults", {"mode": "fail", "count": 1, "path_prefix": "/v1/customers"})
    with pytest.raises(stripe.APIError):
        _customer(env)
    assert env.client.v1.customers.list().data == []
    env.control("faults", {"mode": "fail", "count": 1, "method": "POST"})
    retrying = make_stripe_client("sk_test_standin", env.base_url, max_network_retries=2)
    assert retrying.v1.customers.create(params={"email": "r@example.com"}).id
    assert len(env.client.v1.customers.list().data) == 1


def test_charge_then_timeout_is_recovered_by_the_idempotency_key(env: Env) -> None:
    customer, pm = _saved_card(env)
    env.control("faults", {"mode": "timeout", "sleep": 1.5, "path_prefix": "/v1/payment_intents"})
    impatient = make_stripe_client(
        "sk_test_standin", env.base_url, max_network_retries=0, timeout=0.3
    )
    params: Any = {
        "amount": 5000,
        "currency": "usd",
        "customer": customer,
        "payment_method": pm,
        "payment_method_types": ["card"],
        "off_session": True,
        "confirm": True,
    }
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.payment_intents.create(params=params, options={"idempotency_key": "k-t"})
    # Stripe charged anyway; the retry with the same key gets that result back.
    replay = impatient.v1.payment_intents.create(params=params, options={"idempotency_key": "k-t"})
    assert replay.status == "succeeded"
    charges = env.client.v1.charges.list(params={"customer": customer})
    assert [c.amount for c in charges.data] == [5000, 500]


# -- webhook delivery ------------------------------------------------------


def test_failed_deliveries_are_retried(env: Env) -> None:
    env.receiver.fail_next = 2
    event = env.control(
        "events", {"type": "customer.subscription.deleted", "object": {"id": "sub_1"}}
    )
    env.idle()
    assert env.receiver.types() == ["customer.subscription.deleted"]
    response = httpx.get(f"{env.base_url}/_control/deliveries", params={"event_id": event["id"]})
    assert [d["status"] for d in response.json()] == [500, 500, 200]
    assert [d["attempt"] for d in response.json()] == [1, 2, 3]


def test_unreachable_endpoint_gives_up_after_the_retries(env: Env) -> None:
    env.control("webhooks", {"urls": [f"http://127.0.0.1:{free_port()}/gone"]})
    env.control("events", {"type": "charge.succeeded", "object": {"id": "ch_1"}})
    env.idle()
    deliveries = env.standin.dispatcher.deliveries_of()
    assert len(deliveries) == 4 and all(d["error"] for d in deliveries)


def test_wrong_secret_is_rejected_by_the_receiver(env: Env) -> None:
    env.control("webhooks", {"secret": "whsec_rotated", "retry_delays": []})
    env.control("events", {"type": "charge.succeeded", "object": {"id": "ch_1"}})
    env.idle()
    assert env.receiver.rejected == 1 and env.receiver.events == []


def test_duplicate_drop_delay_and_redeliver(env: Env) -> None:
    env.control("webhooks", {"mode": "duplicate", "copies": 3})
    env.control("events", {"type": "charge.succeeded", "object": {"id": "ch_dup"}})
    env.idle()
    assert len(env.receiver.events) == 3
    assert len({e["id"] for e in env.receiver.events}) == 1

    env.receiver.clear()
    env.control("webhooks", {"mode": "drop"})
    dropped = env.control("events", {"type": "charge.succeeded", "object": {"id": "ch_drop"}})
    env.idle()
    assert env.receiver.events == []
    assert env.standin.dispatcher.deliveries_of(dropped["id"])[0]["dropped"]
    env.control("webhooks", {"mode": "normal"})
    env.control("webhooks/redeliver", {"event_id": dropped["id"]})
    env.idle()
    assert [e["id"] for e in env.receiver.events] == [dropped["id"]]

    env.receiver.clear()
    env.control("webhooks", {"mode": "delay", "delay": 0.2})
    started = time.monotonic()
    env.control("events", {"type": "charge.succeeded", "object": {"id": "ch_late"}})
    env.idle()
    assert time.monotonic() - started >= 0.2 and len(env.receiver.events) == 1

    env.receiver.clear()
    env.control("webhooks", {"mode": "normal"})
    env.control("webhooks/redeliver")
    env.idle()
    assert len(env.receiver.events) == len(env.standin.events) == 3


def test_reorder_delivers_newest_first(env: Env) -> None:
    customer, pm = _saved_card(env)
    env.control("webhooks", {"mode": "reorder", "window": 3})
    _refill(env, customer, pm, "refill-o")  # created, succeeded, charge.succeeded
    env.idle()
    assert env.receiver.types() == [
        "charge.succeeded",
        "payment_intent.succeeded",
        "payment_intent.created",
    ]
    env.control("events", {"type": "a.held", "object": {"id": "x"}})
    env.idle()
    assert env.receiver.types()[-1] != "a.held"
    env.control("webhooks/flush")
    env.idle()
    assert env.receiver.types()[-1] == "a.held"


def test_control_state_events_and_reset(env: Env) -> None:
    customer, _ = _saved_card(env)
    state = httpx.get(f"{env.base_url}/_control/state").json()
    assert [c["id"] for c in state["objects"]["customer"]] == [customer]
    assert state["webhooks"]["urls"] == [env.hook_url]
    types = [e["type"] for e in httpx.get(f"{env.base_url}/_control/events").json()]
    assert "checkout.session.completed" in types
    assert env.client.v1.events.list(params={"type": "charge.succeeded"}).data
    assert len(httpx.get(f"{env.base_url}/_control/charges").json()) == 1
    waited = httpx.post(f"{env.base_url}/_control/webhooks/wait", params={"timeout": 2})
    assert waited.json() == {"idle": True}
    env.control("reset")
    assert env.client.v1.customers.list().data == []
    assert env.client.v1.prices.retrieve("price_5USD").unit_amount == 500


def test_command_line_builds_the_stand_in() -> None:
    server = build(
        [
            "stripe",
            "--port",
            "0",
            "--webhook-url",
            "http://127.0.0.1:9/a,http://127.0.0.1:9/b",
            "--webhook-secret",
            "whsec_cli",
            "--retry-delays",
            "0.1,0.2",
        ]
    )
    with server:
        settings = httpx.get(f"{server.base_url}/_control/webhooks").json()
        assert settings["urls"] == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
        assert (settings["secret"], settings["retry_delays"]) == ("whsec_cli", [0.1, 0.2])
        client = make_stripe_client("sk_test_cli", server.base_url)
        assert client.v1.prices.retrieve("price_10USD").unit_amount == 1000
    server.app.state.standin.close()
