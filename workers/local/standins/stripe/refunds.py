"""Refunds: pending, succeeded or failed, and what Stripe refuses to refund.

- A card refund succeeds at once; a bank-debit refund is `pending` until the
  bank answers; a pending refund can then succeed or fail. A failed refund
  (`refund.failed`, `charge.refund.updated`) returns the money to the
  merchant's balance (`failure_balance_transaction`) and no longer counts in
  the charge's `amount_refunded`
  (https://docs.stripe.com/refunds#failed-refunds,
  https://docs.stripe.com/api/refunds/object#refund_object-status).
  `settle_refund` (control API) ends a pending refund either way.
- A charge under a chargeback cannot be refunded: `charge_disputed`
  (https://docs.stripe.com/error-codes#charge-disputed); an inquiry can
  (`is_charge_refundable`, https://docs.stripe.com/api/disputes/object).
"""

from __future__ import annotations

import copy

from workers.local.standins.stripe.checkout import Checkout
from workers.local.standins.stripe.common import (
    BANK_DEBITS,
    Obj,
    _Ctx,
    _int,
    _invalid,
    _metadata,
    _now,
    new_id,
)


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
        chargeback = any(
            o.get("object") == "dispute"
            and o["charge"] == charge["id"]
            and not o["is_charge_refundable"]
            for o in self.objects.values()
        )
        if chargeback:
            raise _invalid(
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                "charge",
                "charge_disputed",
            )
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
            "status": "pending"
            if charge["payment_method_details"]["type"] in BANK_DEBITS
            else "succeeded",
            "failure_balance_transaction": None,
            "failure_reason": None,
            "transfer_reversal": None,
        }
        self.objects[refund["id"]] = refund
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.emit("refund.created", refund, ctx)
        self.emit("charge.refunded", charge, ctx)
        return refund

    def settle_refund(self, refund_id: str, outcome: str) -> Obj:
        """End a pending refund: `succeeded`, or `failed` (the money returns to the
        merchant and the charge's `amount_refunded` drops by it)."""
        with self.lock:
            refund = self._get("refund", refund_id)
            if refund["status"] not in ("pending", "requires_action"):
                raise _invalid(f"Refund {refund_id} is {refund['status']}, not pending.")
            charge = self.objects[refund["charge"]]
            if outcome == "succeeded":
                refund["status"] = "succeeded"
            elif outcome == "failed":
                refund.update(
                    status="failed",
                    failure_reason="declined",
                    failure_balance_transaction=new_id("txn_"),
                )
                charge["amount_refunded"] -= refund["amount"]
                charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            else:
                raise _invalid("outcome must be `succeeded` or `failed`", "outcome")
            self.emit("refund.updated", refund)
            if outcome == "failed":
                self.emit("refund.failed", refund)
            self.emit("charge.refund.updated", refund)
            return copy.deepcopy(refund)

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
