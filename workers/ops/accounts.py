"""`callbalance change-plan` and `callbalance adjust-balance`: the support team's account tools.

Each finds the account (by email or user id), then makes one SQL call as
service_role — `billing.change_plan` or `billing.adjust_balance`, where every
rule lives — and prints its JSON answer as Postgres wrote it (amounts exact).
The same key with the same arguments prints the first answer again with
`"duplicate": true` and exits 0; a refusal prints the database's sentence and
details and exits 1.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import ClientCursor

from workers import CommandError
from workers.ops.running import running_system
from workers.service.db import ROLE_PREFIX, RpcError, rpc_errors

CHANGE_PLAN = (
    "select pg_catalog.jsonb_pretty(billing.change_plan("
    "%(user_id)s::uuid, %(plan)s, %(key)s, %(note)s))"
)
ADJUST_BALANCE = (
    "select pg_catalog.jsonb_pretty(billing.adjust_balance("
    "%(user_id)s::uuid, %(direction)s, %(amount)s::numeric, %(reason)s, %(key)s))"
)


def _user_id(conn: psycopg.Connection[Any], user: str) -> str:
    """The user id given, or the id of the user with that email."""
    try:
        return str(uuid.UUID(user))
    except ValueError:
        pass
    row = conn.execute(
        "select id from auth.users where lower(email) = lower(%s)", (user,)
    ).fetchone()
    if row is None:
        raise CommandError(f"no user with email {user}")
    return str(row[0])


def _call(database_url: str, user: str, query: str, params: dict[str, Any]) -> str:
    """One function call as service_role in one transaction; its answer as JSON text."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        user_id = _user_id(conn, user)
        cur = ClientCursor(conn)
        with rpc_errors():
            cur.execute(ROLE_PREFIX + query, {"user_id": user_id, **params})
        cur.nextset()
        row = cur.fetchone()
    if row is None:
        raise CommandError("the database gave no answer")
    return str(row[0])


def _run(state_dir: Path, user: str, query: str, params: dict[str, Any]) -> int:
    try:
        answer = _call(running_system(state_dir)["database_url"], user, query, params)
    except RpcError as exc:
        print(f"callbalance: {exc.message} ({exc.status})", file=sys.stderr)
        if exc.details:
            print(json.dumps(exc.details, default=str), file=sys.stderr)
        return 1
    print(answer)
    if json.loads(answer).get("duplicate"):
        print("callbalance: already done with this key; nothing changed", file=sys.stderr)
    return 0


def change_plan_command(
    state_dir: Path, user: str, plan: str, key: str, note: str | None = None
) -> int:
    """Move the account to `plan` (see docs/rpc.md for what follows); exit 1 when refused."""
    return _run(state_dir, user, CHANGE_PLAN, {"plan": plan, "key": key, "note": note})


def adjust_balance_command(
    state_dir: Path, user: str, direction: str, amount: str, reason: str, key: str
) -> int:
    """Credit or debit `amount` dollars with a reason the customer sees; exit 1 when refused.

    The amount goes to SQL as written, which refuses what is not whole cents.
    """
    params = {"direction": direction, "amount": amount, "reason": reason, "key": key}
    return _run(state_dir, user, ADJUST_BALANCE, params)
