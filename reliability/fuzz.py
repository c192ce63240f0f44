"""Schemathesis against the worker's OpenAPI and the Edge Functions' description.

    .venv/bin/python -m reliability.fuzz --examples 500      # against `callbalance up`

The worker's OpenAPI (FastAPI's `/openapi.json`) describes its webhook bodies
as raw strings, because the handlers verify signatures on the exact bytes.
To reach past the signature check, the request bodies are described here as
what Stripe and Twilio send (events with any JSON in their money fields,
Twilio's form parameters), and most generated requests are signed with the
system's real secrets, as the providers would; the rest go unsigned or forged.
The Edge Functions are described in `edge_functions.openapi.yaml`; requests
carry a valid user's JWT, some a forged one.

Each operation gets positive and negative examples. A finding is:
- any 5xx (an unhandled exception included) or an undocumented status;
- a rejected request (4xx, or a 2xx that skipped, refused, deduplicated or
  refused a call) that changed any money table.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import psycopg
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from workers.local.standins.signing import stripe_signature, twilio_signature

EDGE_SPEC = Path(__file__).with_name("edge_functions.openapi.yaml")
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
STRIPE_TYPES = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "customer.subscription.deleted",
    "invoice.paid",
]
CALL_STATUSES = ["completed", "busy", "no-answer", "failed", "canceled", "ringing", "in-progress"]


@dataclass
class Target:
    """How to reach the system under test, and whom to act as."""

    db_url: str
    worker_url: str
    public_url: str
    functions_url: str | None
    webhook_secret: str
    twilio_token: str
    account_sid: str
    jwt_secret: str
    users: list[str]
    caller: str  # the user whose JWT the Edge Function requests carry


@dataclass
class Finding:
    operation: str
    message: str
    request: str


@dataclass
class Tally:
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def snapshot(db_url: str) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        out = {}
        for table in MONEY_TABLES:
            row = conn.execute(
                f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
                f"from public.{table} as t"
            ).fetchone()
            out[table] = str(row[0]) if row else ""
        return out


# -- the schemas ------------------------------------------------------------------------


ANY_SCALAR: dict[str, Any] = {
    "anyOf": [
        {"type": "integer"},
        {"type": "number"},
        {"type": "string"},
        {"type": "boolean"},
        {"type": "null"},
    ]
}


def _id(prefix: str, known: list[str] | None = None) -> dict[str, Any]:
    choices: list[dict[str, Any]] = [
        {"type": "string", "pattern": f"^{prefix}[A-Za-z0-9]{{8,24}}$"}
    ]
    if known:
        choices.append({"enum": known})
    choices.append({"type": "string"})
    return {"anyOf": choices}


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
        "additionalProperties": False,
    }


def stripe_event_schema(users: list[str]) -> dict[str, Any]:
    """Stripe events as they could arrive: Stripe's shapes, any scalar where money is."""
    metadata = _closed(
        {
            "purpose": {"enum": ["topup", "auto_refill", "other"]},
            "user_id": {
                "anyOf": [{"enum": users}, {"type": "string", "format": "uuid"}, {"type": "string"}]
            },
            "refill_request_id": {
                "anyOf": [{"type": "string", "format": "uuid"}, {"type": "string"}]
            },
        },
        required=["purpose", "user_id"],
    )
    obj = _closed(
        {
            "id": _id("(cs_|pi_|ch_|dp_)"),
            "amount_total": ANY_SCALAR,
            "amount": ANY_SCALAR,
            "amount_received": ANY_SCALAR,
            "amount_refunded": ANY_SCALAR,
            "payment_intent": _id("pi_"),
            "payment_status": {"anyOf": [{"enum": ["paid", "unpaid"]}, ANY_SCALAR]},
            "status": {"anyOf": [{"enum": ["won", "lost", "succeeded"]}, ANY_SCALAR]},
            "customer": {"anyOf": [_id("cus_"), {"type": "null"}]},
            "payment_method": {"anyOf": [_id("pm_"), {"type": "null"}]},
            "setup_future_usage": {"enum": ["off_session", None]},
            "metadata": metadata,
        },
        required=["id", "metadata", "payment_intent", "payment_status", "amount_total"],
    )
    return _closed(
        {
            "id": _id("evt_"),
            "object": {"enum": ["event"]},
            "type": {"enum": STRIPE_TYPES},
            "data": _closed({"object": obj}),
        },
        required=["id", "type", "data"],
    )


