"""The embedded default: a Postgres started from the binaries of the `pgserver` wheel.

No system install and no Docker. The server listens on 127.0.0.1 only, keeps
its data directory between runs, and is stopped with `pg_ctl stop -m fast`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from workers import CommandError

RUN_AS_USER = "pgserver"


class EmbeddedPostgresError(CommandError):
    """A start or stop that cannot go ahead, with a message for a person."""


def _quiet_import_pgserver() -> None:
    # Importing pgserver warns when XDG_RUNTIME_DIR is unset; only its binaries are used.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: F401


def default_bindir() -> Path:
    _quiet_import_pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def server_major_version(bindir: Path) -> int:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], check=True, capture_output=True, text=True
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if match is None:
        raise EmbeddedPostgresError(f"cannot read the version of {bindir / 'postgres'}: {out!r}")
    return int(match.group(1))


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """One Postgres cluster in `data_dir`, served on `host:port`."""

    data_dir: Path
    port: int = 54322
    host: str = "127.0.0.1"
    bindir: Path = field(default_factory=default_bindir)
    durable: bool = True
    _started_here: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres:postgres@{self.host}:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def _run_as(self) -> str | None:
        # Postgres refuses to run as root; as root, run it as an unprivileged user.
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            return RUN_AS_USER
        return None

    def _prepare_root_run(self) -> None:
        if self._run_as() is None:
            return
        _quiet_import_pgserver()
        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        pw = ensure_user_exists(RUN_AS_USER)
        assert pw is not None
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(self.bindir)
        self.log_file.touch(exist_ok=True)
        for path in (self.data_dir, self.log_file):
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self._run_as(),
        )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir)).returncode == 0

    def init(self) -> bool:
        """Create the cluster when missing; refuse one made by another major version."""
        binary_major = server_major_version(self.bindir)
        if self.initialized():
            data_major = int((self.data_dir / "PG_VERSION").read_text().strip().split(".")[0])
            if data_major != binary_major:
                raise EmbeddedPostgresError(
                    f"the data directory {self.data_dir} belongs to PostgreSQL {data_major}, "
                    f"but the embedded server is PostgreSQL {binary_major}; move it aside "
                    f"(or dump it with that version) before starting"
                )
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.data_dir} is not empty and holds no Postgres cluster; refusing to use it"
            )
        self._prepare_root_run()
        result = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed:\n{result.stderr or result.stdout}")
        return True

    def start(self) -> str:
        """Start the server (initializing it first when needed) and return its URL."""
        self.data_dir = self.data_dir.resolve()
        self.init()
        if self.running():
            raise EmbeddedPostgresError(
                f"a Postgres is already running on the data directory {self.data_dir} "
                f"(another `callbalance` process?); stop it first"
            )
        if port_in_use(self.host, self.port):
            raise EmbeddedPostgresError(
                f"port {self.port} on {self.host} is already taken; stop what listens there "
                f"or choose another port (--db-port / CALLBALANCE_DB_PORT)"
            )
        self._prepare_root_run()
        options = [f"-h {self.host}", f"-p {self.port}", "-k ''", "-c max_connections=200"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log_file),
            "-o",
            " ".join(options),
        )
        if result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
            raise EmbeddedPostgresError(
                f"Postgres did not start:\n{result.stderr or result.stdout}\n{tail}"
            )
        self._started_here = True
        return self.url

    def stop(self) -> None:
        if not self.running():
            return
        result = self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"Postgres did not stop:\n{result.stderr}")
        self._started_here = False

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)
