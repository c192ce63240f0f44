"""What the two stand-ins share over HTTP: the app's common part and a server.

`standin_app` is the FastAPI app both stand-ins start from (the state saved
after each change, the controls every stand-in answers), `request_pairs`
reads a request's parameters as both APIs send them, and `StandinServer`
serves any ASGI app on a loopback port from a background thread, for tests
and for `python -m workers.local.standins`.
"""

from __future__ import annotations

import copy
import socket
import threading
import time
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, Request


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


class Standin(Protocol):
    """What the shared plumbing needs of a stand-in's state."""

    @property
    def lock(self) -> AbstractContextManager[Any]: ...

    @property
    def faults(self) -> list[Any]: ...

    @property
    def request_log(self) -> list[dict[str, Any]]: ...

    def reset(self) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def save(self) -> None: ...


async def request_pairs(request: Request) -> list[tuple[str, str]]:
    """The query's parameters, then a POST's form-encoded body's, in order, blanks kept."""
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    if request.method.upper() == "POST":
        pairs += parse_qsl((await request.body()).decode(), keep_blank_values=True)
    return pairs


def standin_app(title: str, standin: Standin) -> FastAPI:
    """An app with what every stand-in serves; the state object is `app.state.standin`.

    Every request but a GET saves the state (to its file, when it has one), and
    the app answers `POST /_control/reset`, `GET /_control/state`,
    `DELETE /_control/faults` and `GET /_control/requests` (the API requests seen).
    """
    app = FastAPI(title=title, docs_url=None, redoc_url=None)
    app.state.standin = standin

    @app.middleware("http")
    async def keep_state(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.method != "GET":
            standin.save()
        return response

    @app.post("/_control/reset")
    def reset() -> dict[str, Any]:
        standin.reset()
        return {"ok": True}

    @app.get("/_control/state")
    def dump() -> dict[str, Any]:
        return standin.state()

    @app.delete("/_control/faults")
    def clear_faults() -> dict[str, Any]:
        with standin.lock:
            standin.faults.clear()
        return {"ok": True}

    @app.get("/_control/requests")
    def requests() -> list[dict[str, Any]]:
        with standin.lock:
            return copy.deepcopy(standin.request_log)

    return app
