"""The Twilio stand-in's vocabulary: sids, dates, errors, configuration, faults."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

API_VERSION = "2010-04-01"
MAX_TIME_LIMIT = 14400
TERMINAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
FAULT_KINDS = (
    "any",
    "account",
    "available_numbers",
    "purchase",
    "list_numbers",
    "fetch_number",
    "update_number",
    "release",
    "list_calls",
    "fetch_call",
)


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822(epoch: float | None = None) -> str:
    """Twilio's date format: `Tue, 31 Aug 2010 20:36:28 +0000`."""
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))


def _formatted(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    if len(digits) == 11 and digits.startswith("1"):
        return f"({digits[1:4]}) {digits[4:7]}-{digits[7:]}"
    return number


class TwilioError(Exception):
    """An error answered in Twilio's `{code, message, more_info, status}` shape."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> Obj:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def _not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")


@dataclass
class TwilioStandinConfig:
    account_sid: str = "AC" + "0" * 32
    auth_token: str = "standin-auth-token"  # noqa: S105 - a local test secret
    # API key sid -> secret, accepted as Basic auth like the account's token.
    api_keys: dict[str, str] = field(default_factory=dict)
    default_area_code: str = "415"
    # Where numbers, releases and calls are kept between runs (None: memory only).
    state_file: str | None = None


@dataclass
class _Fault:
    kind: str
    count: int
    status: int = 500
    code: int = 20500
    message: str = "Internal Server Error (injected by the stand-in)"
