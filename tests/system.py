"""A running system for integration tests: a migrated database, the provider stand-ins,
and the worker service started as `callbalance serve` in a subprocess (the real HTTP stack).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import stripe
from psycopg.rows import dict_row

from workers.local.embedded_pg import free_port
from workers.local.standins import stripe as stripe_standin
from workers.local.standins.serving import StandinServer
from workers.local.standins.signing import stripe_signature, twilio_signature

WEBHOOK_SECRET = "whsec_test_current"
OLD_WEBHOOK_SECRET = "whsec_test_rotated_out"
ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "twilio_test_auth_token"
STRIPE_KEY = "sk_test_callbalance"


@dataclass
class System:
    db_url: str  # direct, as the database's owner: to arrange and inspect
    worker_url: str
    stripe: stripe_standin.StripeStandin
    stripe_url: str
    twilio: Any = None
    twilio_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    pooled_url: str = ""  # what the worker and jobs use: through PgBouncer when running

    def log_lines(self) -> list[dict[str, Any]]:
        """The worker's structured log, one JSON object per line."""
        with open(self.log_path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.startswith("{")]

    # -- the database, as its owner -------------------------------------------------
    def rows(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        with psycopg.connect(self.db_url, row_factory=dict_row) as conn:
            return conn.execute(query, params).fetchall()

    def one(self, query: str, params: Any = None) -> Any:
        rows = self.rows(query, params)
        return next(iter(rows[0].values())) if rows else None

    def service(self, query: str, params: Any = None) -> Any:
        """One statement as service_role, committed."""
        with psycopg.connect(self.db_url, row_factory=dict_row) as conn, conn.transaction():
            conn.execute("set local role service_role")
            row = conn.execute(query, params).fetchone()
        return None if row is None else next(iter(row.values()))

    def new_user(self, plan: str | None = None) -> str:
        meta = json.dumps({"plan": plan} if plan else {})
        email = f"u-{uuid.uuid4().hex[:10]}@example.test"
        with psycopg.connect(self.db_url) as conn:
            row = conn.execute(
                "insert into auth.users (email, raw_app_meta_data) values (%s, %s) returning id",
                (email, meta),
            ).fetchone()
        assert row is not None
        return str(row[0])

    def balance(self, user: str) -> Decimal:
        return Decimal(
            self.one("select balance from public.call_balance where user_id = %s", (user,))
        )

    def ledger(self, user: str) -> list[dict[str, Any]]:
        return self.rows(
            "select * from public.balance_transactions where user_id = %s order by created_at, id",
            (user,),
        )

    def drift(self) -> list[dict[str, Any]]:
        return self.rows("select * from monitoring.ledger_drift")

    # -- Stripe, as Stripe would call the worker -----------------------------------
    def post_stripe(
        self,
        event: dict[str, Any] | bytes,
        *,
        secret: str = WEBHOOK_SECRET,
        timestamp: int | None = None,
        signature: str | None = None,
        path: str = "/stripe/webhook",
    ) -> httpx.Response:
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        header = (
            signature if signature is not None else stripe_signature(payload, secret, timestamp)
        )
        headers = {"Content-Type": "application/json"}
        if header:
            headers["Stripe-Signature"] = header
        return httpx.post(self.worker_url + path, content=payload, headers=headers, timeout=30)

    def pay_checkout(self, user: str, cents: int, currency: str = "usd") -> str:
        """A top-up Checkout Session created as the top-up function does, paid at the stand-in
        with the card saved for off-session use; returns the session id."""
        from workers.service.providers import make_stripe_client

        client = make_stripe_client(STRIPE_KEY, self.stripe_url)
        purpose = {"purpose": "topup", "user_id": user}
        session = client.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": currency,
                            "unit_amount": cents,
                            "product_data": {"name": "Call balance top-up"},
                        },
                    }
                ],
                "metadata": purpose,
                "payment_intent_data": {"setup_future_usage": "off_session", "metadata": purpose},
                "customer_creation": "always",
                "success_url": "https://app.example.test/ok",
                "cancel_url": "https://app.example.test/cancel",
            }
        )
        paid = httpx.post(f"{self.stripe_url}/checkout/{session.id}/pay", timeout=10)
        assert paid.status_code in (200, 303), paid.text
        return str(session.id)

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return bool(predicate())

    # -- Twilio, as Twilio would call the worker -----------------------------------
    def post_twilio(
        self,
        path: str,
        params: dict[str, str],
        *,
        token: str = AUTH_TOKEN,
        signature: str | None = None,
    ) -> httpx.Response:
        url = self.worker_url + path
        sig = signature if signature is not None else twilio_signature(url, params, token)
        return httpx.post(url, data=params, headers={"X-Twilio-Signature": sig}, timeout=30)


def stripe_event(
    event_type: str, obj: dict[str, Any], event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "type": event_type,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("worker did not become ready")


@contextmanager
def running_system(
    db_url: str, twilio_app_factory: Any = None, *, pooled_url: str | None = None
) -> Iterator[System]:
    """The worker on `pooled_url` (a transaction-mode pooler in front of `db_url`) when
    given, else on `db_url`; its environment names `db_url` as the jobs' session URL."""
    port = free_port()
    worker_url = f"http://127.0.0.1:{port}"
    config = stripe_standin.StripeStandinConfig(
        webhook_urls=[worker_url + "/stripe/webhook"],
        webhook_secret=WEBHOOK_SECRET,
        retry_delays=(0.2, 0.5, 1.0),
    )
    standin = stripe_standin.StripeStandin(config)
    stripe_server = StandinServer(stripe_standin.create_app(standin))
    stripe_url = stripe_server.start()
    twilio_server = None
    twilio_state = None
    twilio_url = None
    if twilio_app_factory is not None:
        twilio_app, twilio_state = twilio_app_factory()
        twilio_server = StandinServer(twilio_app)
        twilio_url = twilio_server.start()
    env = {
        **os.environ,
        "DATABASE_URL": pooled_url or db_url,
        "DATABASE_SESSION_URL": db_url,
        "PUBLIC_URL": worker_url,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
        "STRIPE_API_BASE": stripe_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_INBOUND_DIAL": "sip:agent@ai.example.test",
        "TWILIO_CALLER_ID": "+15005550006",
    }
    if twilio_url:
        env["TWILIO_API_BASE"] = twilio_url
    log_file = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(worker_url, proc)
        yield System(
            db_url=db_url,
            worker_url=worker_url,
            stripe=standin,
            stripe_url=stripe_url,
            twilio=twilio_state,
            twilio_url=twilio_url,
            env=env,
            log_path=log_file.name,
            pooled_url=pooled_url or db_url,
        )
    finally:
        log_file.close()
        os.unlink(log_file.name)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        stripe_server.stop()
        standin.close()
        if twilio_server is not None:
            twilio_server.stop()
