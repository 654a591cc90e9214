"""What the helper's cold start loads, in a fresh interpreter with the environment Lambda
gives it: the SDK and tracing it needs, and none of what only other paths use; what it
builds: every validator an invocation uses, and not the other functions' settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.coldstart import LAMBDA_LIKE

PROBE = """
import gc, json, sys
import service.helper as helper
from aws_xray_sdk.core import patcher
from pydantic import BaseModel
from pydantic.plugin import _loader
from service import helper_requests, settings

def models(module):
    return {
        name: kind.__pydantic_complete__
        for name, kind in vars(module).items()
        if isinstance(kind, type) and issubclass(kind, BaseModel)
        and kind.__module__ == module.__name__
    }

print(json.dumps({
    "modules": sorted(sys.modules),
    "patched": sorted(patcher._PATCHED_MODULES),
    "tracing": not helper.tracer.disabled,
    "built": helper.helper().dynamodb is not None,
    "requests": models(helper_requests),
    "settings": models(settings),
    "request_validator": type(helper.REQUEST.validator).__name__,
    "plugins_scanned": _loader._plugins is not None,
    "collecting": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
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
    "adapters.mysql",
    "service.client",
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
    # What every invocation validates is built at init, not by the first invocation: the
    # request models, the request adapter and the helper's own settings.
    assert loaded["requests"], "no request model found"
    assert all(loaded["requests"].values()), loaded["requests"]
    assert loaded["request_validator"] == "SchemaValidator"
    built = {name for name, complete in loaded["settings"].items() if complete}
    assert built == {"ObservabilitySettings", "HelperSettings"}
    # pydantic did not scan the installed distributions for plugins (the helper has none).
    assert loaded["plugins_scanned"] is False
    # Init ran with the collector off; its objects are frozen and collection is back on.
    assert loaded["collecting"] is True
    assert loaded["frozen"] > 10_000
