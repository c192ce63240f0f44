"""The worker service: Stripe and Twilio webhooks, health and readiness.

Each route verifies the provider's signature on the exact bytes it received,
calls one SQL function as service_role, and answers only after the commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.service import stripe_events, twilio_calls
from workers.service.db import Database, RpcError, migrations_current
from workers.service.logs import log
from workers.service.settings import Settings

TWIML = "application/xml"


class Ack(BaseModel):
    received: bool
    outcome: str


class ErrorBody(BaseModel):
    error: str
    details: str | None = None


class Health(BaseModel):
    status: str


STRIPE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Ack, "description": "Verified; applied, a duplicate, or skipped with a reason"},
    400: {"model": ErrorBody, "description": "Missing or invalid Stripe-Signature"},
    503: {"model": ErrorBody, "description": "Database unavailable; Stripe retries"},
}
TWILIO_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "Missing or invalid X-Twilio-Signature"},
    503: {
        "model": ErrorBody,
        "description": "Database unavailable. Twilio does not redeliver it (it retries only a "
        "failed connection, once, within 15 s); reconciliation settles the call within minutes",
    },
}


class AccessLog:
    """One JSON log line per request, with the fields the route put in `request.state.log`.

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware would run every request
    through an extra task group and memory streams.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = fields
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            log(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
                **fields,
            )


MAX_BODY_BYTES = 1024 * 1024  # Stripe and Twilio send a few kilobytes


