"""Refunds."""

from __future__ import annotations

from workers.local.standins.stripe.checkout import Checkout
from workers.local.standins.stripe.common import Obj, _Ctx, _int, _invalid, _metadata, _now, new_id


class Refunds(Checkout):
    """Refunds of a charge, whole or in part."""

    # -- refunds ----------------------------------------------------------

    def create_refund(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        if params.get("charge"):
            charge = self._get("charge", params["charge"], "charge")
        elif params.get("payment_intent"):
            pi = self._get("payment_intent", params["payment_intent"], "payment_intent")
            if pi["status"] != "succeeded" or not pi["latest_charge"]:
                raise _invalid(
                    f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                    "payment_intent",
                )
            charge = self.objects[pi["latest_charge"]]
        else:
            raise _invalid("One of `charge` or `payment_intent` is required.", "charge")
        if charge["status"] != "succeeded":
            raise _invalid(f"Charge {charge['id']} has not succeeded.", "charge")
        remaining = charge["amount"] - charge["amount_refunded"]
        amount = _int(params, "amount")
        amount = remaining if amount is None else amount
        if remaining <= 0:
            raise _invalid(
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount <= 0 or amount > remaining:
            raise _invalid(
                f"Refund amount ({amount / 100:.2f}) is greater than unrefunded amount on "
                f"charge ({remaining / 100:.2f})",
                "amount",
                "amount_too_large",
            )
        refund: Obj = {
            "id": new_id("re_"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": new_id("txn_"),
            "charge": charge["id"],
            "created": _now(),
            "currency": charge["currency"],
            "destination_details": {"card": {"type": "refund"}, "type": "card"},
            "metadata": _metadata(params),
            "payment_intent": charge["payment_intent"],
            "reason": params.get("reason") or None,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        self.objects[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.emit("refund.created", refund, ctx)
        self.emit("charge.refunded", charge, ctx)
        return refund

    def retrieve_refund(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("refund", ids[0])

    def list_refunds(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        charge, pi = params.get("charge"), params.get("payment_intent")
        return self._list(
            "refund",
            params,
            "/v1/refunds",
            lambda r: (
                (not charge or r["charge"] == charge) and (not pi or r["payment_intent"] == pi)
            ),
        )
