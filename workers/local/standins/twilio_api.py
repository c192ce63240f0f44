"""A local stand-in for the parts of Twilio's 2010-04-01 REST API this project uses,
and a call player that drives a voice webhook the way Twilio does.

Endpoints (JSON, form-encoded bodies, HTTP Basic auth with the account sid and
auth token or an API key sid and secret):

- `GET  /2010-04-01/Accounts/{AccountSid}.json`
- `GET  /2010-04-01/Accounts/{AccountSid}/AvailablePhoneNumbers/{Country}/Local.json`
- `GET|POST /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json`
- `GET|POST|DELETE /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json`
- `GET  /2010-04-01/Accounts/{AccountSid}/Calls.json`, `.../Calls/{Sid}.json`
- `/_control/...` for tests (see `create_app`).

twilio-python reaches it through `workers.service.providers.make_twilio_client(..., api_base=...)`.
`play_call` plays one call: a signed voice request, the TwiML answer read as
Twilio reads it (`<Dial timeLimit>` caps the call), the calls recorded here so
`Calls(sid).fetch()` finds them, then signed status callbacks.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin

import httpx
from fastapi import Body, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from workers.local.standins import persist
from workers.local.standins.signing import twilio_signature

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


class TwilioStandin:
    """In-memory Twilio account: owned numbers, calls, injected failures."""

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

    # -- numbers ----------------------------------------------------------

    def _owned(self) -> set[str]:
        return {n["phone_number"] for n in self.numbers.values()}

    def available_numbers(
        self, country: str, area_code: str | None, contains: str | None, page_size: int
    ) -> list[Obj]:
        """Deterministic +1 numbers `+1{area}555{0100..9999}` not already owned."""
        if country.upper() not in ("US", "CA"):
            return []
        area = area_code or self.config.default_area_code
        if not re.fullmatch(r"[2-9]\d\d", area):
            raise TwilioError(400, 21452, f"AreaCode {area} is not valid")
        pattern = None
        if contains:
            pattern = re.compile(
                re.escape(re.sub(r"[^\d*]", "", contains.lstrip("+"))).replace(r"\*", r"\d")
            )
        owned = self._owned()
        found: list[Obj] = []
        for n in range(100, 10000):
            number = f"+1{area}555{n:04d}"
            if number in owned or (pattern and not pattern.search(number[1:])):
                continue
            found.append(
                {
                    "address_requirements": "none",
                    "beta": False,
                    "capabilities": {"MMS": True, "SMS": True, "voice": True, "fax": False},
                    "friendly_name": _formatted(number),
                    "iso_country": country.upper(),
                    "lata": "722",
                    "latitude": "37.780000",
                    "locality": "San Francisco",
                    "longitude": "-122.420000",
                    "phone_number": number,
                    "postal_code": "94103",
                    "rate_center": "SNFC CA",
                    "region": "CA",
                }
            )
            if len(found) >= page_size:
                break
        return found

    def buy_number(self, params: Mapping[str, str]) -> Obj:
        with self.lock:
            number = params.get("PhoneNumber")
            if not number and params.get("AreaCode"):
                available = self.available_numbers("US", params["AreaCode"], None, 1)
                if not available:
                    raise TwilioError(400, 21452, "No phone numbers found in area code")
                number = available[0]["phone_number"]
            if not number:
                raise TwilioError(
                    400, 21450, "Phone number or area code is required (PhoneNumber, AreaCode)"
                )
            if not re.fullmatch(r"\+\d{8,15}", number):
                raise TwilioError(400, 21421, f"PhoneNumber {number} is invalid")
            if number in self._owned():
                raise TwilioError(400, 21422, f"PhoneNumber {number} requested is not available")
            sid = new_sid("PN")
            now = rfc2822()
            uri = f"{self._base()}/IncomingPhoneNumbers/{sid}.json"
            record: Obj = {
                "account_sid": self.account_sid,
                "address_requirements": "none",
                "address_sid": None,
                "api_version": API_VERSION,
                "beta": False,
                "bundle_sid": None,
                "capabilities": {"fax": False, "mms": True, "sms": True, "voice": True},
                "date_created": now,
                "date_updated": now,
                "emergency_address_sid": None,
                "emergency_address_status": "unregistered",
                "emergency_status": "Active",
                "friendly_name": params.get("FriendlyName") or _formatted(number),
                "identity_sid": None,
                "origin": "twilio",
                "phone_number": number,
                "sid": sid,
                "sms_application_sid": "",
                "sms_fallback_method": "POST",
                "sms_fallback_url": "",
                "sms_method": "POST",
                "sms_url": params.get("SmsUrl", ""),
                "status": "in-use",
                "status_callback": params.get("StatusCallback", ""),
                "status_callback_method": params.get("StatusCallbackMethod", "POST"),
                "subresource_uris": {
                    "assigned_add_ons": uri.replace(".json", "/AssignedAddOns.json"),
                },
                "trunk_sid": None,
                "type": "local",
                "uri": uri,
                "voice_application_sid": params.get("VoiceApplicationSid"),
                "voice_caller_id_lookup": False,
                "voice_fallback_method": "POST",
                "voice_fallback_url": params.get("VoiceFallbackUrl"),
                "voice_method": params.get("VoiceMethod", "POST"),
                "voice_receive_mode": "voice",
                "voice_url": params.get("VoiceUrl"),
            }
            self.numbers[sid] = record
            return copy.deepcopy(record)

    def number(self, sid: str) -> Obj:
        with self.lock:
            record = self.numbers.get(sid)
            if record is None:
                raise _not_found(f"{self._base()}/IncomingPhoneNumbers/{sid}.json")
            return record

    def update_number(self, sid: str, params: Mapping[str, str]) -> Obj:
        fields = {
            "FriendlyName": "friendly_name",
            "VoiceUrl": "voice_url",
            "VoiceMethod": "voice_method",
            "StatusCallback": "status_callback",
            "StatusCallbackMethod": "status_callback_method",
            "VoiceApplicationSid": "voice_application_sid",
            "VoiceFallbackUrl": "voice_fallback_url",
        }
        with self.lock:
            record = self.number(sid)
            for name, key in fields.items():
                if name in params:
                    record[key] = params[name]
            record["date_updated"] = rfc2822()
            return copy.deepcopy(record)

    def release_number(self, sid: str) -> None:
        with self.lock:
            record = self.number(sid)
            del self.numbers[sid]
            self.released.append(record)

    # -- calls ------------------------------------------------------------

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


# --------------------------------------------------------------------------
# The ASGI app
# --------------------------------------------------------------------------


def _page(key: str, items: list[Obj], uri: str, params: Mapping[str, str]) -> Obj:
    try:
        size = max(1, min(1000, int(params.get("PageSize", "50"))))
        page = max(0, int(params.get("Page", "0")))
    except ValueError:
        raise TwilioError(400, 20001, "Invalid paging parameter") from None
    chunk = items[page * size : (page + 1) * size]
    more = len(items) > (page + 1) * size
    filters = {k: v for k, v in params.items() if k not in ("PageSize", "Page", "PageToken")}

    def link(n: int) -> str:
        return f"{uri}?{urlencode({**filters, 'PageSize': size, 'Page': n})}"

    return {
        key: chunk,
        "end": page * size + max(0, len(chunk) - 1),
        "first_page_uri": link(0),
        "next_page_uri": link(page + 1) if more else None,
        "page": page,
        "page_size": size,
        "previous_page_uri": link(page - 1) if page else None,
        "start": page * size,
        "uri": link(page),
    }


def create_app(
    standin: TwilioStandin | None = None, *, config: TwilioStandinConfig | None = None
) -> FastAPI:
    """The stand-in as an ASGI app; the state object is `app.state.standin`.

    Control endpoints (JSON bodies):

    - `POST /_control/reset`; `GET /_control/state`
    - `POST /_control/faults` `{kind, count?, status?, code?}` fails the next `count`
      requests of `kind` (one of `FAULT_KINDS`; `purchase` with status 400 answers
      21422); `DELETE /_control/faults`
    - `POST /_control/calls` `{sid?, from, to, status, duration?, direction?,
      parent_call_sid?}` records a call (what `play_call` does when given a URL)
    - `GET /_control/requests`: the API requests seen, with their statuses
    """
    if standin is None:
        standin = TwilioStandin(config)
    state = standin
    app = FastAPI(title="Twilio stand-in", docs_url=None, redoc_url=None)
    app.state.standin = state

    @app.middleware("http")
    async def keep_state(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.method != "GET":
            state.save()
        return response

    prefix = f"/{API_VERSION}/Accounts/{{account_sid}}"

    async def run(
        request: Request,
        account_sid: str | None,
        kind: str,
        action: Callable[[dict[str, str]], tuple[int, Obj | None]],
    ) -> Response:
        status: int
        body: Obj | None
        try:
            state.check_auth(request.headers.get("authorization"), account_sid)
            fault = state.take_fault(kind)
            if fault is not None:
                raise fault
            params = dict(parse_qsl(request.url.query, keep_blank_values=True))
            if request.method == "POST":
                params.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            status, body = action(params)
        except TwilioError as err:
            status, body = err.status, err.body()
        with state.lock:
            state.request_log.append(
                {"method": request.method, "path": request.url.path, "kind": kind, "status": status}
            )
        if body is None:
            return Response(status_code=status)
        return JSONResponse(body, status_code=status)

    @app.get(f"/{API_VERSION}/Accounts/{{account_sid}}.json")
    async def account(request: Request, account_sid: str) -> Response:
        return await run(request, account_sid, "account", lambda p: (200, state.account()))

    @app.get(prefix + "/AvailablePhoneNumbers/{country}/Local.json")
    async def available(request: Request, account_sid: str, country: str) -> Response:
        def action(p: dict[str, str]) -> tuple[int, Obj]:
            try:
                size = max(1, min(1000, int(p.get("PageSize", "50"))))
            except ValueError:
                raise TwilioError(400, 20001, "Invalid PageSize") from None
            found = state.available_numbers(country, p.get("AreaCode"), p.get("Contains"), size)
            uri = f"{state._base()}/AvailablePhoneNumbers/{country}/Local.json"
            return 200, {"available_phone_numbers": found, "end": len(found) - 1, "uri": uri}

        return await run(request, account_sid, "available_numbers", action)

    @app.get(prefix + "/IncomingPhoneNumbers.json")
    async def list_numbers(request: Request, account_sid: str) -> Response:
        def action(p: dict[str, str]) -> tuple[int, Obj]:
            with state.lock:
                items = [
                    copy.deepcopy(n)
                    for n in state.numbers.values()
                    if not p.get("PhoneNumber") or n["phone_number"] == p["PhoneNumber"]
                ]
            uri = f"{state._base()}/IncomingPhoneNumbers.json"
            return 200, _page("incoming_phone_numbers", items, uri, p)

        return await run(request, account_sid, "list_numbers", action)

    @app.post(prefix + "/IncomingPhoneNumbers.json")
    async def buy(request: Request, account_sid: str) -> Response:
        return await run(request, account_sid, "purchase", lambda p: (201, state.buy_number(p)))

    @app.get(prefix + "/IncomingPhoneNumbers/{sid}.json")
    async def fetch_number(request: Request, account_sid: str, sid: str) -> Response:
        return await run(
            request, account_sid, "fetch_number", lambda p: (200, copy.deepcopy(state.number(sid)))
        )

    @app.post(prefix + "/IncomingPhoneNumbers/{sid}.json")
    async def update_number(request: Request, account_sid: str, sid: str) -> Response:
        return await run(
            request, account_sid, "update_number", lambda p: (200, state.update_number(sid, p))
        )

    @app.delete(prefix + "/IncomingPhoneNumbers/{sid}.json")
    async def release(request: Request, account_sid: str, sid: str) -> Response:
        def action(p: dict[str, str]) -> tuple[int, None]:
            state.release_number(sid)
            return 204, None

        return await run(request, account_sid, "release", action)

    @app.get(prefix + "/Calls.json")
    async def list_calls(request: Request, account_sid: str) -> Response:
        def action(p: dict[str, str]) -> tuple[int, Obj]:
            return 200, _page("calls", state.list_calls(p), f"{state._base()}/Calls.json", p)

        return await run(request, account_sid, "list_calls", action)

    @app.get(prefix + "/Calls/{sid}.json")
    async def fetch_call(request: Request, account_sid: str, sid: str) -> Response:
        return await run(request, account_sid, "fetch_call", lambda p: (200, state.call(sid)))

    # -- control ----------------------------------------------------------

    @app.post("/_control/reset")
    def reset() -> Obj:
        state.reset()
        return {"ok": True}

    @app.get("/_control/state")
    def dump() -> Obj:
        return state.state()

    @app.post("/_control/faults", response_model=None)
    def add_fault(body: Obj = Body(default={})) -> Obj | JSONResponse:  # noqa: B008
        try:
            state.add_fault(
                str(body.get("kind", "any")),
                int(body.get("count", 1)),
                int(body.get("status", 500)),
                body.get("code"),
            )
        except ValueError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        return {"ok": True}

    @app.delete("/_control/faults")
    def clear_faults() -> Obj:
        with state.lock:
            state.faults.clear()
        return {"ok": True}

    @app.post("/_control/calls")
    def add_call(body: Obj = Body(default={})) -> Obj:  # noqa: B008
        duration = body.get("duration")
        return state.record_call(
            sid=body.get("sid"),
            from_=str(body.get("from", "")),
            to=str(body.get("to", "")),
            status=str(body.get("status", "completed")),
            duration=None if duration is None else int(duration),
            direction=str(body.get("direction", "inbound")),
            parent_call_sid=body.get("parent_call_sid"),
            start_time=body.get("start_time"),
        )

    @app.get("/_control/requests")
    def requests() -> list[Obj]:
        with state.lock:
            return copy.deepcopy(state.request_log)

    return app


# --------------------------------------------------------------------------
# The call player
# --------------------------------------------------------------------------


@dataclass
class DialInstruction:
    """What a `<Dial>` in a TwiML answer asks for."""

    time_limit: int
    caller_id: str | None
    noun: str  # Number | Client | Sip | Queue | Conference | text
    target: str
    status_callback: str | None
    status_callback_events: list[str]
    status_callback_method: str
    action: str | None


@dataclass
class PlayedCall:
    """What happened during `play_call`."""

    call_sid: str
    child_sid: str | None
    voice_status: int
    twiml: str
    refused: bool
    dial: DialInstruction | None
    time_limit: int | None
    caller_id: str | None
    dial_target: str | None
    dial_outcome: str | None
    duration: int  # seconds of the dialed leg, as billed
    parent_duration: int
    callback_url: str | None
    callback_params: dict[str, str]
    callback_statuses: list[int | None] = field(default_factory=list)
    action_status: int | None = None
    voice_params: dict[str, str] = field(default_factory=dict)
    parent_callback_params: dict[str, str] = field(default_factory=dict)
    parent_callback_status: int | None = None


def parse_dial(twiml: str) -> DialInstruction | None:
    """The first `<Dial>` of a TwiML document, with Twilio's defaults applied."""
    root = ET.fromstring(twiml)  # noqa: S314 - the TwiML comes from the app under test
    dial = root.find("Dial")
    if dial is None:
        return None
    raw_limit = dial.get("timeLimit")
    limit = MAX_TIME_LIMIT if raw_limit is None else int(raw_limit)
    limit = min(MAX_TIME_LIMIT, max(0, limit))
    noun_el = next(iter(dial), None)
    if noun_el is not None:
        noun, target = noun_el.tag, (noun_el.text or "").strip()
        attrs = noun_el.attrib
    else:
        noun, target, attrs = "text", (dial.text or "").strip(), {}
    events = (attrs.get("statusCallbackEvent") or "completed").replace(",", " ").split()
    return DialInstruction(
        time_limit=limit,
        caller_id=dial.get("callerId"),
        noun=noun,
        target=target,
        status_callback=attrs.get("statusCallback"),
        status_callback_events=events,
        status_callback_method=attrs.get("statusCallbackMethod", "POST"),
        action=dial.get("action"),
    )


