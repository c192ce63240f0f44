"""The Edge Functions (Deno) against the real database, the provider stand-ins and the worker.

Starts the system of tests/system.py (a migrated database, the Stripe and
Twilio stand-ins, the worker service), then runs `deno test` over
supabase/functions/tests/ with the environment the functions read. One
pytest test per Deno test file, so a failure names the file and shows
Deno's report.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from tests.system import ACCOUNT_SID, AUTH_TOKEN, STRIPE_KEY, System, running_system

ROOT = Path(__file__).resolve().parent.parent
DENO = ROOT / "node_modules" / ".bin" / "deno"
FUNCTIONS = ROOT / "supabase" / "functions"
DENO_TESTS = sorted(p.name for p in (FUNCTIONS / "tests").glob("*_test.ts"))

JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
API_KEY_SID = "SK" + "0" * 31 + "2"
API_KEY_SECRET = "twilio_test_api_key_secret"
TWIML_APP_SID = "AP" + "0" * 31 + "3"

pytestmark = pytest.mark.skipif(not DENO.exists(), reason="npm install has not been run")


def _twilio_factory() -> Any:
    """The Twilio stand-in, when the project has one."""
    try:
        from workers.local.standins import twilio as twilio_standin
    except ImportError:
        return None

    def factory() -> tuple[Any, Any]:
        config = twilio_standin.TwilioStandinConfig(
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            api_keys={API_KEY_SID: API_KEY_SECRET},
        )
        standin = twilio_standin.TwilioStandin(config)
        return twilio_standin.create_app(standin), standin

    return factory


@pytest.fixture(scope="module")
def system(module_db: str, pooled_module_db: str) -> Iterator[System]:
    with running_system(module_db, _twilio_factory(), pooled_url=pooled_module_db) as running:
        yield running


def as_url(conninfo: str) -> str:
    """A `postgresql://` URL for a libpq conninfo (npm:postgres takes URLs only)."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = quote(str(info.get("user", "postgres")), safe="")
    password = info.get("password")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    host = info.get("host", "127.0.0.1")
    port = info.get("port", 5432)
    return f"postgresql://{auth}@{host}:{port}/{quote(str(info['dbname']), safe='')}"


def deno_env(system: System) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRIPE_", "TWILIO_", "SUPABASE_", "TOPUP_"))
    }
    env.update(
        {
            "DENO_DIR": str(ROOT / ".callbalance" / "deno"),
            "NO_COLOR": "1",
            "SUPABASE_DB_URL": as_url(system.pooled_url),
            "SUPABASE_JWT_SECRET": JWT_SECRET,
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_API_BASE": system.stripe_url,
            "STRIPE_TOPUP_PRICE_IDS": "price_5USD:5,price_10USD:10",
            "ALLOWED_RETURN_ORIGINS": "https://app.example.test,http://localhost:3000",
            "TOPUP_SUCCESS_URL": "https://app.example.test/billing?topup=success",
            "TOPUP_CANCEL_URL": "https://app.example.test/billing?topup=cancelled",
            "PUBLIC_URL": system.worker_url,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_KEY_SID": API_KEY_SID,
            "TWILIO_API_KEY_SECRET": API_KEY_SECRET,
            "TWILIO_TWIML_APP_SID": TWIML_APP_SID,
        }
    )
    if system.twilio_url:
        env["TWILIO_API_BASE"] = system.twilio_url
    return env


@pytest.mark.parametrize("test_file", DENO_TESTS)
def test_deno(system: System, test_file: str) -> None:
    result = subprocess.run(
        [
            str(DENO),
            "test",
            # The permissions the functions are served with (see _shared/local_router.ts).
            "--allow-net",
            "--allow-env",
            # Type checking is tests/test_lint.py's `deno check`; here it would only repeat it.
            "--no-check",
            "--config",
            str(FUNCTIONS / "deno.json"),
            str(FUNCTIONS / "tests" / test_file),
        ],
        cwd=ROOT,
        env=deno_env(system),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"deno test {test_file}\n{result.stdout}\n{result.stderr}"
