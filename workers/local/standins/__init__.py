"""Local stand-ins for the Stripe and Twilio HTTP APIs.

Each stand-in is an ASGI app (`stripe.create_app`, `twilio.create_app`)
keeping its state in memory. `StandinServer` serves any ASGI app on a loopback
port from a background thread, for tests and for `python -m workers.local.standins`.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn

__all__ = ["StandinServer"]


class StandinServer:
    """Serve an ASGI app with uvicorn in a daemon thread.

    >>> with StandinServer(app) as server:
    ...     server.base_url  # 'http://127.0.0.1:54321'
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        start_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._start_timeout = start_timeout
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            lifespan="off",
            timeout_graceful_shutdown=1,
            access_log=False,
        )
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Bind, start serving and return the base URL once requests are accepted."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        self._socket = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"stand-in server on {self.base_url} did not start")
            time.sleep(0.005)
        return self.base_url

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def serve_forever(self) -> None:
        """Run in the calling thread until interrupted (the CLI)."""
        self._server.run()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
