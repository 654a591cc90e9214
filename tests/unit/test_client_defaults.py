"""What a newcomer meets first: the README's import line, the default SDK clients, a
handler module imported where no region is set, a wrong context, a wait too long."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
from typing import Any

import pytest

import connlease_client
import domain
from adapters import aws
from connlease_client import ConnectionLeases, direct_leases, lambda_leases
from domain import InvalidInput, StoreUnavailable
from domain.model import MAX_WAIT_MS
from service import client as client_module
from service.helper_requests import AcquireRequest
from tests.fakes import FakeClock, FakeContext

DB = "orders-mysql"


@pytest.fixture
def no_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A developer's machine or CI runner with no AWS region configured anywhere."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_one_import_line_gives_a_caller_every_exception_it_catches() -> None:
    for name in (
        "NoCapacity",
        "StoreUnavailable",
        "InvalidInput",
        "UnknownDatabase",
        "RequestInProgress",
        "HelperFailed",
        "CorruptQuota",
        "ConnleaseError",
        "KeepWarm",
    ):
        assert name in client_module.__all__
        assert getattr(client_module, name) is getattr(domain, name)


def test_the_client_package_gives_what_service_client_does() -> None:
    assert connlease_client.__all__ == client_module.__all__
    for name in client_module.__all__:
        assert getattr(connlease_client, name) is getattr(client_module, name)
    assert set(client_module.__all__) <= set(dir(connlease_client))
    with pytest.raises(AttributeError, match="no attribute 'connect'"):
        connlease_client.connect  # noqa: B018


# What a direct-mode function loads to build its leases; what the helper loads importing
# the contract from the client's package.
PROBE = """
import json, sys
from connlease_client import ConnectionLeases, KeepWarm, NoCapacity, direct_leases
ConnectionLeases(direct_leases("connlease-leases"), "orders-mysql", keep_warm=KeepWarm())
direct = set(sys.modules)
import connlease_client.contract
print(json.dumps({"direct": sorted(direct), "both": sorted(sys.modules)}))
"""


def test_a_direct_mode_caller_loads_neither_pydantic_nor_pymysql_nor_the_helper() -> None:
    ran = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(ran.stdout)

    unwanted = ("pydantic", "pymysql", "aws_lambda_powertools", "connlease_client.contract")
    assert [name for name in unwanted if name in loaded["direct"]] == []
    assert [name for name in unwanted[:3] if name in loaded["both"]] == []


def test_importing_the_contract_loads_none_of_the_client() -> None:
    probe = "import sys, connlease_client.contract; print('service.client' in sys.modules)"
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stdout.strip() == "False"


def test_direct_leases_talks_to_dynamodb_with_short_timeouts_where_the_sdk_is_pointed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000")

    store: Any = direct_leases("connlease-leases")
    meta = store.dynamodb.client.meta
    expected: Any = aws.SDK_CONFIG  # botocore's Config is untyped

    assert meta.endpoint_url == "http://127.0.0.1:8000"
    assert meta.config.connect_timeout == expected.connect_timeout == 2
    assert meta.config.read_timeout == expected.read_timeout == 5


def test_lambda_leases_invokes_with_short_connect_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")

    leases: Any = lambda_leases("connlease-helper")

    expected: Any = aws.INVOKE_CONFIG

    assert leases._client.meta.config.connect_timeout == expected.connect_timeout == 2


@pytest.mark.usefixtures("no_region")
def test_a_handler_module_declaring_its_leases_imports_where_no_region_is_set() -> None:
    # What a user's handler module does at import time, in the user's own unit tests.
    through_helper = ConnectionLeases(lambda_leases("connlease-helper"), "orders-mysql")
    direct = ConnectionLeases(direct_leases("connlease-leases"), "orders-mysql")

    # The missing region surfaces on first use, as an error the caller can act on.
    for leases in (through_helper, direct):
        with pytest.raises(StoreUnavailable) as failed:
            leases.leases.acquire("orders-mysql")
        assert failed.value.retryable is False
        assert "region" in str(failed.value).lower()


class NotALambdaContext:
    function_name = "orders-fn"


@pytest.mark.parametrize("context", [None, NotALambdaContext(), {"aws_request_id": "x"}])
def test_a_decorated_handler_given_no_lambda_context_says_what_it_needs(
    store: Any, clock: FakeClock, context: object
) -> None:
    leases = ConnectionLeases(store, "orders-mysql", clock=clock)

    @leases.handler(object)
    def handler(event: Any, context: Any, connection: Any) -> str:
        return "ran"

    with pytest.raises(InvalidInput) as refused:
        handler({}, context)

    assert refused.value.field == "context"
    assert "get_remaining_time_in_millis" in str(refused.value)
    assert store.status("orders-mysql").in_use == 0


def test_a_decorated_handler_runs_with_a_stand_in_context(store: Any, clock: FakeClock) -> None:
    leases = ConnectionLeases(store, "orders-mysql", clock=clock)

    @leases.handler(object)
    def handler(event: Any, context: Any, connection: Any) -> str:
        return "ran"

    assert handler({}, FakeContext(clock, timeout_ms=3_000)) == "ran"


class NoInvokes:
    def invoke(self, **_: Any) -> dict[str, Any]:
        raise AssertionError("a wait the helper refuses was sent to it")


def test_the_client_and_the_helper_accept_and_refuse_the_same_waits() -> None:
    helper: Any = lambda_leases("connlease-helper", client=NoInvokes())  # type: ignore[arg-type]
    AcquireRequest(action="acquire", database=DB, wait_ms=MAX_WAIT_MS)

    with pytest.raises(ValueError, match="wait_ms"):
        AcquireRequest(action="acquire", database=DB, wait_ms=MAX_WAIT_MS + 1)
    with pytest.raises(InvalidInput) as refused:
        helper.acquire(DB, wait_ms=MAX_WAIT_MS + 1)
    assert refused.value.field == "wait_ms"
    with (
        pytest.raises(InvalidInput) as refused,
        ConnectionLeases(helper, DB).connect(object, wait_budget_ms=MAX_WAIT_MS + 1),
    ):
        pass
    assert refused.value.field == "wait_budget_ms"


class LongLivedContext:
    """A stand-in context that says it has longer left than any invocation can have."""

    function_name = "orders-fn"
    aws_request_id = "8f14e45f-0000"

    def get_remaining_time_in_millis(self) -> int:
        return 3_600_000


def test_a_context_with_more_time_than_an_invocation_has_waits_at_most_15_minutes(
    store: Any, clock: FakeClock
) -> None:
    leases = ConnectionLeases(store, DB, clock=clock)

    with leases.connect(object, context=LongLivedContext()):
        pass

    assert store.status(DB).in_use == 0


@pytest.mark.usefixtures("no_region")
def test_a_lazy_client_is_copied_pickled_and_probed_without_being_made() -> None:
    lazy: Any = direct_leases("connlease-leases").dynamodb.client  # type: ignore[attr-defined]

    assert not hasattr(lazy, "__wrapped__")
    assert copy.copy(lazy) is not None
    assert pickle.loads(pickle.dumps(lazy)) is not None
    assert lazy.__dict__["_client"] is None  # still not made: no region was needed
