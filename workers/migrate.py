"""`callbalance migrate`: the local platform when needed, then every pending migration.

Each migration runs in its own transaction and is recorded in
`supabase_migrations.schema_migrations (version, statements, name)` exactly as
the Supabase CLI records it, so `supabase migration list` and `supabase db
push` agree with this command.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from workers.paths import LOCAL_PLATFORM_SQL, MIGRATIONS_DIR
from workers.sql_split import split_statements

PLATFORM_MARKER = "callbalance local platform"
_FILE_NAME = re.compile(r"^(\d+)_(.+)\.sql$")
_LOCK_KEY = 7_231_004_001  # advisory lock held while migrating


class MigrationError(RuntimeError):
    """A migration that failed; nothing of it was applied."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match:
            found.append(Migration(version=match.group(1), name=match.group(2), path=path))
    return sorted(found, key=lambda m: m.version)


def _platform_stamp() -> str:
    digest = hashlib.sha256(LOCAL_PLATFORM_SQL.read_bytes()).hexdigest()[:12]
    return f"{PLATFORM_MARKER} {digest}"


def needs_local_platform(conn: psycopg.Connection) -> bool:
    """True on a plain Postgres, or one an older version of the platform script prepared.

    A Supabase project has its own `auth.users` (no marker): it is never touched.
    """
    row = conn.execute(
        "select to_regclass('auth.users') is not null, "
        "coalesce(obj_description(to_regnamespace('auth'), 'pg_namespace'), '')"
    ).fetchone()
    assert row is not None
    has_users, comment = row
    if not has_users:
        return True
    return str(comment).startswith(PLATFORM_MARKER) and comment != _platform_stamp()


def apply_local_platform(conn: psycopg.Connection) -> bool:
    if not needs_local_platform(conn):
        return False
    with conn.transaction():
        conn.execute(LOCAL_PLATFORM_SQL.read_text())
        conn.execute(sql.SQL("comment on schema auth is {}").format(sql.Literal(_platform_stamp())))
    return True


def ensure_history_table(conn: psycopg.Connection) -> None:
    # The same statements the Supabase CLI runs before it records a migration.
    with conn.transaction():
        conn.execute("create schema if not exists supabase_migrations")
        conn.execute(
            "create table if not exists supabase_migrations.schema_migrations "
            "(version text not null primary key)"
        )
        conn.execute(
            "alter table supabase_migrations.schema_migrations "
            "add column if not exists statements text[]"
        )
        conn.execute(
            "alter table supabase_migrations.schema_migrations add column if not exists name text"
        )


def applied_versions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {row[0] for row in rows}


def pending(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    if conn.execute("select to_regclass('supabase_migrations.schema_migrations')").fetchone() == (
        None,
    ):
        return list_migrations(directory)
    done = applied_versions(conn)
    return [m for m in list_migrations(directory) if m.version not in done]


def apply_migration(conn: psycopg.Connection, migration: Migration) -> None:
    text = migration.path.read_text()
    statements = split_statements(text)
    try:
        with conn.transaction():
            for statement in statements:
                try:
                    conn.execute(statement.text)
                except psycopg.Error as exc:
                    diag = exc.diag
                    line = statement.line
                    if diag.statement_position:
                        position = int(diag.statement_position) - 1
                        line += statement.text.count("\n", 0, position)
                    detail = f"\nDETAIL: {diag.message_detail}" if diag.message_detail else ""
                    raise MigrationError(
                        f"{migration.path.name}:{line}: {diag.message_primary or exc}{detail}"
                    ) from exc
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, statements, name) "
                "values (%s, %s, %s)",
                (migration.version, [s.text for s in statements], migration.name),
            )
    except MigrationError:
        raise


def migrate(
    database_url: str,
    directory: Path = MIGRATIONS_DIR,
    echo: Callable[[str], None] = print,
) -> list[Migration]:
    """Apply the platform (when needed) and every pending migration; return those applied."""
    applied: list[Migration] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            if apply_local_platform(conn):
                echo("local platform: roles, auth schema, extensions, supabase_realtime in place")
            ensure_history_table(conn)
            for migration in pending(conn, directory):
                apply_migration(conn, migration)
                echo(f"applied {migration.path.name}")
                applied.append(migration)
            if not applied:
                echo("migrations: up to date")
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
