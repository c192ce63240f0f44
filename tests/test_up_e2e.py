"""`callbalance up` end to end: start it, simulate both plans, report, stop, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.local.embedded_pg import free_port
from workers.local.pgbouncer import pgbouncer_binary
from workers.paths import STATE_DIR

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not read its status yet.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


class Running:
    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.env = env
        ports = [free_port() for _ in range(6)]
        self.args = [
            "up",
            "--state-dir",
            str(state_dir),
            "--db-port",
            str(ports[0]),
            "--functions-port",
            str(ports[1]),
            "--worker-port",
            str(ports[2]),
            "--stripe-port",
            str(ports[3]),
            "--twilio-port",
            str(ports[4]),
            "--pooler-port",
            str(ports[5]),
        ]
        self.log = state_dir.parent / f"up-{ports[0]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, Any]:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "Ctrl-C stops everything." in text:
                state: dict[str, Any] = json.loads((self.state_dir / "up.json").read_text())
                return state
            if self.proc.poll() is not None:
                pytest.fail(f"up exited early:\n{text}")
            time.sleep(0.2)
        pytest.fail(f"up was not ready:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "TWILIO_", "DATABASE_URL", "SUPABASE_"))
    }
    env["DENO_DIR"] = str(STATE_DIR / "deno")  # reuse the npm module cache between runs
    yield env


def test_up_runs_the_whole_system_and_keeps_its_data(
    tmp_path: Path, up_env: dict[str, str]
) -> None:
    state_dir = tmp_path / "state"
    running = Running(state_dir, up_env)
    state = running.start()
    log = running.log.read_text()
    assert "sandbox: no real money moves" in log
    for url in (state["functions_url"], state["stripe_webhook_url"], state["database_url"]):
        assert url in log
    children = {
        name: int(pid) for name, pid in (c.split(":") for c in state["children"].split(","))
    }
    expected = {"stripe-standin", "twilio-standin", "worker", "jobs", "functions"}
    if pgbouncer_binary() is not None:
        # The workers, jobs and functions go through PgBouncer in transaction mode.
        expected.add("pgbouncer")
        assert state["pooler_url"] and state["pooler_url"] in log
        assert "PgBouncer (transaction mode)" in log
    else:
        assert os.environ.get("CI", "").lower() not in ("true", "1"), "CI installs pgbouncer"
        assert state["pooler_url"] == ""
        assert "pgbouncer is not installed" in log
    assert set(children) == expected

    simulated = cli("simulate", "--state-dir", str(state_dir), "--plan", "both", env=up_env)
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    assert "2/2 journeys matched" in simulated.stdout

    report = cli("report", "--json", "--state-dir", str(state_dir), env=up_env)
    assert report.returncode == 0, report.stderr
    before = {row["email"]: row["balance"] for row in json.loads(report.stdout)["balances"]}
    assert len(before) == 2
    assert json.loads(report.stdout)["ledger_drift"] == []

    # kill -9 of Postgres: `up` notices, recovers it, and the system answers again.
    postmaster = int((state_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    deadline = time.monotonic() + 90
    recovered = None
    while time.monotonic() < deadline:
        time.sleep(1)
        recovered = cli("report", "--json", "--state-dir", str(state_dir), env=up_env)
        if recovered.returncode == 0 and "restarting Postgres" in running.log.read_text():
            break
    assert recovered is not None and recovered.returncode == 0, running.log.read_text()[-2000:]
    assert {r["email"]: r["balance"] for r in json.loads(recovered.stdout)["balances"]} == before
    assert running.proc is not None and running.proc.poll() is None

    assert running.stop() == 0
    assert not (state_dir / "up.json").exists()
    for name, pid in children.items():
        assert not alive(pid), f"{name} ({pid}) outlived up"
    assert "stopped" in running.log.read_text()

    again = Running(state_dir, up_env)
    again.start()
    try:
        after_report = cli("report", "--json", "--state-dir", str(state_dir), env=up_env)
        after = {r["email"]: r["balance"] for r in json.loads(after_report.stdout)["balances"]}
        assert after == before
    finally:
        assert again.stop() == 0


def test_a_live_key_pointed_at_a_stand_in_stops_start_up(
    tmp_path: Path, up_env: dict[str, str]
) -> None:
    env = {
        **up_env,
        "STRIPE_SECRET_KEY": "sk_live_" + "x" * 24,
        "STRIPE_API_BASE": "http://127.0.0.1:12111",
    }
    running = Running(tmp_path / "state", env)
    result = cli(*running.args, env=env, timeout=120)
    assert result.returncode != 0
    assert "live Stripe key" in result.stderr


def test_a_restarted_sandbox_still_buys_numbers_by_area_code(
    tmp_path: Path, up_env: dict[str, str]
) -> None:
    """The stand-ins keep their numbers in the state directory, and buy-number never
    buys a number the database holds: after a restart, area code 415 still sells."""
    import httpx

    state_dir = tmp_path / "state"

    def buy(state: dict[str, Any], email: str) -> httpx.Response:
        made = cli("user", "create", "--email", email, "--state-dir", str(state_dir), env=up_env)
        assert made.returncode == 0, made.stderr
        token = json.loads(made.stdout)["jwt"]
        return httpx.post(
            state["functions_url"].rstrip("/") + "/buy-number",
            json={"areaCode": "415"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    running = Running(state_dir, up_env)
    state = running.start()
    try:
        first = buy(state, "before@example.test")
        assert first.status_code == 200, first.text
    finally:
        assert running.stop() == 0
    assert (state_dir / "twilio-standin.json").exists()

    again = Running(state_dir, up_env)
    state = again.start()
    try:
        second = buy(state, "after@example.test")
        assert second.status_code == 200, second.text
        assert second.json()["phoneNumber"] != first.json()["phoneNumber"]
    finally:
        assert again.stop() == 0
