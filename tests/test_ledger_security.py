"""Who may touch what: the RLS matrix, function grants, and the seeds' monitoring queries.

Every table, for each of anon, the owner, another user and service_role, and each of
select, insert, update and delete: users read their own rows of the user-facing tables and all
plans; service_role reads everything; nobody writes a table directly — money
moves only through the billing functions.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.supa import as_anon, as_owner, as_service, as_user, create_user

Conn = psycopg.Connection[Any]

USER_TABLES = [
    "call_balance",
    "balance_transactions",
    "twilio_call_logs",
    "user_phone_numbers",
    "billing_alerts",
]
INTERNAL_TABLES = ["call_holds", "refill_requests", "stripe_events", "payment_reversals"]
TABLES = ["billing_plans", *USER_TABLES, *INTERNAL_TABLES]
ROLES = ["anon", "owner", "other", "service_role"]
OPERATIONS = ["select", "insert", "update", "delete"]

# A column each table has, for a no-op update.
TOUCH_COLUMN = {
    "billing_plans": "name",
    "call_balance": "updated_at",
    "balance_transactions": "description",
    "twilio_call_logs": "status",
    "user_phone_numbers": "updated_at",
    "billing_alerts": "read_at",
    "call_holds": "expires_at",
    "refill_requests": "updated_at",
    "stripe_events": "received_at",
    "payment_reversals": "applied_at",
}

PUBLIC_RPCS = {
    "billing_me()",
    "update_auto_refill_settings(boolean,numeric,numeric)",
    "prepare_topup(numeric)",
    "check_can_call()",
}
# The security definer functions the public entry points call: same signatures, in billing.
USER_RPCS = PUBLIC_RPCS
SERVICE_RPCS = {
    "record_stripe_event(text,text,text)",
    "apply_stripe_event(jsonb,boolean)",
    "apply_refund(text,text,bigint,text)",
    "record_refill_attempt(uuid,text,jsonb)",
    "claim_refill_lookups(integer)",
    "stripe_api_version()",
    "credit_topup(uuid,bigint,text,text,jsonb)",
    "save_payment_method(uuid,text,text)",
    "set_stripe_customer(uuid,text)",
    "reverse_payment(uuid,bigint,text,text,jsonb)",
    "reverse_refund(text,bigint,jsonb)",
    "reverse_dispute(text,text,bigint)",
    "restore_dispute(text,text,bigint)",
    "claim_refills(integer)",
    "fail_refill(uuid,text,text)",
    "number_owner(text)",
    "authorize_call(text,uuid,text)",
    "authorize_voice(jsonb,text)",
    "apply_call_status(jsonb)",
    "settle_call(text,uuid,integer,jsonb)",
    "stale_holds(timestamp with time zone,integer)",
    "release_expired_holds(timestamp with time zone)",
    "reserve_number(uuid,text)",
    "confirm_number(uuid,text,text)",
    "cancel_number(uuid,text)",
    "renew_numbers(timestamp with time zone)",
    "numbers_to_release(integer)",
    "mark_number_released(uuid)",
    "stale_number_purchases(timestamp with time zone,integer,interval)",
    "unknown_number_sids(text[])",
    "numbers_not_held(text[])",
    "check_number_purchase(uuid)",
    "check_number_purchase(uuid,text,text)",
    "claim_holds_to_check(timestamp with time zone,integer)",
    "adjust_balance(uuid,text,numeric,text,text)",
    "change_plan(uuid,text,text,text)",
}


def _expected(table: str, role: str, operation: str) -> str:
    """'denied', or for select the rows of the owner's data the role sees: 'own', 'none', 'all'."""
    if operation != "select" or role == "anon":
        return "denied"
    if role == "service_role":
        return "all"
    if table == "billing_plans":
        return "all"
    if table in INTERNAL_TABLES:
        return "denied"
    return "own" if role == "owner" else "none"


