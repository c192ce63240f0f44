"""Checkout Sessions: the hosted page, its payment, and delayed settlement."""

from __future__ import annotations

import copy
from typing import Any

from workers.local.standins.stripe.common import (
    BANK_DEBITS,
    CARD_BEHAVIOURS,
    Obj,
    _Ctx,
    _int,
    _invalid,
    _metadata,
    _missing,
    _now,
    new_id,
)
from workers.local.standins.stripe.payment_intents import PaymentIntents


class Checkout(PaymentIntents):
    """Checkout Sessions: created, paid on the pay page, settled later when delayed."""

    # -- checkout sessions ------------------------------------------------

    def create_checkout_session(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        mode = params.get("mode")
        if mode != "payment":
            raise _invalid("This stand-in supports `mode=payment` only.", "mode")
        customer_id = params.get("customer") or None
        if customer_id:
            self._get("customer", customer_id, "customer")
        raw_items = params.get("line_items")
        if not isinstance(raw_items, list) or not raw_items:
            raise _invalid(
                "You must specify `line_items` in `payment` mode.",
                "line_items",
                "parameter_missing",
            )
        session_id = new_id("cs_test_")
        items: list[Obj] = []
        currency: str | None = None
        for i, raw in enumerate(raw_items):
            items.append(self._line_item(raw, i))
            if currency and items[-1]["currency"] != currency:
                raise _invalid("All line items must use the same currency.", "line_items")
            currency = items[-1]["currency"]
        total = sum(int(item["amount_total"]) for item in items)
        pi_data = params.get("payment_intent_data") or {}
        if not isinstance(pi_data, dict):
            raise _invalid("Invalid object", "payment_intent_data")
        sfu = pi_data.get("setup_future_usage") or None
        if sfu not in (None, "off_session", "on_session"):
            raise _invalid(
                f"Invalid setup_future_usage: {sfu}", "payment_intent_data[setup_future_usage]"
            )
        session: Obj = {
            "id": session_id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": total,
            "amount_total": total,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": _now(),
            "currency": currency,
            "customer": customer_id,
            "customer_creation": params.get("customer_creation")
            or (None if customer_id else "if_required"),
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": _now() + 24 * 3600,
            "invoice": None,
            "livemode": False,
            "locale": None,
            "metadata": _metadata(params),
            "mode": "payment",
            "payment_intent": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "submit_type": None,
            "success_url": params.get("success_url"),
            "ui_mode": "hosted",
            "url": f"{ctx.base_url}/checkout/{session_id}",
        }
        self.objects[session_id] = session
        self.line_items[session_id] = items
        # Kept aside (not part of Stripe's session shape): what the payment intent gets.
        self.objects["_pid_" + session_id] = {
            "object": "_payment_intent_data",
            "metadata": _metadata(pi_data),
            "setup_future_usage": sfu,
            "description": pi_data.get("description"),
        }
        return session

    def _line_item(self, raw: Any, index: int) -> Obj:
        if not isinstance(raw, dict):
            raise _invalid("Invalid line item", f"line_items[{index}]")
        quantity = _int(raw, "quantity") or 1
        if raw.get("price"):
            price: Obj = copy.deepcopy(
                self._get("price", raw["price"], f"line_items[{index}][price]")
            )
        elif isinstance(raw.get("price_data"), dict):
            data = raw["price_data"]
            unit = _int(data, "unit_amount", required=True)
            product_data = data.get("product_data") or {}
            if not data.get("currency"):
                raise _invalid(
                    "Missing required param: line_items[0][price_data][currency].",
                    f"line_items[{index}][price_data][currency]",
                    "parameter_missing",
                )
            product_id = data.get("product") or new_id("prod_")
            if not data.get("product"):
                self.objects[product_id] = {
                    "id": product_id,
                    "object": "product",
                    "active": False,
                    "created": _now(),
                    "livemode": False,
                    "metadata": _metadata(product_data) if isinstance(product_data, dict) else {},
                    "name": (product_data or {}).get("name", "Item"),
                }
            price = {
                "id": new_id("price_"),
                "object": "price",
                "active": False,
                "created": _now(),
                "currency": str(data["currency"]).lower(),
                "livemode": False,
                "metadata": {},
                "product": product_id,
                "type": "one_time",
                "unit_amount": unit,
                "unit_amount_decimal": str(unit),
            }
        else:
            raise _invalid(
                "You must specify either `price` or `price_data` in each line item.",
                f"line_items[{index}]",
            )
        amount = int(price["unit_amount"]) * quantity
        product = self.objects.get(price["product"], {})
        return {
            "id": new_id("li_"),
            "object": "item",
            "amount_discount": 0,
            "amount_subtotal": amount,
            "amount_tax": 0,
            "amount_total": amount,
            "currency": price["currency"],
            "description": product.get("name"),
            "price": price,
            "quantity": quantity,
        }

    def retrieve_checkout_session(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("checkout.session", ids[0])

    def list_checkout_sessions(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        pi, cus = params.get("payment_intent"), params.get("customer")
        return self._list(
            "checkout.session",
            params,
            "/v1/checkout/sessions",
            lambda s: (not pi or s["payment_intent"] == pi) and (not cus or s["customer"] == cus),
        )

    def list_line_items(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        self._get("checkout.session", ids[0])
        return self._page(
            self.line_items.get(ids[0], []), params, f"/v1/checkout/sessions/{ids[0]}/line_items"
        )

    def expire_checkout_session(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        session = self._get("checkout.session", ids[0])
        if session["status"] != "open":
            raise _invalid(
                f"Only Checkout Sessions with a status of `open` can be expired; "
                f"this one is `{session['status']}`."
            )
        session["status"] = "expired"
        self.emit("checkout.session.expired", session, ctx)
        return session

    def pay_checkout(
        self, session_id: str, *, card: str = "ok", method: str = "card", email: str | None = None
    ) -> tuple[int, Obj]:
        """Pay an open session as a customer on the hosted page would.

        `card`: ok | declined | authentication_required; `method`: card | delayed |
        us_bank_account | sepa_debit (completes unpaid; settle later with
        `settle_delayed`). A bank debit paid with `setup_future_usage` is saved with a
        mandate for off-session charges
        (https://docs.stripe.com/payments/ach-direct-debit/set-up-payment). Returns the HTTP
        status and `{"session", "payment_intent"}` or an error envelope.
        """
        with self.lock:
            session = self.objects.get(session_id)
            if session is None or session.get("object") != "checkout.session":
                return 404, _missing("checkout.session", session_id).body()
            if session["status"] != "open":
                err = _invalid(f"This Checkout Session is {session['status']}.")
                return 400, err.body()
            pid = self.objects["_pid_" + session_id]
            customer_id = session["customer"]
            if customer_id is None and (
                pid["setup_future_usage"] or session["customer_creation"] == "always"
            ):
                customer_id = self.create_customer(
                    {"email": email or session["customer_email"]}, (), self._ctx()
                )["id"]
                session["customer"] = customer_id
            customer = self.objects.get(customer_id) if customer_id else None
            bank_debit = method in BANK_DEBITS
            pm = self._new_payment_method(
                customer_id if pid["setup_future_usage"] else None,
                email or (customer or {}).get("email") or session["customer_email"],
                method if bank_debit else "card",
                mandate=bank_debit and pid["setup_future_usage"] is not None,
            )
            behaviour, decline_code = self._behaviour(pm["id"], customer_id)
            if card in ("declined", "decline"):
                behaviour, decline_code = "decline", "generic_decline"
            elif card in CARD_BEHAVIOURS and card != "ok":
                behaviour = card  # type: ignore[assignment]
                decline_code = card
            session["customer_details"] = {
                "address": None,
                "email": pm["billing_details"]["email"],
                "name": None,
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            }
            pi = self._new_payment_intent(
                amount=session["amount_total"],
                currency=session["currency"],
                customer=customer_id,
                payment_method=pm["id"],
                metadata=dict(pid["metadata"]),
                setup_future_usage=pid["setup_future_usage"],
                description=pid["description"],
            )
            ctx = self._ctx()
            if method == "delayed" or bank_debit:
                pi["status"] = "processing"
                session.update(status="complete", payment_status="unpaid", payment_intent=pi["id"])
                self.emit("checkout.session.completed", session, ctx)
                self.emit("payment_intent.processing", pi, ctx)
                return 200, {"session": copy.deepcopy(session), "payment_intent": copy.deepcopy(pi)}
            if behaviour != "ok":
                error = self._fail_payment(pi, pm, behaviour, decline_code, ctx)
                session["payment_intent"] = pi["id"]
                return 402, error.body()
            charge = self._succeed_payment(pi, pm)
            session.update(status="complete", payment_status="paid", payment_intent=pi["id"])
            self.emit("checkout.session.completed", session, ctx)
            self.emit("payment_intent.succeeded", pi, ctx)
            self.emit("charge.succeeded", charge, ctx)
            return 200, {"session": copy.deepcopy(session), "payment_intent": copy.deepcopy(pi)}

    def settle_delayed(self, session_id: str, outcome: str) -> Obj:
        """Finish a `method=delayed` payment: `succeeded` or `failed`."""
        with self.lock:
            session = self._get("checkout.session", session_id)
            pi = self.objects.get(session["payment_intent"] or "")
            if pi is None or pi["status"] != "processing":
                raise _invalid("This Checkout Session has no payment in processing.")
            pm = self.objects[pi["payment_method"]]
            ctx = self._ctx()
            if outcome == "succeeded":
                charge = self._succeed_payment(pi, pm)
                session["payment_status"] = "paid"
                self.emit("checkout.session.async_payment_succeeded", session, ctx)
                self.emit("payment_intent.succeeded", pi, ctx)
                self.emit("charge.succeeded", charge, ctx)
            elif outcome == "failed":
                self._record_failure(pi, pm, "decline", "generic_decline")
                self.emit("checkout.session.async_payment_failed", session, ctx)
                self.emit("payment_intent.payment_failed", pi, ctx)
            else:
                raise _invalid("outcome must be `succeeded` or `failed`", "outcome")
            return session
