"""Through a transaction-mode pooler (PgBouncer, `pool_mode = transaction`), as Supabase runs it.

Every transaction may land on another server connection: a statement prepared
in one transaction is missing (or named twice) in the next, a session `SET`
leaks to strangers, and a `LISTEN` hears nothing. The worker, the jobs and the
database pools must work through it without a single error.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.system import System, running_system, stripe_event
from tests.test_auto_refill import call, enable_auto_refill, top_up_with_saved_card
from tests.test_twilio_worker import twilio_factory
from workers.local import pgbouncer as pgbouncer_module
from workers.local import up as up_module
from workers.local.pgbouncer import PgBouncer
from workers.service.db import Database, SyncDatabase


@pytest.fixture(scope="module")
def system(module_db: str, pooled_module_db: str) -> Iterator[System]:
    with running_system(module_db, twilio_factory, pooled_url=pooled_module_db) as running:
        yield running


def _server_connection_taken(pooled_url: str) -> psycopg.Connection[Any]:
    """A client holding a server connection in an open transaction, so the next
    transaction of anyone else must run on another one."""
    holder = psycopg.connect(pooled_url, prepare_threshold=None)
    holder.execute("select 1")
    return holder


def test_the_jobs_pool_prepares_nothing_that_outlives_a_transaction(system: System) -> None:
    db = SyncDatabase(system.pooled_url, max_size=1)
    try:
        for n in range(8):  # psycopg prepares a statement after its fifth execution
            assert db.rows("select %s::int as n", (n,)) == [{"n": n}]
            assert db.call("select %s::int", (n,)) == n
        holder = _server_connection_taken(system.pooled_url)
        try:
            assert db.rows("select %s::int as n", (9,)) == [{"n": 9}]
            assert db.call("select current_setting('role')") == "service_role"
        finally:
            holder.close()
        # Transaction-local settings only: the role ended with the transaction.
        with db.pool.connection() as conn:
            row: Any = conn.execute("select current_setting('role') as role").fetchone()
        assert row == {"role": "none"}
    finally:
        db.close()


def test_the_worker_pool_prepares_nothing_that_outlives_a_transaction(system: System) -> None:
    async def scenario() -> None:
        db = Database(system.pooled_url, min_size=1, max_size=1)
        await db.open()
        try:
            for n in range(8):
                async with db.service() as conn:
                    cur = await conn.execute("select %s::int as n", (n,))
                    assert await cur.fetchone() == {"n": n}
                assert await db.ready() == (True, "ok")
            holder = await asyncio.to_thread(_server_connection_taken, system.pooled_url)
            try:
                async with db.service() as conn:
                    cur = await conn.execute("select %s::int as n", (9,))
                    assert await cur.fetchone() == {"n": 9}
                assert await db.ready() == (True, "ok")
            finally:
                holder.close()
        finally:
            await db.close()

    asyncio.run(scenario())


def test_signed_webhooks_at_concurrency_16_through_the_pooler_never_fail(
    system: System,
) -> None:
    users = [system.new_user("classic") for _ in range(8)]
    events = [
        stripe_event(
            "checkout.session.completed",
            {
                "id": f"cs_test_{uuid.uuid4().hex[:20]}",
                "object": "checkout.session",
                "amount_total": 500,
                "currency": "usd",
                "payment_status": "paid",
                "status": "complete",
                "mode": "payment",
                "payment_intent": f"pi_{uuid.uuid4().hex[:24]}",
                "customer": f"cus_{users[n % 8][:8]}",
                "metadata": {"purpose": "topup", "user_id": users[n % 8]},
            },
        )
        for n in range(96)
    ]

    def deliver(event: dict[str, Any]) -> tuple[int, int]:
        # Health checks run beside the deliveries, as a load balancer's would.
        ready = httpx.get(system.worker_url + "/readyz", timeout=30).status_code
        return system.post_stripe(event).status_code, ready

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(deliver, events))
    assert [a for a in answers if a != (200, 200)] == []
    for user in users:
        assert system.balance(user) == Decimal("60.00")  # 12 top-ups of $5 each
    assert system.one(
        "select count(*) from public.stripe_events where event_id = any(%s)",
        ([e["id"] for e in events],),
    ) == len(events)
    assert system.drift() == []
    failures = [line for line in system.log_lines() if int(line.get("status", 0)) >= 500]
    assert failures == []


def _jobs(system: System, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "jobs", "--poll-seconds", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    proc.terminate()
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_the_jobs_work_through_the_pooler_and_listen_on_the_session_url(system: System) -> None:
    user = system.new_user("classic")
    top_up_with_saved_card(system, user, 1000)
    enable_auto_refill(system, user)
    assert system.env["DATABASE_URL"] == system.pooled_url != system.db_url
    assert system.env["DATABASE_SESSION_URL"] == system.db_url
    proc = _jobs(system, dict(system.env))
    try:
        assert system.wait_for(
            lambda: (
                system.one(
                    "select count(*) from pg_stat_activity "
                    "where query = 'listen refill_requests' and datname = current_database()"
                )
                >= 1
            ),
            timeout=30,
        )
        call(system, user, 60)
        assert system.wait_for(lambda: system.balance(user) == Decimal("59.90"), timeout=15)
    finally:
        lines = _stop(proc)
    started = [line for line in lines if line.get("msg") == "jobs started"]
    assert started and "LISTEN" in started[0]["refills"], lines
    failed = [line for line in lines if line.get("msg") == "job failed"]
    assert failed == [], json.dumps(failed)


def test_the_jobs_say_they_poll_without_a_session_url(system: System) -> None:
    user = system.new_user("classic")
    top_up_with_saved_card(system, user, 1000)
    enable_auto_refill(system, user)
    env = {k: v for k, v in system.env.items() if k != "DATABASE_SESSION_URL"}
    proc = _jobs(system, env)
    try:
        call(system, user, 60)
        assert system.wait_for(lambda: system.balance(user) == Decimal("59.90"), timeout=15)
        assert (
            system.one(
                "select count(*) from pg_stat_activity "
                "where query = 'listen refill_requests' and datname = current_database()"
            )
            == 0
        )
    finally:
        lines = _stop(proc)
    started = [line for line in lines if line.get("msg") == "jobs started"]
    assert started, lines
    assert "no DATABASE_SESSION_URL: polling every 0.2 s" in started[0]["refills"]
    failed = [line for line in lines if line.get("msg") == "job failed"]
    assert failed == [], json.dumps(failed)


def test_up_says_it_runs_without_a_pooler_when_pgbouncer_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(up_module, "pgbouncer_binary", lambda: None)
    said: list[str] = []
    up = up_module.Up(state_dir=tmp_path, echo=said.append)
    assert up.plan_pooler("postgresql://postgres:postgres@127.0.0.1:5/postgres") == ""
    assert up.children == []
    assert any("no pooler: pgbouncer is not installed" in line for line in said)


def test_the_pooler_config_is_transaction_mode_and_rescues_no_prepared_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "bouncer"
    bouncer = PgBouncer(
        "postgresql://app:s3cret@127.0.0.1:6543/postgres",
        config_dir,
        port=6400,
        binary=Path("/nonexistent/pgbouncer"),
    )
    for version, tracks in (((1, 18), False), ((1, 23), True)):
        monkeypatch.setattr(pgbouncer_module, "pgbouncer_version", lambda _b, v=version: v)
        ini = bouncer.write_config().read_text()
        assert "pool_mode = transaction" in ini
        assert "* = host=127.0.0.1 port=6543" in ini
        assert ("max_prepared_statements = 0" in ini) is tracks
    assert (config_dir / "userlist.txt").read_text() == '"app" "s3cret"\n'
    assert bouncer.pooled("host=127.0.0.1 port=6543 user=app password=s3cret dbname=t1") == (
        "postgresql://app:s3cret@127.0.0.1:6400/t1"
    )
