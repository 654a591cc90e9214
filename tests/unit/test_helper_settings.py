"""The helper's policy settings: which databases it serves (SERVED_DATABASES), the longest
TTL (MAX_LEASE_TTL_MS) and the longest wait (MAX_WAIT_MS) a caller may ask for."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.model import MAX_TTL_MS, MAX_WAIT_MS, MIN_TTL_MS
from service.settings import HelperSettings

REQUIRED = {"LEASES_TABLE_NAME": "connlease-leases", "IDEMPOTENCY_TABLE_NAME": "connlease-idem"}


def settings(**variables: str) -> HelperSettings:
    return HelperSettings.from_environment(REQUIRED | variables)


def refused(**variables: str) -> str:
    with pytest.raises(ValidationError) as caught:
        settings(**variables)
    (issue,) = caught.value.errors()
    return f"{str(issue['loc'][0]).upper()}: {issue['msg']}"


def test_by_default_any_database_20_minute_ttls_and_15_minute_waits() -> None:
    defaults = settings()
    assert defaults.served_databases == "*"
    assert defaults.serves("orders-mysql")
    assert defaults.serves("inventory-mysql#3")  # "*" is any name at all
    assert defaults.max_lease_ttl_ms == 1_200_000
    assert defaults.max_wait_ms == 900_000 == MAX_WAIT_MS


def test_a_list_serves_exactly_its_databases() -> None:
    served = settings(SERVED_DATABASES="orders-mysql, inventory-mysql")
    assert served.served_databases == "orders-mysql, inventory-mysql"  # as it was given
    assert served.serves("orders-mysql")
    assert served.serves("inventory-mysql")
    assert not served.serves("billing-mysql")
    assert not served.serves("orders-mysql#0")  # a shard item is not a database
    assert not served.serves("orders")
    assert not served.serves("*")
    one = settings(SERVED_DATABASES="demo-mysql")
    assert one.serves("demo-mysql")
    assert not one.serves("demo-mysql2")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "at least 1 character"),
        ("orders mysql", "'orders mysql' has characters outside"),
        ("orders-mysql,-x", "'-x' has characters outside"),
        ("a" * 129, "at most 128"),
        ("orders-mysql,", "an empty name"),
        ("orders-mysql,,inventory-mysql", "an empty name"),
        ("*,orders-mysql", '"*" (any database) stands alone'),
        ("orders-*", "has characters outside"),
    ],
)
def test_a_malformed_list_is_refused_naming_the_variable(value: str, says: str) -> None:
    message = refused(SERVED_DATABASES=value)
    assert message.startswith("SERVED_DATABASES: "), message
    assert says in message


@pytest.mark.parametrize(
    ("variable", "lowest", "highest"),
    [("MAX_LEASE_TTL_MS", MIN_TTL_MS, MAX_TTL_MS), ("MAX_WAIT_MS", 0, MAX_WAIT_MS)],
)
def test_the_limits_are_bounded_as_the_domain_bounds_ttls_and_waits(
    variable: str, lowest: int, highest: int
) -> None:
    field = variable.lower()
    assert getattr(settings(**{variable: str(lowest)}), field) == lowest
    assert getattr(settings(**{variable: str(highest)}), field) == highest
    for outside in (lowest - 1, highest + 1):
        assert refused(**{variable: str(outside)}).startswith(f"{variable}: ")
    assert refused(**{variable: "20m"}).startswith(f"{variable}: ")


def test_settings_stay_frozen() -> None:
    served = settings(SERVED_DATABASES="orders-mysql")
    with pytest.raises(ValidationError):
        served.served_databases = "*"  # type: ignore[misc]
    assert not served.serves("inventory-mysql")