def twilio_form_schema(users: list[str], account_sid: str) -> dict[str, Any]:
    sid = {"anyOf": [{"type": "string", "pattern": "^CA[0-9a-f]{32}$"}, {"type": "string"}]}
    clients = [f"client:{u}" for u in users]
    return {
        "type": "object",
        "properties": {
            "AccountSid": {"anyOf": [{"enum": [account_sid]}, {"type": "string"}]},
            "CallSid": sid,
            "ParentCallSid": sid,
            "From": {
                "anyOf": [
                    {"enum": clients},
                    {"type": "string", "pattern": "^\\+1[2-9][0-9]{9}$"},
                    {"type": "string"},
                ]
            },
            "To": {
                "anyOf": [{"type": "string", "pattern": "^\\+1[2-9][0-9]{9}$"}, {"type": "string"}]
            },
            "CallStatus": {"anyOf": [{"enum": CALL_STATUSES}, {"type": "string"}]},
            "CallDuration": {
                "anyOf": [{"type": "string", "pattern": "^[0-9]{1,6}$"}, {"type": "string"}]
            },
            "Direction": {"type": "string"},
        },
    }


def worker_schema(target: Target) -> Any:
    """The worker's own OpenAPI, with the request bodies described as the providers send them."""
    raw: dict[str, Any] = httpx.get(target.worker_url + "/openapi.json", timeout=30).json()
    raw = copy.deepcopy(raw)
    for path, item in raw["paths"].items():
        post = item.get("post")
        if post is None or "requestBody" not in post:
            continue
        content = post["requestBody"]["content"]
        if path.endswith("/stripe/webhook"):
            content["application/json"]["schema"] = stripe_event_schema(target.users)
        elif path.startswith("/twilio/"):
            form = "application/x-www-form-urlencoded"
            content[form]["schema"] = twilio_form_schema(target.users, target.account_sid)
    raw["paths"] = {
        p: v for p, v in raw["paths"].items() if p.startswith(("/stripe", "/api/stripe", "/twilio"))
    }
    return schemathesis.openapi.from_dict(raw)


def edge_schema() -> Any:
    return schemathesis.openapi.from_path(str(EDGE_SPEC))


# -- sending ----------------------------------------------------------------------------


def _json_bytes(body: Any) -> bytes:
    """The body as sent: bytes as they are, anything else as JSON."""
    if isinstance(body, bytes):
        return body
    return json.dumps(body, allow_nan=True, default=str).encode()


def _roll(payload: bytes) -> int:
    return hashlib.sha256(payload).digest()[0] % 10


def _documented(case: Any) -> set[str]:
    return {str(code) for code in case.operation.definition.raw.get("responses", {})}


def _rejected(path: str, status: int, text: str) -> bool:
    """A request the system turned down, which must therefore have written nothing."""
    if status >= 400:
        return True
    if path.startswith("/twilio/voice"):
        return "<Dial" not in text
    if path.startswith(("/stripe", "/api/stripe", "/twilio/call-status")):
        try:
            outcome = str(json.loads(text).get("outcome", ""))
        except (ValueError, AttributeError):
            return True
        return outcome.startswith(("skipped", "refused", "duplicate", "acknowledged", "no hold"))
    return False


def send_worker(target: Target, case: Any) -> tuple[int, str, str]:
    path = case.operation.path
    url = target.worker_url + path
    body = case.body
    if path.endswith("/stripe/webhook"):
        payload = _json_bytes(body)
        headers = {"Content-Type": "application/json"}
        roll = _roll(payload)
        if roll > 0:
            secret = target.webhook_secret if roll > 1 else "whsec_forged"
            headers["Stripe-Signature"] = stripe_signature(payload, secret)
        response = httpx.post(url, content=payload, headers=headers, timeout=60)
        return response.status_code, response.text, payload[:300].decode(errors="replace")
    params = (
        {str(k): v if isinstance(v, str) else _json_bytes(v).decode() for k, v in body.items()}
        if isinstance(body, dict)
        else {}
    )
    if isinstance(body, dict):
        payload = urlencode(params).encode()
    else:
        payload = body if isinstance(body, bytes) else _json_bytes(body)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    roll = _roll(payload)
    if roll > 0 and isinstance(body, dict):
        token = target.twilio_token if roll > 1 else "forged"
        headers["X-Twilio-Signature"] = twilio_signature(target.public_url + path, params, token)
    response = httpx.post(url, content=payload, headers=headers, timeout=60)
    return response.status_code, response.text, payload[:300].decode(errors="replace")


def user_token(target: Target, user: str, secret: str | None = None) -> str:
    now = int(time.time())
    claims = {"sub": user, "role": "authenticated", "aud": "authenticated", "iat": now}
    claims["exp"] = now + 3600
    return jwt.encode(claims, secret or target.jwt_secret, algorithm="HS256")


