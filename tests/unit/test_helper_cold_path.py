"""What the helper's cold start loads, in a fresh interpreter with the environment Lambda
gives it: the SDK and tracing it needs, and none of what only other paths use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.coldstart import LAMBDA_LIKE

PROBE = """
import json, sys
import connlease.service.helper as helper
from aws_xray_sdk.core import patcher
print(json.dumps({
    "modules": sorted(sys.modules),
    "patched": sorted(patcher._PATCHED_MODULES),
    "tracing": not helper.tracer.disabled,
    "built": helper.helper().dynamodb is not None,
}))
"""

# Only the first release or renew needs idempotency; only other functions need the rest.
NOT_ON_THE_COLD_PATH = (
    "boto3",  # the client is botocore's; boto3 would add s3transfer and its resources
    "s3transfer",
    "aws_lambda_powertools.utilities.parser",
    "aws_lambda_powertools.utilities.idempotency",
    "pymysql",
    "requests",
    "sqlite3",
    "connlease.adapters.mysql",
    "connlease.client",
)


def test_the_helper_starts_with_tracing_on_and_loads_only_what_it_uses(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_")}
    # Lambda always sets LAMBDA_TASK_ROOT: with it, Powertools and the X-Ray SDK trace.
    environment |= LAMBDA_LIKE | {"LAMBDA_TASK_ROOT": str(tmp_path)}
    ran = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    )
    loaded = json.loads(ran.stdout.splitlines()[-1])

    assert loaded["tracing"] is True
    assert loaded["built"] is True
    assert loaded["patched"] == ["botocore"]
    assert [name for name in NOT_ON_THE_COLD_PATH if name in loaded["modules"]] == []
