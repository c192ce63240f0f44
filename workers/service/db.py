"""Database access for the workers: one RPC per transaction, as `service_role`.

Every transaction switches role exactly as PostgREST does for a privileged
request (`set local role service_role`), so every privilege decision stays in
the database. SQL errors raised with PostgREST's SQLSTATEs (`PT400`…`PT409`)
become `RpcError` with that HTTP status.

Everything here works through a transaction-mode pooler (Supavisor, PgBouncer):
no connection ever prepares a statement (`prepare_threshold=None`: psycopg
would otherwise prepare a query after its fifth execution, and the next
transaction may land on a server connection that has another statement of
that name, or none), settings are transaction-local, and nothing is kept in
the session. `LISTEN` needs a session connection of its own (`listen_url`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from functools import partial
from typing import Any, cast

import psycopg
from psycopg import AsyncClientCursor, AsyncConnection, ClientCursor, Connection
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from workers.service.migrations import pending

Params = Sequence[Any] | dict[str, Any] | None

# Money in JSON results stays exact: numbers become Decimal, never float.
set_json_loads(partial(json.loads, parse_float=Decimal))


class RpcError(Exception):
    """A refusal from SQL: an HTTP status, a message for a person, and details."""

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "details": self.details.get("details")}
        for key in ("minRequired", "price", "balance"):
            if key in self.details:
                body[key] = self.details[key]
        if body["details"] is None:
            body["details"] = self.message
        return body


def rpc_error(exc: psycopg.Error) -> RpcError | None:
    """The RpcError for a PTxxx SQLSTATE or a data error, or None for anything else.

    Data errors (SQLSTATE class 22: a malformed uuid, a number out of range, a NUL
    byte in a string) come from the input, not the database: they are a 400.
    """
    state = exc.sqlstate or ""
    if isinstance(exc, psycopg.DataError):
        return RpcError(400, "Invalid input.", {"details": exc.diag.message_primary or str(exc)})
    if not (state.startswith("PT") and state[2:].isdigit()):
        return None
    detail_text = exc.diag.message_detail or ""
    details: dict[str, Any]
    try:
        parsed = json.loads(detail_text) if detail_text else {}
        details = parsed if isinstance(parsed, dict) else {"details": parsed}
    except json.JSONDecodeError:
        details = {"details": detail_text}
    return RpcError(int(state[2:]), exc.diag.message_primary or str(exc), details)


@contextmanager
def rpc_errors() -> Iterator[None]:
    """Raise a refusal from SQL (see `rpc_error`) as RpcError; anything else unchanged."""
    try:
        yield
    except psycopg.Error as exc:
        mapped = rpc_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


# Every connection: autocommit, rows as dicts, and never a server-side prepared statement.
POOLED: dict[str, Any] = {"autocommit": True, "row_factory": dict_row, "prepare_threshold": None}


def connect(url: str, **kwargs: Any) -> Connection[Any]:
    """One connection that prepares nothing, safe through a transaction-mode pooler."""
    return psycopg.connect(url, prepare_threshold=None, **kwargs)


# Prepended to a one-statement RPC: the role lasts until the implicit transaction ends.
ROLE_PREFIX = "set local role service_role; "


class Database:
    """An async pool for the web service.

    Connections are in autocommit mode: `call` sends one implicit transaction,
    `service` opens an explicit one.
    """

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self.pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs=dict(POOLED),
        )

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def service(self) -> AsyncIterator[AsyncConnection[dict[str, Any]]]:
        """A transaction acting as service_role; commits on success."""
        async with self.pool.connection() as conn:
            with rpc_errors():
                async with conn.transaction():
                    await conn.execute("set local role service_role")
                    yield cast(AsyncConnection[dict[str, Any]], conn)

    async def call(self, sql: str, params: Params = None) -> Any:
        """One RPC in its own transaction; returns the first column of the first row.

        Sent as one simple query, `set local role service_role; <rpc>`, with the
        parameters bound client-side: Postgres runs the two statements as one
        implicit transaction (committed at the end, rolled back on an error), so a
        call costs one round trip and leaves no prepared statement or session state
        behind — what a transaction-mode pooler requires.
        """
        async with self.pool.connection() as conn:
            cur = AsyncClientCursor(conn, row_factory=dict_row)
            with rpc_errors():
                await cur.execute(ROLE_PREFIX + sql, params)
            cur.nextset()
            row = await cur.fetchone()
        return None if row is None else next(iter(row.values()))

    async def ready(self) -> tuple[bool, str]:
        try:
            async with self.pool.connection(timeout=2) as conn:
                await conn.execute("select 1")
        except Exception as exc:  # any failure means not ready
            return False, f"database unreachable: {type(exc).__name__}"
        return True, "ok"


class SyncDatabase:
    """A small sync pool for the background jobs."""

    def __init__(self, url: str, *, max_size: int = 4) -> None:
        self.url = url
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=True,
            kwargs=dict(POOLED),
        )

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def service(self) -> Iterator[Connection[dict[str, Any]]]:
        with self.pool.connection() as conn, rpc_errors(), conn.transaction():
            conn.execute("set local role service_role")
            yield cast(Connection[dict[str, Any]], conn)

    def call(self, sql: str, params: Params = None) -> Any:
        """One RPC in one round trip, as `Database.call`."""
        with self.pool.connection() as conn:
            cur = ClientCursor(conn, row_factory=dict_row)
            with rpc_errors():
                cur.execute(ROLE_PREFIX + sql, params)
            cur.nextset()
            row = cur.fetchone()
        return None if row is None else next(iter(row.values()))

    def rows(self, sql: str, params: Params = None) -> list[dict[str, Any]]:
        with self.service() as conn:
            return conn.execute(sql, params).fetchall()


def migrations_current(url: str) -> bool:
    with connect(url, autocommit=True) as conn:
        return not pending(conn)
