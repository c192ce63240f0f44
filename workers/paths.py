"""Where the project's files live, for a source checkout or an editable install."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
MIGRATIONS_DIR = PROJECT_ROOT / "supabase" / "migrations"
FUNCTIONS_DIR = PROJECT_ROOT / "supabase" / "functions"
STATE_DIR = PROJECT_ROOT / ".callbalance"
