"""The Twilio stand-in's state: the account, auth, injected failures, persistence."""

from __future__ import annotations

import base64
import copy
import threading

from workers.local.standins import persist
from workers.local.standins.twilio.common import (
    API_VERSION,
    FAULT_KINDS,
    Obj,
    TwilioError,
    TwilioStandinConfig,
    _Fault,
    _not_found,
    rfc2822,
)


class TwilioStore:
    """In-memory Twilio account: its state, auth, injected failures and persistence."""

    def __init__(self, config: TwilioStandinConfig | None = None) -> None:
        self.config = config or TwilioStandinConfig()
        self.lock = threading.RLock()
        self.numbers: dict[str, Obj] = {}
        self.calls: dict[str, Obj] = {}
        self.released: list[Obj] = []
        self.faults: list[_Fault] = []
        self.request_log: list[Obj] = []
        self._restore()

    @property
    def account_sid(self) -> str:
        return self.config.account_sid

    def reset(self) -> None:
        with self.lock:
            self.numbers.clear()
            self.calls.clear()
            self.released.clear()
            self.faults.clear()
            self.request_log.clear()

    def _base(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}"

    # -- auth and faults --------------------------------------------------

    def check_auth(self, authorization: str | None, account_sid: str | None) -> None:
        scheme, _, value = (authorization or "").partition(" ")
        user = password = ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user = ""
        valid = (user == self.account_sid and password == self.config.auth_token) or (
            user in self.config.api_keys and password == self.config.api_keys[user]
        )
        if not valid:
            raise TwilioError(401, 20003, "Authenticate")
        if account_sid is not None and account_sid != self.account_sid:
            raise _not_found(f"/{API_VERSION}/Accounts/{account_sid}")

    def add_fault(
        self, kind: str, count: int = 1, status: int = 500, code: int | None = None
    ) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        with self.lock:
            fault = _Fault(kind, count, status)
            if code is not None:
                fault.code = code
            elif status < 500:
                fault.code, fault.message = 21422, "PhoneNumber requested is not available"
            self.faults.append(fault)

    def take_fault(self, kind: str) -> TwilioError | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.kind in (kind, "any"):
                    fault.count -= 1
                    return TwilioError(fault.status, fault.code, fault.message)
            return None

    # -- account ----------------------------------------------------------

    def account(self) -> Obj:
        return {
            "auth_token": self.config.auth_token,
            "date_created": rfc2822(0),
            "date_updated": rfc2822(0),
            "friendly_name": "Stand-in account",
            "owner_account_sid": self.account_sid,
            "sid": self.account_sid,
            "status": "active",
            "subresource_uris": {},
            "type": "Full",
            "uri": f"{self._base()}.json",
        }

    def state(self) -> Obj:
        with self.lock:
            return copy.deepcopy(
                {
                    "account_sid": self.account_sid,
                    "numbers": list(self.numbers.values()),
                    "released": self.released,
                    "calls": list(self.calls.values()),
                    "faults": [vars(f) for f in self.faults if f.count > 0],
                }
            )

    # -- persistence ------------------------------------------------------

    def _restore(self) -> None:
        saved = persist.load(self.config.state_file)
        if saved is None:
            return
        self.numbers = {n["sid"]: n for n in saved.get("numbers", [])}
        self.released = list(saved.get("released", []))
        self.calls = {c["sid"]: c for c in saved.get("calls", [])}

    def save(self) -> None:
        """Write numbers, releases and calls to the state file, when there is one."""
        if self.config.state_file is None:
            return
        with self.lock:
            persist.save(
                self.config.state_file,
                {
                    "numbers": list(self.numbers.values()),
                    "released": self.released,
                    "calls": list(self.calls.values()),
                },
            )
