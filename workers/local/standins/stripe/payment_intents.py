"""PaymentIntents and charges: off-session payments with card behaviour, bank debits
that settle later, and what Stripe refuses at confirmation.

- A bank debit (us_bank_account, sepa_debit) confirmed answers `processing`
  with `payment_intent.processing`, and settles days later as
  `payment_intent.succeeded` or `payment_intent.payment_failed`
  (https://docs.stripe.com/payments/paymentintents/lifecycle,
  https://docs.stripe.com/payments/ach-direct-debit/accept-a-payment); here
  `settle_payment_intent` (control API) settles it.
- Confirming without `return_url` is refused when the intent may use
  redirect-based methods: with neither `payment_method_types` nor
  `automatic_payment_methods[allow_redirects]=never`
  (https://docs.stripe.com/api/payment_intents/create#create_payment_intent-automatic_payment_methods-allow_redirects,
  https://docs.stripe.com/payments/save-and-reuse#charge-saved-payment-method).
- A saved bank debit charged off-session needs the mandate it was saved with
  (https://docs.stripe.com/payments/ach-direct-debit/set-up-payment); a method
  outside `payment_method_types` is refused.
- PaymentIntents can be found by metadata with the Search API
  (https://docs.stripe.com/search#query-fields-for-payment-intents).
"""

from __future__ import annotations

import copy
import secrets

from workers.local.standins.stripe.common import (
    BANK_DEBITS,
    Obj,
    StripeError,
    _Ctx,
    _int,
    _invalid,
    _metadata,
    _now,
    _truthy,
    new_id,
)
from workers.local.standins.stripe.customers import Customers


