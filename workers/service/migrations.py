"""Which migrations exist and which a database has applied.

The history is `supabase_migrations.schema_migrations (version, statements,
name)`, as the Supabase CLI keeps it. The service reads it to answer
readiness; `callbalance migrate` (`workers.ops.migrate`) writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from workers.paths import MIGRATIONS_DIR

_FILE_NAME = re.compile(r"^(\d+)_(.+)\.sql$")


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
