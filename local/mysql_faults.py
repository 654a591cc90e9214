"""A MySQL that fails on purpose: a TCP proxy on loopback in front of MariaDB that, at
seeded rates, refuses connections, cuts them mid-query, or has the server kill them.

Each new connection draws its fate once: refused (accepted, then closed or reset before
the server's greeting; MariaDB never sees it), cut (forwarded, then both sides closed while
a query runs), killed (forwarded, then `KILL CONNECTION` sent from a side connection while
a query runs: a death as the server itself sees it) or passed through untouched. A cut or
kill strikes the first query still unanswered `fault_after_ms` after it began to run (when
it was sent, or when the answer to the command pipelined before it came), so the quick `SET
NAMES` pymysql sends while connecting, and the SET the client pipelines before each
statement, are let through and the workload's query is hit. Plaintext only: the proxy reads
the protocol to find the connection id, the commands and where each answer begins.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import socketserver
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import pymysql

from adapters.mysql import MySqlConnector, MySqlEndpoint
from local.server import LoopbackService
from local.shares import FaultShares

COM_QUIT = 0x01  # answered by no packet
COM_QUERY = 0x03
HANDSHAKE_V10 = 10
UNKNOWN_THREAD = 1094  # ER_NO_SUCH_THREAD: the connection ended before the kill came


class Fault(StrEnum):
    REFUSED = "refused"  # closed before the server's greeting
    RESET = "reset"  # reset (RST) before the server's greeting
    CUT = "cut"  # both sides closed while a query runs
    KILLED = "killed"  # KILL CONNECTION from a side connection while a query runs


@dataclass(frozen=True)
class FaultRates(FaultShares[Fault]):
    """The share of new connections that get each fault; the rest pass through."""

    faults = Fault
    refused: float = 0.0
    reset: float = 0.0
    cut: float = 0.0
    killed: float = 0.0


def connection_id(greeting: bytes) -> int | None:
    """The server's id for the connection, from its greeting (handshake v10: header,
    protocol version, NUL-terminated server version, 4-byte id); None until it is all in."""
    if len(greeting) < 5 or greeting[4] != HANDSHAKE_V10:
        return None
    end = greeting.find(b"\0", 5)
    if end < 0 or len(greeting) < end + 5:
        return None
    return int.from_bytes(greeting[end + 1 : end + 5], "little")


def server_id(connection: pymysql.connections.Connection[Any]) -> int:
    """The server's id for a client's connection (pymysql's `thread_id()`, untyped in its
    stubs), to ask `MySqlFaults.fault_of` about it."""
    thread_id: Callable[[], int] = connection.thread_id
    return thread_id()


class _Session:
    """One proxied connection: its sockets, its fault, and what the protocol has shown."""

    def __init__(self, client: socket.socket, upstream: socket.socket, fault: Fault | None):
        self.client, self.upstream, self.fault = client, upstream, fault
        self.server_id: int | None = None
        self.struck = False
        self._greeting = bytearray()
        self._from_client = bytearray()
        self._skip = 0  # bytes of the current client packet still to pass over
        self._from_server = bytearray()
        self._server_skip = 0  # bytes of the current server packet still to pass over
        self._unanswered: deque[int] = deque()  # the commands sent, first unanswered first
        self.query_sent_at: float | None = None  # when the first unanswered query began

    def saw_from_server(self, data: bytes) -> int | None:
        """Notes where each answer begins (its first packet, sequence id 1): the command
        it answers is done, and the next one, pipelined behind it, begins to run. Returns
        the server's id for the connection once its greeting is all in."""
        if self.server_id is None:
            self._greeting += data
            self.server_id = connection_id(bytes(self._greeting))
            return self.server_id
        pending = self._from_server
        pending += data
        while True:
            skipped = min(self._server_skip, len(pending))
            del pending[:skipped]
            self._server_skip -= skipped
            if self._server_skip or len(pending) < 4:
                return None
            if pending[3] == 1 and self._unanswered:
                self._unanswered.popleft()
                self._running(time.monotonic())
            self._server_skip = 4 + int.from_bytes(pending[:3], "little")

    def saw_from_client(self, data: bytes) -> None:
        """Finds the commands (sequence id 0) among the client's packets, in order, and
        notes when a COM_QUERY began to run; only headers and first payload bytes are
        kept."""
        pending = self._from_client
        pending += data
        while True:
            skipped = min(self._skip, len(pending))
            del pending[:skipped]
            self._skip -= skipped
            if self._skip or len(pending) < 4:
                return
            length = int.from_bytes(pending[:3], "little")
            if length and len(pending) < 5:
                return
            if length and pending[3] == 0 and pending[4] != COM_QUIT:
                self._unanswered.append(pending[4])
                if len(self._unanswered) == 1:
                    self._running(time.monotonic())
            self._skip = 4 + length

    def _running(self, now: float) -> None:
        """The first unanswered command began to run `now`: a query may be struck."""
        first = self._unanswered[0] if self._unanswered else None
        self.query_sent_at = now if first == COM_QUERY else None

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class _ProxyServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, proxy: MySqlFaults) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy


class _Handler(socketserver.BaseRequestHandler):
    server: _ProxyServer

    def handle(self) -> None:
        self.server.proxy._handle(self.request)


