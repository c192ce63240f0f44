"""Calls: recorded by the call player, listed and fetched as `Calls`."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping

from workers.local.standins.twilio.common import (
    API_VERSION,
    TERMINAL_STATUSES,
    Obj,
    _formatted,
    _not_found,
    new_sid,
    rfc2822,
)
from workers.local.standins.twilio.numbers import Numbers


class Calls(Numbers):
    """Calls as Twilio lists and fetches them; the call player records them here."""

    def record_call(
        self,
        *,
        sid: str | None = None,
        from_: str = "",
        to: str = "",
        status: str = "completed",
        duration: int | None = None,
        direction: str = "inbound",
        parent_call_sid: str | None = None,
        start_time: float | None = None,
        phone_number_sid: str | None = None,
    ) -> Obj:
        """Add (or replace) a call as Twilio would report it."""
        with self.lock:
            sid = sid or new_sid("CA")
            started = time.time() if start_time is None else start_time
            terminal = status in TERMINAL_STATUSES
            seconds = duration if duration is not None else (0 if terminal else None)
            answered = status in ("completed", "in-progress")
            call: Obj = {
                "account_sid": self.account_sid,
                "annotation": None,
                "answered_by": None,
                "api_version": API_VERSION,
                "caller_name": None,
                "date_created": rfc2822(started),
                "date_updated": rfc2822(),
                "direction": direction,
                "duration": str(seconds) if terminal and seconds is not None else None,
                "end_time": rfc2822(started + (seconds or 0)) if terminal else None,
                "forwarded_from": None,
                "from": from_,
                "from_formatted": _formatted(from_),
                "group_sid": None,
                "parent_call_sid": parent_call_sid,
                "phone_number_sid": phone_number_sid,
                "price": f"-{0.0085 * max(1, -(-(seconds or 0) // 60)):.5f}"
                if terminal and seconds
                else None,
                "price_unit": "USD",
                "queue_time": "0",
                "sid": sid,
                "start_time": rfc2822(started) if answered or terminal else None,
                "status": status,
                "subresource_uris": {
                    "notifications": f"{self._base()}/Calls/{sid}/Notifications.json",
                    "recordings": f"{self._base()}/Calls/{sid}/Recordings.json",
                },
                "to": to,
                "to_formatted": _formatted(to),
                "trunk_sid": None,
                "uri": f"{self._base()}/Calls/{sid}.json",
            }
            self.calls[sid] = call
            return copy.deepcopy(call)

    def call(self, sid: str) -> Obj:
        with self.lock:
            record = self.calls.get(sid)
            if record is None:
                raise _not_found(f"{self._base()}/Calls/{sid}.json")
            return copy.deepcopy(record)

    def list_calls(self, params: Mapping[str, str]) -> list[Obj]:
        filters = {
            "Status": "status",
            "ParentCallSid": "parent_call_sid",
            "To": "to",
            "From": "from",
        }
        with self.lock:
            calls = list(reversed(self.calls.values()))
            for name, key in filters.items():
                if params.get(name):
                    calls = [c for c in calls if c[key] == params[name]]
            return copy.deepcopy(calls)
