"""Growth: do `billing_me` and `settle_call` stay flat as the ledger grows?

A fresh durable embedded Postgres, migrated. The ledger grows to 1k, 100k and
1M rows (accounts of 100 entries each: a $10 top-up then nine 1-minute calls,
repeated, each call with its `twilio_call_logs` row; balances kept equal to
their ledgers), and then one account gets 10k entries of its own. At each
size: the median and p99 time of `public.billing_me()` as a user
(PostgREST-style session) and of `billing.settle_call` (after
`billing.authorize_call`) as service_role, and at the end the EXPLAIN
(ANALYZE, BUFFERS) plans of the statements those functions run against the
growing tables, which is what keeps them flat: every one is an index lookup
by user or by call sid, and none scans an account's history.

    .venv/bin/python bench/growth.py                  # 1k, 100k, 1M
    .venv/bin/python bench/growth.py --sizes 1000,100000 --samples 100
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import ClientCursor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workers.local.embedded_pg import EmbeddedPostgres, free_port  # noqa: E402
from workers.ops.migrate import migrate  # noqa: E402

ROWS_PER_ACCOUNT = 100
HEAVY_ROWS = 10_000


def grow(conn: psycopg.Connection[Any], accounts: int, rows: int, tag: str) -> list[str]:
    """Add `accounts` classic accounts with `rows` ledger entries each; returns their ids."""
    users = conn.execute(
        "insert into auth.users (email, raw_app_meta_data) "
        "select %s || '-' || g || '@example.test', '{\"plan\": \"classic\"}'::jsonb "
        "from generate_series(1, %s) as g returning id",
        (tag, accounts),
    ).fetchall()
    ids = [str(r[0]) for r in users]
    conn.execute("create temp table if not exists grown (user_id uuid primary key)")
    conn.execute("truncate grown")
    with conn.cursor().copy("copy grown (user_id) from stdin") as copy:
        for user in ids:
            copy.write_row((user,))
    # Every tenth entry a $10 top-up, the others one-minute calls at $0.10; one a minute.
    conn.execute(
        """
        insert into public.balance_transactions (
            user_id, amount, type, reason, description, balance_before, balance_after,
            stripe_payment_intent_id, idempotency_key, created_at
        )
        select
            e.user_id, e.amount,
            case when e.amount > 0 then 'credit' else 'debit' end,
            case when e.amount > 0 then 'topup' else 'call' end,
            '', sum(e.amount) over w - e.amount, sum(e.amount) over w,
            case when e.amount > 0 then 'pi_g' || replace(e.user_id::text, '-', '') || e.i end,
            case
                when e.amount > 0 then 'payment:pi_g' || replace(e.user_id::text, '-', '') || e.i
                else 'call:CAg' || replace(e.user_id::text, '-', '') || e.i
            end,
            now() - (%(rows)s - e.i) * interval '1 minute'
        from (
            select g.user_id, i.i,
                (case when i.i %% 10 = 1 then 10.00 else -0.10 end)::numeric(12, 2) as amount
            from grown as g cross join generate_series(1, %(rows)s) as i (i)
        ) as e
        window w as (partition by e.user_id order by e.i)
        """,
        {"rows": rows},
    )
    conn.execute(
        """
        insert into public.twilio_call_logs (
            user_id, call_sid, duration, status, is_billed, billed_minutes, free_minutes_used,
            price_per_minute, billed_amount, transaction_id, created_at
        )
        select bt.user_id, substr(bt.idempotency_key, 6), 60, 'completed', true, 1, 0, 0.10,
            0.10, bt.id, bt.created_at
        from public.balance_transactions as bt
        join grown as g on g.user_id = bt.user_id
        where bt.reason = 'call'
        """
    )
    conn.execute(
        """
        update public.call_balance as cb set balance = s.total
        from (
            select bt.user_id, sum(bt.amount) as total
            from public.balance_transactions as bt
            join grown as g on g.user_id = bt.user_id
            group by bt.user_id
        ) as s
        where cb.user_id = s.user_id
        """
    )
    return ids


def ledger_rows(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select count(*) from public.balance_transactions").fetchone()
    return int(row[0]) if row else 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_billing_me(conn: psycopg.Connection[Any], users: list[str], samples: int) -> list[float]:
    out = []
    for i in range(samples):
        user = users[(i * 7919) % len(users)]
        claims = json.dumps({"sub": user, "role": "authenticated", "aud": "authenticated"})
        with conn.transaction():
            conn.execute("select set_config('role', 'authenticated', true)")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
            started = time.perf_counter()
            conn.execute("select public.billing_me()").fetchone()
            out.append((time.perf_counter() - started) * 1000)
    return out


def time_settle_call(conn: psycopg.Connection[Any], users: list[str], samples: int) -> list[float]:
    out = []
    for i in range(samples):
        user = users[(i * 7919) % len(users)]
        sid = "CA" + uuid.uuid4().hex
        with conn.transaction():
            conn.execute("select set_config('role', 'service_role', true)")
            conn.execute("select billing.authorize_call(%s, %s)", (sid, user))
        with conn.transaction():
            conn.execute("select set_config('role', 'service_role', true)")
            started = time.perf_counter()
            conn.execute("select billing.settle_call(%s, null, 65)", (sid,)).fetchone()
            out.append((time.perf_counter() - started) * 1000)
    return out


def explain(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) in a transaction that is rolled back."""
    with ClientCursor(conn) as cur:
        try:
            cur.execute("begin")
            cur.execute("explain (analyze, buffers, costs off) " + query, params)
            return "\n".join(str(r[0]) for r in cur.fetchall())
        finally:
            cur.execute("rollback")


