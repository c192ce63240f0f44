"""The Twilio stand-in as an ASGI app: the 2010-04-01 REST API and `/_control/...`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from workers.local.standins.serving import request_pairs, standin_app
from workers.local.standins.twilio.common import (
    API_VERSION,
    Obj,
    TwilioError,
    TwilioStandinConfig,
)
from workers.local.standins.twilio.control import add_control_routes
from workers.local.standins.twilio.standin import TwilioStandin


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
    app = standin_app("Twilio stand-in", state)

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
            params = dict(await request_pairs(request))
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

    add_control_routes(app, state)
    return app
