"""`callbalance migrate`: the local platform when needed, then every pending migration.

Each migration runs in its own transaction and is recorded in
`supabase_migrations.schema_migrations (version, statements, name)` exactly as
the Supabase CLI records it, so `supabase migration list` and `supabase db
push` agree with this command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from workers import CommandError
from workers.local.embedded_pg import EmbeddedPostgres
from workers.local.platform import apply_local_platform
from workers.ops.sql_split import split_statements
from workers.paths import MIGRATIONS_DIR
from workers.service.db import connect
from workers.service.migrations import Migration, pending

_LOCK_KEY = 7_231_004_001  # advisory lock held while migrating


class MigrationError(CommandError):
    """A migration that failed; nothing of it was applied."""


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
    with connect(database_url, autocommit=True) as conn:
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


def migrate_command(database_url: str | None, data_dir: Path, port: int) -> int:
    """`callbalance migrate`: this database, or else the embedded Postgres, brought up to date."""
    server = None
    if not database_url:
        server = EmbeddedPostgres(data_dir, port=port)
        database_url = server.start()
    try:
        migrate(database_url)
    finally:
        if server is not None:
            server.stop()
    return 0
