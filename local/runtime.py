"""The runtime inside a local execution environment (`python -m local.runtime FD`).

Reads the handler from `_HANDLER` as Lambda's runtimes do, imports it once (the init
phase), then runs one invocation at a time as the endpoint sends them over the socket
FD. Whatever the handler prints goes to stdout: the function's log.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from local.context import LocalContext

Handler = Callable[[Any, Any], Any]


def main(fd: int) -> None:
    # Environments of one function share its log file, so a line must reach it in one
    # write: unbuffered (PYTHONUNBUFFERED), print() writes the text and the newline apart
    # and lines of different environments interleave. Line-buffered streams, whatever
    # the environment says.
    sys.stdout = _line_buffered(1)
    sys.stderr = _line_buffered(2)
    conn = Connection(fd)
    name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    timeout_s = float(os.environ["AWS_LAMBDA_FUNCTION_TIMEOUT"])
    memory_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    handler, init_error = _load(os.environ["_HANDLER"])
    conn.send("ready")
    while True:
        try:
            request_id, payload = conn.recv()
        except EOFError:
            return
        if handler is None:
            conn.send((json.dumps(init_error).encode(), "Unhandled"))
            continue
        context = LocalContext(name, timeout_s, memory_mb, aws_request_id=request_id)
        conn.send(_invoke(handler, payload, context))


def _line_buffered(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", line_buffering=True)


def _load(path: str) -> tuple[Handler | None, dict[str, str]]:
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute), {}
    except Exception as error:  # Lambda answers every invoke with the init error
        traceback.print_exc()
        return None, {
            "errorType": f"Runtime.ImportModuleError.{type(error).__name__}",
            "errorMessage": str(error),
        }


def _invoke(handler: Handler, payload: bytes, context: LocalContext) -> tuple[bytes, str | None]:
    request_id = context.aws_request_id
    print(f"START RequestId: {request_id} Version: $LATEST")
    started = time.perf_counter()
    function_error = None
    try:
        result = json.dumps(handler(json.loads(payload or b"{}"), context)).encode()
    except Exception as failure:
        traceback.print_exc()
        function_error = "Unhandled"
        result = json.dumps(
            {
                "errorMessage": str(failure),
                "errorType": type(failure).__name__,
                "requestId": request_id,
                "stackTrace": traceback.format_tb(failure.__traceback__),
            }
        ).encode()
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"END RequestId: {request_id}")
    print(f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms")
    return result, function_error


if __name__ == "__main__":
    main(int(sys.argv[1]))
