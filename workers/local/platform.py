"""The local platform: what Supabase provides and a plain Postgres lacks.

`platform.sql` creates the roles, the `auth` schema, `extensions` and the
`supabase_realtime` publication. It is applied only off Supabase, and again
when a newer version of the script is installed; a Supabase project (its own
`auth.users`, without the marker) is never touched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
from psycopg import sql

PLATFORM_SQL = Path(__file__).resolve().with_name("platform.sql")
PLATFORM_MARKER = "callbalance local platform"


def _platform_stamp() -> str:
    digest = hashlib.sha256(PLATFORM_SQL.read_bytes()).hexdigest()[:12]
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
        conn.execute(PLATFORM_SQL.read_text())
        conn.execute(sql.SQL("comment on schema auth is {}").format(sql.Literal(_platform_stamp())))
    return True
