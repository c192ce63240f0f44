"""Twilio voice and status webhooks: authorize a call with a hold, settle it once.

`/twilio/voice` answers TwiML: `<Dial timeLimit=…>` for as long as the held
funds and minutes buy (the number is computed in SQL by
`billing.authorize_call`), or a short `<Say>` and `<Hangup/>` when refused.
`/twilio/call-status` settles the authorized call through `billing.settle_call`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Dial, VoiceResponse

from workers.db import Database, RpcError

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
TERMINAL_UNANSWERED = {"busy", "no-answer", "failed", "canceled"}
REFUSALS = {
    "no_active_number": "You need an active phone number before you can place calls.",
    "insufficient_balance": "Your balance is too low to place this call. Please top up.",
    "insufficient_funds": "Your balance is too low to place this call. Please top up.",
}


@dataclass(frozen=True)
class VoiceAnswer:
    twiml: str
    outcome: str


def signature_valid(
    auth_token: str, url: str, params: dict[str, str], signature: str | None
) -> bool:
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


def refuse(sentence: str, outcome: str) -> VoiceAnswer:
    response = VoiceResponse()
    response.say(sentence)
    response.hangup()
    return VoiceAnswer(str(response), outcome)


def _dial_target(dial: Dial, target: str, status_url: str) -> None:
    callback = {
        "status_callback": status_url,
        "status_callback_event": "completed",
        "status_callback_method": "POST",
    }
    if target.startswith("sip:"):
        dial.sip(target, **callback)
    elif target.startswith("client:"):
        dial.client(target.removeprefix("client:"), **callback)
    else:
        dial.number(target, **callback)


def _user_from_client(identity: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(identity.removeprefix("client:"))
    except ValueError:
        return None


async def answer_voice(
    db: Database,
    params: dict[str, str],
    *,
    status_url: str,
    inbound_dial: str | None,
    default_caller_id: str | None,
) -> VoiceAnswer:
    call_sid = params.get("CallSid", "")
    caller, called = params.get("From", ""), params.get("To", "")
    if not re.fullmatch(r"CA[0-9a-fA-F]{32}", call_sid):
        return refuse("This call could not be identified.", "refused: no CallSid")

    if caller.startswith("client:"):
        user = _user_from_client(caller)
        if user is None:
            return refuse("This caller is not known.", "refused: unknown client identity")
        if not E164.match(called):
            return refuse("That number is not valid.", "refused: invalid destination")
        target, caller_id = called, None
    else:
        owner = (
            await db.call("select billing.number_owner(%s)", (called,))
            if E164.match(called)
            else None
        )
        if owner is None:
            return refuse("This number is not in service.", "refused: number has no owner")
        if not inbound_dial:
            return refuse("This number cannot take calls right now.", "refused: no inbound route")
        user, target, caller_id = owner, inbound_dial, caller if E164.match(caller) else None

    try:
        hold: dict[str, Any] = await db.call(
            "select billing.authorize_call(%s, %s::uuid)", (call_sid, str(user))
        )
    except RpcError as exc:
        return refuse("This call cannot be placed.", f"refused: {exc.message}")
    if not hold.get("allowed"):
        reason = str(hold.get("reason") or "")
        sentence = REFUSALS.get(reason, "This call cannot be placed right now.")
        if hold.get("minRequired") is not None:
            sentence += f" A balance of at least {hold['minRequired']} dollars is required."
        return refuse(sentence, f"refused: {reason or 'not allowed'}")

    response = VoiceResponse()
    dial = Dial(
        time_limit=int(hold["maxSeconds"]),
        caller_id=caller_id or hold.get("callerId") or default_caller_id,
    )
    _dial_target(dial, target, status_url)
    response.append(dial)
    response.hangup()
    return VoiceAnswer(str(response), f"dial {hold['maxSeconds']}s")


class BadCallback(ValueError):
    """A status callback whose fields cannot be settled."""


async def settle_from_callback(db: Database, params: dict[str, str]) -> str:
    """Settle a terminal status; acknowledge the others. Returns the outcome."""
    call_sid = params.get("ParentCallSid") or params.get("CallSid") or ""
    status = params.get("CallStatus", "")
    if not re.fullmatch(r"CA[0-9a-fA-F]{32}", call_sid):
        raise BadCallback("CallSid is missing or malformed")
    if status == "completed":
        raw = params.get("CallDuration", params.get("DialCallDuration", "0")) or "0"
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
            raise BadCallback("CallDuration is not a whole number of seconds")
        seconds = int(raw)
    elif status in TERMINAL_UNANSWERED:
        seconds = 0
    else:
        return f"acknowledged: {status or 'no status'}"
    meta = json.dumps({"status": status, "leg_sid": params.get("CallSid")})
    try:
        result: dict[str, Any] = await db.call(
            "select billing.settle_call(%s, null, %s::integer, %s::jsonb)",
            (call_sid, seconds, meta),
        )
    except RpcError as exc:
        if exc.status == 404:
            return "no hold for this call yet; reconciliation settles it"
        raise
    return "duplicate" if result.get("duplicate") else f"settled {result.get('billedMinutes')} min"
