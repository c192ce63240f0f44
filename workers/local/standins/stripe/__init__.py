"""A local stand-in for the parts of the Stripe API this project uses.

State lives in memory. Requests are form-encoded exactly as Stripe's SDKs send
them (`line_items[0][price]=...`), responses carry Stripe's JSON shapes and
error envelope, `Idempotency-Key` is honoured as Stripe honours it, and paying
a checkout session (or confirming a payment intent) sends signed webhook events
to the configured URLs from a background thread, with retries.

Besides `/v1/...` the app serves:

- `GET /checkout/{id}`: a minimal pay page; `POST /checkout/{id}/pay` pays it
  (form fields `card=ok|declined|authentication_required`, `method=card|delayed`).
- `/_control/...`: test and fault-injection controls (see `create_app`).

Point stripe-python at it with
`stripe.StripeClient(key, base_addresses={"api": base_url})`.

One module a resource, as the API is split: `customers` (with prices and
payment methods), `checkout`, `payment_intents` (with charges), `refunds`,
`disputes`; `store` holds the state they share, `webhooks` delivers events,
`standin` routes `/v1/...` requests to them, `app` serves it all and
`control` adds the test controls.
"""

from workers.local.standins.stripe.app import create_app
from workers.local.standins.stripe.common import StripeError, StripeStandinConfig, parse_form
from workers.local.standins.stripe.standin import StripeStandin

__all__ = ["StripeError", "StripeStandin", "StripeStandinConfig", "create_app", "parse_form"]
