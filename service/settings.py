"""Settings, read from the environment once per execution environment and validated.

Small mixins composed per handler, as in the Powertools handler cookbook; a missing or
malformed variable fails with a message that names it. Each field is read from the
variable of its name in capitals. (pydantic-settings did this too, but importing it cost
about 130 ms of every cold start here, for nothing these few lines do not.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Literal, Self

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.model import MAX_TTL_MS, MAX_WAIT_MS, MIN_TTL_MS, check_database
from domain.warm import MAX_IDLE_CLOSE_S

TABLE_NAME = r"^[A-Za-z0-9_.-]{3,255}$"


class EnvironmentSettings(BaseModel):
    # Each function reads one of these classes, but importing this module built the
    # validators of all of them. With pydantic's `defer_build` a class's validator is built
    # when it first validates: at init for the helper and the test function, with the rest
    # of what the harness and the seeder build on their first invocation. The helper no
    # longer builds the test function's, the harness's or the seeder's.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Self:
        environ = os.environ if environ is None else environ
        return cls.model_validate(
            {name: environ[name.upper()] for name in cls.model_fields if name.upper() in environ}
        )


class ObservabilitySettings(EnvironmentSettings):
    powertools_service_name: str = Field("connlease", min_length=1)
    powertools_metrics_namespace: str = Field("connlease", min_length=1, max_length=255)


class StoreSettings(EnvironmentSettings):
    leases_table_name: str = Field(pattern=TABLE_NAME)
    # Set only off AWS (the local stack); in AWS the SDK finds the regional endpoint.
    dynamodb_endpoint_url: AnyHttpUrl | None = None


class HelperSettings(ObservabilitySettings, StoreSettings):
    idempotency_table_name: str = Field(pattern=TABLE_NAME)
    # A retried release or renew within this window gets the first answer back.
    idempotency_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    # TTL for leases whose caller names none; unset, the quota's own default applies.
    default_lease_ttl_ms: int | None = Field(None, ge=MIN_TTL_MS, le=MAX_TTL_MS)
    # The helper answers an acquire with wait_ms at least this long before it times out.
    timeout_margin_ms: int = Field(500, ge=0, le=60_000)
    # Its policy. The quota databases it serves, comma-separated, or "*" for any: a request
    # for another is refused (the template names the stack's QuotaDatabase, the one its
    # role may touch).
    served_databases: str = Field("*", min_length=1)
    # The longest lease TTL a caller may ask for (20 minutes: past any invocation's life),
    # and the longest wait_ms.
    max_lease_ttl_ms: int = Field(1_200_000, ge=MIN_TTL_MS, le=MAX_TTL_MS)
    max_wait_ms: int = Field(900_000, ge=0, le=MAX_WAIT_MS)

    @field_validator("served_databases")
    @classmethod
    def _database_names_or_any(cls, value: str) -> str:
        _served(value)  # raises ValueError, which pydantic reports as SERVED_DATABASES's
        return value

    def serves(self, database: str) -> bool:
        """Whether this helper takes requests for `database`."""
        served = _served(self.served_databases)
        return served is None or database in served


@cache
def _served(value: str) -> frozenset[str] | None:
    """SERVED_DATABASES as a set of names; None for "*" (any)."""
    names = [name.strip() for name in value.split(",")]
    if names == ["*"]:
        return None
    if "*" in names:
        raise ValueError('"*" (any database) stands alone, not in a list of names')
    if "" in names:
        raise ValueError("an empty name: give names separated by single commas, or *")
    for name in names:
        check_database(name)  # InvalidInput, a ValueError, names what is wrong
    return frozenset(names)


class DatabaseSettings(EnvironmentSettings):
    """Where the MySQL database is, and as whom the functions log in. In AWS the login is
    the application user's secret (`DB_SECRET_ARN`: JSON with username and password, read
    once per execution environment and again when MySQL refuses it); locally
    `DB_USER`/`DB_PASSWORD`."""

    db_host: str = Field("127.0.0.1", min_length=1)
    db_port: int = Field(3306, ge=1, le=65535)
    db_name: str = Field("test", min_length=1, max_length=64)
    db_user: str = Field("root", min_length=1)
    db_password: str = Field("", repr=False)
    db_secret_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:secretsmanager:")
    db_tls: bool = False
    db_ca_bundle: str | None = None  # the RDS CA bundle shipped with the function
    db_connect_timeout_s: float = Field(5.0, gt=0, le=60)
    # The quota's key in the leases table: which database these connections count against.
    quota_database: str = Field("demo-mysql", min_length=1, max_length=128)


class SeederSettings(ObservabilitySettings, StoreSettings, DatabaseSettings):
    """The custom resource that seeds Employees and the quota item, and keeps the
    application user's MAX_USER_CONNECTIONS at the quota's limit.

    It logs in as the admin (the RDS master user): `DB_ADMIN_SECRET_ARN`, else
    `DB_SECRET_ARN` (what it read before there was an application user), else
    `DB_USER`/`DB_PASSWORD`. The application user's login is `DB_APP_SECRET_ARN` (the
    secret the functions read as their DB_SECRET_ARN), or locally `DB_APP_USER` (default
    connlease_app) with `DB_APP_PASSWORD`; with neither, no application user is managed.
    """

    default_lease_ttl_ms: int = Field(60_000, ge=MIN_TTL_MS, le=MAX_TTL_MS)
    db_admin_secret_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:secretsmanager:")
    db_app_secret_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:secretsmanager:")
    db_app_user: str = Field("connlease_app", min_length=1, max_length=32)
    db_app_password: str | None = Field(None, min_length=1, repr=False)
    # Off only where the server has no TLS (the local MariaDB); RDS requires it anyway.
    db_app_require_ssl: bool = True

    @model_validator(mode="after")
    def _one_source_for_the_app_user(self) -> Self:
        named = "db_app_user" in self.model_fields_set
        if self.db_app_secret_arn and (named or self.db_app_password is not None):
            raise ValueError(
                "DB_APP_SECRET_ARN names the application user and its password: "
                "leave DB_APP_USER and DB_APP_PASSWORD unset"
            )
        if named and self.db_app_password is None:
            raise ValueError("DB_APP_USER needs DB_APP_PASSWORD (or use DB_APP_SECRET_ARN)")
        return self

    @property
    def admin_secret_arn(self) -> str | None:
        return self.db_admin_secret_arn or self.db_secret_arn

    @property
    def manages_app_user(self) -> bool:
        return bool(self.db_app_secret_arn) or self.db_app_password is not None


class WorkloadSettings(ObservabilitySettings, DatabaseSettings):
    """The test function (the sample's LambdaRDS_Test)."""

    # lambda: a lease through the helper; direct: from the table; none: no lease, a
    # connection straight away, as the sample's functions did (the demo's run without).
    lease_mode: Literal["lambda", "direct", "none"] = "lambda"
    helper_function: str = Field("connlease-helper", min_length=1)  # name or ARN
    leases_table_name: str | None = Field(None, pattern=TABLE_NAME)  # direct mode
    dynamodb_endpoint_url: AnyHttpUrl | None = None
    # Query time when the event names none: fixed seconds, or a range as the sample had.
    query_time_s: float = Field(0.0, ge=0, le=900)
    query_time_max_s: float | None = Field(None, ge=0, le=900)
    safety_margin_ms: int = Field(1_000, ge=0, le=60_000)
    # How long one invocation may hold its connection; 0: until the invocation's deadline.
    # Shorter bounds what a killed (or, warm, a frozen) environment keeps from the quota.
    lease_ttl_ms: int = Field(0, ge=0, le=MAX_TTL_MS)
    # 0: a lease per invocation. Else warm leases: an execution environment keeps its lease
    # and connection this long across invocations (domain.warm).
    lease_hold_ms: int = Field(0, ge=0, le=3_600_000)
    # Warm leases only: the server closes a connection idle this long (wait_timeout).
    connection_idle_close_s: int = Field(5, ge=1, le=MAX_IDLE_CLOSE_S)

    @model_validator(mode="after")
    def _direct_mode_names_its_table(self) -> Self:
        if self.lease_mode == "direct" and self.leases_table_name is None:
            raise ValueError("LEASES_TABLE_NAME is required when LEASE_MODE is direct")
        return self

    @model_validator(mode="after")
    def _a_range_runs_upwards(self) -> Self:
        if self.query_time_max_s is not None and self.query_time_max_s < self.query_time_s:
            raise ValueError("QUERY_TIME_MAX_S must be at least QUERY_TIME_S")
        return self

    @model_validator(mode="after")
    def _off_or_long_enough(self) -> Self:
        for name in ("lease_hold_ms", "lease_ttl_ms"):
            if 0 < getattr(self, name) < MIN_TTL_MS:
                raise ValueError(f"{name.upper()} must be 0 (off) or at least {MIN_TTL_MS}")
        return self


class HarnessSettings(ObservabilitySettings):
    """The load harness (the sample's LambdaRDS_TestHarness)."""

    test_function: str = Field("connlease-test", min_length=1)
    max_concurrency: int = Field(200, ge=1, le=1000)
