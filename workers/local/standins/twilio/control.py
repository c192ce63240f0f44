"""The control API of the Twilio stand-in: failures, recorded calls, inspection."""

from __future__ import annotations

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from workers.local.standins.twilio.common import Obj
from workers.local.standins.twilio.standin import TwilioStandin


def add_control_routes(app: FastAPI, state: TwilioStandin) -> None:
    """The `/_control/...` endpoints listed in `create_app` that only this stand-in has."""

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
