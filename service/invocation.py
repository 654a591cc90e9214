"""The parts of Lambda's context object connlease reads, as a protocol: Lambda's own
context, the local stack's LocalContext and test fakes all fit it."""

from __future__ import annotations

from typing import Protocol


class InvocationContext(Protocol):
    @property
    def function_name(self) -> str: ...

    @property
    def aws_request_id(self) -> str: ...

    def get_remaining_time_in_millis(self) -> int: ...
