"""The Stripe stand-in: every resource, API-key checks, idempotency, faults, routing."""

from __future__ import annotations

import base64
import copy
import re
import time

from workers.local.standins.stripe.common import (
    IDEMPOTENCY_TTL,
    Fault,
    Handler,
    Obj,
    StripeError,
    StripeStandinConfig,
    _Ctx,
    _Stored,
)
from workers.local.standins.stripe.webhook_endpoints import WebhookEndpoints


class StripeStandin(WebhookEndpoints):
    """In-memory Stripe: objects, events, idempotency, card behaviour, faults."""

    def __init__(self, config: StripeStandinConfig | None = None) -> None:
        super().__init__(config)
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"customers"), self.create_customer),
            ("GET", re.compile(r"customers"), self.list_customers),
            ("GET", re.compile(r"customers/search"), self.search_customers),
            ("GET", re.compile(r"customers/([^/]+)"), self.retrieve_customer),
            ("POST", re.compile(r"customers/([^/]+)"), self.update_customer),
            ("GET", re.compile(r"customers/([^/]+)/payment_methods"), self.list_customer_pms),
            ("GET", re.compile(r"prices"), self.list_prices),
            ("GET", re.compile(r"prices/([^/]+)"), self.retrieve_price),
            ("GET", re.compile(r"products/([^/]+)"), self.retrieve_product),
            ("POST", re.compile(r"checkout/sessions"), self.create_checkout_session),
            ("GET", re.compile(r"checkout/sessions"), self.list_checkout_sessions),
            ("GET", re.compile(r"checkout/sessions/([^/]+)"), self.retrieve_checkout_session),
            ("GET", re.compile(r"checkout/sessions/([^/]+)/line_items"), self.list_line_items),
            ("POST", re.compile(r"checkout/sessions/([^/]+)/expire"), self.expire_checkout_session),
            ("POST", re.compile(r"payment_intents"), self.create_payment_intent),
            ("GET", re.compile(r"payment_intents"), self.list_payment_intents),
            ("GET", re.compile(r"payment_intents/search"), self.search_payment_intents),
            ("GET", re.compile(r"payment_intents/([^/]+)"), self.retrieve_payment_intent),
            ("GET", re.compile(r"payment_methods"), self.list_payment_methods),
            ("GET", re.compile(r"payment_methods/([^/]+)"), self.retrieve_payment_method),
            ("POST", re.compile(r"payment_methods/([^/]+)/attach"), self.attach_payment_method),
            ("POST", re.compile(r"payment_methods/([^/]+)/detach"), self.detach_payment_method),
            ("GET", re.compile(r"charges"), self.list_charges),
            ("GET", re.compile(r"charges/([^/]+)"), self.retrieve_charge),
            ("POST", re.compile(r"refunds"), self.create_refund),
            ("GET", re.compile(r"refunds"), self.list_refunds),
            ("GET", re.compile(r"refunds/([^/]+)"), self.retrieve_refund),
            ("GET", re.compile(r"disputes/([^/]+)"), self.retrieve_dispute),
            ("POST", re.compile(r"webhook_endpoints"), self.create_webhook_endpoint),
            ("GET", re.compile(r"webhook_endpoints"), self.list_webhook_endpoints),
            ("GET", re.compile(r"webhook_endpoints/([^/]+)"), self.retrieve_webhook_endpoint),
            ("DELETE", re.compile(r"webhook_endpoints/([^/]+)"), self.delete_webhook_endpoint),
            ("GET", re.compile(r"events"), self.list_events),
            ("GET", re.compile(r"events/([^/]+)"), self.retrieve_event),
        ]

    # -- request handling -------------------------------------------------

    def check_auth(self, authorization: str | None) -> str:
        """The API key from an `Authorization` header, or a 401 `StripeError`."""
        if not authorization:
            raise StripeError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        scheme, _, value = authorization.partition(" ")
        key = value.strip()
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(key).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        elif scheme.lower() != "bearer":
            key = ""
        expected = self.config.api_key
        valid = key == expected if expected else key.startswith(("sk_test_", "rk_test_"))
        if not valid:
            shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key
            raise StripeError(401, "invalid_request_error", f"Invalid API Key provided: {shown}")
        return key

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    return fault
            return None

    def handle(
        self,
        method: str,
        path: str,
        params: Obj,
        pairs: list[tuple[str, str]],
        *,
        api_key: str,
        idempotency_key: str | None,
        base_url: str,
        fail_after: int | None = None,
    ) -> tuple[int, Obj, dict[str, str]]:
        """Run one `/v1/...` request; returns status, JSON body and extra headers.

        `fail_after`: run it, then answer that status (stored under the key)."""
        ctx = self._ctx(base_url, idempotency_key)
        headers = {"Request-Id": ctx.request_id}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        with self.lock:
            stored_key = (
                (api_key, idempotency_key) if idempotency_key and method == "POST" else None
            )
            fingerprint = (method, path, tuple(sorted(pairs)))
            if stored_key is not None:
                stored = self.idempotency.get(stored_key)
                if stored is not None and self.clock() - stored.created >= IDEMPOTENCY_TTL:
                    # Pruned: the key is reusable and the request runs again.
                    del self.idempotency[stored_key]
                    stored = None
                if stored is not None:
                    if stored.fingerprint != fingerprint:
                        err = StripeError(
                            400,
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{idempotency_key}' if you meant to execute a different request.",
                        )
                        return 400, err.body(), headers
                    headers["Idempotent-Replayed"] = "true"
                    return stored.status, copy.deepcopy(stored.body), headers
            try:
                status, body = 200, self._dispatch(method, path, params, ctx)
            except StripeError as err:
                status, body = err.status, err.body()
            if fail_after is not None:
                status = fail_after
                body = StripeError(
                    fail_after, "api_error", "An unknown error occurred (injected by the stand-in)."
                ).body()
            body = copy.deepcopy(body)
            if stored_key is not None:
                self.idempotency[stored_key] = _Stored(fingerprint, status, body, self.clock())
            self.request_log.append(
                {
                    "id": ctx.request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "idempotency_key": idempotency_key,
                    "at": time.time(),
                }
            )
            return status, copy.deepcopy(body), headers

    def _dispatch(self, method: str, path: str, params: Obj, ctx: _Ctx) -> Obj:
        for route_method, pattern, handler in self.routes:
            if route_method != method:
                continue
            match = pattern.fullmatch(path)
            if match:
                result = handler(params, match.groups(), ctx)
                expand = params.get("expand")
                if isinstance(expand, list) and expand:
                    return self._expand(result, [str(p) for p in expand])
                return result
        raise StripeError(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({method}: /v1/{path}).",
        )

    # -- control ----------------------------------------------------------

    def state(self) -> Obj:
        with self.lock:
            grouped: dict[str, list[Obj]] = {}
            for obj in self.objects.values():
                kind = obj.get("object", "")
                if kind.startswith("_") or kind == "event":
                    continue
                grouped.setdefault(kind, []).append(obj)
            return copy.deepcopy(
                {
                    "objects": grouped,
                    "card_behaviour": {k: list(v) for k, v in self.card_behaviour.items()},
                    "faults": [vars(f) for f in self.faults if f.count > 0],
                    "webhooks": self.webhook_settings(),
                    "events": len(self.events),
                }
            )

    def webhook_settings(self) -> Obj:
        d = self.dispatcher
        return {
            "urls": list(self.config.webhook_urls),
            "secret": self.config.webhook_secret,
            "mode": d.mode,
            "copies": d.copies,
            "delay": d.delay,
            "window": d.window,
            "retry_delays": list(self.config.retry_delays),
            "pending": d.pending(),
        }

    def events_of(self, event_type: str | None = None) -> list[Obj]:
        with self.lock:
            return copy.deepcopy(
                [e for e in self.events if event_type is None or e["type"] == event_type]
            )

    def charges(self) -> list[Obj]:
        """Successful charges, oldest first (the "what Stripe actually took" model)."""
        with self.lock:
            items = [
                o
                for o in self.objects.values()
                if o.get("object") == "charge" and o["status"] == "succeeded"
            ]
            return copy.deepcopy(items)
