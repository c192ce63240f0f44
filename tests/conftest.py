"""The test database: a throwaway embedded Postgres, migrated once into a template.

- `TEST_DATABASE_URL` set: use that server instead (it must allow CREATE DATABASE).
- `CALLBALANCE_PG_BINDIR` set: start the throwaway server from those binaries
  (CI uses it to run the suite on PostgreSQL 15 as well as the embedded 16).

Fixtures:
- `db`: a connection inside a transaction that is rolled back after the test.
- `fresh_db`: the URL of a new database cloned from the migrated template, for
  tests that commit or use concurrent connections; dropped afterwards.
- `pgbouncer`: PgBouncer in transaction mode in front of the server, as Supabase's
  pooler; `pooled(url)` is a database's URL through it. The worker, jobs and Edge
  Function tests connect through it. Without the `pgbouncer` binary those tests
  skip, except under `CI=true`, where they fail.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from workers.local.embedded_pg import EmbeddedPostgres, free_port
from workers.local.pgbouncer import PgBouncer, pgbouncer_binary
from workers.ops.migrate import migrate

TEMPLATE = "callbalance_template"
HELPERS_SQL = Path(__file__).parent / "sql" / "helpers.sql"


def _with_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server for the whole session; yields the URL of its maintenance database."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    kwargs: dict[str, Any] = {}
    if os.environ.get("CALLBALANCE_PG_BINDIR"):
        kwargs["bindir"] = Path(os.environ["CALLBALANCE_PG_BINDIR"])
    server = EmbeddedPostgres(
        tmp_path_factory.mktemp("pg") / "data", port=free_port(), durable=False, **kwargs
    )
    server.start()
    try:
        yield server.url
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def template_url(pg_admin_url: str) -> str:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(TEMPLATE))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE)))
    url = _with_database(pg_admin_url, TEMPLATE)
    migrate(url, echo=lambda _line: None)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(HELPERS_SQL.read_text())
    return url


def _clone(pg_admin_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    return name


def _drop(pg_admin_url: str, name: str) -> None:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def shared_db_url(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """One clone of the template shared by the rolled-back `db` tests."""
    name = _clone(pg_admin_url)
    yield _with_database(pg_admin_url, name)
    _drop(pg_admin_url, name)


@pytest.fixture
def db(shared_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection in a transaction that is rolled back when the test ends."""
    conn = psycopg.connect(shared_db_url)
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


@pytest.fixture
def fresh_db(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """A new migrated database of the test's own, for commits and concurrency."""
    name = _clone(pg_admin_url)
    try:
        yield _with_database(pg_admin_url, name)
    finally:
        _drop(pg_admin_url, name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that touches the database `db`, so CI can rerun just those on PG 15."""
    for item in items:
        if "pg_admin_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="module")
def module_db(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """A fresh migrated database shared by one test module (tests use their own users)."""
    name = _clone(pg_admin_url)
    try:
        yield _with_database(pg_admin_url, name)
    finally:
        _drop(pg_admin_url, name)


@pytest.fixture(scope="session")
def pgbouncer(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    """PgBouncer (`pool_mode = transaction`) in front of the test server, for the session."""
    binary = pgbouncer_binary()
    if binary is None:
        reason = "the pgbouncer binary is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI runs the pooled tests: {reason}")
        pytest.skip(reason)
    config_dir = tmp_path_factory.mktemp("pgbouncer")
    config_dir.chmod(0o755)  # PgBouncer drops to the embedded server's user when run as root
    bouncer = PgBouncer(pg_admin_url, config_dir, port=free_port(), binary=binary)
    log_path = config_dir / "pgbouncer.log"
    proc = bouncer.start(log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(bouncer.url, prepare_threshold=None, connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"PgBouncer did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.05)
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def pooled_module_db(module_db: str, pgbouncer: PgBouncer) -> str:
    """`module_db` through PgBouncer in transaction mode."""
    return pgbouncer.pooled(module_db)
