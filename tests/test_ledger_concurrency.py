"""Money under concurrency: real parallel connections against one committed database.

Each worker thread has its own connection and runs each call in its own
transaction as service_role, as the Python workers do. A barrier releases
the threads together so that the calls really overlap.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.supa import as_service

Row = dict[str, Any]


def _owner(url: str, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def _arrange(url: str, *steps: tuple[str, Sequence[Any]]) -> None:
    with psycopg.connect(url) as conn:
        for sql, params in steps:
            conn.execute(sql, params)


def _with_card_and_auto_refill(user: uuid.UUID, cents: int) -> list[tuple[str, Sequence[Any]]]:
    return [
        ("select billing.credit_topup(%s, %s, %s)", (user, cents, f"pi_card_{user}")),
        ("select billing.save_payment_method(%s, 'cus_c', 'pm_c')", (user,)),
        ("update public.call_balance set auto_refill_enabled = true where user_id = %s", (user,)),
    ]


def _new_user(url: str, plan: str = "classic") -> uuid.UUID:
    rows = _owner(
        url,
        "insert into auth.users (email, raw_app_meta_data) values (%s, %s) returning id",
        (f"c-{uuid.uuid4().hex[:10]}@example.test", Jsonb({"plan": plan})),
    )
    return uuid.UUID(str(rows[0]["id"]))


def _in_parallel(
    url: str, calls: Sequence[tuple[str, Sequence[Any]]], threads: int = 16
) -> list[Row]:
    """Run each (sql, params) in its own service_role transaction, `threads` at a time."""
    barrier = threading.Barrier(min(threads, len(calls)))
    local = threading.local()
    lock = threading.Lock()
    connections: list[psycopg.Connection[Row]] = []

    def run(call: tuple[str, Sequence[Any]]) -> Row:
        conn: psycopg.Connection[Row] | None = getattr(local, "conn", None)
        if conn is None:
            conn = psycopg.connect(url, row_factory=dict_row)
            local.conn = conn
            with lock:
                connections.append(conn)
            barrier.wait(timeout=30)
        with conn.transaction():
            as_service(conn)
            row = conn.execute(call[0], call[1]).fetchone()
        assert row is not None
        return row

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(run, calls))
    finally:
        for conn in connections:
            conn.close()


def _balance(url: str, user: uuid.UUID) -> Decimal:
    rows = _owner(url, "select balance from public.call_balance where user_id = %s", (user,))
    return Decimal(rows[0]["balance"])


def _no_drift(url: str) -> None:
    assert _owner(url, "select * from monitoring.ledger_drift") == []


def test_50_concurrent_settlements_on_one_account_end_exact(fresh_db: str) -> None:
    user = _new_user(fresh_db)
    _owner(fresh_db, "select billing.credit_topup(%s, 100000, 'pi_conc_settle')", (user,))
    rng = random.Random(7)
    durations = [rng.randint(0, 1800) for _ in range(50)]
    calls = [
        (
            "select billing.settle_call(%s, %s, %s) as r",
            (f"CA-conc-{i}", user, seconds),
        )
        for i, seconds in enumerate(durations)
    ]
    # Every status callback also arrives twice, concurrently.
    results = _in_parallel(fresh_db, calls + calls, threads=16)
    minutes = sum((seconds + 59) // 60 for seconds in durations)
    assert _balance(fresh_db, user) == Decimal("1000.00") - minutes * Decimal("0.10")
    assert sum(1 for r in results if r["r"]["duplicate"]) == 50
    ledger = _owner(
        fresh_db,
        "select count(*) as n from public.balance_transactions where reason = 'call'",
    )
    assert ledger[0]["n"] == sum(1 for seconds in durations if seconds > 0)
    _no_drift(fresh_db)


def test_20_concurrent_replays_of_one_payment_credit_once(fresh_db: str) -> None:
    user = _new_user(fresh_db)
    calls = [("select billing.credit_topup(%s, 5000, 'pi_replayed') as r", (user,))] * 20
    results = _in_parallel(fresh_db, calls, threads=20)
    assert sorted(r["r"]["duplicate"] for r in results) == [False] + [True] * 19
    assert len({r["r"]["transactionId"] for r in results}) == 1
    assert _balance(fresh_db, user) == Decimal("50.00")
    _no_drift(fresh_db)


def test_concurrent_authorizations_never_hold_more_than_the_account_has(fresh_db: str) -> None:
    user = _new_user(fresh_db)
    _owner(fresh_db, "select billing.credit_topup(%s, 10000, 'pi_conc_hold')", (user,))
    calls = [
        ("select billing.authorize_call(%s, %s) as r", (f"CA-hold-{i}", user)) for i in range(20)
    ]
    results = [r["r"] for r in _in_parallel(fresh_db, calls, threads=20)]
    allowed = [r for r in results if r["allowed"]]
    # $100 at $0.10/min is 1000 minutes: four calls of 240 minutes and one of 40.
    assert sorted(r["maxSeconds"] for r in allowed) == [2400, 14400, 14400, 14400, 14400]
    held = _owner(
        fresh_db,
        "select sum(held_amount) as held from public.call_holds "
        "where user_id = %s and released_at is null",
        (user,),
    )
    assert Decimal(held[0]["held"]) == Decimal("100.00")
    assert all(r["reason"] == "insufficient_balance" for r in results if not r["allowed"])


def test_concurrent_claims_never_hand_one_request_to_two_workers(fresh_db: str) -> None:
    users = [_new_user(fresh_db) for _ in range(30)]
    for user in users:
        _arrange(
            fresh_db,
            *_with_card_and_auto_refill(user, 1050),
            ("select billing.settle_call(%s, %s, 600)", (f"CA-claim-{user}", user)),
        )
    pending = _owner(fresh_db, "select count(*) as n from public.refill_requests")
    assert pending[0]["n"] == 30

    claimed: list[str] = []
    lock = threading.Lock()

    def worker(_index: int) -> None:
        with psycopg.connect(fresh_db, row_factory=dict_row) as conn:
            while True:
                with conn.transaction():
                    as_service(conn)
                    rows = conn.execute("select id from billing.claim_refills(3)").fetchall()
                if not rows:
                    return
                with lock:
                    claimed.extend(str(r["id"]) for r in rows)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert len(claimed) == 30
    assert len(set(claimed)) == 30


def test_a_burst_of_concurrent_debits_enqueues_one_refill(fresh_db: str) -> None:
    user = _new_user(fresh_db)
    _arrange(fresh_db, *_with_card_and_auto_refill(user, 1200))
    calls = [
        ("select billing.settle_call(%s, %s, 120) as r", (f"CA-burst-{i}", user)) for i in range(30)
    ]
    _in_parallel(fresh_db, calls, threads=16)
    assert _balance(fresh_db, user) == Decimal("6.00")
    requests = _owner(
        fresh_db, "select amount, status from public.refill_requests where user_id = %s", (user,)
    )
    assert requests == [{"amount": Decimal("50.00"), "status": "pending"}]


def test_a_refund_racing_its_payment_lands_right_in_either_order(fresh_db: str) -> None:
    users = [_new_user(fresh_db) for _ in range(10)]
    calls: list[tuple[str, Sequence[Any]]] = []
    for i, user in enumerate(users):
        credit = ("select billing.credit_topup(%s, 3000, %s) as r", (user, f"pi_race_{i}"))
        refund = ("select billing.reverse_refund(%s, 1000) as r", (f"pi_race_{i}",))
        calls += [credit, refund] if i % 2 else [refund, credit]
    _in_parallel(fresh_db, calls, threads=20)
    for user in users:
        assert _balance(fresh_db, user) == Decimal("20.00")
    _no_drift(fresh_db)


def test_a_new_refill_request_is_announced_on_commit(fresh_db: str) -> None:
    user = _new_user(fresh_db)
    _arrange(fresh_db, *_with_card_and_auto_refill(user, 1050))
    with psycopg.connect(fresh_db, autocommit=True) as listener:
        listener.execute("listen refill_requests")
        _arrange(fresh_db, ("select billing.settle_call('CA-notify', %s, 600)", (user,)))
        notices = list(listener.notifies(timeout=5, stop_after=1))
    requests = _owner(fresh_db, "select id from public.refill_requests where user_id = %s", (user,))
    assert [n.payload for n in notices] == [str(requests[0]["id"])]
