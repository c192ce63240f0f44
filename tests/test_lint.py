"""Lint and types are part of the tests: ruff, mypy, sqlfluff, and deno for the Edge Functions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DENO = ROOT / "node_modules" / ".bin" / "deno"
FUNCTIONS = ROOT / "supabase" / "functions"


def run(*cmd: str | Path) -> None:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout}\n{result.stderr}"


PYTHON_DIRS = [d for d in ("workers", "tests", "bench", "reliability") if (ROOT / d).is_dir()]


def test_ruff_check() -> None:
    run(BIN / "ruff", "check", *PYTHON_DIRS)


def test_ruff_format() -> None:
    run(BIN / "ruff", "format", "--check", *PYTHON_DIRS)


def test_mypy() -> None:
    run(BIN / "mypy")


def test_sqlfluff() -> None:
    run(BIN / "sqlfluff", "lint", "supabase/migrations", "sql_tests")


@pytest.mark.parametrize(
    "args",
    [("fmt", "--check"), ("lint",), ("check",)],
    ids=["deno-fmt", "deno-lint", "deno-check"],
)
def test_deno(args: tuple[str, ...]) -> None:
    assert sorted(p.parent.name for p in FUNCTIONS.glob("*/index.ts")) == [
        "access-token",
        "buy-number",
        "top-up",
    ]
    targets = [str(p) for p in sorted(FUNCTIONS.glob("**/*.ts"))]
    # From the repository root Deno would read package.json; name the functions' config.
    run(DENO, *args, "--config", FUNCTIONS / "deno.json", *targets)
