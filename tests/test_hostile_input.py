"""Hostile input at every entry point: each gets a clear answer and changes nothing.

Entry points: the worker's Stripe webhooks (`/stripe/webhook`, `/api/stripe/webhook`)
and Twilio webhooks (`/twilio/voice`, `/twilio/call-status`), the Edge Functions
(`top-up`, `buy-number`, `access-token`, served by the local router), and the
public RPCs called as a user the way PostgREST calls them.

Inputs: forged, stale and replayed signatures; other users' ids; SQL in string
fields; unicode and overlong strings; amounts of 0, -1, 1e308, NaN, "50",
0.001 and too many digits; huge JSON; wrong content types; bad tokens.

Expected: a 4xx; or, where the design says a webhook is acknowledged (Stripe:
malformed or foreign events are a 2xx "skipped"; Twilio voice: a TwiML refusal),
a 2xx that dials nothing. In every case the money tables are byte-for-byte
what they were (an md5 of each table's rows, in order).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from psycopg.rows import dict_row

from reliability.edge import DENO, JWT_SECRET, function_env, serve_functions
from tests.system import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    STRIPE_KEY,
    WEBHOOK_SECRET,
    System,
    running_system,
    stripe_event,
)
from workers.local.standins import twilio as twilio_standin
from workers.local.standins.signing import stripe_signature, twilio_signature

MONEY_TABLES = (
    "call_balance",
    "balance_transactions",
    "twilio_call_logs",
    "call_holds",
    "user_phone_numbers",
    "refill_requests",
    "stripe_events",
    "billing_alerts",
)
SQL = "'; drop table public.balance_transactions; --"
SQL_OR = "x' or '1'='1"
UNICODE = "\uff21\uff22\uff23\u202e\u0000é😀"  # fullwidth ABC, right-to-left mark, NUL
OVERLONG = "é" * 20_000
HUGE = 5 * 1024 * 1024


# -- the system under test ----------------------------------------------------------------


@dataclass
class Env:
    system: System
    functions_url: str | None
    starter: str  # has its free number, $0
    starter_bare: str  # no number, $0
    classic: str  # $0
    paid: str  # one top-up credited
    paid_event: dict[str, Any]

    @property
    def worker(self) -> str:
        return self.system.worker_url


def _twilio_factory() -> tuple[Any, Any]:
    config = twilio_standin.TwilioStandinConfig(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    standin = twilio_standin.TwilioStandin(config)
    return twilio_standin.create_app(standin), standin


@pytest.fixture(scope="module")
def functions(module_db: str, pooled_module_db: str) -> Iterator[tuple[System, str | None]]:
    with running_system(module_db, _twilio_factory, pooled_url=pooled_module_db) as system:
        if not DENO.exists():
            yield system, None
            return
        env = function_env(
            db_url=system.pooled_url,
            worker_url=system.worker_url,
            stripe_url=system.stripe_url,
            twilio_url=system.twilio_url or "",
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            stripe_key=STRIPE_KEY,
        )
        with serve_functions(env) as url:
            yield system, url


@pytest.fixture(scope="module")
def env(functions: tuple[System, str | None]) -> Env:
    system, functions_url = functions
    starter = system.new_user("starter")
    system.service(
        "select billing.confirm_number((billing.reserve_number(%s, '+14155550999') "
        "->> 'purchaseId')::uuid, %s, null)",
        (starter, "PN" + "f" * 32),
    )
    paid = system.new_user("starter")
    event = stripe_event(
        "checkout.session.completed",
        {
            "id": "cs_test_hostile",
            "object": "checkout.session",
            "amount_total": 1000,
            "currency": "usd",
            "customer": "cus_hostile",
            "payment_intent": "pi_hostile_" + uuid.uuid4().hex[:12],
            "payment_status": "paid",
            "status": "complete",
            "metadata": {"purpose": "topup", "user_id": paid},
        },
    )
    applied = system.post_stripe(event)
    assert applied.status_code == 200 and applied.json()["outcome"] == "applied", applied.text
    return Env(
        system=system,
        functions_url=functions_url,
        starter=starter,
        starter_bare=system.new_user("starter"),
        classic=system.new_user("classic"),
        paid=paid,
        paid_event=event,
    )


def snapshot(db_url: str) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        out = {}
        for table in MONEY_TABLES:
            row = conn.execute(
                f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
                f"from public.{table} as t"
            ).fetchone()
            assert row is not None
            out[table] = str(row[0])
        return out


# -- senders ------------------------------------------------------------------------------

Answer = tuple[int, str]


def stripe(
    body: bytes | dict[str, Any],
    *,
    secret: str | None = WEBHOOK_SECRET,
    header: str | bytes | None = None,
    timestamp: int | None = None,
    path: str = "/stripe/webhook",
    content_type: str = "application/json",
) -> Callable[[Env], Answer]:
    def send(env: Env) -> Answer:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = [(b"Content-Type", content_type.encode())]
        if header is not None:
            value = header if isinstance(header, bytes) else header.encode()
            headers.append((b"Stripe-Signature", value))
        elif secret is not None:
            headers.append(
                (b"Stripe-Signature", stripe_signature(payload, secret, timestamp).encode())
            )
        r = httpx.post(env.worker + path, content=payload, headers=headers, timeout=60)
        return r.status_code, r.text

    return send


def checkout(user: str | None = None, **changes: Any) -> Callable[[Env], dict[str, Any]]:
    """A paid top-up session for `user` (default: the paid user), with fields replaced."""

    def build(env: Env) -> dict[str, Any]:
        session: dict[str, Any] = {
            "id": "cs_test_" + uuid.uuid4().hex[:12],
            "object": "checkout.session",
            "amount_total": 500,
            "currency": "usd",
            "payment_intent": "pi_" + uuid.uuid4().hex[:16],
            "payment_status": "paid",
            "status": "complete",
            "metadata": {"purpose": "topup", "user_id": user or env.paid},
        }
        for key, value in changes.items():
            if key == "user_id":
                session["metadata"]["user_id"] = value
            else:
                session[key] = value
        return stripe_event("checkout.session.completed", session)

    return build


def signed_event(
    build: Callable[[Env], dict[str, Any]], path: str = "/stripe/webhook"
) -> Callable[[Env], Answer]:
    def send(env: Env) -> Answer:
        return stripe(build(env), path=path)(env)

    return send


def raw_signed(text: str) -> Callable[[Env], Answer]:
    """A validly signed body given as text (for what json.dumps cannot write)."""
    return stripe(text.encode())


def twilio(
    path: str,
    params: dict[str, str] | Callable[[Env], dict[str, str]],
    *,
    token: str | None = AUTH_TOKEN,
    signature: str | None = None,
    signed_url: str | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
) -> Callable[[Env], Answer]:
    def send(env: Env) -> Answer:
        data = params(env) if callable(params) else params
        url = env.worker + path
        headers: dict[str, str] = {}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        elif token is not None:
            headers["X-Twilio-Signature"] = twilio_signature(signed_url or url, data, token)
        if body is not None:
            headers["Content-Type"] = content_type or "application/octet-stream"
            r = httpx.post(url, content=body, headers=headers, timeout=60)
        else:
            if content_type:
                headers["Content-Type"] = content_type
            r = httpx.post(url, data=data, headers=headers, timeout=60)
        return r.status_code, r.text

    return send


def call_sid() -> str:
    return "CA" + uuid.uuid4().hex


def voice(env: Env, **changes: str) -> dict[str, str]:
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": call_sid(),
        "From": f"client:{env.starter}",
        "To": "+14155550123",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    params.update(changes)
    return params


def status_cb(env: Env, **changes: str) -> dict[str, str]:
    params = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": call_sid(),
        "ParentCallSid": call_sid(),
        "CallStatus": "completed",
        "CallDuration": "61",
    }
    params.update(changes)
    return params


def token_for(user: str, *, secret: str = JWT_SECRET, **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": user,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 600,
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def unsigned_token(user: str) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = _b64(
        json.dumps(
            {"sub": user, "role": "authenticated", "aud": "authenticated", "exp": 2**31}
        ).encode()
    )
    return f"{header}.{claims}."


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def function(
    name: str,
    body: Any = None,
    *,
    user: str = "starter",
    token: Callable[[Env], str | None] | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
    method: str = "POST",
) -> Callable[[Env], Answer]:
    def send(env: Env) -> Answer:
        if env.functions_url is None:
            pytest.skip("npm install has not been run (no Deno)")
        bearer = token(env) if token is not None else token_for(getattr(env, user))
        headers = {"Content-Type": content_type}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        r = httpx.request(
            method, f"{env.functions_url}/{name}", content=content, headers=headers, timeout=60
        )
        return r.status_code, r.text

    return send


# PostgREST's answer for an error raised by an RPC (its documented SQLSTATE table).
def postgrest_status(sqlstate: str, anonymous: bool) -> int:
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    exact = {
        "42501": 401 if anonymous else 403,
        "42883": 404,
        "42P01": 404,
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "P0001": 400,
    }
    if sqlstate in exact:
        return exact[sqlstate]
    prefix = {"08": 503, "09": 500, "0L": 403, "0P": 403, "28": 403, "53": 503, "P0": 500}
    if sqlstate[:2] in prefix:
        return prefix[sqlstate[:2]]
    if sqlstate[:2] in ("25", "2D", "38", "39", "3B", "40", "54", "55", "57", "58", "F0", "HV"):
        return 500
    if sqlstate.startswith("XX"):
        return 500
    return 400


def rpc(
    name: str,
    args: dict[str, Any] | None = None,
    *,
    user: str | None = "starter",
    claims: dict[str, Any] | None = None,
) -> Callable[[Env], Answer]:
    """Call `public.<name>` as PostgREST would for a request (a user's JWT, or anon)."""

    def send(env: Env) -> Answer:
        args_ = args or {}
        names = ", ".join(f"{k} => %({k})s" for k in args_)
        role = "anon" if user is None else "authenticated"
        jwt_claims = claims or (
            {"role": "anon"}
            if user is None
            else {"sub": getattr(env, user), "role": "authenticated", "aud": "authenticated"}
        )
        with psycopg.connect(env.system.db_url, row_factory=dict_row) as conn:
            try:
                with conn.transaction():
                    conn.execute("select set_config('role', %s, true)", (role,))
                    conn.execute(
                        "select set_config('request.jwt.claims', %s, true)",
                        (json.dumps(jwt_claims),),
                    )
                    row = conn.execute(f"select public.{name}({names}) as r", args_).fetchone()
            except psycopg.Error as exc:
                return postgrest_status(exc.sqlstate or "XX000", user is None), str(exc)
        return 200, json.dumps(row, default=str)

    return send


# -- expectations ---------------------------------------------------------------------------


def client_error(status: int, body: str) -> bool:
    return 400 <= status < 500


def acknowledged(status: int, body: str) -> bool:
    """A 2xx that did nothing: skipped, refused or a duplicate."""
    if status != 200:
        return False
    outcome = str(json.loads(body).get("outcome", ""))
    return outcome.startswith(("skipped", "refused", "duplicate"))


def stripe_rejected_or_skipped(status: int, body: str) -> bool:
    return client_error(status, body) or acknowledged(status, body)


def twiml_refusal(status: int, body: str) -> bool:
    return status == 200 and "<Hangup" in body and "<Dial" not in body


def status_refused(status: int, body: str) -> bool:
    """A callback that cannot be settled: 400, or acknowledged without billing."""
    if client_error(status, body):
        return True
    if status != 200:
        return False
    outcome = str(json.loads(body).get("outcome", ""))
    return outcome.startswith(("acknowledged", "refused", "no hold"))


@dataclass(frozen=True)
class Case:
    id: str
    send: Callable[[Env], Answer]
    expect: Callable[[int, str], bool]


def _stale(env: Env) -> Answer:
    return stripe(checkout()(env), timestamp=int(time.time()) - 3600)(env)


def _replayed_signature(env: Env) -> Answer:
    other = json.dumps(checkout()(env)).encode()
    header = stripe_signature(other, WEBHOOK_SECRET)
    return stripe(checkout()(env), header=header)(env)


def _replayed_event(env: Env) -> Answer:
    return stripe(env.paid_event)(env)


def _forged_for_victim(env: Env) -> Answer:
    return stripe(checkout(user=env.starter)(env), secret="whsec_forged")(env)


def _huge_event(env: Env) -> Answer:
    event = stripe_event("invoice.paid", {"id": "in_x", "lines": "x" * HUGE})
    return stripe(event)(env)


STRIPE_CASES = [
    Case("no signature", stripe(b'{"id": "evt_x"}', secret=None), client_error),
    Case(
        "forged signature", lambda e: stripe(checkout()(e), secret="whsec_forged")(e), client_error
    ),
    Case("forged, another user's id", _forged_for_victim, client_error),
    Case("stale timestamp", _stale, client_error),
    Case("signature of another body", _replayed_signature, client_error),
    Case("garbage signature header", stripe(b"{}", header="t=abc,v1=zz"), client_error),
    Case("SQL in the signature header", stripe(b"{}", header=SQL), client_error),
    Case("unicode signature header", stripe(b"{}", header="t=1,v1=é😀".encode()), client_error),
    Case("replayed event", _replayed_event, acknowledged),
    Case("malformed JSON", raw_signed('{"id": "evt_1", "type": '), acknowledged),
    Case("JSON array", raw_signed("[1, 2, 3]"), acknowledged),
    Case("JSON string", raw_signed('"evt"'), acknowledged),
    Case("deeply nested JSON", raw_signed("[" * 100_000 + "]" * 100_000), acknowledged),
    Case("not UTF-8", stripe(b"\xff\xfe\x00{"), stripe_rejected_or_skipped),
    Case("unknown event type", signed_event(lambda e: stripe_event("x.y", {})), acknowledged),
    Case(
        "SQL in the event type",
        signed_event(lambda e: stripe_event(SQL, {"id": "x"})),
        acknowledged,
    ),
    Case(
        "SQL in the event id",
        signed_event(lambda e: {**checkout(user=SQL)(e), "id": SQL}),
        stripe_rejected_or_skipped,
    ),
    Case("foreign metadata", signed_event(checkout(metadata={})), acknowledged),
    Case(
        "another integration's user_id",
        signed_event(checkout(user_id="cus_8f3a")),
        stripe_rejected_or_skipped,
    ),
    Case(
        "SQL in metadata.user_id", signed_event(checkout(user_id=SQL)), stripe_rejected_or_skipped
    ),
    Case(
        "unknown user id",
        signed_event(checkout(user_id=str(uuid.uuid4()))),
        stripe_rejected_or_skipped,
    ),
    Case("SQL in payment_intent", signed_event(checkout(payment_intent=SQL)), acknowledged),
    Case("unicode payment_intent", signed_event(checkout(payment_intent=UNICODE)), acknowledged),
    Case(
        "overlong payment_intent",
        signed_event(checkout(payment_intent="pi_" + "x" * 10_000)),
        acknowledged,
    ),
    Case("amount 0", signed_event(checkout(amount_total=0)), acknowledged),
    Case("amount -1", signed_event(checkout(amount_total=-1)), acknowledged),
    Case("amount 1e308", signed_event(checkout(amount_total=1e308)), acknowledged),
    Case("amount '50'", signed_event(checkout(amount_total="50")), acknowledged),
    Case("amount 0.001", signed_event(checkout(amount_total=0.001)), acknowledged),
    Case("amount true", signed_event(checkout(amount_total=True)), acknowledged),
    Case("amount over $10,000", signed_event(checkout(amount_total=1_000_001)), acknowledged),
    Case("amount of 30 digits", signed_event(checkout(amount_total=10**30)), acknowledged),
    Case(
        "amount NaN",
        lambda e: stripe(
            json.dumps(checkout(amount_total=0)(e)).replace(": 0,", ": NaN,", 1).encode()
        )(e),
        acknowledged,
    ),
    Case("payment not paid", signed_event(checkout(payment_status="unpaid")), acknowledged),
    Case(
        "data.object not an object",
        signed_event(
            lambda e: {**stripe_event("checkout.session.completed", {}), "data": {"object": SQL}}
        ),
        acknowledged,
    ),
    Case(
        "huge JSON, unsigned", stripe(b"[" + b"1," * (HUGE // 2) + b"1]", secret=None), client_error
    ),
    Case("huge JSON, signed", _huge_event, stripe_rejected_or_skipped),
    Case(
        "form-encoded, unsigned",
        stripe(b"id=evt_1&type=x", secret=None, content_type="application/x-www-form-urlencoded"),
        client_error,
    ),
    Case(
        "text/plain, unsigned",
        stripe(b"hello", secret=None, content_type="text/plain"),
        client_error,
    ),
    Case(
        "alias path, forged",
        lambda e: stripe(checkout()(e), secret="whsec_forged", path="/api/stripe/webhook")(e),
        client_error,
    ),
    Case(
        "alias path, amount of 30 digits",
        signed_event(checkout(amount_total=10**30), path="/api/stripe/webhook"),
        acknowledged,
    ),
]

TWILIO_CASES = [
    Case("voice: no signature", twilio("/twilio/voice", voice, token=None), client_error),
    Case("voice: forged signature", twilio("/twilio/voice", voice, token="forged"), client_error),
    Case(
        "voice: signature for another URL",
        twilio("/twilio/voice", voice, signed_url="https://evil.example/twilio/voice"),
        client_error,
    ),
    Case(
        "voice: forged, another user's id",
        twilio("/twilio/voice", lambda e: voice(e, From=f"client:{e.paid}"), token="forged"),
        client_error,
    ),
    Case(
        "voice: another account",
        twilio("/twilio/voice", lambda e: voice(e, AccountSid="AC" + "9" * 32)),
        client_error,
    ),
    Case(
        "voice: SQL in CallSid",
        twilio("/twilio/voice", lambda e: voice(e, CallSid=SQL)),
        twiml_refusal,
    ),
    Case(
        "voice: SQL in From",
        twilio("/twilio/voice", lambda e: voice(e, From="client:" + SQL)),
        twiml_refusal,
    ),
    Case(
        "voice: SQL in To",
        twilio("/twilio/voice", lambda e: voice(e, From="+14155550100", To=SQL_OR)),
        twiml_refusal,
    ),
    Case(
        "voice: unicode To",
        twilio("/twilio/voice", lambda e: voice(e, To="+١٤١٥٥٥٥٠١٢٣")),
        twiml_refusal,
    ),
    Case(
        "voice: overlong From",
        twilio("/twilio/voice", lambda e: voice(e, From="client:" + OVERLONG)),
        twiml_refusal,
    ),
    Case(
        "voice: unknown client",
        twilio("/twilio/voice", lambda e: voice(e, From=f"client:{uuid.uuid4()}")),
        twiml_refusal,
    ),
    Case(
        "voice: no number, no money",
        twilio("/twilio/voice", lambda e: voice(e, From=f"client:{e.starter_bare}")),
        twiml_refusal,
    ),
    Case(
        "voice: classic at $0",
        twilio("/twilio/voice", lambda e: voice(e, From=f"client:{e.classic}")),
        twiml_refusal,
    ),
    Case(
        "voice: huge body, unsigned",
        twilio(
            "/twilio/voice",
            {},
            token=None,
            body=b"a=" + b"x" * HUGE,
            content_type="application/x-www-form-urlencoded",
        ),
        client_error,
    ),
    Case(
        "voice: JSON body, unsigned",
        twilio(
            "/twilio/voice",
            {},
            token=None,
            body=b'{"CallSid": "x"}',
            content_type="application/json",
        ),
        client_error,
    ),
    Case(
        "status: no signature", twilio("/twilio/call-status", status_cb, token=None), client_error
    ),
    Case(
        "status: forged signature",
        twilio("/twilio/call-status", status_cb, token="forged"),
        client_error,
    ),
    Case(
        "status: signature for another URL",
        twilio("/twilio/call-status", status_cb, signed_url="http://127.0.0.1/twilio/voice"),
        client_error,
    ),
    Case(
        "status: SQL in CallSid",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallSid=SQL, ParentCallSid=SQL)),
        status_refused,
    ),
    Case(
        "status: unicode CallSid",
        twilio("/twilio/call-status", lambda e: status_cb(e, ParentCallSid="CA" + "é" * 32)),
        status_refused,
    ),
    Case(
        "status: duration -1",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallDuration="-1")),
        status_refused,
    ),
    Case(
        "status: duration 1e308",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallDuration="1e308")),
        status_refused,
    ),
    Case(
        "status: duration NaN",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallDuration="NaN")),
        status_refused,
    ),
    Case(
        "status: duration 0.001",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallDuration="0.001")),
        status_refused,
    ),
    Case(
        "status: duration of 30 digits",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallDuration="9" * 30)),
        status_refused,
    ),
    Case(
        "status: duration in superscript digits",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallDuration="²")),
        status_refused,
    ),
    Case(
        "status: duration in Arabic digits",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallDuration="٦١")),
        status_refused,
    ),
    Case(
        "status: SQL in CallStatus",
        twilio("/twilio/call-status", lambda e: status_cb(e, CallStatus=SQL)),
        status_refused,
    ),
    Case("status: no hold for the call", twilio("/twilio/call-status", status_cb), status_refused),
]