class BodyLimit:
    """Refuse bodies over MAX_BODY_BYTES with 413 before reading them into memory."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY_BYTES:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await self._refuse(send)

    @staticmethod
    async def _refuse(send: Send) -> None:
        body = json.dumps({"error": "payload too large", "details": "at most 1 MiB"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """A chunked body grew past the limit."""


def _error(status: int, error: str, details: str | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "details": details}, status_code=status)


def _ack(outcome: str) -> JSONResponse:
    """The 200 answer (the `Ack` model), built directly: the webhooks are the hot path."""
    return JSONResponse({"received": True, "outcome": outcome})


def create_app(settings: Settings, db: Database | None = None) -> FastAPI:
    database = db or Database(settings.database_url, max_size=settings.db_pool_size)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await database.open()
        try:
            yield
        finally:
            await database.close()

    app = FastAPI(
        title="Call Balance workers",
        version="0.1.0",
        description="Stripe and Twilio webhooks of the Call Balance prepaid wallet.",
        lifespan=lifespan,
    )
    app.state.db = database

    app.add_middleware(BodyLimit)
    app.add_middleware(AccessLog)

    @app.get("/healthz", response_model=Health, summary="The process is up")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        summary="The database is reachable and its migrations are current",
        responses={503: {"model": ErrorBody}},
    )
    async def readyz() -> Any:
        ok, why = await database.ready()
        if not ok:
            return _error(503, "not ready", why)
        current = await asyncio.to_thread(migrations_current, settings.database_url)
        if not current:
            return _error(503, "not ready", "migrations pending")
        return Health(status="ready")

    async def stripe_webhook(request: Request) -> Any:
        payload = await request.body()
        try:
            stripe_events.verify(
                payload, request.headers.get("stripe-signature"), settings.stripe_webhook_secret
            )
        except stripe_events.BadSignature as exc:
            request.state.log.update(outcome="rejected", reason=str(exc))
            return _error(400, "invalid signature", str(exc))
        try:
            text = payload.decode("utf-8")
            event = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError):
            request.state.log.update(outcome="skipped", reason="malformed JSON")
            return _ack("skipped: malformed JSON")
        fields = (
            {"event_id": event.get("id"), "event_type": event.get("type")}
            if isinstance(event, dict)
            else {}
        )
        try:
            result = await stripe_events.apply_event(database, text, settings.stripe_is_live)
        except RpcError as exc:
            # A permanent refusal (bad amount, unknown user): retrying cannot help.
            request.state.log.update(fields, outcome="refused", reason=exc.message)
            return _ack(f"refused: {exc.message}")
        except (psycopg.Error, OSError) as exc:
            request.state.log.update(fields, outcome="error", reason=type(exc).__name__)
            return _error(503, "database unavailable", "retry later")
        outcome = stripe_events.describe(result)
        request.state.log.update(fields, outcome=outcome)
        if result.get("outcome") == "refused":
            # Another mode or API version: never credited, and the operator is alerted.
            log("stripe event refused", logging.WARNING, **fields, reason=result.get("reason"))
        return _ack(outcome)

    for path in ("/stripe/webhook", "/api/stripe/webhook"):
        app.add_api_route(
            path,
            stripe_webhook,
            methods=["POST"],
            response_model=Ack,
            responses=STRIPE_RESPONSES,
            summary="Stripe webhook endpoint (signed events)",
            operation_id="stripe_webhook" + ("_api" if path.startswith("/api") else ""),
            openapi_extra={"requestBody": _raw_body("application/json", "A Stripe event")},
        )

    async def twilio_params(request: Request) -> dict[str, str] | JSONResponse:
        body = (await request.body()).decode("utf-8", errors="replace")
        params = dict(parse_qsl(body, keep_blank_values=True))
        url = settings.public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("x-twilio-signature")
        if not twilio_calls.signature_valid(settings.twilio_auth_token, url, params, signature):
            request.state.log.update(outcome="rejected", reason="bad Twilio signature")
            return _error(403, "invalid signature", "X-Twilio-Signature does not match")
        if params.get("AccountSid") not in (None, settings.twilio_account_sid):
            request.state.log.update(outcome="rejected", reason="another account")
            return _error(403, "wrong account", "AccountSid is not this system's")
        return params

    @app.post(
        "/twilio/voice",
        summary="Twilio voice webhook: authorize the call and answer TwiML",
        responses={200: {"content": {TWIML: {}}, "description": "TwiML"}, **TWILIO_RESPONSES},
        openapi_extra={"requestBody": _raw_body("application/x-www-form-urlencoded", "Twilio")},
    )
    async def twilio_voice(request: Request) -> Response:
        params = await twilio_params(request)
        if isinstance(params, JSONResponse):
            return params
        try:
            answer = await twilio_calls.answer_voice(
                database,
                params,
                status_url=settings.public_url + "/twilio/call-status",
                inbound_dial=settings.twilio_inbound_dial,
                default_caller_id=settings.twilio_caller_id,
            )
        except (psycopg.Error, OSError) as exc:
            # Twilio does not ask again: it plays its error message (or the fallback URL).
            request.state.log.update(outcome="error", reason=type(exc).__name__)
            return _error(503, "database unavailable", "the call cannot be placed now")
        request.state.log.update(call_sid=params.get("CallSid"), outcome=answer.outcome)
        return Response(answer.twiml, media_type=TWIML)

    @app.post(
        "/twilio/call-status",
        response_model=Ack,
        summary="Twilio status callback: settle the call once",
        responses={400: {"model": ErrorBody}, **TWILIO_RESPONSES},
        openapi_extra={"requestBody": _raw_body("application/x-www-form-urlencoded", "Twilio")},
    )
    async def twilio_status(request: Request) -> Any:
        params = await twilio_params(request)
        if isinstance(params, JSONResponse):
            return params
        try:
            outcome = await twilio_calls.apply_status(database, params)
        except RpcError as exc:
            request.state.log.update(outcome="refused", reason=exc.message)
            if exc.status == 400:
                return _error(400, "invalid callback", exc.message)
            return _ack(f"refused: {exc.message}")
        except (psycopg.Error, OSError) as exc:
            # Twilio logs this answer and never sends the callback again: the
            # reconciliation job settles the call from the Calls API.
            request.state.log.update(outcome="error", reason=type(exc).__name__)
            return _error(503, "database unavailable", "settled later by reconciliation")
        request.state.log.update(call_sid=params.get("CallSid"), outcome=outcome)
        return _ack(outcome)

    return app


def _raw_body(media_type: str, what: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {media_type: {"schema": {"type": "string", "description": what}}},
    }


def app_from_env() -> FastAPI:
    """The app for `uvicorn --factory` (several worker processes read the same environment)."""
    from workers.service.logs import setup_logging
    from workers.service.settings import load_settings

    setup_logging()
    return create_app(load_settings())


def serve(host: str, port: int, workers: int) -> int:
    """`callbalance serve`: the app under uvicorn, after the settings are checked."""
    import uvicorn

    from workers.service.settings import load_settings

    load_settings()  # fail fast, naming every missing variable
    uvicorn.run(
        "workers.service.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
    )
    return 0
