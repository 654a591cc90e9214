"""Cold start: process start to handler ready, the helper next to a minimal handler that
only creates a boto3 DynamoDB client, alternated in one run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

HELPER = "import connlease.service.helper"
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
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", f"{code}; print('ready')"],
        env=environment,
        check=True,
        capture_output=True,
    )
    return (time.perf_counter() - began) * 1000


def measure(rounds: int) -> ColdStart:
    helper, minimal = [], []
    start_ms(MINIMAL)  # the first run warms the OS file cache for both
    for _ in range(rounds):
        helper.append(start_ms(HELPER))
        minimal.append(start_ms(MINIMAL))
    return ColdStart(helper, minimal)