class MySqlFaults(LoopbackService):
    """The faulty proxy; point a MySqlConnector at `endpoint`. `injected` counts the faults
    that struck, by kind; `missed` those whose connection had no query long enough."""

    def __init__(
        self,
        upstream: MySqlEndpoint,
        rates: FaultRates,
        *,
        seed: int = 0,
        fault_after_ms: int = 10,
    ) -> None:
        self.upstream = upstream
        self.rates = rates
        self.fault_after_s = fault_after_ms / 1000
        self.injected: Counter[Fault] = Counter()
        self.missed: Counter[Fault] = Counter()
        self.connections = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._server_ids: set[int] = set()
        self._struck: dict[int, Fault] = {}
        self._killer: pymysql.connections.Connection[Any] | None = None
        self._killer_lock = threading.Lock()

    @property
    def port(self) -> int:
        if not isinstance(self._server, _ProxyServer):
            raise RuntimeError("the MySQL fault proxy is not running; call start() first")
        return self._server.server_address[1]

    @property
    def endpoint(self) -> MySqlEndpoint:
        """The upstream's credentials and database, through the proxy."""
        return replace(self.upstream, host="127.0.0.1", port=self.port)

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def server_ids(self) -> frozenset[int]:
        """The server's ids of every connection that went through (from its greeting on),
        to find them among the server's own: unlike Threads_connected, blind to other
        clients."""
        with self._lock:
            return frozenset(self._server_ids)

    def fault_of(self, server_id: int) -> Fault | None:
        """The fault that struck the connection the server knows as `server_id` (pymysql's
        `server_id`), if any: what a client cannot tell apart from its error alone."""
        with self._lock:
            return self._struck.get(server_id)

    def start(self) -> str:
        if self.rates.killed:
            self._killer = MySqlConnector(self.upstream, None)()
        self._serve(_ProxyServer(self), "mysql-faults")
        return self._url("MySQL fault proxy", scheme="mysql")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # no new sessions; then end the ones still open
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()
        super().stop()
        if self._killer is not None:
            self._killer.close()
            self._killer = None

    def _draw(self) -> Fault | None:
        with self._lock:
            self.connections += 1
            return self.rates.draw(self._rng)

    def _count(
        self,
        counter: Counter[Fault],
        fault: Fault,
        server_id: int | None = None,
        *,
        undo: bool = False,
    ) -> None:
        with self._lock:
            counter[fault] += -1 if undo else 1
            if server_id is None:
                return
            if undo:
                del self._struck[server_id]
            else:
                self._struck[server_id] = fault

    def _handle(self, client: socket.socket) -> None:
        fault = self._draw()
        if fault in (Fault.REFUSED, Fault.RESET):
            if fault is Fault.RESET:
                # Linger on, for 0 s: close() sends RST instead of FIN.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._count(self.injected, fault)  # first: the client sees it at once
            client.close()
            return
        try:
            upstream = socket.create_connection(
                (self.upstream.host, self.upstream.port), self.upstream.connect_timeout_s
            )
        except OSError:
            client.close()  # MariaDB itself refused: the client sees what it would have
            return
        session = _Session(client, upstream, fault)
        with self._lock:
            self._sessions.add(session)
        try:
            self._pump(session)
        finally:
            with self._lock:
                self._sessions.discard(session)
            session.close()
            if fault is not None and not session.struck:
                self._count(self.missed, fault)

    def _pump(self, session: _Session) -> None:
        """Forward both ways until either side closes, striking the session's fault when a
        query has gone unanswered for fault_after_ms."""
        peer = {session.client: session.upstream, session.upstream: session.client}
        while True:
            timeout = None
            if session.fault and not session.struck and session.query_sent_at is not None:
                timeout = max(0.0, session.query_sent_at + self.fault_after_s - time.monotonic())
            try:
                readable, _, _ = select.select(list(peer), [], [], timeout)
                if not readable:
                    if self._strike(session):
                        return
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
                    if sock is session.client:
                        session.saw_from_client(data)
                    elif (greeted := session.saw_from_server(data)) is not None:
                        with self._lock:
                            self._server_ids.add(greeted)
            except OSError:
                return  # either side reset or was closed by stop()

    def _strike(self, session: _Session) -> bool:
        """Cut or kill the running query; True when the session is over. The fault is
        counted first: the client may ask `fault_of` as soon as it sees its error."""
        fault, server_id = session.fault, session.server_id
        if fault is None or server_id is None:  # no greeting came: not MySQL, leave it be
            session.query_sent_at = None
            return False
        self._count(self.injected, fault, server_id)
        session.struck = True
        if fault is Fault.CUT:
            return True
        if not self._kill(server_id):
            # The connection ended before the kill came: nothing was struck; try again on
            # the next query, if there is one.
            self._count(self.injected, fault, server_id, undo=True)
            session.struck = False
            session.query_sent_at = None
        return False  # the server closes it; forward what it says first

    def _kill(self, server_id: int) -> bool:
        if self._killer is None:
            return False
        with self._killer_lock:
            try:
                with self._killer.cursor() as cursor:
                    cursor.execute("KILL CONNECTION %s", (server_id,))
            except pymysql.err.Error as error:
                if not (error.args and error.args[0] == UNKNOWN_THREAD):
                    # The killer's own connection is gone: nothing was struck this time;
                    # reconnect for the next one.
                    with contextlib.suppress(pymysql.err.Error):
                        self._killer.ping(reconnect=True)
                return False
        return True
