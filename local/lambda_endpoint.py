"""A loopback endpoint that speaks the Lambda Invoke API and runs the project's handlers.

Like `sam local start-lambda`, without containers: `boto3.client("lambda",
endpoint_url=...)` invokes functions here exactly as it would in AWS. Each execution
environment is a fresh interpreter that serves one invocation at a time (Powertools keeps
per-process state, so threads would mix invocations' metrics and log context); a function
gets up to `concurrency` of them, started on demand, so cold starts happen as in Lambda.
What an environment prints goes to the function's log file, the local CloudWatch Logs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import boto3
from botocore.config import Config

from local.context import LOCAL_REGION
from local.dynamodb import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY
from local.server import LoopbackService

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

INIT_TIMEOUT_S = 60.0
TIMEOUT_GRACE_S = 0.5
# How long a stop waits for invocations in flight before their environments end with it.
IN_FLIGHT_AT_STOP_S = 3.0
_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")


@dataclass(frozen=True)
class FunctionSpec:
    """One function as the template would declare it."""

    name: str
    handler: str  # dotted path to the callable: "service.helper.handler"
    environment: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    memory_mb: int = 128
    concurrency: int = 4
    # Lambda throttles (429) past its concurrency; queueing instead suits local load runs.
    throttle: bool = False
    # Environments started with the endpoint, as provisioned concurrency: a load run then
    # measures the function, not this machine starting dozens of interpreters.
    provisioned: int = 0
    # The function's own code, first on its path and its working directory (Lambda's
    # /var/task). None: this repository's, the project's handlers.
    code_dir: str | None = None
    # The interpreter of the function's own Python environment (a virtualenv holding its
    # dependencies, connlease-client among them). The function then sees its code, that
    # environment and the local runtime, and nothing of this repository, as in Lambda it
    # sees its package and its layers. None: this interpreter, with its path.
    python: str | None = None


@dataclass(frozen=True)
class Invocation:
    payload: bytes
    function_error: str | None = None


class Throttled(Exception):
    """Every execution environment of the function is busy and it throttles."""


class _Environment:
    """One execution environment: a fresh interpreter running the handler through
    `local.runtime`, one invocation at a time, its output going to the log."""

    def __init__(self, spec: FunctionSpec, log_path: Path, endpoint: LocalLambda) -> None:
        self.spec = spec
        parent, child = socket.socketpair()
        code = [spec.code_dir] if spec.code_dir else []
        # The function's own Python sees the local runtime (the `local` package alone)
        # after its code, and (-P) not the working directory.
        path = [*code, endpoint.runtime_path()] if spec.python else [*code, *sys.path]
        python = [spec.python, "-P"] if spec.python else [sys.executable]
        environment = (
            os.environ
            | {
                "PYTHONPATH": os.pathsep.join(p for p in path if p),
                # boto3 in the function invokes other functions here, with no code change.
                "AWS_ENDPOINT_URL_LAMBDA": endpoint.endpoint_url,
            }
            | dict(endpoint.environment)
            | runtime_environment(spec)
        )
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                [*python, "-m", "local.runtime", str(child.fileno())],
                cwd=spec.code_dir,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(child.fileno(),),
            )
        child.close()
        self._conn = Connection(parent.detach())
        self._ready = False

    def invoke(self, request_id: str, payload: bytes) -> Invocation:
        """Run one invocation; a timeout or a crash ends the environment, as in Lambda."""
        try:
            self.wait_ready()
            self._conn.send((request_id, payload))
            if self._conn.poll(self.spec.timeout_s + TIMEOUT_GRACE_S):
                body, error = self._conn.recv()
                return Invocation(body, error)
        except (EOFError, OSError):
            self.close()
            return _error_invocation(
                "Runtime.ExitError",
                f"RequestId: {request_id} Error: Runtime exited unexpectedly",
            )
        self.close()
        message = f"{request_id} Task timed out after {self.spec.timeout_s:.2f} seconds"
        return _error_invocation("Sandbox.Timedout", message)

    def wait_ready(self) -> None:
        """Wait out the init phase (interpreter start, handler import): not the handler's
        time, as in Lambda."""
        if not self._ready:
            if not self._conn.poll(INIT_TIMEOUT_S) or self._conn.recv() != "ready":
                raise EOFError(
                    f"{self.spec.name}: the environment was not ready within "
                    f"{INIT_TIMEOUT_S:.0f} s; see its log"
                )
            self._ready = True

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        self._process.kill()
        self._process.wait(timeout=10)
        self._conn.close()


def runtime_environment(spec: FunctionSpec) -> dict[str, str]:
    """The variables Lambda sets for a function, then the function's own."""
    return {
        "_HANDLER": spec.handler,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(spec.timeout_s),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_REGION": LOCAL_REGION,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
    } | dict(spec.environment)


