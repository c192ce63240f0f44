"""The stand-in's state: objects, events, prices, persistence, listing and expansion."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from workers.local.standins import persist
from workers.local.standins.stripe.common import (
    CardBehaviour,
    Fault,
    Obj,
    StripeStandinConfig,
    _Ctx,
    _int,
    _missing,
    _now,
    _Stored,
    new_id,
)
from workers.local.standins.stripe.webhooks import WebhookDispatcher


class StripeStore:
    """In-memory Stripe: objects, events, idempotency, card behaviour, faults."""

    def __init__(self, config: StripeStandinConfig | None = None) -> None:
        self.config = config or StripeStandinConfig()
        self.lock = threading.RLock()
        self.objects: dict[str, Obj] = {}
        self.events: list[Obj] = []
        self.line_items: dict[str, list[Obj]] = {}
        self.card_behaviour: dict[str, tuple[CardBehaviour, str]] = {}
        self.faults: list[Fault] = []
        self.idempotency: dict[tuple[str, str], _Stored] = {}
        self.request_log: list[Obj] = []
        # Seconds the stand-in's clock runs ahead of the machine's (`advance_clock`).
        self.clock_offset = 0.0
        self.dispatcher = WebhookDispatcher(self.config, self._event_by_id)
        self._seed_prices()
        self._restore()

    # -- lifecycle --------------------------------------------------------

    def _seed_prices(self) -> None:
        for price_id, cents in self.config.prices.items():
            self.add_price(price_id, cents)

    def add_price(self, price_id: str, unit_amount: int, currency: str | None = None) -> Obj:
        with self.lock:
            product: Obj = {
                "id": "prod_" + price_id.removeprefix("price_"),
                "object": "product",
                "active": True,
                "created": _now(),
                "description": None,
                "livemode": False,
                "metadata": {},
                "name": f"Top-up {unit_amount / 100:.2f}",
                "type": "service",
            }
            price: Obj = {
                "id": price_id,
                "object": "price",
                "active": True,
                "billing_scheme": "per_unit",
                "created": _now(),
                "currency": currency or self.config.currency,
                "livemode": False,
                "lookup_key": None,
                "metadata": {},
                "nickname": None,
                "product": product["id"],
                "recurring": None,
                "tax_behavior": "unspecified",
                "type": "one_time",
                "unit_amount": unit_amount,
                "unit_amount_decimal": str(unit_amount),
            }
            self.objects[product["id"]] = product
            self.objects[price_id] = price
            return price

    def reset(self) -> None:
        """Forget everything except the configuration; re-seed the prices."""
        # Not under `self.lock`: a delivery in flight may need it to finish.
        self.dispatcher.reset()
        with self.lock:
            self.objects.clear()
            self.events.clear()
            self.line_items.clear()
            self.card_behaviour.clear()
            self.faults.clear()
            self.idempotency.clear()
            self.request_log.clear()
            self.clock_offset = 0.0
            self._seed_prices()

    def clock(self) -> float:
        """The stand-in's time: the machine's plus what `advance_clock` added."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        """Move the stand-in's clock forward (idempotency keys age with it)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self.lock:
            self.clock_offset += seconds
            return self.clock_offset

    def close(self) -> None:
        self.dispatcher.close()

    # -- persistence ------------------------------------------------------

    def _restore(self) -> None:
        saved = persist.load(self.config.state_file)
        if saved is None:
            return
        self.objects.update(saved.get("objects", {}))
        self.events = list(saved.get("events", []))
        self.line_items = dict(saved.get("line_items", {}))
        self.card_behaviour = {
            target: (behaviour, code)
            for target, (behaviour, code) in saved.get("card_behaviour", {}).items()
        }
        for api_key, key, fingerprint, status, body, *created in saved.get("idempotency", []):
            method, path, pairs = fingerprint
            self.idempotency[(api_key, key)] = _Stored(
                (method, path, tuple((k, v) for k, v in pairs)),
                status,
                body,
                float(created[0]) if created else time.time(),
            )

    def save(self) -> None:
        """Write objects, events and idempotency keys to the state file, when there is one."""
        if self.config.state_file is None:
            return
        with self.lock:
            persist.save(
                self.config.state_file,
                {
                    "objects": self.objects,
                    "events": self.events,
                    "line_items": self.line_items,
                    "card_behaviour": {t: list(b) for t, b in self.card_behaviour.items()},
                    "idempotency": [
                        [
                            api_key,
                            key,
                            list(stored.fingerprint),
                            stored.status,
                            stored.body,
                            stored.created,
                        ]
                        for (api_key, key), stored in self.idempotency.items()
                    ],
                },
            )

    # -- objects ----------------------------------------------------------

    def _get(self, kind: str, ident: str, param: str | None = None) -> Obj:
        obj = self.objects.get(ident)
        if obj is None or obj.get("object") != kind:
            raise _missing(kind.split(".")[-1], ident, param)
        return obj

    def _event_by_id(self, event_id: str) -> Obj | None:
        with self.lock:
            obj = self.objects.get(event_id)
            return copy.deepcopy(obj) if obj is not None else None

    def _list(
        self, kind: str, params: Obj, url: str, pred: Callable[[Obj], bool] | None = None
    ) -> Obj:
        # Newest first, as Stripe lists; insertion order breaks ties within a second.
        items = [
            o
            for o in reversed(self.objects.values())
            if o.get("object") == kind and (pred is None or pred(o))
        ]
        return self._page(items, params, url)

    @staticmethod
    def _page(items: list[Obj], params: Obj, url: str) -> Obj:
        limit = max(1, min(100, _int(params, "limit") or 10))
        after = params.get("starting_after")
        if after:
            ids = [o["id"] for o in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return {
            "object": "list",
            "data": copy.deepcopy(items[:limit]),
            "has_more": len(items) > limit,
            "url": url,
        }

    def _expand(self, obj: Obj, paths: Iterable[str]) -> Obj:
        result = copy.deepcopy(obj)
        for path in paths:
            self._expand_path(result, path.split("."))
        return result

    def _expand_path(self, node: Any, parts: list[str]) -> None:
        if not parts or not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(node.get("data"), list):
            for item in node["data"]:
                self._expand_path(item, rest)
            return
        value = node.get(head)
        if isinstance(value, str) and value in self.objects:
            node[head] = copy.deepcopy(self.objects[value])
        self._expand_path(node.get(head), rest)

    # -- events -----------------------------------------------------------

    def emit(self, event_type: str, obj: Obj, ctx: _Ctx | None = None) -> Obj:
        """Record an event for `obj` (a snapshot) and schedule its delivery."""
        with self.lock:
            event: Obj = {
                "id": new_id("evt_"),
                "object": "event",
                "api_version": self.config.api_version,
                "created": _now(),
                "data": {"object": copy.deepcopy(obj)},
                "livemode": False,
                "pending_webhooks": len(self.config.webhook_urls),
                "request": {
                    "id": ctx.request_id if ctx else None,
                    "idempotency_key": ctx.idempotency_key if ctx else None,
                },
                "type": event_type,
            }
            self.objects[event["id"]] = event
            self.events.append(event)
            self.dispatcher.submit(event)
            return event

    def list_events(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        wanted = params.get("type")
        items = [e for e in reversed(self.events) if not wanted or e["type"] == wanted]
        return self._page(items, params, "/v1/events")

    def retrieve_event(self, params: Obj, ids: tuple[str, ...], ctx: _Ctx) -> Obj:
        return self._get("event", ids[0])

    # -- request handling -------------------------------------------------

    def _ctx(self, base_url: str = "", key: str | None = None) -> _Ctx:
        return _Ctx(new_id("req_"), key, self.config.public_url or base_url)
