"""The control API of the Stripe stand-in: cards, disputes, faults, webhooks, inspection."""

from __future__ import annotations

import asyncio

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from workers.local.standins.stripe.common import (
    Fault,
    Obj,
    StripeError,
    control_error,
    json_response,
)
from workers.local.standins.stripe.standin import StripeStandin


def add_control_routes(app: FastAPI, state: StripeStandin) -> None:
    """The `/_control/...` endpoints listed in `create_app` that only this stand-in has."""

    @app.post("/_control/cards", response_model=None)
    def cards(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            state.set_card_behaviour(
                str(body.get("target") or body.get("customer") or body.get("payment_method")),
                str(body.get("behaviour", "ok")),
                body.get("decline_code"),
            )
        except KeyError as err:
            return control_error(f"no such customer or payment method: {err}", 404)
        except ValueError as err:
            return control_error(str(err))
        return {"ok": True}

    @app.post("/_control/payment_methods", response_model=None)
    def new_pm(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.create_payment_method(body.get("customer"))
        except StripeError as err:
            return json_response(err.status, err.body())

    @app.post("/_control/disputes", response_model=None)
    def dispute(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.create_dispute(
                str(body.get("charge") or body.get("payment_intent")),
                amount=body.get("amount"),
                reason=str(body.get("reason") or "fraudulent"),
                inquiry=body.get("inquiry") is True,
            )
        except StripeError as err:
            return json_response(err.status, err.body())

    @app.post("/_control/disputes/{dispute_id}/escalate", response_model=None)
    def escalate(dispute_id: str) -> Obj | JSONResponse:
        try:
            return state.escalate_dispute(dispute_id)
        except StripeError as err:
            return json_response(err.status, err.body())

    @app.post("/_control/disputes/{dispute_id}/close", response_model=None)
    def close(dispute_id: str, body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.close_dispute(dispute_id, str(body.get("status")))
        except StripeError as err:
            return json_response(err.status, err.body())

    @app.post("/_control/checkout/{session_id}/async", response_model=None)
    def settle(session_id: str, body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.settle_delayed(session_id, str(body.get("outcome", "succeeded")))
        except StripeError as err:
            return json_response(err.status, err.body())

    @app.post("/_control/payment_intents/{pi_id}/settle", response_model=None)
    def settle_pi(pi_id: str, body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.settle_payment_intent(pi_id, str(body.get("outcome", "succeeded")))
        except StripeError as err:
            return json_response(err.status, err.body())

    @app.post("/_control/refunds/{refund_id}/settle", response_model=None)
    def settle_refund(refund_id: str, body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            return state.settle_refund(refund_id, str(body.get("outcome", "succeeded")))
        except StripeError as err:
            return json_response(err.status, err.body())

    @app.post("/_control/clock", response_model=None)
    def clock(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        advance = body.get("advance")
        if not isinstance(advance, int | float) or isinstance(advance, bool) or advance < 0:
            return control_error("`advance` must be a number of seconds ≥ 0")
        return {"offset": state.advance_clock(float(advance))}

    @app.post("/_control/faults", response_model=None)
    def add_fault(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        mode = body.get("mode", "fail")
        if mode not in ("fail", "timeout", "stored_error"):
            return control_error("mode must be `fail`, `timeout` or `stored_error`")
        fault = Fault(
            mode=mode,
            count=int(body.get("count", 1)),
            status=int(body.get("status", 500)),
            sleep=float(body.get("sleep", 30.0)),
            method=body.get("method"),
            path_prefix=body.get("path_prefix"),
            should_retry=body.get("should_retry"),
        )
        with state.lock:
            state.faults.append(fault)
        return vars(fault)

    @app.get("/_control/webhooks")
    def get_webhooks() -> Obj:
        return state.webhook_settings()

    @app.post("/_control/webhooks", response_model=None)
    def set_webhooks(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        if "urls" in body:
            urls = body["urls"]
            state.config.webhook_urls[:] = [urls] if isinstance(urls, str) else list(urls)
        if body.get("secret"):
            state.config.webhook_secret = str(body["secret"])
        if "retry_delays" in body:
            state.config.retry_delays = [float(x) for x in body["retry_delays"]]
        if "mode" in body or any(k in body for k in ("copies", "delay", "window")):
            try:
                state.dispatcher.set_mode(
                    str(body.get("mode", state.dispatcher.mode)),
                    copies=body.get("copies"),
                    delay=body.get("delay"),
                    window=body.get("window"),
                )
            except ValueError as err:
                return control_error(str(err))
        return state.webhook_settings()

    @app.post("/_control/webhooks/flush")
    def flush() -> Obj:
        state.dispatcher.flush()
        return {"ok": True}

    @app.post("/_control/webhooks/redeliver", response_model=None)
    def redeliver(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        with state.lock:
            if body.get("event_id"):
                wanted = [str(body["event_id"])]
            elif body.get("event_ids"):
                wanted = [str(x) for x in body["event_ids"]]
            else:
                wanted = [e["id"] for e in state.events]
            unknown = [x for x in wanted if x not in state.objects]
            if unknown:
                return control_error(f"no such event: {unknown[0]}", 404)
        state.dispatcher.redeliver(wanted)
        return {"redelivered": wanted}

    @app.post("/_control/webhooks/wait")
    async def wait(timeout: float = 10.0) -> Obj:
        idle = await asyncio.to_thread(state.dispatcher.wait_idle, timeout)
        return {"idle": idle}

    @app.get("/_control/events")
    def events(type: str | None = None) -> list[Obj]:
        return state.events_of(type)

    @app.post("/_control/events", response_model=None)
    def emit(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        if not body.get("type") or not isinstance(body.get("object"), dict):
            return control_error("`type` and `object` are required")
        return state.emit(str(body["type"]), body["object"])

    @app.get("/_control/deliveries")
    def deliveries(event_id: str | None = None) -> list[Obj]:
        return state.dispatcher.deliveries_of(event_id)

    @app.get("/_control/charges")
    def charges() -> list[Obj]:
        return state.charges()
