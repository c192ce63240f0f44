"""What Supabase's advisor checks, on the migrated schema.

Two rules are checked with our own catalog queries, so they hold whatever the
linter's version says:

- every function of the project's schemas sets `search_path = ''`;
- no `security definer` function lives in an exposed schema (`public`), and
  none there is executable by `anon` or `authenticated`.

Then Supabase's own linter, splinter (`tests/sql/splinter.sql`, unchanged from
upstream), runs as the dashboard's Security and Performance Advisors do, with
`pgrst.db_schemas = 'public'`: it must report no ERROR and no WARN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]

SPLINTER_SQL = Path(__file__).parent / "sql" / "splinter.sql"

# Schemas the project does not own: Postgres's, the platform's (Supabase's
# auth and extensions, the CLI's migration history) and the test vocabulary
# that tests/sql/helpers.sql loads into the test template only.
NOT_THE_PROJECT = (
    "pg_catalog",
    "information_schema",
    "auth",
    "extensions",
    "supabase_migrations",
    "tests",
)
EXPOSED_SCHEMAS = ("public",)

PROJECT_FUNCTIONS = """
    select n.nspname, p.oid::regprocedure::text, p.prosecdef, p.proconfig
    from pg_catalog.pg_proc as p
    join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
    where n.nspname <> all(%(excluded)s)
      and n.nspname not like 'pg\\_toast%%'
      and n.nspname not like 'pg\\_temp\\_%%'
      and not exists (
          select from pg_catalog.pg_depend as d
          where d.classid = 'pg_catalog.pg_proc'::regclass
            and d.objid = p.oid
            and d.deptype = 'e'
      )
    order by 1, 2
"""


def _project_functions(db: Conn) -> list[tuple[str, str, bool, list[str] | None]]:
    return db.execute(PROJECT_FUNCTIONS, {"excluded": list(NOT_THE_PROJECT)}).fetchall()


def test_every_function_sets_an_empty_search_path(db: Conn) -> None:
    functions = _project_functions(db)
    schemas = {schema for schema, *_ in functions}
    assert {"public", "billing"} <= schemas, schemas
    mutable = [
        signature
        for _schema, signature, _definer, config in functions
        if 'search_path=""' not in (config or [])
    ]
    assert mutable == [], f"{len(mutable)} functions without search_path = '': {mutable}"


def test_no_security_definer_function_in_an_exposed_schema(db: Conn) -> None:
    definers = [
        signature
        for schema, signature, definer, _config in _project_functions(db)
        if schema in EXPOSED_SCHEMAS and definer
    ]
    assert definers == []


def test_no_exposed_security_definer_function_is_executable_by_api_users(db: Conn) -> None:
    rows = db.execute(
        """
        select p.oid::regprocedure::text, r.rolname
        from pg_catalog.pg_proc as p
        join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
        cross join (values ('anon'), ('authenticated')) as r (rolname)
        where p.prosecdef
          and n.nspname = any(%s)
          and pg_catalog.has_function_privilege(r.rolname, p.oid, 'execute')
        order by 1, 2
        """,
        (list(EXPOSED_SCHEMAS),),
    ).fetchall()
    assert rows == []


def _splinter(conn: Conn, *, pg_graphql_installed: bool = False) -> list[tuple[str, str, str]]:
    """Run splinter in a rolled-back transaction; (level, name, detail) of every finding."""
    text = SPLINTER_SQL.read_text()
    preamble = "set local search_path = '';"
    assert preamble in text
    query = text.split(preamble, 1)[1]
    if pg_graphql_installed:
        # The pg_graphql lints (0026, 0027) run only where the extension is installed,
        # which Supabase does by default and the local platform does not.
        probe = "from pg_catalog.pg_extension\n    where extname = 'pg_graphql'"
        assert query.count(probe) == 2
        query = query.replace(probe, "")
    with conn.transaction(force_rollback=True):
        conn.execute("set local pgrst.db_schemas = 'public'")
        conn.execute(preamble)
        rows = conn.execute(f"select level, name, detail from ({query}) as lints").fetchall()
    return sorted(rows)


def test_splinter_reports_no_error_and_no_warning(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        # The migrated schema alone: without the SQL tests' vocabulary.
        conn.execute("drop schema tests cascade")
        findings = _splinter(conn)
    names = {name for _level, name, _detail in findings}
    assert "unused_index" in names, "splinter did not run every lint"
    serious = [f for f in findings if f[0] in ("ERROR", "WARN")]
    assert serious == [], "\n".join(" ".join(f) for f in serious)


def test_splinter_with_pg_graphql_lists_only_the_tables_users_read(fresh_db: str) -> None:
    """Where pg_graphql is installed, 0027 names each table `authenticated` may select.

    Those are the tables users read under RLS (their own rows, and the plans):
    pg_graphql shows their columns to every signed-in user. Nothing else may
    appear, and `anon` sees nothing (0026).
    """
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("drop schema tests cascade")
        findings = _splinter(conn, pg_graphql_installed=True)
    serious = [(level, name, detail) for level, name, detail in findings if level != "INFO"]
    assert {name for _level, name, _detail in serious} == {
        "pg_graphql_authenticated_table_exposed"
    }, serious
    exposed = sorted(detail.split("`")[1] for _level, _name, detail in serious)
    assert exposed == [
        "public.balance_transactions",
        "public.billing_alerts",
        "public.billing_plans",
        "public.call_balance",
        "public.twilio_call_logs",
        "public.user_phone_numbers",
    ]
