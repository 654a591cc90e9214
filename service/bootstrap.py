"""The composition root: the one place where settings meet adapters and the domain.

Handlers call these builders once per execution environment (cold start); nothing here
talks to AWS beyond creating clients, so a cold start makes no network call.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, cast

from botocore.config import Config

from adapters.aws import INVOKE_CONFIG, SDK_CONFIG, AwsAccess, sdk_client
from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.emf import EmfMetricsSink
from domain import (
    Backoff,
    Clock,
    DecorrelatedJitter,
    KeepWarm,
    Leases,
    LeaseStore,
    MetricsSink,
)
from service.settings import StoreSettings

# What only the test function and the seeder use (pymysql, the client library, the invoke
# adapter) is imported inside their builders: the helper's cold start does not pay for it.
if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.utilities.idempotency.persistence.base import (
        BasePersistenceLayer,
    )
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient

    from adapters.cloudwatch import MetricReader
    from adapters.mysql import MySqlConnector, MySqlEndpoint
    from adapters.secrets import Credentials
    from service.client import ConnectionLeases
    from service.settings import (
        DatabaseSettings,
        HarnessSettings,
        HelperSettings,
        SeederSettings,
        WorkloadSettings,
    )

T = TypeVar("T")


def built_at_init(build: Callable[[], T]) -> Callable[[], T]:
    """`build`, run once per execution environment and reused.

    It is tried during the init phase already, where Lambda gives the function a full CPU
    and the work is not on the first caller's clock; if the environment is wrong, the
    error comes again, and is answered, on each invoke.
    """
    once = cache(build)
    with suppress(Exception):
        once()
    return once


def dynamodb_client(settings: StoreSettings) -> DynamoDBClient:
    url = settings.dynamodb_endpoint_url
    return cast("DynamoDBClient", sdk_client("dynamodb", SDK_CONFIG, str(url) if url else None))


def lambda_client(config: Config) -> LambdaClient:
    # Off AWS, the SDK's own AWS_ENDPOINT_URL_LAMBDA points it at the local endpoint.
    return cast("LambdaClient", sdk_client("lambda", config))


def lease_store(settings: StoreSettings, client: DynamoDBClient, clock: Clock) -> LeaseStore:
    return DynamoDBLeaseStore(client, settings.leases_table_name, clock)


@dataclass(frozen=True)
class Helper:
    """Everything the helper's handler works with."""

    settings: HelperSettings
    store: LeaseStore
    clock: Clock
    metrics: MetricsSink
    backoff: Backoff
    rng: random.Random
    dynamodb: DynamoDBClient | None = None  # also for the idempotency records
    idempotency_store: BasePersistenceLayer | None = None  # None: the DynamoDB table


def build_helper(settings: HelperSettings, metrics: Metrics) -> Helper:
    client = dynamodb_client(settings)
    clock = SystemClock()
    return Helper(
        settings=settings,
        store=lease_store(settings, client, clock),
        clock=clock,
        metrics=EmfMetricsSink(metrics, settings.powertools_metrics_namespace),
        backoff=DecorrelatedJitter(base_ms=10, cap_ms=250),
        rng=random.Random(),
        dynamodb=client,
    )


def mysql_endpoint(settings: DatabaseSettings) -> MySqlEndpoint:
    """The database's address, with DB_USER/DB_PASSWORD (the login when no secret is set)."""
    from adapters.mysql import MySqlEndpoint  # noqa: PLC0415

    return MySqlEndpoint(
        host=settings.db_host,
        port=settings.db_port,
        user=settings.db_user,
        password=settings.db_password,
        database=settings.db_name,
        connect_timeout_s=settings.db_connect_timeout_s,
    )


def db_credentials(
    secret_arn: str | None, user: str, password: str, secrets_client: Any = None
) -> Credentials:
    """The login in the secret when one is set: read on the first connect (a cold start
    makes no call) and kept, and read again when MySQL refuses it; else the one given.
    `secrets_client`: a Secrets Manager client of the caller's (the operator's); by
    default the function's own, made on first use."""
    from adapters.aws import LazyClient  # noqa: PLC0415
    from adapters.secrets import FixedCredentials, Login, SecretCredentials  # noqa: PLC0415

    if not secret_arn:
        return FixedCredentials(Login(user, password))
    client = secrets_client or LazyClient("secretsmanager", SDK_CONFIG)
    return SecretCredentials(client, secret_arn)


def mysql_connector(settings: DatabaseSettings, secret_arn: str | None) -> MySqlConnector:
    from adapters.mysql import MySqlConnector, tls_context  # noqa: PLC0415

    # One TLS context per execution environment: building one per connect costs 37 ms.
    tls = tls_context(settings.db_ca_bundle) if settings.db_tls else None
    endpoint = mysql_endpoint(settings)
    return MySqlConnector(
        endpoint, tls, db_credentials(secret_arn, endpoint.user, endpoint.password)
    )


