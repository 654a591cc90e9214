"""connlease's client: what a function that talks to MySQL imports to stay within its quota.

    from connlease_client import ConnectionLeases, NoCapacity, lambda_leases

    leases = ConnectionLeases(lambda_leases("connlease-helper"), "orders-mysql")

    def handler(event, context):
        try:
            with leases.connect(open_mysql_connection, context=context) as connection:
                ...  # the lease is held as long as the connection is open
        except NoCapacity:
            return {"statusCode": 503}

The names are `service.client`'s (its docstring tells the rest), loaded on first use: the
helper imports only the wire contract (`connlease_client.contract`, its answers) from
here, and loads none of the client. Installed from the wheel (`make client`), the client
runs on its own copy of the modules it needs, under `connlease_client._core`, so that it
never collides with a function's own `domain`, `service` or `adapters`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.client import (
        ConnectionLeases,
        ConnleaseError,
        CorruptQuota,
        HelperFailed,
        InvalidInput,
        KeepWarm,
        NoCapacity,
        RequestInProgress,
        StoreUnavailable,
        UnknownDatabase,
        direct_leases,
        lambda_leases,
    )

# service.client's own list (tests/unit/test_client_defaults.py holds them equal).
__all__ = [
    "ConnectionLeases",
    "ConnleaseError",
    "CorruptQuota",
    "HelperFailed",
    "InvalidInput",
    "KeepWarm",
    "NoCapacity",
    "RequestInProgress",
    "StoreUnavailable",
    "UnknownDatabase",
    "direct_leases",
    "lambda_leases",
]


def __getattr__(name: str) -> Any:
    """A client name, from `service.client` on first use (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from service import client  # noqa: PLC0415 - the helper, importing the contract, never runs this

    value = getattr(client, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
