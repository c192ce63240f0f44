"""`callbalance report` and `callbalance user create` against a database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jwt
import psycopg

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


def test_user_create_prints_a_verifiable_jwt_and_refuses_duplicates(fresh_db: str) -> None:
    made = cli("user", "create", "--email", "ann@example.test", "--plan", "classic", url=fresh_db)
    assert made.returncode == 0, made.stderr
    user = json.loads(made.stdout)
    claims = jwt.decode(
        user["jwt"], LOCAL_JWT_SECRET, algorithms=["HS256"], audience="authenticated"
    )
    assert claims["sub"] == user["id"] and claims["role"] == "authenticated"
    with psycopg.connect(fresh_db) as conn:
        plan = conn.execute(
            "select plan_id from public.call_balance where user_id = %s", (user["id"],)
        ).fetchone()
    assert plan == ("classic",)
    again = cli("user", "create", "--email", "ann@example.test", url=fresh_db)
    assert again.returncode == 1 and "exists already" in again.stderr
    unknown = cli("user", "create", "--email", "bob@example.test", "--plan", "gold", url=fresh_db)
    assert unknown.returncode == 1 and "unknown plan" in unknown.stderr


def test_report_shows_accounts_and_fails_on_drift(fresh_db: str) -> None:
    cli("user", "create", "--email", "cy@example.test", url=fresh_db)
    clean = cli("report", url=fresh_db)
    assert clean.returncode == 0, clean.stderr
    assert "cy@example.test" in clean.stdout and "Ledger drift" in clean.stdout
    as_json = json.loads(cli("report", "--json", "--user", "cy@example.test", url=fresh_db).stdout)
    assert as_json["ledger_drift"] == [] and as_json["user"] == []
    # Tamper with a cached balance behind the ledger's back, as only an owner could.
    with psycopg.connect(fresh_db) as conn:
        conn.execute("alter table public.call_balance disable trigger user")
        conn.execute("update public.call_balance set balance = balance + 1")
        conn.execute("alter table public.call_balance enable trigger user")
    drifted = cli("report", url=fresh_db)
    assert drifted.returncode == 1
    assert "ledger drift found" in drifted.stderr
