"""The stand-ins keep their state in the state directory: a restarted sandbox agrees with
its database (a number bought before the restart is still owned and never offered again;
a Stripe customer, payment and idempotency key survive)."""

from __future__ import annotations

from pathlib import Path

from stripe.params import PaymentIntentCreateParams
from twilio.base.exceptions import TwilioRestException

from workers.local.standins.__main__ import build
from workers.local.standins.serving import StandinServer
from workers.service.providers import make_stripe_client, make_twilio_client

ACCOUNT = "AC" + "3" * 32
TOKEN = "state-auth-token"
STRIPE_KEY = "sk_test_state"


def twilio_server(state_dir: Path) -> StandinServer:
    return build(
        [
            "twilio",
            "--port",
            "0",
            "--account-sid",
            ACCOUNT,
            "--auth-token",
            TOKEN,
            "--state-dir",
            str(state_dir),
        ]
    )


def test_a_restarted_twilio_stand_in_remembers_its_numbers(tmp_path: Path) -> None:
    with twilio_server(tmp_path) as server:
        client = make_twilio_client(ACCOUNT, TOKEN, server.base_url)
        [first] = client.available_phone_numbers("US").local.list(area_code=415, limit=1)
        assert first.phone_number == "+14155550100"
        bought = client.incoming_phone_numbers.create(
            phone_number=first.phone_number, voice_url="http://127.0.0.1:9/twilio/voice"
        )
    assert (tmp_path / "twilio-standin.json").exists()

    with twilio_server(tmp_path) as server:
        client = make_twilio_client(ACCOUNT, TOKEN, server.base_url)
        owned = client.incoming_phone_numbers(bought.sid).fetch()
        assert owned.phone_number == "+14155550100"
        assert owned.voice_url == "http://127.0.0.1:9/twilio/voice"
        offered = client.available_phone_numbers("US").local.list(area_code=415, limit=5)
        assert "+14155550100" not in [n.phone_number for n in offered]
        try:
            client.incoming_phone_numbers.create(phone_number="+14155550100")
            raise AssertionError("a number owned before the restart was sold again")
        except TwilioRestException as exc:
            assert exc.code == 21422


def test_without_a_state_dir_the_twilio_stand_in_starts_empty(tmp_path: Path) -> None:
    server = build(["twilio", "--port", "0", "--account-sid", ACCOUNT, "--auth-token", TOKEN])
    with server:
        client = make_twilio_client(ACCOUNT, TOKEN, server.base_url)
        client.incoming_phone_numbers.create(phone_number="+14155550100")
    assert list(tmp_path.iterdir()) == []


def test_a_restarted_stripe_stand_in_remembers_customers_payments_and_keys(
    tmp_path: Path,
) -> None:
    def server() -> StandinServer:
        return build(
            ["stripe", "--port", "0", "--api-key", STRIPE_KEY, "--state-dir", str(tmp_path)]
        )

    params: PaymentIntentCreateParams = {
        "amount": 5000,
        "currency": "usd",
        "confirm": True,
        "off_session": True,
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
    }
    with server() as running:
        client = make_stripe_client(STRIPE_KEY, running.base_url)
        customer = client.v1.customers.create(params={"email": "state@example.test"})
        params["customer"] = customer.id
        attached = running.app.state.standin.create_payment_method(customer.id)
        params["payment_method"] = attached["id"]
        intent = client.v1.payment_intents.create(
            params=params, options={"idempotency_key": "refill_state_1"}
        )
        assert intent.status == "succeeded"
        running.app.state.standin.close()
    assert (tmp_path / "stripe-standin.json").exists()

    with server() as running:
        client = make_stripe_client(STRIPE_KEY, running.base_url)
        assert client.v1.customers.retrieve(customer.id).email == "state@example.test"
        assert client.v1.payment_intents.retrieve(intent.id).status == "succeeded"
        replay = client.v1.payment_intents.create(
            params=params, options={"idempotency_key": "refill_state_1"}
        )
        assert replay.id == intent.id, "the idempotency key survived: no second charge"
        assert len(running.app.state.standin.charges()) == 1
        running.app.state.standin.close()
