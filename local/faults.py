"""A fault-injecting proxy in front of a DynamoDB endpoint, for the reliability campaigns.

It sits on the wire, so the SDK's real retry logic (standard mode) meets each fault as it
would in AWS: a throttle and a 500 are refused before the table sees them; a timeout holds
the request past the client's read timeout and then applies it late; a drop applies the
write and closes the connection without an answer (the ambiguous case: the caller cannot
tell whether its write landed).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from local.server import LoopbackService
from local.shares import FaultShares

# The data plane; table management is never disturbed, so a campaign can set itself up.
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
DATA_OPERATIONS = WRITES | {"GetItem"}

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}
)


class Fault(StrEnum):
    THROTTLE = "throttle"
    SERVER_ERROR = "500"
    TIMEOUT = "timeout"
    DROP_AFTER_APPLY = "drop after apply"


_REFUSALS = {
    Fault.THROTTLE: (
        400,
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
    ),
    Fault.SERVER_ERROR: (500, "com.amazon.coral.service#InternalFailure", "Internal failure."),
}


@dataclass(frozen=True)
class FaultRates(FaultShares[Fault]):
    """The share of data-plane requests that meet each fault."""

    faults = Fault
    throttle: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    drop_after_apply: float = 0.0


class FaultyDynamoDB(LoopbackService):
    """An HTTP proxy on 127.0.0.1 that forwards to `upstream_url`, injecting faults into
    data-plane requests at `rates` (seeded, so a run can be repeated). `hang_s` must exceed
    the client's read timeout for a timeout to be one."""

    def __init__(
        self, upstream_url: str, rates: FaultRates, *, seed: int = 0, hang_s: float = 1.5
    ) -> None:
        self.rates = rates
        self.hang_s = hang_s
        self.injected: Counter[Fault] = Counter()
        # Writes the table applied (HTTP 200) whose answer the client never saw; those that
        # landed late, after the client had given up on them, kept whole.
        self.applied_unseen: Counter[Fault] = Counter()
        self.late_writes: list[dict[str, Any]] = []
        self.forwarded = 0
        self.abandoned = 0  # answers the client no longer waited for
        self._upstream = urlsplit(upstream_url)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        return self._url("fault-injecting proxy")

    def start(self) -> str:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._serve(server, "faulty-dynamodb")
        return self.endpoint_url

    def set_rates(self, rates: FaultRates) -> None:
        with self._lock:
            self.rates = rates

    def choose(self, operation: str) -> Fault | None:
        if operation not in DATA_OPERATIONS:
            return None
        with self._lock:
            fault = self.rates.draw(self._rng)
            if fault is not None:
                self.injected[fault] += 1
            return fault

    def unanswered(self, fault: Fault | None, operation: str, status: int, body: bytes) -> None:
        """A request whose answer the client never saw: dropped or held by `fault`, or with
        no fault, given up on by the client itself (its own read timeout, under load).
        An applied write of the latter two landed after the client stopped waiting."""
        with self._lock:
            if fault is None:
                self.abandoned += 1
            if status != 200 or operation not in WRITES:
                return
            if fault is not None:
                self.applied_unseen[fault] += 1
            if fault in (None, Fault.TIMEOUT):
                self.late_writes.append(json.loads(body))

    def forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        connection = http.client.HTTPConnection(
            self._upstream.hostname or "127.0.0.1", self._upstream.port, timeout=30
        )
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        with self._lock:
            self.forwarded += 1
        return response.status, response.getheaders(), payload


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultyDynamoDB
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = dict(self.headers.items())
        operation = headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        fault = self.owner.choose(operation)
        if fault in _REFUSALS:
            status, kind, message = _REFUSALS[fault]
            refusal = json.dumps({"__type": kind, "message": message}).encode()
            if not self._answer(status, [], refusal):
                self.owner.unanswered(None, operation, status, body)
            return
        if fault is Fault.TIMEOUT:
            time.sleep(self.owner.hang_s)  # the client gives up meanwhile; the write lands late
        try:
            status, response_headers, payload = self.owner.forward(self.path, headers, body)
        except OSError:
            self.close_connection = True  # the table did not answer: neither does the proxy
            return
        if fault is not None:
            self.owner.unanswered(fault, operation, status, body)
            self.close_connection = True  # no answer: the connection just ends
            return
        if not self._answer(status, response_headers, payload):
            self.owner.unanswered(None, operation, status, body)

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> bool:
        """Send the answer; False if the client had stopped waiting for it (its own read
        timeout, under load): a fault of its own kind, which its retries handle."""
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if not any(name.lower() == "content-type" for name, _ in headers):
            self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(payload)))
        try:
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return False
        return True
