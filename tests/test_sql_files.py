"""Run every sql_tests/*.sql file, each in a transaction that is rolled back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from workers.ops.sql_split import split_statements

SQL_TESTS = sorted((Path(__file__).parent.parent / "sql_tests").glob("*.sql"))


@pytest.mark.parametrize("path", SQL_TESTS, ids=[p.name for p in SQL_TESTS])
def test_sql_file(path: Path, db: psycopg.Connection[Any]) -> None:
    for statement in split_statements(path.read_text()):
        try:
            with db.cursor() as cur:
                cur.execute(statement.text)
        except psycopg.Error as exc:
            first_line = statement.text.splitlines()[0]
            pytest.fail(
                f"{path.name}:{statement.line}: {exc.diag.message_primary or exc}\n"
                f"  in: {first_line}",
                pytrace=False,
            )
