"""`callbalance change-plan` and `callbalance adjust-balance` against a database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from workers.local.up import LOCAL_JWT_SECRET


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "SUPABASE_JWT_SECRET": LOCAL_JWT_SECRET}
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def answer(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout, parse_float=Decimal)
    return parsed


def new_user(url: str, plan: str) -> tuple[str, str]:
    email = f"ops-{uuid.uuid4().hex[:8]}@example.test"
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "insert into auth.users (email, raw_app_meta_data) values (%s, %s) returning id",
            (email, json.dumps({"plan": plan})),
        ).fetchone()
    assert row is not None
    return email, str(row[0])


def account(url: str, user_id: str) -> tuple[str, Decimal, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select plan_id, balance, free_minutes_remaining from public.call_balance "
            "where user_id = %s",
            (user_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_adjust_balance_credits_once_per_key_and_debits_never_below_zero(module_db: str) -> None:
    email, user_id = new_user(module_db, "classic")
    args = ("adjust-balance", "--user", email, "--reason", "Dropped call", "--key", "T-1")
    first = answer(cli(*args, "--credit", "5.25", url=module_db))
    assert first["amount"] == Decimal("5.25") and first["balance"] == Decimal("5.25")
    assert first["direction"] == "credit" and first["duplicate"] is False

    replay = cli(*args, "--credit", "5.25", url=module_db)
    assert answer(replay) == {**first, "duplicate": True}
    assert "already done with this key" in replay.stderr
    assert account(module_db, user_id)[1] == Decimal("5.25")

    other = cli(*args, "--credit", "6", url=module_db)
    assert other.returncode == 1 and "already used for another adjustment" in other.stderr

    by_id = cli(
        "adjust-balance",
        "--user",
        user_id,
        "--debit",
        "2.25",
        "--reason",
        "Correction",
        "--key",
        "T-2",
        url=module_db,
    )
    assert answer(by_id)["balance"] == Decimal("3.00")

    overdraw = cli(
        "adjust-balance",
        "--user",
        email,
        "--debit",
        "3.01",
        "--reason",
        "Too much",
        "--key",
        "T-3",
        url=module_db,
    )
    assert overdraw.returncode == 1 and overdraw.stdout == ""
    assert "below zero: the balance is $3.00" in overdraw.stderr
    assert '"balance": 3.0' in overdraw.stderr and '"available": 3.0' in overdraw.stderr
    assert account(module_db, user_id)[1] == Decimal("3.00")


@pytest.mark.parametrize(
    ("amount", "says"),
    [
        ("0.001", "whole cents"),
        ("0", "must be positive"),
        ("-5", "must be positive"),
        ("10000.01", "cannot exceed $10,000"),
        ("NaN", "finite number"),
        ("Infinity", "finite number"),
        ("five", "Invalid input"),
    ],
)
def test_adjust_balance_refuses_bad_amounts(module_db: str, amount: str, says: str) -> None:
    email, user_id = new_user(module_db, "classic")
    refused = cli(
        "adjust-balance",
        "--user",
        email,
        f"--credit={amount}",
        "--reason",
        "Bad amount",
        "--key",
        f"bad-{amount}",
        url=module_db,
    )
    assert refused.returncode == 1, refused.stdout
    assert says in refused.stderr
    assert account(module_db, user_id)[1] == Decimal("0.00")


def test_adjust_balance_usage_errors(module_db: str) -> None:
    email, _ = new_user(module_db, "classic")
    both = cli(
        "adjust-balance",
        "--user",
        email,
        "--credit",
        "1",
        "--debit",
        "1",
        "--reason",
        "Both",
        "--key",
        "U-1",
        url=module_db,
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    no_reason = cli(
        "adjust-balance", "--user", email, "--credit", "1", "--key", "U-2", url=module_db
    )
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    short = cli(
        "adjust-balance",
        "--user",
        email,
        "--credit",
        "1",
        "--reason",
        "ok",
        "--key",
        "U-3",
        url=module_db,
    )
    assert short.returncode == 1 and "reason of at least 3 characters" in short.stderr
    nobody = cli(
        "adjust-balance",
        "--user",
        "nobody@example.test",
        "--credit",
        "1",
        "--reason",
        "Who",
        "--key",
        "U-4",
        url=module_db,
    )
    assert nobody.returncode == 1 and "no user with email nobody@example.test" in nobody.stderr
    unknown_id = cli(
        "adjust-balance",
        "--user",
        str(uuid.uuid4()),
        "--credit",
        "1",
        "--reason",
        "Who",
        "--key",
        "U-5",
        url=module_db,
    )
    assert unknown_id.returncode == 1 and "No such user" in unknown_id.stderr


def test_change_plan_once_per_key(module_db: str) -> None:
    email, user_id = new_user(module_db, "starter")
    args = ("change-plan", "--user", email, "--key", "P-1", "--note", "Asked for classic")
    first = answer(cli(*args, "--plan", "classic", url=module_db))
    assert first["fromPlan"] == "starter" and first["toPlan"] == "classic"
    assert first["freeMinutesUsed"] == 0 and first["freeMinutesRemaining"] == 0
    assert first["note"] == "Asked for classic" and first["duplicate"] is False
    plan, _, free = account(module_db, user_id)
    assert (plan, free) == ("classic", 0)

    replay = cli(*args, "--plan", "classic", url=module_db)
    assert answer(replay) == {**first, "duplicate": True}
    other = cli(*args, "--plan", "starter", url=module_db)
    assert other.returncode == 1 and "already used for another plan change" in other.stderr

    back = answer(
        cli("change-plan", "--user", user_id, "--plan", "starter", "--key", "P-2", url=module_db)
    )
    assert back["freeMinutesRemaining"] == 200 and back["note"] is None
    plan, _, free = account(module_db, user_id)
    assert (plan, free) == ("starter", 200)
    with psycopg.connect(module_db) as conn:
        entries = conn.execute(
            "select type, reason, amount from public.balance_transactions "
            "where user_id = %s order by created_at",
            (user_id,),
        ).fetchall()
    assert entries == [("plan_change", "plan_change", Decimal("0.00"))] * 2


def test_change_plan_refusals(module_db: str) -> None:
    email, _ = new_user(module_db, "starter")
    unknown = cli("change-plan", "--user", email, "--plan", "gold", "--key", "R-1", url=module_db)
    assert unknown.returncode == 1 and "No such plan: gold." in unknown.stderr
    same = cli("change-plan", "--user", email, "--plan", "starter", "--key", "R-2", url=module_db)
    assert same.returncode == 1 and "already on the Starter plan" in same.stderr
    no_key = cli("change-plan", "--user", email, "--plan", "classic", url=module_db)
    assert no_key.returncode == 2 and "--key" in no_key.stderr
