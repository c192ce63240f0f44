"""Twilio voice and status webhooks: one SQL call per event.

`/twilio/voice` asks `billing.authorize_voice` who pays, whether the call may
be placed and for how long (it holds the funds), and answers TwiML:
`<Dial timeLimit=…>` to the target it names, or its sentence and `<Hangup/>`
when refused. `/twilio/call-status` hands the callback's fields to
`billing.apply_call_status`, which decides which leg it is and what to bill.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Dial, VoiceResponse

from workers.service.db import Database, RpcError


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


def as_json(params: dict[str, str]) -> str:
    """The form fields as a JSON object (Postgres text cannot hold NUL)."""
    return json.dumps(
        {k.replace("\x00", "\ufffd"): v.replace("\x00", "\ufffd") for k, v in params.items()}
    )


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


async def answer_voice(
    db: Database,
    params: dict[str, str],
    *,
    status_url: str,
    inbound_dial: str | None,
    default_caller_id: str | None,
) -> VoiceAnswer:
    try:
        decision: dict[str, Any] = await db.call(
            "select billing.authorize_voice(%s::jsonb, %s)", (as_json(params), inbound_dial)
        )
    except RpcError as exc:
        return refuse("This call cannot be placed.", f"refused: {exc.message}")
    if not decision.get("allowed"):
        sentence = str(decision.get("say") or "This call cannot be placed right now.")
        return refuse(sentence, f"refused: {decision.get('reason') or 'not allowed'}")

    response = VoiceResponse()
    dial = Dial(
        time_limit=int(decision["maxSeconds"]),
        caller_id=decision.get("callerId") or default_caller_id,
    )
    _dial_target(dial, str(decision["target"]), status_url)
    response.append(dial)
    response.hangup()
    return VoiceAnswer(str(response), f"dial {decision['maxSeconds']}s")


async def apply_status(db: Database, params: dict[str, str]) -> str:
    """Hand a status callback to SQL; returns the outcome. PT400 raises RpcError."""
    result: dict[str, Any] = await db.call(
        "select billing.apply_call_status(%s::jsonb)", (as_json(params),)
    )
    outcome = str(result.get("outcome"))
    if outcome == "settled":
        return f"settled {result.get('billedMinutes')} min"
    if outcome == "no_hold":
        return "no hold for this call yet; reconciliation settles it"
    return outcome