@dataclass(frozen=True)
class Seeder:
    """Everything the seeder custom resource works with."""

    settings: SeederSettings
    store: LeaseStore
    connect: MySqlConnector  # as the admin
    app_login: Credentials | None = None  # the application user's; None: none is managed


def build_seeder(settings: SeederSettings) -> Seeder:
    app_login = None
    if settings.manages_app_user:
        app_login = db_credentials(
            settings.db_app_secret_arn, settings.db_app_user, settings.db_app_password or ""
        )
    return Seeder(
        settings=settings,
        store=lease_store(settings, dynamodb_client(settings), SystemClock()),
        connect=mysql_connector(settings, settings.admin_secret_arn),
        app_login=app_login,
    )


@dataclass(frozen=True)
class Workload:
    """Everything the test function works with."""

    settings: WorkloadSettings
    leases: ConnectionLeases | None  # None: LEASE_MODE none, no lease at all
    connect: MySqlConnector
    rng: random.Random


def build_workload(settings: WorkloadSettings, metrics: Metrics) -> Workload:
    from adapters.lambda_invoke import LambdaLeases  # noqa: PLC0415
    from service.client import ConnectionLeases  # noqa: PLC0415

    connect = mysql_connector(settings, settings.db_secret_arn)
    rng = random.Random()
    if settings.lease_mode == "none":
        return Workload(settings=settings, leases=None, connect=connect, rng=rng)
    clock = SystemClock()
    leases: Leases
    sink: MetricsSink | None = None
    if settings.lease_mode == "lambda":
        leases = LambdaLeases(lambda_client(INVOKE_CONFIG), settings.helper_function)
        # The helper records every acquire it answers; recording here too would count twice.
    else:
        store_settings = StoreSettings(
            # WorkloadSettings requires the table in direct mode.
            leases_table_name=cast("str", settings.leases_table_name),
            dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
        )
        leases = lease_store(store_settings, dynamodb_client(store_settings), clock)
        sink = EmfMetricsSink(metrics, settings.powertools_metrics_namespace)
    return Workload(
        settings=settings,
        leases=ConnectionLeases(
            leases,
            settings.quota_database,
            safety_margin_ms=settings.safety_margin_ms,
            clock=clock,
            rng=rng,
            metrics=sink,
            keep_warm=keep_warm(settings),
        ),
        connect=connect,
        rng=rng,
    )


def keep_warm(settings: WorkloadSettings) -> KeepWarm | None:
    if not settings.lease_hold_ms:
        return None
    return KeepWarm(hold_ms=settings.lease_hold_ms, idle_close_s=settings.connection_idle_close_s)


@dataclass(frozen=True)
class Harness:
    settings: HarnessSettings
    lambda_client: LambdaClient


def build_harness(settings: HarnessSettings) -> Harness:
    config = Config(
        read_timeout=900,  # a test invocation may wait for a lease and query for minutes
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=settings.max_concurrency,
    )
    return Harness(settings, lambda_client(config))


@dataclass(frozen=True)
class Console:
    """Everything the operator's command line (cli/) works with."""

    aws: AwsAccess
    store: LeaseStore
    dynamodb: DynamoDBClient  # the store's (watch counts what its reads return)
    clock: Clock
    metrics: MetricsSink  # PutMetricData: the command line writes no EMF log
    metric_reader: MetricReader  # what the functions' EMF lines became, second by second
    leases_table: str
    outputs: dict[str, str]  # the stack's, when one was named


CONSOLE_SERVICE = "connlease-cli"


def build_console(
    aws: AwsAccess, leases_table: str, outputs: dict[str, str], namespace: str
) -> Console:
    from adapters.cloudwatch import CloudWatchMetricsSink, MetricReader  # noqa: PLC0415

    clock = SystemClock()
    dynamodb = aws.client("dynamodb")
    cloudwatch = aws.client("cloudwatch")
    return Console(
        aws=aws,
        store=DynamoDBLeaseStore(dynamodb, leases_table, clock),
        dynamodb=dynamodb,
        clock=clock,
        metrics=CloudWatchMetricsSink(cloudwatch, namespace, CONSOLE_SERVICE),
        metric_reader=MetricReader(cloudwatch, namespace),
        leases_table=leases_table,
        outputs=outputs,
    )


def operator_mysql(
    aws: AwsAccess,
    endpoint: MySqlEndpoint,
    secret_id: str | None,
    tls: bool,
    ca_bundle: str | None = None,
) -> MySqlConnector:
    """An operator's MySQL connection: the login in `secret_id` (read with the operator's
    own AWS access) when given, else the endpoint's user and password; over TLS verified
    with `ca_bundle` (RDS's authorities) or the system's store."""
    from adapters.mysql import MySqlConnector, tls_context  # noqa: PLC0415

    secrets = aws.client("secretsmanager") if secret_id else None
    credentials = db_credentials(secret_id, endpoint.user, endpoint.password, secrets)
    return MySqlConnector(endpoint, tls_context(ca_bundle) if tls else None, credentials)