def _error_invocation(error_type: str, message: str) -> Invocation:
    body = {"errorMessage": message, "errorType": error_type}
    return Invocation(json.dumps(body).encode(), "Unhandled")


class _Function:
    """A function's pool of execution environments: warm ones first, new ones up to the
    concurrency, then queue (or throttle)."""

    def __init__(self, spec: FunctionSpec, log_path: Path, endpoint: LocalLambda) -> None:
        self.spec = spec
        self.log_path = log_path
        self._endpoint = endpoint
        self._idle: list[_Environment] = []
        self._all: set[_Environment] = set()  # idle or busy, so that close() ends them all
        self._started = 0
        self._cond = threading.Condition()

    def _take(self) -> _Environment:
        with self._cond:
            while True:
                while self._idle:
                    environment = self._idle.pop()
                    if environment.alive:
                        return environment
                    self._retire(environment)
                if self._started < self.spec.concurrency:
                    self._started += 1
                    break
                if self.spec.throttle:
                    raise Throttled(self.spec.name)
                self._cond.wait()
        try:
            environment = _Environment(self.spec, self.log_path, self._endpoint)
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._all.add(environment)
        return environment

    @property
    def busy(self) -> int:
        with self._cond:
            return self._started - len(self._idle)

    def provision(self) -> None:
        count = min(self.spec.provisioned, self.spec.concurrency)
        environments = [
            _Environment(self.spec, self.log_path, self._endpoint) for _ in range(count)
        ]
        with self._cond:
            self._all.update(environments)
        for environment in environments:
            environment.wait_ready()
        with self._cond:
            self._idle.extend(environments)
            self._started += count

    def _give_back(self, environment: _Environment) -> None:
        with self._cond:
            if environment.alive:
                self._idle.append(environment)
            else:
                self._retire(environment)
            self._cond.notify()

    def _retire(self, environment: _Environment) -> None:
        environment.close()
        self._all.discard(environment)
        self._started -= 1

    def invoke(self, request_id: str, payload: bytes) -> Invocation:
        environment = self._take()
        try:
            return environment.invoke(request_id, payload)
        finally:
            self._give_back(environment)

    def close(self) -> None:
        with self._cond:
            for environment in self._all:
                environment.close()
            self._all.clear()
            self._idle.clear()