@pytest.fixture
def world(db: Conn) -> dict[str, uuid.UUID]:
    """An owner with a row in every table, and another user with an account of their own."""
    owner = create_user(db, plan="starter")
    other = create_user(db, plan="starter")
    db.execute("select billing.credit_topup(%s, 2000, 'pi_world')", (owner,))
    db.execute("select billing.credit_topup(%s, 2000, 'pi_world_other')", (other,))
    db.execute("select billing.save_payment_method(%s, 'cus_w', 'pm_w')", (owner,))
    row = db.execute(
        "select billing.reserve_number(%s, '+14155550177') ->> 'purchaseId'", (owner,)
    ).fetchone()
    assert row is not None
    db.execute("select billing.confirm_number(%s::uuid, 'PNW', null)", (row[0],))
    db.execute("select billing.authorize_call('CA-world-held', %s)", (owner,))
    db.execute("select billing.settle_call('CA-world', %s, 60)", (owner,))
    db.execute(
        "update public.call_balance set free_minutes_remaining = 0, auto_refill_enabled = true "
        "where user_id = %s",
        (owner,),
    )
    db.execute("select billing.release_expired_holds('infinity')")
    db.execute("select billing.settle_call('CA-world-2', %s, 60 * 600)", (owner,))
    db.execute("select billing.reverse_refund('pi_not_yet_credited', 100)")
    db.execute("select billing.record_stripe_event('evt_world', 'payment_intent.succeeded', 'pi')")
    db.execute("select billing.authorize_call('CA-world-held-2', %s)", (owner,))
    return {"owner": owner, "other": other}


def _act_as(db: Conn, role: str, world: dict[str, uuid.UUID]) -> None:
    as_owner(db)
    if role == "anon":
        as_anon(db)
    elif role == "service_role":
        as_service(db)
    else:
        as_user(db, world[role])


def _owner_filter(table: str) -> str:
    if table in ("billing_plans", "stripe_events"):
        return "true"
    if table == "payment_reversals":
        return "true"
    return "user_id = %(owner)s"


def _attempt(
    db: Conn, world: dict[str, uuid.UUID], table: str, role: str, operation: str, total: int
) -> str:
    params = {"owner": world["owner"]}
    statement = {
        "select": f"select count(*) from public.{table} where {_owner_filter(table)}",
        "insert": f"insert into public.{table} default values",
        "update": f"update public.{table} set {TOUCH_COLUMN[table]} = {TOUCH_COLUMN[table]}",
        "delete": f"delete from public.{table}",
    }[operation]
    try:
        with db.transaction():  # a savepoint: a refusal rolls back to the owner's role
            _act_as(db, role, world)
            row = db.execute(statement, params).fetchone()
            as_owner(db)
    except psycopg.errors.InsufficientPrivilege:
        return "denied"
    assert row is not None
    if row[0] == 0:
        return "none"
    if row[0] == total:
        return "all" if role == "service_role" or table == "billing_plans" else "own"
    return f"{row[0]} of {total} rows"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("table", TABLES)
def test_rls_matrix(db: Conn, world: dict[str, uuid.UUID], table: str, role: str) -> None:
    as_owner(db)
    row = db.execute(
        f"select count(*) from public.{table} where {_owner_filter(table)}",
        {"owner": world["owner"]},
    ).fetchone()
    assert row is not None and row[0] > 0, f"the world has no {table} row of the owner"
    outcomes = {op: _attempt(db, world, table, role, op, row[0]) for op in OPERATIONS}
    expected = {op: _expected(table, role, op) for op in OPERATIONS}
    assert outcomes == expected, f"{role} on {table}"


def test_every_public_table_has_rls(db: Conn) -> None:
    rows = db.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity"
    ).fetchall()
    assert rows == []


def test_every_policy_is_for_authenticated_and_indexed(db: Conn) -> None:
    policies = db.execute(
        "select tablename, roles::text[], qual from pg_policies where schemaname = 'public'"
    ).fetchall()
    assert {p[0] for p in policies} == {"billing_plans", *USER_TABLES}
    for table, roles, qual in policies:
        assert roles == ["authenticated"], table
        if table != "billing_plans":
            assert "( SELECT auth.uid() AS uid)" in qual, (table, qual)
            leading = db.execute(
                "select count(*) from pg_index i join pg_attribute a "
                "on a.attrelid = i.indrelid and a.attnum = i.indkey[0] "
                "where i.indrelid = %s::regclass and a.attname = 'user_id'",
                (f"public.{table}",),
            ).fetchone()
            assert leading is not None and leading[0] > 0, f"{table}.user_id leads no index"


def test_foreign_keys_are_indexed(db: Conn) -> None:
    unindexed = db.execute(
        """
        select c.conrelid::regclass::text, c.conname
        from pg_constraint c
        join pg_namespace n on n.oid = c.connamespace
        where c.contype = 'f' and n.nspname = 'public'
          and not exists (
              select from pg_index i
              where i.indrelid = c.conrelid and i.indkey[0] = c.conkey[1]
          )
        """
    ).fetchall()
    assert unindexed == []


