"""The composition root: the one place where settings meet adapters and the domain.

Handlers call these builders once per execution environment (cold start); nothing here
talks to AWS beyond creating clients, so a cold start makes no network call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from botocore.config import Config

from connlease.adapters.clock import SystemClock
from connlease.adapters.dynamodb import DynamoDBLeaseStore
from connlease.adapters.emf import EmfMetricsSink
from connlease.adapters.mysql import MySqlConnector, MySqlEndpoint, tls_context
from connlease.domain import Backoff, Clock, DecorrelatedJitter, LeaseStore, MetricsSink

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics
    from mypy_boto3_dynamodb import DynamoDBClient

    from connlease.service.settings import (
        DatabaseSettings,
        HelperSettings,
        SeederSettings,
        StoreSettings,
    )

# Lease calls sit on the caller's critical path: fail over quickly rather than hang.
SDK_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=10,
)


def dynamodb_client(settings: StoreSettings) -> DynamoDBClient:
    url = settings.dynamodb_endpoint_url
    return boto3.client("dynamodb", endpoint_url=str(url) if url else None, config=SDK_CONFIG)


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
    idempotency_store: BasePersistenceLayer
    idempotency_config: IdempotencyConfig


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
        idempotency_store=DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table_name, boto3_client=client
        ),
        idempotency_config=IdempotencyConfig(
            event_key_jmespath="[database, lease_id, renewal]",
            expires_after_seconds=settings.idempotency_expiry_s,
            raise_on_no_idempotency_key=True,
        ),
    )


def mysql_endpoint(settings: DatabaseSettings) -> MySqlEndpoint:
    """The database's address and credentials; the secret is fetched (and cached for five
    minutes by Powertools Parameters) only when one is configured."""
    user, password = settings.db_user, settings.db_password
    if settings.db_secret_arn:
        from aws_lambda_powertools.utilities.parameters import get_secret  # noqa: PLC0415

        secret = get_secret(settings.db_secret_arn, transform="json", max_age=300)
        user, password = secret["username"], secret["password"]
    return MySqlEndpoint(
        host=settings.db_host,
        port=settings.db_port,
        user=user,
        password=password,
        database=settings.db_name,
        connect_timeout_s=settings.db_connect_timeout_s,
    )


def mysql_connector(settings: DatabaseSettings) -> MySqlConnector:
    # One TLS context per execution environment: building one per connect costs 37 ms.
    tls = tls_context(settings.db_ca_bundle) if settings.db_tls else None
    return MySqlConnector(mysql_endpoint(settings), tls)


@dataclass(frozen=True)
class Seeder:
    """Everything the seeder custom resource works with."""

    settings: SeederSettings
    store: LeaseStore
    connect: MySqlConnector


def build_seeder(settings: SeederSettings) -> Seeder:
    return Seeder(
        settings=settings,
        store=lease_store(settings, dynamodb_client(settings), SystemClock()),
        connect=mysql_connector(settings),
    )
