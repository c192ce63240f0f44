"""`callbalance up`: the whole system on one machine, started, supervised and stopped together.

Children: PgBouncer in transaction mode in front of the embedded Postgres
(when the `pgbouncer` binary is installed: the workers, jobs and Edge Functions
then connect through it, as through Supabase's pooler, and the jobs `LISTEN` on
the direct URL), the provider stand-ins (only without real keys), the worker
service, the jobs, and the Edge Functions under Deno. Postgres is the embedded
default (or `DATABASE_URL`, used as given). Every child's output goes to `<state>/logs/<name>.log`;
a child that dies is reported with its last lines and restarted (three times
at most within a minute), else `up` stops everything and exits non-zero.
The embedded Postgres is supervised the same way. Ctrl-C or SIGTERM stops
all children; children also die with `up` itself
(PR_SET_PDEATHSIG), so nothing is left orphaned.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from workers import CommandError
from workers.local.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, port_in_use
from workers.local.pgbouncer import PgBouncer, pgbouncer_binary
from workers.ops.migrate import migrate
from workers.paths import FUNCTIONS_DIR, PROJECT_ROOT

LOCAL_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"  # noqa: S105
SANDBOX_ACCOUNT_SID = "AC" + "5a" * 16
DENO = PROJECT_ROOT / "node_modules" / ".bin" / "deno"


class UpError(CommandError):
    """A configuration or start-up failure that stops `up`."""


@dataclass
class Ports:
    db: int = 54322
    functions: int = 54321
    worker: int = 54330
    stripe: int = 12111
    twilio: int = 12112
    pooler: int = 54329


def _die_with_parent() -> None:
    # Linux: the child receives SIGTERM when `up` exits, however it exits.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    proc: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


@dataclass
class Up:
    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    echo: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    server: EmbeddedPostgres | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    pg_restarts: deque[float] = field(default_factory=deque)

    def step(self, text: str) -> None:
        self.echo(f"  • {text}")

    def environment(
        self, database_url: str, session_url: str | None = None
    ) -> tuple[dict[str, str], list[str]]:
        """The children's environment, with stand-ins filling in for missing provider keys."""
        env = dict(os.environ)
        notes: list[str] = []
        worker = f"http://127.0.0.1:{self.ports.worker}"
        env["DATABASE_URL"] = database_url
        if session_url:
            env["DATABASE_SESSION_URL"] = session_url
        env.setdefault("PUBLIC_URL", worker)
        env["SUPABASE_DB_URL"] = database_url
        env.setdefault("SUPABASE_JWT_SECRET", LOCAL_JWT_SECRET)
        key = env.get("STRIPE_SECRET_KEY", "")
        if key.startswith(("sk_live_", "rk_live_")) and env.get("STRIPE_API_BASE"):
            raise UpError("a live Stripe key must not point at STRIPE_API_BASE (a stand-in)")
        if not key:
            env["STRIPE_SECRET_KEY"] = "sk_test_sandbox"  # noqa: S105 - the stand-in's key
            env["STRIPE_WEBHOOK_SECRET"] = "whsec_sandbox_" + secrets.token_hex(12)
            env["STRIPE_API_BASE"] = f"http://127.0.0.1:{self.ports.stripe}"
            env.setdefault("STRIPE_TOPUP_PRICE_IDS", "price_5USD:5,price_10USD:10")
            notes.append("stripe")
        if not env.get("TWILIO_ACCOUNT_SID"):
            if env.get("CALLBALANCE_ENV") == "production":
                raise UpError("production mode needs real Twilio credentials")
            env["TWILIO_ACCOUNT_SID"] = SANDBOX_ACCOUNT_SID
            env["TWILIO_AUTH_TOKEN"] = secrets.token_hex(16)
            env["TWILIO_API_KEY_SID"] = "SK" + secrets.token_hex(16)
            env["TWILIO_API_KEY_SECRET"] = secrets.token_hex(16)
            env["TWILIO_TWIML_APP_SID"] = "AP" + secrets.token_hex(16)
            env["TWILIO_API_BASE"] = f"http://127.0.0.1:{self.ports.twilio}"
            env.setdefault("TWILIO_INBOUND_DIAL", "sip:agent@ai-agent.local")
            env.setdefault("TWILIO_CALLER_ID", "+15005550006")
            notes.append("twilio")
        elif env.get("TWILIO_API_BASE") and env.get("CALLBALANCE_ENV") == "production":
            raise UpError("production Twilio credentials must not point at TWILIO_API_BASE")
        env.setdefault("TOPUP_SUCCESS_URL", "http://127.0.0.1:3000/billing?topup=success")
        env.setdefault("TOPUP_CANCEL_URL", "http://127.0.0.1:3000/billing?topup=cancel")
        env.setdefault("ALLOWED_RETURN_ORIGINS", "http://127.0.0.1:3000,http://localhost:3000")
        env.setdefault("DENO_DIR", str(self.state_dir / "deno"))
        env["PYTHONUNBUFFERED"] = "1"
        return env, notes

    def plan_children(self, env: dict[str, str], sandbox: list[str]) -> None:
        logs = self.state_dir / "logs"
        p = self.ports
        if "stripe" in sandbox:
            self.children.append(
                Child(
                    "stripe-standin",
                    _python(
                        "workers.local.standins",
                        "stripe",
                        "--port",
                        str(p.stripe),
                        "--webhook-url",
                        f"http://127.0.0.1:{p.worker}/stripe/webhook",
                        "--webhook-secret",
                        env["STRIPE_WEBHOOK_SECRET"],
                        "--state-dir",
                        str(self.state_dir),
                    ),
                    env,
                    logs / "stripe-standin.log",
                    lambda: port_in_use("127.0.0.1", p.stripe),
                )
            )
        if "twilio" in sandbox:
            self.children.append(
                Child(
                    "twilio-standin",
                    _python(
                        "workers.local.standins",
                        "twilio",
                        "--port",
                        str(p.twilio),
                        "--account-sid",
                        env["TWILIO_ACCOUNT_SID"],
                        "--auth-token",
                        env["TWILIO_AUTH_TOKEN"],
                        "--api-key-sid",
                        env["TWILIO_API_KEY_SID"],
                        "--api-key-secret",
                        env["TWILIO_API_KEY_SECRET"],
                        "--state-dir",
                        str(self.state_dir),
                    ),
                    env,
                    logs / "twilio-standin.log",
                    lambda: port_in_use("127.0.0.1", p.twilio),
                )
            )
        self.children.append(
            Child(
                "worker",
                _python("workers.cli", "serve", "--port", str(p.worker)),
                env,
                logs / "worker.log",
                _http_ok(f"http://127.0.0.1:{p.worker}/readyz"),
            )
        )
        self.children.append(
            Child(
                "jobs",
                _python("workers.cli", "jobs", "--poll-seconds", "5"),
                env,
                logs / "jobs.log",
                lambda: True,
            )
        )
        self.children.append(
            Child(
                "functions",
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
                    str(p.functions),
                    "--hostname",
                    "127.0.0.1",
                ],
                env,
                logs / "functions.log",
                _http_ok(f"http://127.0.0.1:{p.functions}/health"),
            )
        )

    def plan_pooler(self, direct_url: str) -> str:
        """PgBouncer in transaction mode as the first child; its URL, or "" without the binary."""
        binary = pgbouncer_binary()
        if binary is None:
            self.step("no pooler: pgbouncer is not installed (Debian: apt-get install pgbouncer)")
            return ""
        bouncer = PgBouncer(direct_url, self.state_dir / "pgbouncer", self.ports.pooler, binary)
        self.step(f"PgBouncer (transaction mode) on 127.0.0.1:{self.ports.pooler}")
        self.children.append(
            Child(
                "pgbouncer",
                bouncer.argv(),
                dict(os.environ),
                self.state_dir / "logs" / "pgbouncer.log",
                lambda: port_in_use("127.0.0.1", self.ports.pooler),
            )
        )
        return bouncer.url

    def wait_ready(self, child: Child, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if not child.alive():
                raise UpError(f"{child.name} exited while starting:\n{child.tail()}")
            if child.ready():
                return
            time.sleep(0.1)
        if not self.stop_event.is_set():
            raise UpError(f"{child.name} was not ready after {timeout:.0f} s:\n{child.tail()}")

    def start(self) -> dict[str, str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.echo("Call Balance: starting")
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            self.server = EmbeddedPostgres(self.state_dir / "pgdata", port=self.ports.db)
            self.step(f"embedded Postgres on 127.0.0.1:{self.ports.db} ({self.server.data_dir})")
            database_url = self.server.start()
        else:
            self.step("Postgres from DATABASE_URL")
        self.step("migrations")
        migrate(database_url, echo=lambda line: self.echo(f"      {line}"))
        pooled_url = self.plan_pooler(database_url) if self.server is not None else ""
        session_url = database_url if pooled_url else os.environ.get("DATABASE_SESSION_URL")
        env, sandbox = self.environment(pooled_url or database_url, session_url)
        for port_name in (
            *(("pooler",) if pooled_url else ()),
            "worker",
            "functions",
            *(("stripe",) if "stripe" in sandbox else ()),
            *(("twilio",) if "twilio" in sandbox else ()),
        ):
            port = getattr(self.ports, port_name)
            if port_in_use("127.0.0.1", port):
                raise UpError(f"port {port} ({port_name}) is already taken")
        self.plan_children(env, sandbox)
        for child in self.children:
            self.step(f"{child.name}")
            child.start()
            self.wait_ready(child)
        info = {
            "database_url": database_url,
            "pooler_url": pooled_url,
            "functions_url": f"http://127.0.0.1:{self.ports.functions}/functions/v1",
            "worker_url": f"http://127.0.0.1:{self.ports.worker}",
            "stripe_webhook_url": f"{env['PUBLIC_URL']}/stripe/webhook",
            "twilio_voice_url": f"{env['PUBLIC_URL']}/twilio/voice",
            "twilio_status_url": f"{env['PUBLIC_URL']}/twilio/call-status",
            "stripe_api_base": env.get("STRIPE_API_BASE", ""),
            "twilio_api_base": env.get("TWILIO_API_BASE", ""),
            "sandbox": ",".join(sandbox),
            "jwt_secret": env["SUPABASE_JWT_SECRET"],
            "stripe_webhook_secret": env["STRIPE_WEBHOOK_SECRET"],
            "twilio_account_sid": env["TWILIO_ACCOUNT_SID"],
            "twilio_auth_token": env["TWILIO_AUTH_TOKEN"],
            "public_url": env["PUBLIC_URL"],
            "pid": str(os.getpid()),
            "children": ",".join(
                f"{c.name}:{c.proc.pid}" for c in self.children if c.proc is not None
            ),
        }
        state_file = self.state_dir / "up.json"
        state_file.write_text(json.dumps(info, indent=2))
        state_file.chmod(0o600)
        self.announce(info, sandbox)
        return info

    def announce(self, info: dict[str, str], sandbox: list[str]) -> None:
        if sandbox:
            self.echo(f"sandbox: no real money moves (local {' and '.join(sandbox)} stand-ins)")
        self.echo("ready:")
        rows = [
            ("database", info["database_url"]),
            (
                "pooler",
                f"{info['pooler_url']}  (PgBouncer, transaction mode: workers, jobs, functions)"
                if info["pooler_url"]
                else "none (pgbouncer is not installed): everything connects directly",
            ),
            ("edge functions", info["functions_url"] + "/{top-up,buy-number,access-token}"),
            ("worker", info["worker_url"] + "  (GET /healthz, /readyz, /docs)"),
            ("Stripe webhook", info["stripe_webhook_url"]),
            ("Twilio voice URL", info["twilio_voice_url"]),
            ("Twilio status callback", info["twilio_status_url"]),
        ]
        if info["stripe_api_base"]:
            rows.append(("Stripe API", info["stripe_api_base"]))
        if info["twilio_api_base"]:
            rows.append(("Twilio API", info["twilio_api_base"]))
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            self.echo(f"  {name.ljust(width)}  {value}")
        self.echo("try it:")
        self.echo("  .venv/bin/callbalance simulate            # a whole customer journey, checked")
        self.echo("  .venv/bin/callbalance user create --email me@example.com   # prints a JWT")
        self.echo("  .venv/bin/callbalance report              # balances, ledger, revenue")
        self.echo("Ctrl-C stops everything.")

    def postgres_alive(self) -> bool:
        if self.server is None:
            return True
        try:
            pid = int((self.server.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        stat = Path(f"/proc/{pid}/stat")
        return not (stat.exists() and stat.read_text().split()[2] == "Z")

    def restart_postgres(self) -> bool:
        assert self.server is not None
        tail = ""
        if self.server.log_file.exists():
            lines = self.server.log_file.read_text(errors="replace").splitlines()
            tail = "\n".join(lines[-10:])
        self.echo(f"! Postgres exited; last lines:\n{tail}")
        now = time.monotonic()
        while self.pg_restarts and now - self.pg_restarts[0] > 60:
            self.pg_restarts.popleft()
        if len(self.pg_restarts) >= 3:
            self.echo("! Postgres keeps dying; stopping everything")
            return False
        self.pg_restarts.append(now)
        self.echo("  restarting Postgres (crash recovery)")
        deadline = time.monotonic() + 60
        last: Exception | None = None
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if self.postgres_alive():
                return True  # started meanwhile (an operator, or recovery finished)
            try:
                self.server.start()
                return True
            except EmbeddedPostgresError as exc:
                # The killed postmaster's backends may hold its shared memory a moment.
                last = exc
                time.sleep(0.5)
        self.echo(f"! Postgres did not restart: {last}")
        return self.stop_event.is_set()

    def supervise(self) -> int:
        while not self.stop_event.wait(0.5):
            if not self.postgres_alive() and not self.restart_postgres():
                return 1
            for child in self.children:
                if child.alive():
                    continue
                code = child.proc.returncode if child.proc else None
                self.echo(f"! {child.name} exited ({code}); last lines:\n{child.tail()}")
                now = time.monotonic()
                while child.restarts and now - child.restarts[0] > 60:
                    child.restarts.popleft()
                if len(child.restarts) >= 3:
                    self.echo(f"! {child.name} keeps dying; stopping everything")
                    return 1
                child.restarts.append(now)
                self.echo(f"  restarting {child.name}")
                child.start()
        return 0

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.server is not None:
            self.server.stop()
        (self.state_dir / "up.json").unlink(missing_ok=True)


def run_up(state_dir: Path, ports: Ports) -> int:
    up = Up(state_dir=state_dir, ports=ports, echo=lambda line: print(line, flush=True))

    def handler(signum: int, frame: FrameType | None) -> None:
        up.stop_event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        up.start()
        code = 0 if up.stop_event.is_set() else up.supervise()
    except UpError as exc:
        print(f"callbalance up: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        print("stopping ...", flush=True)
        up.stop()
        print("stopped", flush=True)
    return code


def read_state(state_dir: Path) -> dict[str, str]:
    path = state_dir / "up.json"
    if not path.exists():
        raise UpError(f"nothing is running from {state_dir} (start it with `callbalance up`)")
    data: dict[str, str] = json.loads(path.read_text())
    return data
