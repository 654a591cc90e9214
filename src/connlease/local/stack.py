"""The whole local stack in one object: embedded DynamoDB with both tables, and the
Lambda endpoint running the project's functions against it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from connlease.adapters.dynamodb import create_table
from connlease.local.dynamodb import EmbeddedDynamoDB, create_idempotency_table
from connlease.local.lambda_endpoint import FunctionSpec, LocalLambda

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient

HELPER = "connlease-helper"


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
) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        handler="connlease.service.helper.handler",
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
    )


@dataclass
class LocalStack:
    """Starts DynamoDB, creates the tables, then serves the functions that
    `functions(dynamodb_url, tables)` declares."""

    functions: Callable[[str, Tables], Iterable[FunctionSpec]]
    tables: Tables = field(default_factory=Tables)
    log_dir: Path | None = None
    dynamodb: EmbeddedDynamoDB = field(default_factory=EmbeddedDynamoDB)
    _exit: ExitStack = field(default_factory=ExitStack)
    lambdas: LocalLambda | None = None

    def __enter__(self) -> Self:
        url = self._exit.enter_context(self.dynamodb).endpoint_url
        client = self.dynamodb.client()
        create_table(client, self.tables.leases)
        create_idempotency_table(client, self.tables.idempotency)
        self.lambdas = self._exit.enter_context(
            LocalLambda(self.functions(url, self.tables), log_dir=self.log_dir)
        )
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
