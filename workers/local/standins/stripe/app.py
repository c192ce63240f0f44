"""The Stripe stand-in as an ASGI app: `/v1/...`, the pay page and `/_control/...`."""

from __future__ import annotations

import asyncio
import html
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse

from workers.local.standins.serving import request_pairs, standin_app
from workers.local.standins.stripe.common import (
    StripeError,
    StripeStandinConfig,
    json_response,
    new_id,
    parse_form,
)
from workers.local.standins.stripe.control import add_control_routes
from workers.local.standins.stripe.standin import StripeStandin

_PAY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Pay {amount}</title></head>
<body style="font-family: sans-serif; max-width: 28rem; margin: 3rem auto">
<h1>Stripe stand-in checkout</h1>
<p>{items}</p>
<p><strong>Total: {amount}</strong> &middot; status: {status} / {payment_status}</p>
<form method="post" action="/checkout/{id}/pay">
  <label>Email <input name="email" value="{email}"></label><br><br>
  <label>Card <select name="card">
    <option value="ok">4242 4242 4242 4242 (succeeds)</option>
    <option value="declined">4000 0000 0000 0002 (declined)</option>
    <option value="authentication_required">4000 0027 6000 3184 (needs authentication)</option>
  </select></label><br><br>
  <label>Method <select name="method">
    <option value="card">card</option><option value="delayed">delayed (bank debit)</option>
  </select></label><br><br>
  <button type="submit">Pay {amount}</button>
</form>
<p><a href="{cancel_url}">Cancel</a></p>
</body></html>
"""


def create_app(
    standin: StripeStandin | None = None, *, config: StripeStandinConfig | None = None
) -> FastAPI:
    """The stand-in as an ASGI app; the state object is `app.state.standin`.

    Control endpoints (JSON bodies):

    - `POST /_control/reset`; `GET /_control/state`
    - `POST /_control/cards` `{target: cus_|pm_, behaviour: ok|decline|authentication_required,
      decline_code?}`; `POST /_control/payment_methods` `{customer}` → a new attached card
    - `POST /_control/disputes` `{charge (or payment intent id), amount?, reason?,
      inquiry?}`; `POST /_control/disputes/{id}/escalate` (an inquiry becomes a
      chargeback); `POST /_control/disputes/{id}/close` `{status: won|lost|warning_closed}`
    - `POST /_control/checkout/{id}/async` `{outcome: succeeded|failed}`
    - `POST /_control/payment_intents/{id}/settle` `{outcome: succeeded|failed}` (a
      processing bank debit); `POST /_control/refunds/{id}/settle` `{outcome}` (a
      pending refund); `POST /_control/clock` `{advance: seconds}` (idempotency keys
      older than 24 hours are pruned)
    - `POST /_control/faults` `{mode: fail|timeout|stored_error, count, status?, sleep?, method?,
      path_prefix?, should_retry?}`; `DELETE /_control/faults`
    - `GET|POST /_control/webhooks` `{urls?, secret?, mode?, copies?, delay?, window?,
      retry_delays?}`; `POST /_control/webhooks/flush`;
      `POST /_control/webhooks/redeliver` `{event_id? | event_ids?}` (all when empty);
      `POST /_control/webhooks/wait?timeout=` → `{idle}`
    - `GET /_control/events?type=`; `GET /_control/deliveries?event_id=`;
      `POST /_control/events` `{type, object}` emits an arbitrary event;
      `GET /_control/requests`; `GET /_control/charges`
    """
    if standin is None:
        standin = StripeStandin(config)
    state = standin
    app = standin_app("Stripe stand-in", state)

    def base_of(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
    async def api(request: Request, path: str) -> Response:
        method = request.method.upper()
        try:
            api_key = state.check_auth(request.headers.get("authorization"))
        except StripeError as err:
            return json_response(
                err.status, err.body(), {"WWW-Authenticate": 'Basic realm="Stripe"'}
            )
        fault = state.take_fault(method, "/v1/" + path)
        if fault is not None and fault.mode == "fail":
            headers = {"Request-Id": new_id("req_")}
            if fault.should_retry is not None:
                headers["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
            injected = StripeError(
                fault.status,
                "api_error",
                "An unknown error occurred (injected by the stand-in).",
            )
            return json_response(fault.status, injected.body(), headers)
        pairs = await request_pairs(request)
        params = parse_form(pairs)
        status, body, headers = state.handle(
            method,
            path.strip("/"),
            params,
            pairs,
            api_key=api_key,
            idempotency_key=request.headers.get("idempotency-key"),
            base_url=base_of(request),
            fail_after=fault.status if fault is not None and fault.mode == "stored_error" else None,
        )
        headers["Stripe-Version"] = request.headers.get("stripe-version", state.config.api_version)
        if fault is not None and fault.mode == "timeout":
            await asyncio.sleep(fault.sleep)
        return json_response(status, body, headers)

    @app.get("/checkout/{session_id}", response_class=HTMLResponse, include_in_schema=False)
    def pay_page(session_id: str) -> HTMLResponse:
        with state.lock:
            session = state.objects.get(session_id)
            if session is None or session.get("object") != "checkout.session":
                return HTMLResponse("<h1>No such checkout session</h1>", status_code=404)
            items = state.line_items.get(session_id, [])
            names = ", ".join(f"{i['quantity']} x {i['description']}" for i in items)
            customer = state.objects.get(session["customer"] or "", {})
            return HTMLResponse(
                _PAY_PAGE.format(
                    id=html.escape(session_id),
                    amount=f"{session['amount_total'] / 100:.2f} {session['currency']}".upper(),
                    items=html.escape(names),
                    status=session["status"],
                    payment_status=session["payment_status"],
                    email=html.escape(customer.get("email") or session["customer_email"] or ""),
                    cancel_url=html.escape(session["cancel_url"] or "#"),
                )
            )

    @app.post("/checkout/{session_id}/pay", include_in_schema=False)
    async def pay(request: Request, session_id: str) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        form.update(dict(request.query_params))
        status, body = state.pay_checkout(
            session_id,
            card=form.get("card", "ok"),
            method=form.get("method", "card"),
            email=form.get("email") or None,
        )
        accept = request.headers.get("accept", "")
        if "text/html" in accept and "application/json" not in accept:
            if status == 200 and body["session"]["success_url"]:
                target = str(body["session"]["success_url"]).replace(
                    "{CHECKOUT_SESSION_ID}", session_id
                )
                link = f'<p><a href="{html.escape(target)}">Continue</a></p>'
            else:
                link = f'<p><a href="/checkout/{html.escape(session_id)}">Back</a></p>'
            message = "Payment received." if status == 200 else body["error"]["message"]
            return HTMLResponse(f"<h1>{html.escape(message)}</h1>{link}", status_code=status)
        return json_response(status, body)

    add_control_routes(app, state)
    return app
