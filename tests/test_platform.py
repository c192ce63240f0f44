"""The foundation: local platform, migrate, embedded Postgres, Supabase CLI round trip."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import _with_database
from workers.local.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, free_port
from workers.local.platform import apply_local_platform
from workers.ops.migrate import MigrationError, migrate
from workers.service.migrations import list_migrations

ROOT = Path(__file__).resolve().parent.parent
SUPABASE_CLI = ROOT / "node_modules" / ".bin" / "supabase"


@pytest.fixture
def empty_db(pg_admin_url: str) -> Any:
    name = f"empty_{free_port()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield _with_database(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def test_roles_have_supabase_attributes(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(
        "select rolname, rolcanlogin, rolinherit, rolbypassrls from pg_roles "
        "where rolname in ('anon', 'authenticated', 'service_role', 'authenticator') "
        "order by rolname"
    ).fetchall()
    assert rows == [
        ("anon", False, False, False),
        ("authenticated", False, False, False),
        ("authenticator", True, False, False),
        ("service_role", False, False, True),
    ]
    granted = db.execute(
        "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.roleid "
        "join pg_roles u on u.oid = m.member where u.rolname = 'authenticator' order by 1"
    ).fetchall()
    assert [g[0] for g in granted] == ["anon", "authenticated", "service_role"]


def test_auth_uid_follows_the_claims(db: psycopg.Connection[Any]) -> None:
    db.execute(
        "select set_config('request.jwt.claims', %s, true)",
        ('{"sub": "' + "0" * 8 + '-0000-0000-0000-000000000001", "role": "authenticated"}',),
    )
    row = db.execute("select auth.uid()::text, auth.role(), auth.jwt() ->> 'role'").fetchone()
    assert row == ("00000000-0000-0000-0000-000000000001", "authenticated", "authenticated")
    db.execute("select set_config('request.jwt.claims', '', true)")
    assert db.execute("select auth.uid(), auth.role(), auth.jwt()").fetchone() == (None, None, None)


def test_new_public_objects_get_no_default_grants(db: psycopg.Connection[Any]) -> None:
    db.execute("create table public.t_probe (id int)")
    db.execute("create function public.f_probe() returns int language sql as 'select 1'")
    grants = db.execute(
        "select grantee from information_schema.role_table_grants where table_name = 't_probe' "
        "and grantee <> 'postgres'"
    ).fetchall()
    assert grants == []
    can_exec = db.execute(
        "select has_function_privilege(r, 'public.f_probe()', 'execute') from "
        "unnest(array['anon', 'authenticated', 'service_role']) r"
    ).fetchall()
    assert can_exec == [(False,), (False,), (False,)]


def test_migrate_is_idempotent_and_records_like_the_cli(empty_db: str) -> None:
    first: list[str] = []
    migrate(empty_db, echo=first.append)
    assert any("local platform" in line for line in first)
    second: list[str] = []
    assert migrate(empty_db, echo=second.append) == []
    assert second == ["migrations: up to date"]
    with psycopg.connect(empty_db) as conn:
        rows = conn.execute(
            "select version, name, array_length(statements, 1) from "
            "supabase_migrations.schema_migrations order by version"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in list_migrations()]
    assert all(r[2] and r[2] > 0 for r in rows)


def test_failing_migration_applies_nothing(empty_db: str, tmp_path: Path) -> None:
    (tmp_path / "20990101000000_good.sql").write_text("create table public.good (id int);\n")
    (tmp_path / "20990101000001_bad.sql").write_text(
        "create table public.half (id int);\n\n-- a typo\nselect * from public.nope;\n"
    )
    with pytest.raises(MigrationError) as failure:
        migrate(empty_db, directory=tmp_path, echo=lambda _l: None)
    assert "20990101000001_bad.sql:4" in str(failure.value)
    assert 'relation "public.nope" does not exist' in str(failure.value)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("select to_regclass('public.good') is not null").fetchone() == (True,)
        assert conn.execute("select to_regclass('public.half')").fetchone() == (None,)
        versions = conn.execute(
            "select version from supabase_migrations.schema_migrations"
        ).fetchall()
    assert versions == [("20990101000000",)]


def test_platform_is_not_applied_to_a_supabase_project(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("create schema auth")
        conn.execute("create table auth.users (id uuid primary key, encrypted_password text)")
        assert apply_local_platform(conn) is False
        assert conn.execute("select to_regprocedure('auth.uid()')").fetchone() == (None,)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SUPABASE_CLI), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.mark.skipif(not SUPABASE_CLI.exists(), reason="npm ci installs the Supabase CLI")
def test_supabase_cli_agrees_with_migrate(empty_db: str) -> None:
    migrate(empty_db, echo=lambda _l: None)
    listed = _cli("migration", "list", "--db-url", empty_db)
    assert listed.returncode == 0, listed.stderr
    for m in list_migrations():
        assert f"`{m.version}` | `{m.version}`" in listed.stdout, listed.stdout
    push = _cli("db", "push", "--db-url", empty_db, "--dry-run")
    assert push.returncode == 0, push.stderr
    assert "up to date" in push.stdout + push.stderr


@pytest.mark.skipif(not SUPABASE_CLI.exists(), reason="npm ci installs the Supabase CLI")
def test_migrate_accepts_a_database_pushed_by_the_cli(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        apply_local_platform(conn)  # what a Supabase project already has
    push = _cli("db", "push", "--db-url", empty_db, "--yes")
    assert push.returncode == 0, push.stderr + push.stdout
    lines: list[str] = []
    assert migrate(empty_db, echo=lines.append) == []
    assert lines[-1] == "migrations: up to date"
    with psycopg.connect(empty_db) as conn:
        count = conn.execute(
            "select count(*) from supabase_migrations.schema_migrations"
        ).fetchone()
    assert count == (len(list_migrations()),)


def test_embedded_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedPostgres(tmp_path / "data", port=port, durable=False)
        with pytest.raises(EmbeddedPostgresError, match=f"port {port} .* already taken"):
            server.start()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def test_embedded_keeps_data_and_refuses_another_version(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data", port=free_port(), durable=False)
    url = server.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table kept (v int)")
            conn.execute("insert into kept values (42)")
    finally:
        server.stop()
    assert not server.running()
    server.port = free_port()
    url = server.start()
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("select v from kept").fetchone() == (42,)
    finally:
        server.stop()
    (tmp_path / "data" / "PG_VERSION").write_text("13\n")
    with pytest.raises(EmbeddedPostgresError, match="belongs to PostgreSQL 13"):
        server.start()
