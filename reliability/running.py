"""`callbalance up` as a subprocess on free ports, and the handles a nemesis needs.

The system is started exactly as a developer starts it (`callbalance up`),
with a temporary state directory. `up` supervises the worker, the jobs, the
Edge Functions and the stand-ins (a child that dies is restarted); it does not
supervise its Postgres, so `restart_postgres` starts it again on the same data
directory and port, as an operator (or a supervisor) would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from workers.local.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, free_port
from workers.paths import PROJECT_ROOT, STATE_DIR


class StartError(RuntimeError):
    """`callbalance up` did not come up."""


def up_environment() -> dict[str, str]:
    """This environment without provider keys or a database URL: `up` uses its stand-ins."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "TWILIO_", "DATABASE_URL", "SUPABASE_"))
    }
    # The Deno module cache of the checkout, so no download is needed.
    env.setdefault("DENO_DIR", str(STATE_DIR / "deno"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RunningUp:
    """One `callbalance up`; `start()` returns its `up.json`."""

    state_dir: Path
    ports: dict[str, int] = field(
        default_factory=lambda: {
            name: free_port()
            for name in ("db", "functions", "worker", "stripe", "twilio", "pooler")
        }
    )
    proc: subprocess.Popen[bytes] | None = None
    state: dict[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "up.log"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "pgdata"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "workers.cli",
            "up",
            "--state-dir",
            str(self.state_dir),
            "--db-port",
            str(self.ports["db"]),
            "--functions-port",
            str(self.ports["functions"]),
            "--worker-port",
            str(self.ports["worker"]),
            "--stripe-port",
            str(self.ports["stripe"]),
            "--twilio-port",
            str(self.ports["twilio"]),
            "--pooler-port",
            str(self.ports["pooler"]),
        ]

    def start(self, timeout: float = 240) -> dict[str, str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                env=up_environment(),
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "Ctrl-C stops everything." in text:
                self.state = json.loads((self.state_dir / "up.json").read_text())
                return self.state
            if self.proc.poll() is not None:
                raise StartError(f"callbalance up exited early:\n{text[-3000:]}")
            time.sleep(0.2)
        self.stop()
        raise StartError(f"callbalance up was not ready after {timeout:.0f} s")

    def stop(self, timeout: float = 90) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return int(self.proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return int(self.proc.wait(timeout=10))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- processes --------------------------------------------------------------------

    def child(self, name: str) -> psutil.Process | None:
        """The live child `up` runs as `name` (worker, jobs, functions, ...)."""
        if self.proc is None:
            return None
        wanted = {
            "worker": ("workers.cli", "serve"),
            "jobs": ("workers.cli", "jobs"),
            "stripe-standin": ("workers.local.standins", "stripe"),
            "twilio-standin": ("workers.local.standins", "twilio"),
            "functions": ("local_router.ts",),
        }[name]
        try:
            for proc in psutil.Process(self.proc.pid).children():
                try:
                    cmdline = proc.cmdline()
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                except psutil.Error:
                    continue
                if all(any(part in arg for arg in cmdline) for part in wanted):
                    return proc
        except psutil.NoSuchProcess:
            return None
        return None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def postgres_alive(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and psutil.pid_exists(pid) and _not_zombie(pid)

    def kill_postgres(self) -> int | None:
        """`kill -9` of the postmaster; its backends die with it."""
        pid = self.postmaster_pid()
        if pid is None or not psutil.pid_exists(pid):
            return None
        os.kill(pid, signal.SIGKILL)
        return pid

    def restart_postgres(self, timeout: float = 60) -> float:
        """Start Postgres again on its data directory and port (crash recovery); seconds taken."""
        started = time.monotonic()
        server = EmbeddedPostgres(self.data_dir, port=self.ports["db"])
        last: Exception | None = None
        while time.monotonic() - started < timeout:
            if self.postgres_alive():
                return time.monotonic() - started  # `up` restarted it
            try:
                server.start()
                return time.monotonic() - started
            except EmbeddedPostgresError as exc:
                # Backends of the killed postmaster may still hold the shared memory.
                last = exc
                time.sleep(0.3)
        raise StartError(f"Postgres did not restart: {last}")

    def kill_child(self, name: str) -> int | None:
        proc = self.child(name)
        if proc is None:
            return None
        proc.kill()
        return int(proc.pid)

    def wait_child(self, name: str, timeout: float = 60) -> bool:
        """Wait until `up` runs `name` again (and, for the worker, it answers /readyz)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.child(name)
            if proc is not None and (name != "worker" or self.worker_ready()):
                return True
            time.sleep(0.2)
        return False

    def worker_ready(self) -> bool:
        try:
            url = self.state["worker_url"] + "/readyz"
            return httpx.get(url, timeout=2).status_code == 200
        except (httpx.HTTPError, KeyError):
            return False

    def memory(self) -> dict[str, float]:
        """Memory in MB (PSS) of Postgres (all its processes) and of each of `up`'s children."""
        sizes: dict[str, float] = {}
        pid = self.postmaster_pid()
        if pid is not None:
            sizes["postgres"] = _tree_rss(pid)
        for name in ("worker", "jobs", "functions", "stripe-standin", "twilio-standin"):
            proc = self.child(name)
            if proc is not None:
                sizes[name] = _tree_rss(proc.pid)
        return sizes

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _not_zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _tree_rss(pid: int) -> float:
    """Memory of a process tree in MB: the sum of PSS (shared pages counted once), else RSS."""
    total = 0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.Error, AttributeError):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
    except psutil.NoSuchProcess:
        return 0.0
    return total / 2**20


def control(base: str, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
    """A request to a stand-in's `/_control` API; raises on a non-2xx answer."""
    response = httpx.request(method, base.rstrip("/") + path, json=body, timeout=timeout)
    response.raise_for_status()
    return response.json()
