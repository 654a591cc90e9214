"""A Lambda-shaped context object for handlers run outside Lambda.

The standard library alone: the local runtime loads it in a function's own Python
environment too (local.lambda_endpoint, `FunctionSpec.python`), where nothing else of
this repository is.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

# The local stack's account and region (its SDK clients and ARNs use them).
LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"


@dataclass
class LocalContext:
    """What Lambda passes as `context`: names, request id and the time left to run."""

    function_name: str
    timeout_s: float = 30.0
    memory_limit_in_mb: int = 128
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/{self.function_version}/{self.aws_request_id[:8]}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
