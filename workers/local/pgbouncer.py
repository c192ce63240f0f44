"""PgBouncer in transaction mode in front of a local Postgres, as Supabase's pooler runs.

A transaction-mode pooler hands each transaction to any server connection, so
nothing may outlive a transaction: no prepared statement reused across
transactions, no session `SET`, no `LISTEN`. `callbalance up` and the tests put
Debian's `pgbouncer` (package `pgbouncer`) between Postgres and the workers,
jobs and Edge Functions, so the code lives under that constraint every day.

The configuration (`pgbouncer.ini`, `userlist.txt`) is generated in a
directory of its own: every database name is forwarded to the same name
upstream; clients are trusted (PgBouncer listens on 127.0.0.1 only) and
PgBouncer logs in upstream with the user and password of the upstream URL.
`max_prepared_statements = 0` (PgBouncer ≥ 1.21, which could otherwise keep
prepared statements alive across server connections) so the pooler rescues
nothing: what works here works on Supavisor and on older PgBouncers.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg

from workers.local.embedded_pg import RUN_AS_USER, _quiet_import_pgserver

SEARCH_PATH = (Path("/usr/sbin"), Path("/usr/bin"), Path("/usr/local/sbin"), Path("/usr/local/bin"))


def pgbouncer_binary() -> Path | None:
    """The `pgbouncer` binary (Debian installs it in /usr/sbin), or None."""
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    for directory in SEARCH_PATH:
        candidate = directory / "pgbouncer"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def pgbouncer_version(binary: Path) -> tuple[int, int]:
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False, timeout=10
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _run_as_account() -> pwd.struct_passwd:
    _quiet_import_pgserver()
    from pgserver.utils import ensure_user_exists

    account: pwd.struct_passwd | None = ensure_user_exists(RUN_AS_USER)
    assert account is not None
    return account


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """The configuration and command line of one PgBouncer for one upstream server."""

    upstream_url: str
    config_dir: Path
    port: int
    binary: Path
    host: str = "127.0.0.1"
    pool_size: int = 20

    @property
    def ini_path(self) -> Path:
        return self.config_dir / "pgbouncer.ini"

    def pooled(self, direct_url: str) -> str:
        """`direct_url` (a database of the upstream server) through the pooler, as a
        `postgresql://` URL (npm:postgres takes URLs only)."""
        info = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(direct_url).items()}
        user = quote(info.pop("user", "postgres"), safe="")
        password = info.pop("password", "")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        dbname = quote(info.pop("dbname", user), safe="")
        info.pop("host", None)
        info.pop("port", None)
        query = f"?{urlencode(info)}" if info else ""
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}{query}"

    @property
    def url(self) -> str:
        return self.pooled(self.upstream_url)

    def write_config(self) -> Path:
        info = psycopg.conninfo.conninfo_to_dict(self.upstream_url)
        host = str(info.get("host") or "127.0.0.1")
        upstream_port = str(info.get("port") or "5432")
        user = str(info.get("user") or "postgres")
        password = str(info.get("password") or "")
        self.config_dir.mkdir(parents=True, exist_ok=True)
        users = self.config_dir / "userlist.txt"
        users.write_text(f"{_quote(user)} {_quote(password)}\n")
        lines = [
            "[databases]",
            f"* = host={host} port={upstream_port}",
            "",
            "[pgbouncer]",
            f"listen_addr = {self.host}",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {users}",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "max_client_conn = 1000",
            "server_reset_query =",
            "ignore_startup_parameters = extra_float_digits",
            "log_connections = 0",
            "log_disconnections = 0",
        ]
        if pgbouncer_version(self.binary) >= (1, 21):
            lines.append("max_prepared_statements = 0")
        self.ini_path.write_text("\n".join(lines) + "\n")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # PgBouncer refuses to run as root: it drops to the embedded Postgres's user.
            account = _run_as_account()
            for path in (self.config_dir, users, self.ini_path):
                os.chown(path, account.pw_uid, account.pw_gid)
        users.chmod(0o600)
        return self.ini_path

    def argv(self) -> list[str]:
        """The command line (config written first); as root, PgBouncer drops privileges."""
        self.write_config()
        argv = [str(self.binary)]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv += ["-u", RUN_AS_USER]
        return [*argv, str(self.ini_path)]

    def start(self, log_path: Path) -> subprocess.Popen[bytes]:
        """Start it in the background (tests); the caller stops it."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            return subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