def _functions(db: Conn, schema: str) -> dict[str, tuple[bool, list[str] | None]]:
    """signature without schema, e.g. 'settle_call(text,uuid,integer,jsonb)' → (definer, config)."""
    rows = db.execute(
        "select p.oid::regprocedure::text, p.prosecdef, p.proconfig "
        "from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = %s",
        (schema,),
    ).fetchall()
    return {name.removeprefix(f"{schema}."): (secdef, config) for name, secdef, config in rows}


def test_function_grants(db: Conn) -> None:
    public = _functions(db, "public")
    billing = _functions(db, "billing")
    assert set(public) >= PUBLIC_RPCS
    assert set(billing) >= SERVICE_RPCS
    assert set(billing) >= USER_RPCS
    for schema, functions in (("public", public), ("billing", billing)):
        for signature, (secdef, config) in functions.items():
            assert config is not None and 'search_path=""' in config, signature
            grants = {
                role: db.execute(
                    "select has_function_privilege(%s, %s, 'execute')",
                    (role, f"{schema}.{signature}"),
                ).fetchone()
                for role in ("anon", "authenticated", "service_role")
            }
            allowed = {role for role, row in grants.items() if row and row[0]}
            if schema == "public" and signature in PUBLIC_RPCS:
                assert allowed == {"authenticated"}, signature
                assert not secdef, f"public.{signature} must be security invoker"
            elif schema == "billing" and signature in USER_RPCS:
                assert allowed == {"authenticated"}, signature
                assert secdef, signature
                # Acts on auth.uid() only: no argument could name another user.
                assert "uuid" not in signature, signature
            elif schema == "billing" and signature in SERVICE_RPCS:
                assert allowed == {"service_role"}, signature
            else:
                assert allowed == set(), f"{schema}.{signature} is executable by {allowed}"


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
def test_rpcs_answer_only_their_role(db: Conn, role: str) -> None:
    user = create_user(db)
    for sql, allowed_for in (
        ("select public.billing_me()", "authenticated"),
        ("select billing.billing_me()", "authenticated"),
        ("select billing._read_account(%(user)s)", None),
        ("select billing.settle_call('CA-grant', %(user)s, 0)", "service_role"),
        ("select billing._post(%(user)s, 1, 'credit', 'adjustment', '', 'k')", None),
        ("select billing._lock_account(%(user)s)", None),
    ):
        try:
            with db.transaction():
                if role == "anon":
                    as_anon(db)
                elif role == "service_role":
                    as_service(db)
                else:
                    as_user(db, user)
                db.execute(sql, {"user": user})
                as_owner(db)
            outcome = "ran"
        except psycopg.errors.InsufficientPrivilege:
            outcome = "denied"
        assert outcome == ("ran" if allowed_for == role else "denied"), (role, sql)


def test_billing_alerts_are_published_to_realtime(db: Conn) -> None:
    rows = db.execute(
        "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
    ).fetchall()
    assert ("billing_alerts",) in rows


# Seed 000, "Balance Monitoring", verbatim (less trailing spaces).
SEED_BALANCES = """
SELECT
  u.email,
  cb.balance,
  cb.auto_refill_enabled,
  cb.auto_refill_amount,
  cb.last_refill_at
FROM call_balance cb
JOIN auth.users u ON u.id = cb.user_id
ORDER BY cb.balance ASC;
"""

SEED_TRANSACTIONS = """
SELECT
  bt.created_at,
  u.email,
  bt.type,
  bt.amount,
  bt.description,
  bt.balance_after
FROM balance_transactions bt
JOIN auth.users u ON u.id = bt.user_id
ORDER BY bt.created_at DESC
LIMIT 50;
"""


def test_seed_monitoring_queries_run_unchanged_as_service_role(
    db: Conn, world: dict[str, uuid.UUID]
) -> None:
    as_service(db)
    db.execute("set local search_path = public")  # what PostgREST and the SQL editor use
    balances = db.execute(SEED_BALANCES).fetchall()
    transactions = db.execute(SEED_TRANSACTIONS).fetchall()
    assert len(balances) >= 2
    assert [b for b in balances if b[1] is not None] == sorted(balances, key=lambda b: b[1])
    assert len(transactions) >= 3
    assert {t[2] for t in transactions} <= {"credit", "debit", "refund"}