PLANS: list[tuple[str, str]] = [
    (
        "billing_me: the account row (billing._touch_account)",
        "select cb.* from public.call_balance as cb where cb.user_id = %(user)s",
    ),
    (
        "billing_me / authorize_call: funds held by calls in progress (billing._held_amount)",
        "select coalesce(sum(h.held_amount), 0) from public.call_holds as h "
        "where h.user_id = %(user)s and h.released_at is null",
    ),
    (
        "billing_me: active numbers (billing._state)",
        "select n.* from public.user_phone_numbers as n "
        "where n.user_id = %(user)s and n.status in ('active', 'past_due')",
    ),
    (
        "settle_call: the hold's account, when the callback names no user",
        "select h.user_id from public.call_holds as h where h.call_sid = %(sid)s",
    ),
    (
        "settle_call: lock the account with its plan",
        "select cb.balance, cb.free_minutes_remaining, cb.free_minutes_last_reset, "
        "cb.auto_refill_threshold, p.price_per_minute from public.call_balance as cb "
        "inner join public.billing_plans as p on cb.plan_id = p.id "
        "where cb.user_id = %(user)s for update of cb",
    ),
    (
        "settle_call: the one write (call log, balance, ledger entry, hold release)",
        """with logged as (
            insert into public.twilio_call_logs (
                user_id, call_sid, duration, status, is_billed, billed_minutes,
                free_minutes_used, price_per_minute, billed_amount, transaction_id, metadata,
                created_at
            ) values (
                %(user)s, 'CAexplain', 65, 'completed', true, 2, 0, 0.10, 0.20, %(entry)s,
                '{}', now()
            )
            on conflict (call_sid) do nothing
            returning call_sid
        ),
        account as (
            update public.call_balance as cb
            set balance = cb.balance - 0.20, updated_at = now()
            where cb.user_id = %(user)s and exists (select from logged)
            returning cb.balance
        ),
        entry as (
            insert into public.balance_transactions (
                id, user_id, amount, type, reason, description, balance_before, balance_after,
                idempotency_key, metadata, created_at
            )
            select %(entry)s, %(user)s, -0.20, 'debit', 'call', 'explain', a.balance + 0.20,
                a.balance, 'call:CAexplain', '{}', now()
            from account as a
        ),
        released as (
            update public.call_holds as h
            set released_at = coalesce(h.released_at, now()),
                release_reason = coalesce(h.release_reason, 'settled')
            where h.call_sid = 'CAexplain' and exists (select from logged)
            returning h.user_id
        )
        select a.balance, (select r.user_id from released as r) from account as a""",
    ),
    (
        "settle_call below the threshold with auto-refill on: this month's refills "
        "(billing._after_debit)",
        "select coalesce(sum(bt.amount), 0) from public.balance_transactions as bt "
        "where bt.user_id = %(user)s and bt.reason = 'auto_refill' "
        "and bt.created_at >= date_trunc('month', now(), 'UTC')",
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000", help="ledger rows")
    parser.add_argument("--samples", type=int, default=300, help="calls timed per function")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]

    base = Path(tempfile.mkdtemp(prefix="callbalance-growth-"))
    server = EmbeddedPostgres(base / "pgdata", port=free_port(), durable=True)
    url = server.start()
    migrate(url, echo=lambda _line: None)
    results: list[tuple[str, int, list[float], list[float]]] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            users: list[str] = []
            for size in sizes:
                missing = size - ledger_rows(conn)
                if missing > 0:
                    started = time.monotonic()
                    users += grow(conn, missing // ROWS_PER_ACCOUNT, ROWS_PER_ACCOUNT, f"g{size}")
                    conn.execute("vacuum analyze")
                    print(
                        f"grew the ledger to {ledger_rows(conn):,} rows "
                        f"in {time.monotonic() - started:.0f} s",
                        flush=True,
                    )
                rows = ledger_rows(conn)
                me = time_billing_me(conn, users, args.samples)
                settle = time_settle_call(conn, users, args.samples)
                results.append((f"{rows:,} rows, accounts of 100", rows, me, settle))
            heavy = grow(conn, 1, HEAVY_ROWS, "heavy")[0]
            conn.execute("vacuum analyze")
            rows = ledger_rows(conn)
            me = time_billing_me(conn, [heavy], args.samples)
            settle = time_settle_call(conn, [heavy], args.samples)
            results.append((f"{rows:,} rows, the 10k-entry account", rows, me, settle))

            drift = conn.execute("select count(*) from monitoring.ledger_drift").fetchone()
            print(f"\nledger_drift rows: {drift[0] if drift else '?'}")
            print(
                f"\n{'ledger':<40}{'billing_me p50':>15}{'p99':>8}{'settle_call p50':>17}{'p99':>8}"
            )
            for name, _rows, me, settle in results:
                print(
                    f"{name:<40}{statistics.median(me):>12.2f} ms{percentile(me, 0.99):>8.2f}"
                    f"{statistics.median(settle):>14.2f} ms{percentile(settle, 0.99):>8.2f}"
                )
            first, last = results[0], results[-2]
            print(
                f"\nratio {last[0]} / {first[0]}: billing_me "
                f"{statistics.median(last[2]) / statistics.median(first[2]):.2f}x, settle_call "
                f"{statistics.median(last[3]) / statistics.median(first[3]):.2f}x"
            )

            sid_row = conn.execute(
                "select call_sid from public.twilio_call_logs where user_id = %s limit 1",
                (heavy,),
            ).fetchone()
            params = {
                "user": heavy,
                "sid": sid_row[0] if sid_row else "CAnone",
                "entry": str(uuid.uuid4()),
            }
            print(f"\nplans at {rows:,} ledger rows, for the 10k-entry account:")
            for title, query in PLANS:
                print(f"\n-- {title}\n{explain(conn, query, params)}")
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
