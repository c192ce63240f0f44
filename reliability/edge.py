"""The Edge Functions served locally (Deno, `_shared/local_router.ts`) for a test system."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import psycopg

from workers.local.embedded_pg import free_port
from workers.paths import FUNCTIONS_DIR, PROJECT_ROOT, STATE_DIR

DENO = PROJECT_ROOT / "node_modules" / ".bin" / "deno"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"  # noqa: S105 - local


def as_url(conninfo: str) -> str:
    """A `postgresql://` URL for a libpq conninfo (npm:postgres takes URLs only)."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = quote(str(info.get("user", "postgres")), safe="")
    password = info.get("password")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    host, port = info.get("host", "127.0.0.1"), info.get("port", 5432)
    return f"postgresql://{auth}@{host}:{port}/{quote(str(info['dbname']), safe='')}"


def function_env(
    *,
    db_url: str,
    worker_url: str,
    stripe_url: str,
    twilio_url: str,
    account_sid: str,
    auth_token: str,
    stripe_key: str,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "TWILIO_", "SUPABASE_", "TOPUP_"))
    }
    env.update(
        {
            "DENO_DIR": str(STATE_DIR / "deno"),
            "NO_COLOR": "1",
            "SUPABASE_DB_URL": as_url(db_url),
            "SUPABASE_JWT_SECRET": JWT_SECRET,
            "STRIPE_SECRET_KEY": stripe_key,
            "STRIPE_API_BASE": stripe_url,
            "STRIPE_TOPUP_PRICE_IDS": "price_5USD:5,price_10USD:10",
            "ALLOWED_RETURN_ORIGINS": "https://app.example.test",
            "TOPUP_SUCCESS_URL": "https://app.example.test/billing?topup=success",
            "TOPUP_CANCEL_URL": "https://app.example.test/billing?topup=cancelled",
            "PUBLIC_URL": worker_url,
            "TWILIO_ACCOUNT_SID": account_sid,
            "TWILIO_AUTH_TOKEN": auth_token,
            "TWILIO_API_KEY_SID": "SK" + "0" * 31 + "2",
            "TWILIO_API_KEY_SECRET": "twilio_test_api_key_secret",
            "TWILIO_TWIML_APP_SID": "AP" + "0" * 31 + "3",
            "TWILIO_API_BASE": twilio_url,
        }
    )
    return env


@contextmanager
def serve_functions(env: dict[str, str], timeout: float = 120) -> Iterator[str]:
    """Run the local router; yields `http://127.0.0.1:<port>/functions/v1`."""
    port = free_port()
    router = subprocess.Popen(
        [
            str(DENO),
            "run",
            "--allow-net",
            "--allow-env",
            "--allow-read",
            "--allow-sys",
            "--config",
            str(FUNCTIONS_DIR / "deno.json"),
            str(FUNCTIONS_DIR / "_shared" / "local_router.ts"),
            "--port",
            str(port),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if router.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Edge Functions router did not start")
            time.sleep(0.2)
        yield url + "/functions/v1"
    finally:
        router.terminate()
        try:
            router.wait(timeout=10)
        except subprocess.TimeoutExpired:
            router.kill()
