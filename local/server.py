"""What the local stand-ins share: a socket server on loopback, served from a thread."""

from __future__ import annotations

import socketserver
import threading
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class LoopbackService(ABC):
    """A server on 127.0.0.1; start and stop it, or use it as a with-block."""

    _server: socketserver.BaseServer | None = None
    _thread: threading.Thread | None = None

    @abstractmethod
    def start(self) -> str:
        """Start serving; returns the service's URL."""

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def _serve(self, server: socketserver.BaseServer, name: str) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def _url(self, what: str, scheme: str = "http") -> str:
        if not isinstance(self._server, socketserver.TCPServer):
            raise RuntimeError(f"the {what} is not running; call start() first")
        port = self._server.server_address[1]
        return f"{scheme}://127.0.0.1:{port}"

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
