"""Cold start: process start to handler ready, the helper next to a minimal handler that
only creates a boto3 DynamoDB client, alternated in one run.

The clock stops when the process says it is ready, not when it exits: the interpreter's
teardown is no part of a Lambda cold start, and timing it too would credit anything that
makes teardown cheaper."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HELPER = "import service.helper"
MINIMAL = "import boto3; boto3.client('dynamodb')"

# What Lambda sets for every function. LAMBDA_TASK_ROOT matters: it is how the X-Ray SDK
# and Powertools know they run in Lambda (without it the SDK builds a sampling client).
LAMBDA_LIKE = {
    "LAMBDA_TASK_ROOT": "/var/task",
    "AWS_LAMBDA_FUNCTION_NAME": "connlease-helper",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "LEASES_TABLE_NAME": "connlease-leases",
    "IDEMPOTENCY_TABLE_NAME": "connlease-idempotency",
}


@dataclass(frozen=True)
class ColdStart:
    helper_ms: list[float]
    minimal_ms: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.helper_ms) / statistics.median(self.minimal_ms)


def start_ms(code: str) -> float:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_")}
    environment |= LAMBDA_LIKE
    command = [sys.executable, "-c", f"{code}; print('ready', flush=True)"]
    with tempfile.TemporaryFile() as errors:
        began = time.perf_counter()
        with subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=errors
        ) as process:
            assert process.stdout is not None
            said = b""
            while (line := process.stdout.readline()) and line.strip() != b"ready":
                said += line  # anything the handler printed while it started
            ready = time.perf_counter()
            process.stdout.read()
        if process.returncode != 0 or not line:
            errors.seek(0)
            raise subprocess.CalledProcessError(
                process.returncode, command, output=said, stderr=errors.read()
            )
    return (ready - began) * 1000


def measure(rounds: int) -> ColdStart:
    helper, minimal = [], []
    start_ms(MINIMAL)  # the first run warms the OS file cache for both
    for _ in range(rounds):
        helper.append(start_ms(HELPER))
        minimal.append(start_ms(MINIMAL))
    return ColdStart(helper, minimal)
