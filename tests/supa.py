"""Act in the database as Supabase would: as a user, as service_role, as anon.

Mirrors what PostgREST does per request (DESIGN.md "Database access model"):
`set local role ...` and transaction-local `request.jwt.claims`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg


def set_claims(conn: psycopg.Connection[Any], role: str, claims: dict[str, Any]) -> None:
    conn.execute("select set_config('role', %s, true)", (role,))
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))


def as_user(conn: psycopg.Connection[Any], user_id: uuid.UUID | str) -> None:
    set_claims(
        conn,
        "authenticated",
        {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"},
    )


def as_service(conn: psycopg.Connection[Any]) -> None:
    set_claims(conn, "service_role", {"role": "service_role"})


def as_anon(conn: psycopg.Connection[Any]) -> None:
    set_claims(conn, "anon", {"role": "anon"})


def as_owner(conn: psycopg.Connection[Any]) -> None:
    """Back to the superuser the test connected as."""
    conn.execute("select set_config('role', 'none', true)")
    conn.execute("select set_config('request.jwt.claims', '', true)")


def create_user(
    conn: psycopg.Connection[Any], email: str | None = None, plan: str | None = None
) -> uuid.UUID:
    """Insert a user into auth.users as Supabase Auth would (plan via app metadata)."""
    email = email or f"user-{uuid.uuid4().hex[:12]}@example.test"
    meta = {"plan": plan} if plan else {}
    with conn.cursor() as cur:
        cur.execute("select current_user")
        row = cur.fetchone()
        switched = row is not None and row[0] != "postgres"
        if switched:
            cur.execute("select set_config('role', 'none', true)")
        cur.execute(
            "insert into auth.users (email, raw_app_meta_data) values (%s, %s) returning id",
            (email, json.dumps(meta)),
        )
        created = cur.fetchone()
    assert created is not None
    return uuid.UUID(str(created[0]))


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection[Any]]:
    """One committed transaction on its own connection."""
    with psycopg.connect(url) as conn, conn.transaction():
        yield conn