def _signed_post(
    client: httpx.Client, url: str, params: Mapping[str, str], auth_token: str
) -> int | None:
    headers = {
        "X-Twilio-Signature": twilio_signature(url, params, auth_token),
        "User-Agent": "TwilioProxy/1.1",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    try:
        return client.post(url, data=dict(params), headers=headers).status_code
    except httpx.HTTPError:
        return None


def play_call(
    *,
    voice_url: str,
    status_url: str | None = None,
    auth_token: str,
    params: Mapping[str, str],
    answered_seconds: int,
    standin: TwilioStandin | str | None = None,
    dial_outcome: str = "completed",
    duplicate_callbacks: int = 1,
    drop_callbacks: bool = False,
    callbacks_before_voice: bool = False,
    ring_seconds: int = 0,
    pre_dial_seconds: int = 0,
    parent_callback: str = "after",
    account_sid: str | None = None,
    timeout: float = 10.0,
) -> PlayedCall:
    """Play one call against a voice webhook as Twilio would.

    A call has two legs, and each reports its own end (Twilio's docs: the
    <Number>/<Sip>/<Client> `statusCallback` attribute,
    https://www.twilio.com/docs/voice/twiml/number#attributes-status-callback;
    the status callback parameters, https://www.twilio.com/docs/voice/api/call-resource#statuscallback
    — `CallSid`, `ParentCallSid` on a dialed leg, `CallStatus`, `CallDuration`
    in seconds, `Direction`; the `<Dial action>` request's `DialCallSid`,
    `DialCallStatus`, `DialCallDuration`,
    https://www.twilio.com/docs/voice/twiml/dial#action). The parent leg's
    `CallDuration` counts from when it rang: ringing, the TwiML before `<Dial>`
    and the talk time; the dialed (child) leg's counts the talk time only.

    1. POST `voice_url` signed with `X-Twilio-Signature`: CallSid, AccountSid,
       From, To, Direction, CallStatus=ringing, ApiVersion, plus `params` (which
       may override any of them, e.g. `CallSid`, `From=client:<identity>`).
    2. Read the TwiML. No `<Dial>` (e.g. `<Say>` + `<Hangup/>`): the call is
       refused and no status callback follows. With `<Dial timeLimit=T>` the
       dialed leg lasts `min(answered_seconds, T)` (T defaults to and is capped
       at 14400) when `dial_outcome` is `completed`, else 0.
    3. Record the parent call and the dialed (child) call in `standin` (the
       object, or the base URL of a running stand-in), so `Calls(sid).fetch()`
       answers.
    4. POST the dialed leg's signed status callback (CallSid=child,
       ParentCallSid=parent, CallStatus, CallDuration) to the noun's
       `statusCallback` (resolved against `voice_url`) or else `status_url`,
       `duplicate_callbacks` times concurrently; none when `drop_callbacks`.
       With `callbacks_before_voice`, the callback goes to `status_url` before
       step 1 with `answered_seconds` as the duration. A `<Dial action>` URL
       receives DialCallStatus/DialCallDuration/DialCallSid afterwards.
    5. With `status_url` (the number's or the TwiML App's status callback),
       POST the parent leg's signed `completed` callback (no ParentCallSid;
       CallDuration = `ring_seconds` + `pre_dial_seconds` + the talk time)
       after the dialed leg's (`parent_callback="after"`, Twilio's usual
       order), before it (`"before"`), or not at all (`"none"`, or
       `drop_callbacks`). A refused call's parent reports too.
    """
    if parent_callback not in ("after", "before", "none"):
        raise ValueError("parent_callback must be after, before or none")
    if dial_outcome not in TERMINAL_STATUSES:
        raise ValueError(f"dial_outcome must be one of {TERMINAL_STATUSES}")
    if isinstance(standin, TwilioStandin):
        account_sid = account_sid or standin.account_sid
    account_sid = account_sid or "AC" + "0" * 32
    parent_sid = params.get("CallSid") or new_sid("CA")
    child_sid = new_sid("CA")
    voice_params: dict[str, str] = {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": parent_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15005550006",
        "To": "+15005550001",
        **params,
    }
    voice_params.setdefault("Caller", voice_params["From"])
    voice_params.setdefault("Called", voice_params["To"])

    def parent_params(duration: int) -> dict[str, str]:
        return {
            "AccountSid": account_sid or "",
            "ApiVersion": API_VERSION,
            "CallSid": parent_sid,
            "CallStatus": "completed",
            "CallDuration": str(duration),
            "Direction": voice_params.get("Direction", "inbound"),
            "From": voice_params["From"],
            "To": voice_params["To"],
            "Timestamp": rfc2822(),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
        }

    def callback_params(duration: int, to: str, caller: str) -> dict[str, str]:
        return {
            "AccountSid": account_sid or "",
            "ApiVersion": API_VERSION,
            "CallSid": child_sid,
            "ParentCallSid": parent_sid,
            "CallStatus": dial_outcome,
            "CallDuration": str(duration),
            "Direction": "outbound-dial",
            "From": caller,
            "To": to,
            "Timestamp": rfc2822(),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
        }

    with httpx.Client(timeout=timeout) as client:

        def send_callbacks(url: str, cb_params: dict[str, str]) -> list[int | None]:
            if drop_callbacks:
                return []
            copies = max(1, duplicate_callbacks)
            if copies == 1:
                return [_signed_post(client, url, cb_params, auth_token)]
            with ThreadPoolExecutor(max_workers=copies) as pool:
                futures = [
                    pool.submit(_signed_post, client, url, cb_params, auth_token)
                    for _ in range(copies)
                ]
                return [f.result() for f in futures]

        def send_parent(duration: int) -> tuple[dict[str, str], int | None]:
            if not status_url or drop_callbacks or parent_callback == "none":
                return {}, None
            fields = parent_params(duration)
            return fields, _signed_post(client, status_url, fields, auth_token)

        early: list[int | None] = []
        early_params: dict[str, str] = {}
        if callbacks_before_voice:
            if not status_url:
                raise ValueError("callbacks_before_voice needs status_url")
            duration = answered_seconds if dial_outcome == "completed" else 0
            early_params = callback_params(duration, voice_params["To"], voice_params["From"])
            early = send_callbacks(status_url, early_params)

        headers = {
            "X-Twilio-Signature": twilio_signature(voice_url, voice_params, auth_token),
            "User-Agent": "TwilioProxy/1.1",
        }
        response = client.post(voice_url, data=voice_params, headers=headers)
        twiml = response.text
        dial = parse_dial(twiml) if response.status_code == 200 and twiml.strip() else None

        started = time.time()
        if dial is None:
            refused_duration = ring_seconds + pre_dial_seconds
            _record(
                standin,
                sid=parent_sid,
                params=voice_params,
                status="completed",
                duration=refused_duration,
            )
            refused_fields, refused_status = send_parent(refused_duration)
            return PlayedCall(
                call_sid=parent_sid,
                child_sid=None,
                voice_status=response.status_code,
                twiml=twiml,
                refused=True,
                dial=None,
                time_limit=None,
                caller_id=None,
                dial_target=None,
                dial_outcome=None,
                duration=0,
                parent_duration=refused_duration,
                callback_url=status_url if callbacks_before_voice else None,
                callback_params=early_params,
                callback_statuses=early,
                voice_params=voice_params,
                parent_callback_params=refused_fields,
                parent_callback_status=refused_status,
            )

        duration = min(answered_seconds, dial.time_limit) if dial_outcome == "completed" else 0
        caller = dial.caller_id or voice_params["From"]
        parent_duration = ring_seconds + pre_dial_seconds + duration
        _record(
            standin,
            sid=parent_sid,
            params=voice_params,
            status="completed",
            duration=parent_duration,
            start_time=started,
        )
        _record(
            standin,
            sid=child_sid,
            params={"From": caller, "To": dial.target},
            status=dial_outcome,
            duration=duration,
            direction="outbound-dial",
            parent=parent_sid,
            start_time=started,
        )
        target_url = (
            urljoin(voice_url, dial.status_callback) if dial.status_callback else status_url
        )
        cb_params = callback_params(duration, dial.target, caller)
        statuses = early
        parent_fields: dict[str, str] = {}
        parent_status = None
        if parent_callback == "before":
            parent_fields, parent_status = send_parent(parent_duration)
        if callbacks_before_voice:
            cb_params = early_params
        elif target_url:
            statuses = send_callbacks(target_url, cb_params)
        if parent_callback == "after":
            parent_fields, parent_status = send_parent(parent_duration)
        action_status = None
        if dial.action:
            action_params = {
                **voice_params,
                "CallStatus": "completed" if dial_outcome == "completed" else "in-progress",
                "DialCallSid": child_sid,
                "DialCallStatus": dial_outcome,
                "DialCallDuration": str(duration),
            }
            action_status = _signed_post(
                client, urljoin(voice_url, dial.action), action_params, auth_token
            )
        return PlayedCall(
            call_sid=parent_sid,
            child_sid=child_sid,
            voice_status=response.status_code,
            twiml=twiml,
            refused=False,
            dial=dial,
            time_limit=dial.time_limit,
            caller_id=dial.caller_id,
            dial_target=dial.target,
            dial_outcome=dial_outcome,
            duration=duration,
            parent_duration=parent_duration,
            callback_url=status_url if callbacks_before_voice else target_url,
            callback_params=cb_params,
            callback_statuses=statuses,
            action_status=action_status,
            voice_params=voice_params,
            parent_callback_params=parent_fields,
            parent_callback_status=parent_status,
        )


def _record(
    standin: TwilioStandin | str | None,
    *,
    sid: str,
    params: Mapping[str, str],
    status: str,
    duration: int,
    direction: str | None = None,
    parent: str | None = None,
    start_time: float | None = None,
) -> None:
    direction = direction or params.get("Direction", "inbound")
    if isinstance(standin, TwilioStandin):
        standin.record_call(
            sid=sid,
            from_=params.get("From", ""),
            to=params.get("To", ""),
            status=status,
            duration=duration,
            direction=direction,
            parent_call_sid=parent,
            start_time=start_time,
        )
    elif isinstance(standin, str):
        httpx.post(
            standin.rstrip("/") + "/_control/calls",
            json={
                "sid": sid,
                "from": params.get("From", ""),
                "to": params.get("To", ""),
                "status": status,
                "duration": duration,
                "direction": direction,
                "parent_call_sid": parent,
                "start_time": start_time,
            },
        ).raise_for_status()
