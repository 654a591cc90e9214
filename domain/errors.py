"""The errors connlease raises; infrastructure errors are translated into these at adapters."""

from __future__ import annotations


class ConnleaseError(Exception):
    """Base of every error connlease raises on purpose."""


class InvalidInput(ConnleaseError, ValueError):
    """An argument is out of range or malformed; nothing was written."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownDatabase(ConnleaseError, LookupError):
    """No quota exists for the database; create one with set_quota."""

    def __init__(self, database: str) -> None:
        super().__init__(
            f"no quota for database {database!r}: create it with set_quota (or the seeder)"
        )
        self.database = database


class CorruptQuota(ConnleaseError):
    """The stored quota item does not have the expected shape; nothing was written."""

    def __init__(self, database: str, problem: str) -> None:
        super().__init__(
            f"quota item for database {database!r} is malformed: {problem}; "
            "repair it with set_quota or delete the item"
        )
        self.database = database
        self.problem = problem


class StoreUnavailable(ConnleaseError):
    """The lease store could not be reached or refused the request after retries.

    `retryable`: the failure may pass by itself (a throttle, a timeout, a 5xx), so a caller
    with time left may try again; otherwise (access denied, no such table) it will not.
    """

    def __init__(self, operation: str, reason: str, retryable: bool) -> None:
        super().__init__(f"lease store unavailable during {operation}: {reason}")
        self.operation = operation
        self.reason = reason
        self.retryable = retryable


class HelperFailed(ConnleaseError):
    """The helper function failed (a crash, a timeout or an internal error); see its logs."""

    def __init__(self, function: str, error_type: str, message: str) -> None:
        super().__init__(f"helper {function!r} failed with {error_type}: {message}")
        self.function = function
        self.error_type = error_type
        self.message = message


class RequestInProgress(ConnleaseError):
    """The same release or renew is still being handled; retry shortly."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"the same {operation} is still being handled; retry shortly")
        self.operation = operation


class StaleConfiguration(ConnleaseError):
    """A write made for a version of the quota that is no longer its own (a borrowed lease
    read before a cap was set): read the quota again. The store handles it itself."""

    def __init__(self, item: str, seen: int, now: int) -> None:
        super().__init__(f"item {item!r} is at version {now}, not {seen}: read the quota again")
        self.item = item