class LocalLambda(LoopbackService):
    """The Invoke API on 127.0.0.1 for a set of functions."""

    def __init__(
        self,
        functions: Iterable[FunctionSpec],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_dir: Path | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        """`environment`: variables every function gets, under its own (the local stack
        points the SDK's service endpoints at its stand-ins this way)."""
        self._host, self._port = host, port
        self.environment = dict(environment or {})
        self._tmp = None if log_dir else tempfile.TemporaryDirectory(prefix="connlease-logs-")
        self.log_dir = log_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._functions = {
            spec.name: _Function(spec, self.log_dir / f"{spec.name}.log", self)
            for spec in functions
        }
        self._background: list[threading.Thread] = []
        self._background_lock = threading.Lock()
        self._runtime: tempfile.TemporaryDirectory[str] | None = None
        self._runtime_lock = threading.Lock()

    def runtime_path(self) -> str:
        """A directory holding the local runtime alone (a link to the `local` package),
        for functions that run in their own Python environment; made once, whichever of
        their environments starts first."""
        with self._runtime_lock:
            if self._runtime is None:
                self._runtime = tempfile.TemporaryDirectory(prefix="connlease-runtime-")
                local = Path(__file__).resolve().parent
                link = Path(self._runtime.name) / local.name
                link.symlink_to(local, target_is_directory=True)
            return self._runtime.name

    @property
    def endpoint_url(self) -> str:
        return self._url("local Lambda endpoint")

    def start(self) -> str:
        server = _QuietServer((self._host, self._port), _handler_for(self))
        server.daemon_threads = True
        self._serve(server, "local-lambda")
        try:
            for function in self._functions.values():
                function.provision()
        except BaseException:
            self.stop()
            raise
        return self.endpoint_url

    def stop(self) -> None:
        super().stop()
        # Invocations in flight get a moment to end; then their environments end with the
        # stack (each answers Runtime.ExitError), so that a stop under load is prompt and
        # not as long as the longest invocation (a test function may wait 30 s for a lease).
        deadline = time.monotonic() + IN_FLIGHT_AT_STOP_S
        for thread in self._background:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for function in self._functions.values():
            function.close()
        for thread in self._background:
            thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()
        with self._runtime_lock:
            if self._runtime is not None:
                self._runtime.cleanup()
                self._runtime = None

    def client(self, **config: Any) -> LambdaClient:
        """A boto3 Lambda client for this endpoint; `config` goes to botocore's Config."""
        return boto3.client(
            "lambda",
            endpoint_url=self.endpoint_url,
            region_name=LOCAL_REGION,
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
            config=Config(read_timeout=900, retries={"max_attempts": 1}).merge(Config(**config)),
        )

    def log_lines(self, function: str) -> list[str]:
        """Everything the function's environments printed, a line each."""
        path = self._functions[function].log_path
        return path.read_text().splitlines() if path.exists() else []

    def log_files(self) -> list[Path]:
        """Each function's log file, written once its first environment starts."""
        return [function.log_path for function in self._functions.values()]

    def busy(self, function: str) -> int:
        """Environments of the function running an invocation right now."""
        return self._functions[function].busy

    def function(self, name: str) -> _Function | None:
        # Accept a name, a full ARN or a partial ARN, with or without a qualifier.
        name = unquote(name)
        if name.startswith("arn:"):
            parts = name.split(":")
            name = parts[6] if len(parts) > 6 else name
        return self._functions.get(name.split(":")[0])

    def run_in_background(self, work: Callable[[], object]) -> None:
        thread = threading.Thread(target=work, daemon=True)
        with self._background_lock:
            self._background = [t for t in self._background if t.is_alive()] + [thread]
        thread.start()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hung up: routine
            super().handle_error(request, client_address)


def _handler_for(endpoint: LocalLambda) -> type[BaseHTTPRequestHandler]:
    class InvokeHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length_header = self.headers.get("Content-Length") or "0"
            if not length_header.isascii() or not length_header.isdigit():
                self._error(400, "InvalidRequestContentException", "bad Content-Length")
                return
            length = int(length_header)
            payload = self.rfile.read(length) if length else b"{}"
            match = _INVOKE_PATH.match(self.path.split("?")[0])
            function = endpoint.function(match["name"]) if match else None
            if function is None:
                name = match["name"] if match else self.path
                self._error(404, "ResourceNotFoundException", f"Function not found: {name}")
                return
            try:
                json.loads(payload)
            except (ValueError, RecursionError):  # nested past the parser's depth: not JSON
                self._error(
                    400, "InvalidRequestContentException", "Could not parse request body into json"
                )
                return
            request_id = str(uuid.uuid4())
            kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            if kind == "DryRun":
                self._reply(HTTPStatus.NO_CONTENT, b"", request_id)
            elif kind == "Event":
                endpoint.run_in_background(lambda: function.invoke(request_id, payload))
                self._reply(HTTPStatus.ACCEPTED, b"", request_id)
            elif kind == "RequestResponse":
                try:
                    result = function.invoke(request_id, payload)
                except Throttled:
                    self._error(429, "TooManyRequestsException", "Rate Exceeded.")
                    return
                self._reply(HTTPStatus.OK, result.payload, request_id, result.function_error)
            else:
                self._error(400, "InvalidParameterValueException", f"bad invocation type {kind}")

        def _reply(
            self, status: int, body: bytes, request_id: str, function_error: str | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", request_id)
            self.send_header("X-Amz-Executed-Version", "$LATEST")
            if function_error:
                self.send_header("X-Amz-Function-Error", function_error)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, error_type: str, message: str) -> None:
            body = json.dumps({"Type": "User", "message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-ErrorType", error_type)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep access logs out of test and demo output

    return InvokeHandler
