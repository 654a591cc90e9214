"""The whole local stack in one object: embedded DynamoDB with both tables, and the
Lambda endpoint running the project's functions against it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from adapters.dynamodb import create_table
from adapters.mysql import MySqlEndpoint
from local.dynamodb import EmbeddedDynamoDB, create_idempotency_table
from local.emf_relay import EmfRelay, cloudwatch_client
from local.lambda_endpoint import FunctionSpec, LocalLambda

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient

HELPER = "connlease-helper"
TEST = "connlease-test"
HARNESS = "connlease-harness"
SEEDER = "connlease-seeder"


@dataclass
class Tables:
    leases: str = "connlease-leases"
    idempotency: str = "connlease-idempotency"


def helper_function(
    dynamodb_url: str,
    tables: Tables,
    *,
    name: str = HELPER,
    concurrency: int = 4,
    namespace: str = "connlease",
    extra_env: dict[str, str] | None = None,
    provisioned: int = 0,
) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        handler="service.helper.handler",
        environment={
            "LEASES_TABLE_NAME": tables.leases,
            "IDEMPOTENCY_TABLE_NAME": tables.idempotency,
            "DYNAMODB_ENDPOINT_URL": dynamodb_url,
            "POWERTOOLS_SERVICE_NAME": "connlease-helper",
            "POWERTOOLS_METRICS_NAMESPACE": namespace,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        | (extra_env or {}),
        timeout_s=30,
        concurrency=concurrency,
        provisioned=provisioned,
    )


def database_environment(mysql: MySqlEndpoint, quota_database: str) -> dict[str, str]:
    return {
        "DB_HOST": mysql.host,
        "DB_PORT": str(mysql.port),
        "DB_USER": mysql.user,
        "DB_PASSWORD": mysql.password,
        "DB_NAME": mysql.database,
        "QUOTA_DATABASE": quota_database,
    }


def workload_functions(
    dynamodb_url: str,
    tables: Tables,
    *,
    mysql: MySqlEndpoint,
    quota_database: str,
    concurrency: int,
    lease_mode: str = "lambda",
    lease_hold_ms: int = 0,
    lease_ttl_ms: int = 0,
    namespace: str = "connlease",
    test_timeout_s: float = 30,
    provisioned: bool = True,
) -> list[FunctionSpec]:
    """The original sample's four functions, wired to each other as the template wires
    them: helper, test function, harness and seeder."""
    store = {"LEASES_TABLE_NAME": tables.leases, "DYNAMODB_ENDPOINT_URL": dynamodb_url}
    database = database_environment(mysql, quota_database)
    observability = {"POWERTOOLS_METRICS_NAMESPACE": namespace, "POWERTOOLS_LOG_LEVEL": "INFO"}
    return [
        helper_function(dynamodb_url, tables, concurrency=min(8, concurrency), namespace=namespace),
        FunctionSpec(
            name=TEST,
            handler="service.workload.handler",
            environment=store
            | database
            | observability
            | {
                "POWERTOOLS_SERVICE_NAME": TEST,
                "LEASE_MODE": lease_mode,
                "HELPER_FUNCTION": HELPER,
                "LEASE_HOLD_MS": str(lease_hold_ms),
                "LEASE_TTL_MS": str(lease_ttl_ms),
            },
            timeout_s=test_timeout_s,
            concurrency=concurrency,
            provisioned=concurrency if provisioned else 0,
        ),
        FunctionSpec(
            name=HARNESS,
            handler="service.harness.handler",
            environment=observability | {"POWERTOOLS_SERVICE_NAME": HARNESS, "TEST_FUNCTION": TEST},
            timeout_s=900,
            concurrency=1,
            provisioned=1 if provisioned else 0,
        ),
        FunctionSpec(
            name=SEEDER,
            handler="service.seeder.handler",
            environment=store | database | observability | {"POWERTOOLS_SERVICE_NAME": SEEDER},
            timeout_s=60,
            concurrency=1,
        ),
    ]


@dataclass
class LocalStack:
    """Starts DynamoDB, creates the tables, then serves the functions that
    `functions(dynamodb_url, tables)` declares."""

    functions: Callable[[str, Tables], Iterable[FunctionSpec]]
    tables: Tables = field(default_factory=Tables)
    log_dir: Path | None = None
    dynamodb: EmbeddedDynamoDB = field(default_factory=EmbeddedDynamoDB)
    # The functions' EMF lines as metrics in the embedded CloudWatch (local.emf_relay).
    # Off unless asked: its PutMetricData calls queue with DynamoDB's requests behind the
    # server's one lock, which load runs and benchmarks would measure.
    relay_metrics: bool = False
    _exit: ExitStack = field(default_factory=ExitStack)
    lambdas: LocalLambda | None = None

    def __enter__(self) -> Self:
        # A failed start (an environment that never gets ready) stops what did start.
        with self._exit as started:
            url = started.enter_context(self.dynamodb).endpoint_url
            client = self.dynamodb.client()
            create_table(client, self.tables.leases)
            create_idempotency_table(client, self.tables.idempotency)
            self.lambdas = started.enter_context(
                LocalLambda(
                    self.functions(url, self.tables),
                    log_dir=self.log_dir,
                    # The SDK's own variable: a function's default DynamoDB client (the
                    # client library's direct mode, say) reaches the embedded one unchanged.
                    environment={"AWS_ENDPOINT_URL_DYNAMODB": url},
                )
            )
            if self.relay_metrics:
                relay = EmfRelay(cloudwatch_client(url), self.lambdas.log_files)
                started.enter_context(relay.watching())
            self._exit = started.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit.close()

    def dynamodb_client(self) -> DynamoDBClient:
        return self.dynamodb.client(max_pool_connections=64)

    def lambda_client(self) -> LambdaClient:
        if self.lambdas is None:
            raise RuntimeError("the local stack is not running")
        return self.lambdas.client(max_pool_connections=64)