class PaymentIntents(Customers):
    """Off-session PaymentIntents and the charges they make."""

    # -- payment intents and charges --------------------------------------

    def _new_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        customer: str | None,
        payment_method: str | None,
        metadata: dict[str, str],
        setup_future_usage: str | None = None,
        description: str | None = None,
    ) -> Obj:
        pi_id = new_id("pi_")
        pi: Obj = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic",
            "client_secret": f"{pi_id}_secret_{secrets.token_hex(12)}",
            "confirmation_method": "automatic",
            "created": _now(),
            "currency": currency,
            "customer": customer,
            "description": description,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "receipt_email": None,
            "setup_future_usage": setup_future_usage,
            "status": "requires_payment_method"
            if payment_method is None
            else "requires_confirmation",
        }
        self.objects[pi_id] = pi
        return pi

    def _new_charge(self, pi: Obj, pm: Obj, *, failed: bool = False, code: str = "") -> Obj:
        charge: Obj = {
            "id": new_id("ch_"),
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0 if failed else pi["amount"],
            "amount_refunded": 0,
            "balance_transaction": None if failed else new_id("txn_"),
            "billing_details": pm["billing_details"],
            "captured": not failed,
            "created": _now(),
            "currency": pi["currency"],
            "customer": pi["customer"],
            "description": pi["description"],
            "disputed": False,
            "failure_code": "card_declined" if failed else None,
            "failure_message": "Your card was declined." if failed else None,
            "livemode": False,
            "metadata": dict(pi["metadata"]),
            "outcome": {
                "network_status": "declined_by_network" if failed else "approved_by_network",
                "reason": code or None,
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline."
                if failed
                else "Payment complete.",
                "type": "issuer_declined" if failed else "authorized",
            },
            "paid": not failed,
            "payment_intent": pi["id"],
            "payment_method": pm["id"],
            "payment_method_details": self._method_details(pm),
            "receipt_url": None,
            "refunded": False,
            "status": "failed" if failed else "succeeded",
        }
        self.objects[charge["id"]] = charge
        return charge

    @staticmethod
    def _method_details(pm: Obj) -> Obj:
        if pm["type"] != "card":
            return {pm["type"]: copy.deepcopy(pm[pm["type"]]), "type": pm["type"]}
        card = pm["card"]
        keys = ("brand", "country", "exp_month", "exp_year", "fingerprint", "funding", "last4")
        return {"card": {k: card[k] for k in keys}, "type": "card"}

    def _succeed_payment(self, pi: Obj, pm: Obj) -> Obj:
        charge = self._new_charge(pi, pm)
        pi.update(
            status="succeeded",
            amount_received=pi["amount"],
            latest_charge=charge["id"],
            payment_method=pm["id"],
            last_payment_error=None,
        )
        return charge

    def _record_failure(self, pi: Obj, pm: Obj, behaviour: str, decline_code: str) -> StripeError:
        charge = self._new_charge(pi, pm, failed=True, code=decline_code)
        if behaviour == "authentication_required":
            code = "authentication_required"
            message = "Your card was declined. This transaction requires authentication."
        else:
            code = "card_declined"
            message = "Your card was declined."
        charge["failure_code"] = code
        last_error = {
            "charge": charge["id"],
            "code": code,
            "decline_code": decline_code,
            "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
            "message": message,
            "payment_method": copy.deepcopy(pm),
            "type": "card_error",
        }
        pi.update(
            status="requires_payment_method",
            last_payment_error=last_error,
            latest_charge=charge["id"],
            payment_method=None,
        )
        return StripeError(
            402,
            "card_error",
            message,
            code=code,
            extra={
                "charge": charge["id"],
                "decline_code": decline_code,
                "payment_intent": copy.deepcopy(pi),
                "payment_method": copy.deepcopy(pm),
            },
        )

    def _fail_payment(
        self, pi: Obj, pm: Obj, behaviour: str, decline_code: str, ctx: _Ctx
    ) -> StripeError:
        error = self._record_failure(pi, pm, behaviour, decline_code)
        self.emit("charge.failed", self.objects[pi["latest_charge"]], ctx)
        self.emit("payment_intent.payment_failed", pi, ctx)
        return error

    def create_payment_intent(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        amount = _int(params, "amount", required=True)
        assert amount is not None
        currency = params.get("currency")
        if not currency:
            raise _invalid("Missing required param: currency.", "currency", "parameter_missing")
        if amount < 50:
            raise _invalid("Amount must be at least $0.50 usd", "amount", "amount_too_small")
        customer_id = params.get("customer") or None
        if customer_id:
            self._get("customer", customer_id, "customer")
        pm_id = params.get("payment_method") or None
        pm = self._get("payment_method", pm_id, "payment_method") if pm_id else None
        if pm is not None and pm["customer"] and pm["customer"] != customer_id:
            raise _invalid(
                f"The provided PaymentMethod {pm_id} belongs to another customer.",
                "payment_method",
            )
        if pm is not None and customer_id and pm["customer"] is None:
            raise _invalid(
                f"The provided PaymentMethod {pm_id} was not attached to customer {customer_id}.",
                "payment_method",
            )
        confirm = _truthy(params.get("confirm", "false"))
        off_session = params.get("off_session")
        if off_session is not None and not confirm:
            raise _invalid("You can only set `off_session` when `confirm` is true.", "off_session")
        types = params.get("payment_method_types")
        automatic = params.get("automatic_payment_methods")
        if types is not None and automatic is not None:
            raise _invalid(
                "You may only specify one of these parameters: automatic_payment_methods, "
                "payment_method_types.",
                "automatic_payment_methods",
            )
        redirects = automatic.get("allow_redirects") if isinstance(automatic, dict) else None
        if confirm and types is None and redirects != "never" and not params.get("return_url"):
            raise _invalid(
                "This PaymentIntent is configured to accept payment methods enabled in your "
                "Dashboard. Because some of these payment methods might redirect your customer "
                "off of your page, you must provide a `return_url`. If you don't want to accept "
                "redirect-based payment methods, set `automatic_payment_methods[enabled]` to "
                "`true` and `automatic_payment_methods[allow_redirects]` to `never` when "
                "creating Setup Intents and Payment Intents.",
                "return_url",
            )
        if isinstance(types, list) and pm is not None and pm["type"] not in types:
            raise _invalid(
                f"The PaymentMethod provided ({pm['type']}) is not allowed for this "
                f"PaymentIntent. Please attach a PaymentMethod of one of the following types: "
                f"{', '.join(str(t) for t in types)}.",
                "payment_method",
                "payment_intent_incompatible_payment_method",
            )
        if (
            confirm
            and pm is not None
            and pm["type"] in BANK_DEBITS
            and _truthy(off_session or "false")
            and not params.get("mandate")
            and self._mandate_of(pm["id"]) is None
        ):
            raise _invalid(
                f"A mandate is required to confirm this off-session {pm['type']} payment: "
                "save the method with a mandate or pass `mandate`.",
                "mandate",
                "payment_intent_mandate_invalid",
            )
        pi = self._new_payment_intent(
            amount=amount,
            currency=str(currency).lower(),
            customer=customer_id,
            payment_method=pm_id,
            metadata=_metadata(params),
            setup_future_usage=params.get("setup_future_usage") or None,
            description=params.get("description"),
        )
        if pm is not None:
            pi["payment_method_types"] = [pm["type"]]
        if isinstance(automatic, dict):
            pi["automatic_payment_methods"] = {
                "allow_redirects": redirects or "always",
                "enabled": _truthy(automatic.get("enabled", "false")),
            }
        self.emit("payment_intent.created", pi, ctx)
        if not confirm:
            return pi
        if pm is None:
            raise _invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                "payment_method",
                "payment_intent_unexpected_state",
            )
        behaviour, decline_code = self._behaviour(pm["id"], customer_id)
        if behaviour == "authentication_required" and not _truthy(off_session or "false"):
            pi.update(
                status="requires_action",
                next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}},
            )
            return pi
        if pm["type"] in BANK_DEBITS:
            pi["status"] = "processing"
            self.emit("payment_intent.processing", pi, ctx)
            return pi
        if behaviour != "ok":
            raise self._fail_payment(pi, pm, behaviour, decline_code, ctx)
        charge = self._succeed_payment(pi, pm)
        self.emit("payment_intent.succeeded", pi, ctx)
        self.emit("charge.succeeded", charge, ctx)
        return pi

    def settle_payment_intent(self, pi_id: str, outcome: str) -> Obj:
        """Settle a `processing` PaymentIntent as the bank did: `succeeded` or `failed`."""
        with self.lock:
            pi = self._get("payment_intent", pi_id)
            if pi["status"] != "processing":
                raise _invalid(f"PaymentIntent {pi_id} is not processing.")
            pm = self.objects[pi["payment_method"]]
            ctx = self._ctx()
            if outcome == "succeeded":
                charge = self._succeed_payment(pi, pm)
                self.emit("payment_intent.succeeded", pi, ctx)
                self.emit("charge.succeeded", charge, ctx)
            elif outcome == "failed":
                self._record_failure(pi, pm, "decline", "insufficient_funds")
                self.emit("payment_intent.payment_failed", pi, ctx)
            else:
                raise _invalid("outcome must be `succeeded` or `failed`", "outcome")
            return copy.deepcopy(pi)

    def search_payment_intents(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        """`metadata['key']:'value'`, `status:'...'`, `customer:'...'` clauses joined by AND."""
        page = self._list(
            "payment_intent", params, "/v1/payment_intents/search", self._search_predicate(params)
        )
        page.update(object="search_result", next_page=None)
        return page

    def retrieve_payment_intent(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("payment_intent", ids[0])

    def list_payment_intents(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer = params.get("customer")
        return self._list(
            "payment_intent",
            params,
            "/v1/payment_intents",
            lambda pi: not customer or pi["customer"] == customer,
        )

    def retrieve_charge(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("charge", ids[0])

    def list_charges(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer, pi = params.get("customer"), params.get("payment_intent")
        return self._list(
            "charge",
            params,
            "/v1/charges",
            lambda c: (
                (not customer or c["customer"] == customer)
                and (not pi or c["payment_intent"] == pi)
            ),
        )
