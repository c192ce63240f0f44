"""Disputes: an inquiry moves no funds; a chargeback withdraws them, a win reinstates them."""

from __future__ import annotations

import copy

from workers.local.standins.stripe.common import Obj, _Ctx, _invalid, _missing, _now, new_id
from workers.local.standins.stripe.refunds import Refunds


class Disputes(Refunds):
    """Disputes: inquiries and chargebacks, escalated and closed from the control API."""

    # -- disputes ---------------------------------------------------------

    def create_dispute(
        self,
        charge_or_pi: str,
        *,
        amount: int | None = None,
        reason: str = "fraudulent",
        inquiry: bool = False,
    ) -> Obj:
        """Open a dispute on a charge (or a payment intent's charge), as a card network does.

        Stripe (https://docs.stripe.com/disputes/how-disputes-work): an inquiry
        (a retrieval request, "warning") opens as `warning_needs_response` and
        withdraws nothing; a chargeback opens as `needs_response` and Stripe
        withdraws the disputed amount at once, so `charge.dispute.created` is
        followed by `charge.dispute.funds_withdrawn`, the withdrawal listed in the
        dispute's `balance_transactions`.
        """
        with self.lock:
            obj = self.objects.get(charge_or_pi)
            if obj is not None and obj.get("object") == "payment_intent":
                obj = self.objects.get(obj["latest_charge"] or "")
            if obj is None or obj.get("object") != "charge" or obj["status"] != "succeeded":
                raise _missing("charge", charge_or_pi, "charge")
            if obj["refunded"]:
                # "Disputes and chargebacks aren't possible on credit card charges that are
                # fully refunded" (https://docs.stripe.com/refunds).
                raise _invalid(f"Charge {obj['id']} is fully refunded and cannot be disputed.")
            dispute: Obj = {
                "id": new_id("dp_"),
                "object": "dispute",
                "amount": obj["amount"] - obj["amount_refunded"] if amount is None else amount,
                "balance_transactions": [],
                "charge": obj["id"],
                "created": _now(),
                "currency": obj["currency"],
                "evidence": {},
                "is_charge_refundable": inquiry,
                "livemode": False,
                "metadata": {},
                "payment_intent": obj["payment_intent"],
                "reason": reason,
                "status": "warning_needs_response" if inquiry else "needs_response",
            }
            self.objects[dispute["id"]] = dispute
            obj["disputed"] = True
            self.emit("charge.dispute.created", dispute)
            if not inquiry:
                self._move_dispute_funds(dispute, withdraw=True)
            return copy.deepcopy(dispute)

    def _move_dispute_funds(self, dispute: Obj, *, withdraw: bool) -> None:
        """Withdraw or reinstate a chargeback's amount and announce it (lock held)."""
        sign = -1 if withdraw else 1
        dispute["balance_transactions"].append(
            {
                "id": new_id("txn_"),
                "object": "balance_transaction",
                "amount": sign * dispute["amount"],
                "currency": dispute["currency"],
                "created": _now(),
                "description": (
                    f"Chargeback {'withdrawal' if withdraw else 'reversal'} for {dispute['charge']}"
                ),
                "reporting_category": "dispute" if withdraw else "dispute_reversal",
                "source": dispute["id"],
                "type": "adjustment",
            }
        )
        self.emit(
            "charge.dispute.funds_withdrawn" if withdraw else "charge.dispute.funds_reinstated",
            dispute,
        )

    def escalate_dispute(self, dispute_id: str) -> Obj:
        """An inquiry the issuer turns into a chargeback: funds are withdrawn now."""
        with self.lock:
            dispute = self._get("dispute", dispute_id)
            if not str(dispute["status"]).startswith("warning_") or (
                dispute["status"] == "warning_closed"
            ):
                raise _invalid(f"Dispute {dispute_id} is not an open inquiry.")
            dispute["status"] = "needs_response"
            dispute["is_charge_refundable"] = False
            self.emit("charge.dispute.updated", dispute)
            self._move_dispute_funds(dispute, withdraw=True)
            return copy.deepcopy(dispute)

    def close_dispute(self, dispute_id: str, status: str) -> Obj:
        """Close a chargeback as `won` (funds reinstated first) or `lost`; an inquiry as
        `warning_closed` (nothing was withdrawn, nothing comes back)."""
        with self.lock:
            dispute = self._get("dispute", dispute_id)
            inquiry = str(dispute["status"]).startswith("warning_")
            allowed = ("warning_closed",) if inquiry else ("won", "lost")
            if dispute["status"] in ("won", "lost", "warning_closed"):
                raise _invalid(f"Dispute {dispute_id} is already closed.")
            if status not in allowed:
                raise _invalid(f"status must be {' or '.join(f'`{a}`' for a in allowed)}", "status")
            dispute["status"] = status
            if status == "won":
                self._move_dispute_funds(dispute, withdraw=False)
            self.emit("charge.dispute.closed", dispute)
            return copy.deepcopy(dispute)

    def retrieve_dispute(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("dispute", ids[0])
