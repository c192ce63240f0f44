"""Customers, prices, products and payment methods."""

from __future__ import annotations

import copy
import re
import secrets
import time
from collections.abc import Callable

from workers.local.standins.stripe.common import (
    BANK_DEBITS,
    CARD_BEHAVIOURS,
    CardBehaviour,
    Obj,
    _Ctx,
    _invalid,
    _metadata,
    _now,
    new_id,
)
from workers.local.standins.stripe.store import StripeStore


class Customers(StripeStore):
    """Customers, prices and products, and the cards customers keep."""

    # -- customers --------------------------------------------------------

    def create_customer(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer: Obj = {
            "id": new_id("cus_"),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": _now(),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "email": params.get("email"),
            "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": _metadata(params),
            "name": params.get("name"),
            "phone": params.get("phone"),
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self.objects[customer["id"]] = customer
        self.emit("customer.created", customer, ctx)
        return customer

    def retrieve_customer(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("customer", ids[0])

    def update_customer(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer = self._get("customer", ids[0])
        for name in ("email", "name", "description", "phone"):
            if name in params:
                customer[name] = params[name] or None
        if "metadata" in params:
            customer["metadata"].update(_metadata(params))
            customer["metadata"] = {k: v for k, v in customer["metadata"].items() if v != ""}
        settings = params.get("invoice_settings")
        if isinstance(settings, dict) and "default_payment_method" in settings:
            pm_id = settings["default_payment_method"] or None
            if pm_id:
                self._get("payment_method", pm_id, "invoice_settings[default_payment_method]")
            customer["invoice_settings"]["default_payment_method"] = pm_id
        self.emit("customer.updated", customer, ctx)
        return customer

    def list_customers(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        email = params.get("email")
        return self._list(
            "customer", params, "/v1/customers", lambda c: not email or c.get("email") == email
        )

    @staticmethod
    def _search_predicate(params: Obj) -> Callable[[Obj], bool]:
        """A Search API query of `field:'value'` and `metadata['key']:'value'` clauses joined
        by AND (https://docs.stripe.com/search#search-query-language)."""
        query = str(params.get("query") or "")
        clauses = re.findall(
            r"(metadata\[['\"]([^'\"]+)['\"]\]|\w+)\s*:\s*['\"]([^'\"]*)['\"]", query
        )
        if not clauses:
            raise _invalid("Invalid search query.", "query")

        def matches(c: Obj) -> bool:
            for field_name, meta_key, value in clauses:
                actual = c["metadata"].get(meta_key) if meta_key else c.get(field_name)
                if actual != value:
                    return False
            return True

        return matches

    def search_customers(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        page = self._list(
            "customer", params, "/v1/customers/search", self._search_predicate(params)
        )
        page.update(object="search_result", next_page=None)
        return page

    def list_customer_pms(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        self._get("customer", ids[0])
        return self._list(
            "payment_method",
            params,
            f"/v1/customers/{ids[0]}/payment_methods",
            lambda pm: pm["customer"] == ids[0],
        )

    # -- prices -----------------------------------------------------------

    def retrieve_price(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("price", ids[0])

    def list_prices(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._list("price", params, "/v1/prices")

    def retrieve_product(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("product", ids[0])

    # -- payment methods --------------------------------------------------

    def _new_payment_method(
        self,
        customer_id: str | None,
        email: str | None = None,
        pm_type: str = "card",
        *,
        mandate: bool = False,
    ) -> Obj:
        """A payment method of `pm_type`: `card`, or a bank debit (`us_bank_account`,
        `sepa_debit`) saved with a mandate when `mandate` (Checkout with
        `setup_future_usage` collects one: https://docs.stripe.com/payments/ach-direct-debit/set-up-payment,
        https://docs.stripe.com/payments/sepa-debit/set-up-payment)."""
        if pm_type in BANK_DEBITS:
            return self._new_bank_debit(customer_id, email, pm_type, mandate=mandate)
        pm: Obj = {
            "id": new_id("pm_"),
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {"address": None, "email": email, "name": None, "phone": None},
            "card": {
                "brand": "visa",
                "checks": {"address_line1_check": None, "cvc_check": "pass"},
                "country": "US",
                "display_brand": "visa",
                "exp_month": 12,
                "exp_year": time.gmtime().tm_year + 3,
                "fingerprint": secrets.token_hex(8),
                "funding": "credit",
                "last4": "4242",
                "networks": {"available": ["visa"], "preferred": None},
                "wallet": None,
            },
            "created": _now(),
            "customer": customer_id,
            "livemode": False,
            "metadata": {},
            "type": "card",
        }
        self.objects[pm["id"]] = pm
        return pm

    def _new_bank_debit(
        self, customer_id: str | None, email: str | None, pm_type: str, *, mandate: bool
    ) -> Obj:
        details: Obj = (
            {
                "account_holder_type": "individual",
                "account_type": "checking",
                "bank_name": "STRIPE TEST BANK",
                "fingerprint": secrets.token_hex(8),
                "last4": "6789",
                "routing_number": "110000000",
            }
            if pm_type == "us_bank_account"
            else {
                "bank_code": "37040044",
                "country": "DE",
                "fingerprint": secrets.token_hex(8),
                "last4": "3000",
            }
        )
        pm: Obj = {
            "id": new_id("pm_"),
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": None,
                "email": email,
                "name": "Jenny Rosen",
                "phone": None,
            },
            "created": _now(),
            "customer": customer_id,
            "livemode": False,
            "metadata": {},
            "type": pm_type,
            pm_type: details,
        }
        self.objects[pm["id"]] = pm
        if mandate:
            mandate_obj: Obj = {
                "id": new_id("mandate_"),
                "object": "mandate",
                "customer_acceptance": {"accepted_at": _now(), "type": "online"},
                "livemode": False,
                "payment_method": pm["id"],
                "status": "active",
                "type": "multi_use",
            }
            self.objects[mandate_obj["id"]] = mandate_obj
        return pm

    def _mandate_of(self, pm_id: str) -> Obj | None:
        """The active mandate a bank-debit payment method was saved with, if any."""
        for obj in self.objects.values():
            if (
                obj.get("object") == "mandate"
                and obj["payment_method"] == pm_id
                and obj["status"] == "active"
            ):
                return obj
        return None

    def create_payment_method(self, customer_id: str | None = None) -> Obj:
        """A card payment method (attached when `customer_id` is given)."""
        with self.lock:
            if customer_id:
                self._get("customer", customer_id, "customer")
            return copy.deepcopy(self._new_payment_method(customer_id))

    def retrieve_payment_method(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("payment_method", ids[0])

    def list_payment_methods(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        customer = params.get("customer")
        pm_type = params.get("type")
        return self._list(
            "payment_method",
            params,
            "/v1/payment_methods",
            lambda pm: (
                (not customer or pm["customer"] == customer)
                and (not pm_type or pm["type"] == pm_type)
            ),
        )

    def attach_payment_method(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        pm = self._get("payment_method", ids[0])
        customer_id = params.get("customer")
        if not customer_id:
            raise _invalid("Missing required param: customer.", "customer", "parameter_missing")
        self._get("customer", customer_id, "customer")
        if pm["customer"] and pm["customer"] != customer_id:
            raise _invalid(
                "The payment method you provided has already been attached to a customer."
            )
        pm["customer"] = customer_id
        self.emit("payment_method.attached", pm, ctx)
        return pm

    def detach_payment_method(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        pm = self._get("payment_method", ids[0])
        if not pm["customer"]:
            raise _invalid("The payment method you provided is not attached to a customer.")
        pm["customer"] = None
        self.emit("payment_method.detached", pm, ctx)
        return pm

    def set_card_behaviour(
        self, target: str, behaviour: str, decline_code: str | None = None
    ) -> None:
        """Make charges on a payment method (`pm_...`) or a customer's cards (`cus_...`)
        succeed (`ok`), decline (`decline`, with `decline_code`, default
        `generic_decline`) or need authentication (`authentication_required`)."""
        if behaviour not in CARD_BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {CARD_BEHAVIOURS}")
        with self.lock:
            if target not in self.objects:
                raise KeyError(target)
            code = decline_code or (
                "generic_decline" if behaviour == "decline" else "authentication_required"
            )
            self.card_behaviour[target] = (behaviour, code)  # type: ignore[assignment]

    def _behaviour(self, pm_id: str | None, customer_id: str | None) -> tuple[CardBehaviour, str]:
        for key in (pm_id, customer_id):
            if key and key in self.card_behaviour:
                return self.card_behaviour[key]
        return ("ok", "")
