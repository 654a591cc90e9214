"""Small handlers for testing the local Lambda endpoint itself."""

from __future__ import annotations

import os
import time
from typing import Any


def remaining_time(event: Any, context: Any) -> dict[str, Any]:
    return {
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "pid": os.getpid(),
        "event": event,
    }


def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(float(event.get("seconds", 0.3)))
    print(f"slow handler done: {event.get('tag')}")
    return {"pid": os.getpid()}


def crash(event: Any, context: Any) -> None:
    raise ValueError("the handler broke on purpose")