def send_edge(target: Target, case: Any) -> tuple[int, str, str]:
    assert target.functions_url is not None
    url = target.functions_url + case.operation.path
    has_body = case.body is not None and type(case.body).__name__ != "NotSet"
    payload = _json_bytes(case.body) if has_body else b""
    roll = _roll(payload + case.operation.path.encode())
    token = user_token(target, target.caller, None if roll > 0 else "x" * 40)
    headers = {"Authorization": f"Bearer {token}"}
    if has_body:
        headers["Content-Type"] = "application/json"
    response = httpx.request(
        case.operation.method.upper(), url, content=payload, headers=headers, timeout=60
    )
    return response.status_code, response.text, payload[:300].decode(errors="replace")


Sender = Callable[[Target, Any], tuple[int, str, str]]


def explicit_bodies(path: str) -> list[Any]:
    """Shapes every run sends first: bodies a provider could sign that once broke a handler."""
    if path.endswith("/stripe/webhook"):
        return [
            0,
            [],
            "evt_1",
            {"id": "evt_explicit", "type": "checkout.session.completed", "data": []},
        ]
    if path == "/twilio/call-status":
        sid = "CA" + "0" * 32
        return [{"CallSid": sid, "CallStatus": "completed", "CallDuration": d} for d in ("²", "-0")]
    return []


def check_case(target: Target, case: Any, send: Sender, tally: Tally) -> None:
    label = case.operation.label
    before = snapshot(target.db_url)
    try:
        status, text, request = send(target, case)
    except httpx.HTTPError as exc:
        tally.findings.append(Finding(label, f"no answer: {exc!r}", repr(case.body)[:300]))
        return
    after = snapshot(target.db_url)
    tally.requests += 1
    tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
    if status >= 500:
        tally.findings.append(Finding(label, f"HTTP {status}: {text[:200]}", request))
    elif str(status) not in _documented(case):
        tally.findings.append(Finding(label, f"undocumented HTTP {status}", request))
    changed = [t for t in MONEY_TABLES if before[t] != after[t]]
    if changed and _rejected(case.operation.path, status, text):
        tally.findings.append(
            Finding(label, f"rejected (HTTP {status}) but changed {changed}", request)
        )


def fuzz_operation(
    target: Target, operation: Any, send: Sender, examples: int, tally: Tally
) -> None:
    """Explicit, positive and negative examples for one operation; findings go to `tally`."""
    for body in explicit_bodies(operation.path):
        check_case(target, operation.Case(body=body), send, tally)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            check_case(target, case, send, tally)

        run()


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def render(tally: Tally, limit: int = 30) -> str:
    lines = [
        f"requests: {tally.requests}, statuses: {dict(sorted(tally.statuses.items()))}",
        f"findings: {len(tally.findings)}",
    ]
    seen: set[tuple[str, str]] = set()
    for finding in tally.findings:
        key = (finding.operation, finding.message[:60])
        if key in seen:
            continue
        seen.add(key)
        lines.append(
            f"  ! {finding.operation}: {finding.message}\n      request: {finding.request}"
        )
        if len(seen) >= limit:
            break
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from reliability.running import RunningUp
    from workers.ops.users import create_user

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="per operation and mode")
    args = parser.parse_args(argv)
    up = RunningUp(Path(tempfile.mkdtemp(prefix="callbalance-fuzz-")) / "state")
    state = up.start()
    secret = state["jwt_secret"]
    try:
        users = [
            create_user(state["database_url"], f"fuzz-{uuid.uuid4().hex[:8]}@x.test", plan, secret)[
                "id"
            ]
            for plan in ("starter", "starter", "classic")
        ]
        target = Target(
            db_url=state["database_url"],
            worker_url=state["worker_url"],
            public_url=state["public_url"],
            functions_url=state["functions_url"],
            webhook_secret=state["stripe_webhook_secret"],
            twilio_token=state["twilio_auth_token"],
            account_sid=state["twilio_account_sid"],
            jwt_secret=state["jwt_secret"],
            users=users,
            caller=users[0],
        )
        tally = Tally()
        for op in operations(worker_schema(target)):
            print(f"worker {op.label}", flush=True)
            fuzz_operation(target, op, send_worker, args.examples, tally)
        for op in operations(edge_schema()):
            print(f"edge function {op.label}", flush=True)
            fuzz_operation(target, op, send_edge, args.examples, tally)
        print(render(tally), flush=True)
        return 1 if tally.findings else 0
    finally:
        up.stop()
        shutil.rmtree(up.state_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
