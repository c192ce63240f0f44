"""The call player: one call driven through a voice webhook the way Twilio drives it.

A signed voice request, the TwiML answer read as Twilio reads it (`<Dial
timeLimit>` caps the call), the calls recorded in the stand-in so
`Calls(sid).fetch()` finds them, then both legs' signed status callbacks.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx

from workers.local.standins.signing import twilio_signature
from workers.local.standins.twilio.common import (
    API_VERSION,
    MAX_TIME_LIMIT,
    TERMINAL_STATUSES,
    new_sid,
    rfc2822,
)
from workers.local.standins.twilio.standin import TwilioStandin


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


# Twilio's default webhook connection settings (connection overrides `ct`, `rt`,
# `tt`, `rc`): https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
TOTAL_TIME = 15.0
RETRY_COUNT = 1


@dataclass
class Delivery:
    """One webhook request as Twilio makes it: the answer's status (None: no answer)."""

    status: int | None
    attempts: int


def deliver(client: httpx.Client, url: str, params: Mapping[str, str], auth_token: str) -> Delivery:
    """POST a signed webhook with Twilio's default retry policy.

    Twilio retries a webhook once (`rc=1`) when the connection to the server
    could not be made, and all attempts share a total of 15 s (`tt=15000`);
    an answer of any status, a 5xx included, is final: Twilio logs it (error
    11200) and does not send the request again
    (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides).
    """
    headers = {
        "X-Twilio-Signature": twilio_signature(url, params, auth_token),
        "User-Agent": "TwilioProxy/1.1",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    deadline = time.monotonic() + TOTAL_TIME
    attempts = 0
    while attempts <= RETRY_COUNT:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        attempts += 1
        timeout = httpx.Timeout(min(READ_TIMEOUT, left), connect=min(CONNECT_TIMEOUT, left))
        try:
            response = client.post(url, data=dict(params), headers=headers, timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            continue  # the connection failed: the one retry Twilio makes
        except httpx.HTTPError:
            return Delivery(None, attempts)  # connected, then no answer: not retried
        return Delivery(response.status_code, attempts)
    return Delivery(None, attempts)


def _signed_post(
    client: httpx.Client, url: str, params: Mapping[str, str], auth_token: str
) -> int | None:
    return deliver(client, url, params, auth_token).status


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
    dial_error: int | None = None,
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

    With `dial_error` (a Twilio error code), `<Dial>` fails before it creates
    a child, as it does for an invalid caller id (13214,
    https://www.twilio.com/docs/api/errors/13214) or a destination the
    account's geographic permissions block
    (https://www.twilio.com/docs/voice/api/dialing-permissions-resources):
    no child call exists (`Calls?ParentCallSid=` lists none), no dialed-leg
    callback is sent, a `<Dial action>` gets `DialCallStatus=failed` without
    a `DialCallSid`, and the parent goes on to `<Hangup/>` and completes with
    its own duration (`ring_seconds` + `pre_dial_seconds`).
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

        if dial_error is not None:
            failed_duration = ring_seconds + pre_dial_seconds
            _record(
                standin,
                sid=parent_sid,
                params=voice_params,
                status="completed",
                duration=failed_duration,
                start_time=started,
            )
            failed_fields, failed_status = send_parent(failed_duration)
            action_status = None
            if dial.action:
                action_status = _signed_post(
                    client,
                    urljoin(voice_url, dial.action),
                    {**voice_params, "CallStatus": "in-progress", "DialCallStatus": "failed"},
                    auth_token,
                )
            return PlayedCall(
                call_sid=parent_sid,
                child_sid=None,
                voice_status=response.status_code,
                twiml=twiml,
                refused=False,
                dial=dial,
                time_limit=dial.time_limit,
                caller_id=dial.caller_id,
                dial_target=dial.target,
                dial_outcome="failed",
                duration=0,
                parent_duration=failed_duration,
                callback_url=None,
                callback_params={},
                callback_statuses=[],
                action_status=action_status,
                voice_params=voice_params,
                parent_callback_params=failed_fields,
                parent_callback_status=failed_status,
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