FUNCTION_CASES = [
    Case(
        "top-up: no token", function("top-up", {"amount": 10}, token=lambda e: None), client_error
    ),
    Case(
        "top-up: forged token",
        function("top-up", {"amount": 10}, token=lambda e: token_for(e.paid, secret="x" * 40)),
        client_error,
    ),
    Case(
        "top-up: alg none",
        function("top-up", {"amount": 10}, token=lambda e: unsigned_token(e.paid)),
        client_error,
    ),
    Case(
        "top-up: expired token",
        function("top-up", {"amount": 10}, token=lambda e: token_for(e.paid, exp=1)),
        client_error,
    ),
    Case(
        "top-up: service_role token",
        function("top-up", {"amount": 10}, token=lambda e: token_for(e.paid, role="service_role")),
        client_error,
    ),
    Case(
        "top-up: SQL as the user id",
        function("top-up", {"amount": 10}, token=lambda e: token_for(SQL)),
        client_error,
    ),
    Case(
        "top-up: another user's id in the body",
        function("top-up", {"amount": 10, "userId": "victim"}),
        client_error,
    ),
    Case("top-up: amount 0", function("top-up", {"amount": 0}), client_error),
    Case("top-up: amount -1", function("top-up", {"amount": -1}), client_error),
    Case("top-up: amount 1e308", function("top-up", {"amount": 1e308}), client_error),
    Case("top-up: amount NaN", function("top-up", raw=b'{"amount": NaN}'), client_error),
    Case("top-up: amount '50'", function("top-up", {"amount": "50"}), client_error),
    Case("top-up: amount 0.001", function("top-up", {"amount": 0.001}), client_error),
    Case(
        "top-up: amount 4.99 (under the minimum)",
        function("top-up", {"amount": 4.99}),
        client_error,
    ),
    Case(
        "top-up: amount 7 on classic",
        function("top-up", {"amount": 7}, user="classic"),
        client_error,
    ),
    Case("top-up: SQL in priceId", function("top-up", {"priceId": SQL}), client_error),
    Case("top-up: unicode priceId", function("top-up", {"priceId": UNICODE}), client_error),
    Case(
        "top-up: returnUrl elsewhere",
        function("top-up", {"amount": 10, "returnUrl": "https://evil.example/"}),
        client_error,
    ),
    Case(
        "top-up: overlong returnUrl",
        function("top-up", {"amount": 10, "returnUrl": "https://app.example.test/" + "a" * 20_000}),
        client_error,
    ),
    Case(
        "top-up: huge JSON",
        function("top-up", raw=b'{"amount": 10, "pad": "' + b"x" * HUGE + b'"}'),
        client_error,
    ),
    Case("top-up: JSON array", function("top-up", [10]), client_error),
    Case(
        "top-up: text/plain",
        function("top-up", {"amount": 10}, content_type="text/plain"),
        client_error,
    ),
    Case(
        "top-up: form-encoded",
        function("top-up", raw=b"amount=10", content_type="application/x-www-form-urlencoded"),
        client_error,
    ),
    Case("top-up: GET", function("top-up", method="GET"), client_error),
    Case(
        "buy-number: forged token",
        function("buy-number", {}, token=lambda e: token_for(e.starter, secret="y" * 40)),
        client_error,
    ),
    Case(
        "buy-number: SQL in phoneNumber", function("buy-number", {"phoneNumber": SQL}), client_error
    ),
    Case("buy-number: SQL in areaCode", function("buy-number", {"areaCode": SQL_OR}), client_error),
    Case("buy-number: unicode areaCode", function("buy-number", {"areaCode": "٤١٥"}), client_error),
    Case("buy-number: SQL in country", function("buy-number", {"country": SQL}), client_error),
    Case(
        "buy-number: overlong phoneNumber",
        function("buy-number", {"phoneNumber": "+1" + "5" * 10_000}),
        client_error,
    ),
    Case(
        "buy-number: another user's id",
        function("buy-number", {"areaCode": "415", "userId": "victim"}),
        client_error,
    ),
    Case(
        "buy-number: second number at $0", function("buy-number", {"areaCode": "415"}), client_error
    ),
    Case(
        "buy-number: classic plan",
        function("buy-number", {"areaCode": "415"}, user="classic"),
        client_error,
    ),
    Case(
        "buy-number: huge JSON",
        function("buy-number", raw=b'{"areaCode": "' + b"4" * HUGE + b'"}'),
        client_error,
    ),
    Case(
        "buy-number: text/plain",
        function("buy-number", {"areaCode": "415"}, content_type="text/plain"),
        client_error,
    ),
    Case(
        "access-token: no token",
        function("access-token", token=lambda e: None, method="GET"),
        client_error,
    ),
    Case(
        "access-token: alg none",
        function("access-token", token=lambda e: unsigned_token(e.starter), method="GET"),
        client_error,
    ),
    Case(
        "access-token: no number",
        function("access-token", user="starter_bare", method="GET"),
        client_error,
    ),
    Case(
        "access-token: classic at $0",
        function("access-token", user="classic", method="GET"),
        client_error,
    ),
    Case("access-token: DELETE", function("access-token", method="DELETE"), client_error),
]

