"""The Stripe stand-in's vocabulary: errors, form parsing, configuration, faults."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi.responses import JSONResponse

Obj = dict[str, Any]

# The version stripe-python 16.1.0 pins, and the one events are rendered in by default.
API_VERSION = "2026-10-28.endive"
DEFAULT_PRICES: dict[str, int] = {"price_5USD": 500, "price_10USD": 1000}
# Payment method types that settle days later: a PaymentIntent confirmed with one answers
# `processing` (https://docs.stripe.com/payments/paymentintents/lifecycle).
BANK_DEBITS: tuple[str, ...] = ("us_bank_account", "sepa_debit")
CardBehaviour = Literal["ok", "decline", "authentication_required"]
CARD_BEHAVIOURS: tuple[str, ...] = ("ok", "decline", "authentication_required")
DeliveryMode = Literal["normal", "drop", "duplicate", "delay", "reorder"]
DELIVERY_MODES: tuple[str, ...] = ("normal", "drop", "duplicate", "delay", "reorder")


# --------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------


class StripeError(Exception):
    """An API error answered with Stripe's `{"error": {...}}` envelope."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: Obj | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}

    def body(self) -> Obj:
        error: Obj = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def _missing(kind: str, ident: str, param: str | None = None) -> StripeError:
    return StripeError(
        404 if param is None else 400,
        "invalid_request_error",
        f"No such {kind}: '{ident}'",
        code="resource_missing",
        param=param or "id",
    )


def _invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    return StripeError(400, "invalid_request_error", message, code=code, param=param)


def new_id(prefix: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(24))


def parse_form(pairs: Iterable[tuple[str, str]]) -> Obj:
    """Decode Stripe's bracketed form encoding into nested dicts and lists.

    `a[b][0][c]=1` becomes `{"a": {"b": [{"c": "1"}]}}`; `a[]=x` appends.
    """
    root: Obj = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", key.replace("][", "]["))
        if not parts:
            continue
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "[]":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    result: Obj = _listify(root)
    return result


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("true", "1", "yes", "on")


def _int(params: Obj, name: str, *, required: bool = False) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise _invalid(f"Missing required param: {name}.", name, "parameter_missing")
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise _invalid(f"Invalid integer: {raw}", name, "parameter_invalid_integer") from None


def _metadata(params: Obj, name: str = "metadata") -> dict[str, str]:
    raw = params.get(name) or {}
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise _invalid("Invalid object", name)
    return {str(k): str(v) for k, v in raw.items()}


def _now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass
class StripeStandinConfig:
    """How the stand-in behaves; every field can also be changed at run time."""

    webhook_urls: list[str] = field(default_factory=list)
    webhook_secret: str = "whsec_standin"  # noqa: S105 - a local test secret
    # None: any `sk_test_`/`rk_test_` key is accepted.
    api_key: str | None = None
    prices: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    currency: str = "usd"
    # Seconds to wait before each retry of a failed delivery (Stripe retries for days).
    retry_delays: Sequence[float] = (1.0, 5.0, 30.0, 120.0, 600.0)
    delivery_timeout: float = 10.0
    # Base URL used in checkout `url`s; None: the URL the request came in on.
    public_url: str | None = None
    api_version: str = API_VERSION
    # Where objects, events and idempotency keys are kept between runs (None: memory only).
    state_file: str | None = None


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------


@dataclass
class Fault:
    """Applies to the next `count` API requests matching `method`/`path_prefix`.

    `fail`: answer `status` without doing anything (nothing is stored under the
    idempotency key). `timeout`: do the request, store its result under the
    idempotency key, then hold the response for `sleep` seconds. `stored_error`:
    do the request, then answer `status` (a 500) and store that answer under the
    idempotency key, so every retry with the key replays the 500: Stripe saves
    the result once an endpoint began executing, "including 500 errors"
    (https://docs.stripe.com/api/idempotent_requests).
    """

    mode: Literal["fail", "timeout", "stored_error"]
    count: int = 1
    status: int = 500
    sleep: float = 30.0
    method: str | None = None
    path_prefix: str | None = None
    should_retry: bool | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.count <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self.path_prefix and not path.startswith(self.path_prefix))


@dataclass
class _Ctx:
    request_id: str
    idempotency_key: str | None
    base_url: str


# Stripe may prune a key once it is 24 hours old; a request reusing a pruned key is
# a new request (https://docs.stripe.com/api/idempotent_requests).
IDEMPOTENCY_TTL = 24 * 3600.0


@dataclass
class _Stored:
    fingerprint: tuple[str, str, tuple[tuple[str, str], ...]]
    status: int
    body: Obj
    # the stand-in's clock when the key was first used
    created: float = 0.0


Handler = Callable[[Obj, tuple[str, ...], _Ctx], Obj]


def json_response(status: int, body: Obj, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def control_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"type": "invalid_request_error", "message": message}}, status)
