"""Schemathesis against the worker's OpenAPI and the Edge Functions' hand-written description.

No 5xx, no unhandled exception, only documented statuses, and nothing written
by a rejected request (see `reliability.fuzz`, which also runs longer:
`python -m reliability.fuzz --examples 500`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from reliability.edge import DENO, JWT_SECRET, function_env, serve_functions
from reliability.fuzz import (
    Tally,
    Target,
    edge_schema,
    fuzz_operation,
    operations,
    render,
    send_edge,
    send_worker,
    worker_schema,
)
from tests.system import ACCOUNT_SID, AUTH_TOKEN, STRIPE_KEY, WEBHOOK_SECRET, running_system
from workers.local.standins import twilio as twilio_standin

# Per operation and generation mode; more with CALLBALANCE_FUZZ_EXAMPLES.
EXAMPLES = int(os.environ.get("CALLBALANCE_FUZZ_EXAMPLES", "12"))


def _twilio_factory() -> tuple[Any, Any]:
    config = twilio_standin.TwilioStandinConfig(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    standin = twilio_standin.TwilioStandin(config)
    return twilio_standin.create_app(standin), standin


@pytest.fixture(scope="module")
def target(module_db: str, pooled_module_db: str) -> Iterator[Target]:
    with running_system(module_db, _twilio_factory, pooled_url=pooled_module_db) as system:
        caller = system.new_user("starter")
        system.service(
            "select billing.confirm_number((billing.reserve_number(%s, '+14155550998') "
            "->> 'purchaseId')::uuid, %s, null)",
            (caller, "PN" + "e" * 32),
        )
        users = [caller, system.new_user("starter"), system.new_user("classic")]
        base = Target(
            db_url=system.db_url,
            worker_url=system.worker_url,
            public_url=system.worker_url,
            functions_url=None,
            webhook_secret=WEBHOOK_SECRET,
            twilio_token=AUTH_TOKEN,
            account_sid=ACCOUNT_SID,
            jwt_secret=JWT_SECRET,
            users=users,
            caller=caller,
        )
        if not DENO.exists():
            yield base
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
            base.functions_url = url
            yield base


def test_worker_openapi(target: Target) -> None:
    tally = Tally()
    for operation in operations(worker_schema(target)):
        fuzz_operation(target, operation, send_worker, EXAMPLES, tally)
    print(render(tally))
    assert tally.requests > 0
    assert not tally.findings, render(tally)


def test_edge_functions_openapi(target: Target) -> None:
    if target.functions_url is None:
        pytest.skip("npm install has not been run (no Deno)")
    tally = Tally()
    for operation in operations(edge_schema()):
        fuzz_operation(target, operation, send_edge, EXAMPLES, tally)
    print(render(tally))
    assert tally.requests > 0
    assert not tally.findings, render(tally)