RPC_CASES = [
    Case("billing_me as anon", rpc("billing_me", user=None), client_error),
    Case(
        "billing_me without a sub",
        rpc("billing_me", claims={"role": "authenticated"}),
        client_error,
    ),
    Case(
        "billing_me with SQL as the sub",
        rpc("billing_me", claims={"role": "authenticated", "sub": SQL}),
        client_error,
    ),
    Case(
        "settings: enabled null",
        rpc("update_auto_refill_settings", {"p_enabled": None}),
        client_error,
    ),
    Case(
        "settings: amount 0",
        rpc("update_auto_refill_settings", {"p_enabled": False, "p_amount": 0}),
        client_error,
    ),
    Case(
        "settings: amount -1",
        rpc("update_auto_refill_settings", {"p_enabled": False, "p_amount": -1}),
        client_error,
    ),
    Case(
        "settings: amount 1e308",
        rpc("update_auto_refill_settings", {"p_enabled": False, "p_amount": 1e308}),
        client_error,
    ),
    Case(
        "settings: amount NaN",
        rpc("update_auto_refill_settings", {"p_enabled": False, "p_amount": float("nan")}),
        client_error,
    ),
    Case(
        "settings: amount '50' without a card",
        rpc("update_auto_refill_settings", {"p_enabled": True, "p_amount": "50"}),
        client_error,
    ),
    Case(
        "settings: amount 0.001",
        rpc("update_auto_refill_settings", {"p_enabled": False, "p_amount": 0.001}),
        client_error,
    ),
    Case(
        "settings: SQL as the amount",
        rpc("update_auto_refill_settings", {"p_enabled": False, "p_amount": SQL}),
        client_error,
    ),
    Case(
        "settings: threshold 0.001",
        rpc("update_auto_refill_settings", {"p_enabled": False, "p_threshold": 0.001}),
        client_error,
    ),
    Case(
        "settings: threshold 1e308",
        rpc("update_auto_refill_settings", {"p_enabled": False, "p_threshold": 1e308}),
        client_error,
    ),
    Case(
        "settings: as anon",
        rpc("update_auto_refill_settings", {"p_enabled": False}, user=None),
        client_error,
    ),
    Case("prepare_topup: 0", rpc("prepare_topup", {"p_amount": 0}), client_error),
    Case("prepare_topup: -1", rpc("prepare_topup", {"p_amount": -1}), client_error),
    Case("prepare_topup: 1e308", rpc("prepare_topup", {"p_amount": 1e308}), client_error),
    Case("prepare_topup: NaN", rpc("prepare_topup", {"p_amount": float("nan")}), client_error),
    Case("prepare_topup: Infinity", rpc("prepare_topup", {"p_amount": "Infinity"}), client_error),
    Case("prepare_topup: 0.001", rpc("prepare_topup", {"p_amount": 0.001}), client_error),
    Case("prepare_topup: SQL", rpc("prepare_topup", {"p_amount": SQL}), client_error),
    Case(
        "prepare_topup: unicode",
        rpc("prepare_topup", {"p_amount": UNICODE.replace("\u0000", "")}),
        client_error,
    ),
    Case(
        "prepare_topup: 5,000 digits", rpc("prepare_topup", {"p_amount": "9" * 5000}), client_error
    ),
    Case(
        "prepare_topup: 7 on classic",
        rpc("prepare_topup", {"p_amount": 7}, user="classic"),
        client_error,
    ),
    Case("prepare_topup: as anon", rpc("prepare_topup", {"p_amount": 10}, user=None), client_error),
    Case("check_can_call: as anon", rpc("check_can_call", user=None), client_error),
    Case("check_can_call: no number", rpc("check_can_call", user="starter_bare"), client_error),
    Case("check_can_call: classic at $0", rpc("check_can_call", user="classic"), client_error),
]

CASES = STRIPE_CASES + TWILIO_CASES + FUNCTION_CASES + RPC_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_and_changes_nothing(env: Env, case: Case) -> None:
    before = snapshot(env.system.db_url)
    status, body = case.send(env)
    after = snapshot(env.system.db_url)
    assert case.expect(status, body), f"{case.id}: HTTP {status} {body[:300]}"
    changed = [t for t in MONEY_TABLES if before[t] != after[t]]
    assert not changed, f"{case.id}: HTTP {status} changed {changed}"
