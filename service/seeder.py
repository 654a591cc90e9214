"""The seeder: a CloudFormation custom resource (the sample's LambdaRDS_CFNInit) that seeds
the Employees table and writes the database's quota item.

crhelper speaks the custom-resource protocol: it calls the handler for the request type,
sends SUCCESS with the returned physical id and `Data`, or FAILED with the exception's
message as the Reason when a handler raises, and sends FAILED "Execution timed out" half
a second before the function would time out. The handlers here parse, call the
composition root and turn failures into one short Reason (CloudFormation shows 256
characters; crhelper keeps the end of a longer one).

Properties (CloudFormation passes strings):
  Database           the quota's key; default QUOTA_DATABASE
  Limit              leases allowed at once, or
  LimitPercent       1-100: that share of the server's max_connections (rounded down, >= 1)
  DefaultLeaseTtlMs  default DEFAULT_LEASE_TTL_MS
  SeedEmployees      "true"/"false", default true
  OtherConnections   connections that are not the functions', default 5: the connections
                     alarm's threshold is the limit plus these
  Groups             the quota's groups (domain.groups), as parse_reservations reads them:
                     "api=10,batch=0:max=20:noborrow"; "" for none (removes any there
                     are); absent: the quota keeps the groups it has. The reservations
                     are checked against the limit (LimitPercent's as computed) before
                     anything is written: Employees, the application user or the quota
  InstanceClass      the database's instance class, recorded in Data: a new one makes
                     CloudFormation send an Update, which recomputes LimitPercent

With an application user configured (DB_APP_SECRET_ARN, or locally DB_APP_PASSWORD), Create
and Update also create or update that user: its secret's password, only the privileges
the functions need, REQUIRE SSL (DB_APP_REQUIRE_SSL), and MAX_USER_CONNECTIONS equal to the
quota's limit, so that MySQL itself refuses a connection beyond the quota (1226).
"""

from __future__ import annotations

import logging
from contextlib import closing
from functools import cache
from typing import Any

from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext
from crhelper import CfnResource
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from adapters.mysql import DatabaseError, ensure_app_user, seed_employees, server_variable
from adapters.secrets import Credentials, SecretUnavailable
from domain import ConnleaseError, InvalidInput, Quota
from domain.groups import Groups, Reservation, format_reservations, parse_reservations
from domain.model import MAX_LIMIT, MAX_TTL_MS, MIN_TTL_MS, check_database, limit_of_percent
from service.bootstrap import Seeder, build_seeder
from service.observability import powertools
from service.settings import SeederSettings

_powertools = powertools()
logger = _powertools.logger
tracer = _powertools.tracer
# crhelper's own lines ("CloudFormation returned status code", the failing handler's error
# with its stack) go out through this Logger: structured, with the invocation's keys.
logging.getLogger("crhelper")
copy_config_to_registered_loggers(source_logger=logger, include={"crhelper"})

PHYSICAL_ID_PREFIX = "connlease-quota-"
# crhelper waits this long before answering a Delete (default 120 s, when the invocation
# has that much time left) so that the function's last logs reach CloudWatch before the
# stack deletes it. The seeder's log group outlives the function, and a stack deletion (or
# a local test) should not wait two minutes for nothing. crhelper skips waits of 1 s or less.
SLEEP_ON_DELETE_S = 0
MAX_SHOWN_INPUT = 40


class SeedFailed(Exception):
    """The custom resource could not do its work; the message is CloudFormation's Reason."""


class SeedProperties(BaseModel):
    """The resource's properties; ServiceToken and anything unknown are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    database: str | None = Field(None, alias="Database")
    limit: int | None = Field(None, alias="Limit", ge=1, le=MAX_LIMIT)
    limit_percent: int | None = Field(None, alias="LimitPercent", ge=1, le=100)
    default_lease_ttl_ms: int | None = Field(
        None, alias="DefaultLeaseTtlMs", ge=MIN_TTL_MS, le=MAX_TTL_MS
    )
    seed_employees: bool = Field(True, alias="SeedEmployees")
    # Connections that are not the functions' (RDS's own, an operator's session): the
    # connections alarm fires past the quota plus these (Data.ConnectionsAlarmThreshold).
    other_connections: int = Field(5, alias="OtherConnections", ge=0, le=1000)
    # The template's Groups parameter: "" means no groups, None (absent) keeps the quota's.
    groups: str | None = Field(None, alias="Groups")
    # The database's instance class, only recorded: its change is what makes CloudFormation
    # send an Update, so that LimitPercent follows the new class's max_connections.
    instance_class: str | None = Field(None, alias="InstanceClass")

    @field_validator("database")
    @classmethod
    def _database_is_a_quota_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_database(value)
        except InvalidInput as error:
            raise PydanticCustomError("database", error.message) from error

    @field_validator("groups")
    @classmethod
    def _groups_are_reservations(cls, value: str | None) -> str | None:
        """The syntax, the names, each group's numbers, no group named twice and at most
        MAX_GROUPS; their sum against the limit once the limit is known (reservations)."""
        if value is None:
            return None
        try:
            Groups().replaced(parse_reservations(value), MAX_LIMIT)
        except InvalidInput as error:
            message = error.message if error.field == "groups" else str(error)
            raise PydanticCustomError("groups", message) from error
        return value

    @model_validator(mode="after")
    def _one_way_to_size_the_quota(self) -> SeedProperties:
        if (self.limit is None) == (self.limit_percent is None):
            raise PydanticCustomError("limit", "give exactly one of Limit or LimitPercent")
        return self

    def quota_limit(self, max_connections: int | None) -> int:
        """Limit as given, or LimitPercent of the server's max_connections (at least 1)."""
        if self.limit is not None:
            return self.limit
        if self.limit_percent is None or max_connections is None:
            raise SeedFailed("LimitPercent needs the server's max_connections")
        return limit_of_percent(max_connections, self.limit_percent)

    def reservations(
        self, limit: int, max_connections: int | None
    ) -> tuple[Reservation, ...] | None:
        """The groups to set (None: keep the quota's), checked against `limit`, the quota's
        limit as quota_limit computed it, so that set_quota will not refuse them."""
        if self.groups is None:
            return None
        reservations = parse_reservations(self.groups)
        try:
            Groups().replaced(reservations, limit)
        except InvalidInput as error:
            sized = ""
            if self.limit is None:
                sized = f" (LimitPercent {self.limit_percent} of max_connections {max_connections})"
            raise SeedFailed(f"invalid properties: Groups: {error.message}{sized}") from error
        return reservations

    @classmethod
    def of(cls, properties: object) -> SeedProperties:
        if not isinstance(properties, dict):
            raise SeedFailed("invalid properties: ResourceProperties is not a map")
        unknown = sorted(set(properties) - _KNOWN_PROPERTIES)
        if unknown:
            logger.warning("ignoring unknown properties", extra={"unknown": unknown})
        try:
            return cls.model_validate(properties)
        except ValidationError as error:
            raise SeedFailed(f"invalid properties: {_summary(error)}") from error


# CloudFormation adds ServiceToken, and ServiceTimeout when the template sets one.
_KNOWN_PROPERTIES = {"ServiceToken", "ServiceTimeout"} | {
    field.alias for field in SeedProperties.model_fields.values() if field.alias
}


@cache
def seeder() -> Seeder:
    """Built on the first invocation of an execution environment, then reused."""
    return build_seeder(SeederSettings.from_environment())


def physical_id(database: str) -> str:
    return f"{PHYSICAL_ID_PREFIX}{database}"


def database_of(physical_resource_id: object) -> str | None:
    """The database a physical id of ours names; None for any other id, such as the one
    crhelper makes up when a Create fails."""
    if not isinstance(physical_resource_id, str):
        return None
    if not physical_resource_id.startswith(PHYSICAL_ID_PREFIX):
        return None
    try:
        return check_database(physical_resource_id.removeprefix(PHYSICAL_ID_PREFIX))
    except InvalidInput:
        return None


def on_create(event: dict[str, Any], _context: Any) -> str:
    return put_seed(event)


def on_update(event: dict[str, Any], _context: Any) -> str:
    # A changed Database gives a new physical id; the old quota item is left alone here.
    # CloudFormation then sends Delete for the old physical id (in its cleanup phase, once
    # the update succeeded), which removes it, and a failed update rolls back onto an old
    # item that still exists.
    return put_seed(event)


def on_delete(event: dict[str, Any], _context: Any) -> str | None:
    database = database_of(event.get("PhysicalResourceId"))
    if database is None:
        # The Create failed (crhelper answered with an id of its own): nothing was written,
        # and the Delete must succeed for the stack to roll back.
        logger.info("nothing to delete: the resource was never created")
        return None
    logger.append_keys(database=database)
    app = composition()
    try:
        removed = app.store.delete_quota(database)
    except ConnleaseError as error:
        raise SeedFailed(f"quota for {database!r} not deleted: {error}") from error
    logger.info("quota deleted" if removed else "quota already gone", extra={"removed": removed})
    # Employees stays: it is the application's data, not this resource's. So does the
    # application user: dropping it under live connections would fail their statements,
    # and the functions may outlive this resource in a stack update; the database goes
    # with the stack anyway.
    return physical_id(database)


def put_seed(event: dict[str, Any]) -> str:
    """Create and Update: size the quota and check its groups against it, seed Employees
    (idempotent), bring the application user's MAX_USER_CONNECTIONS to the limit, then
    write the quota, which keeps any live leases. Nothing is written when the properties
    are wrong, LimitPercent's limit included. The server's limit is set first, so a raised
    quota never grants a lease the server would refuse; a lowered one may, between the two
    writes (the connector waits out a brief 1226)."""
    properties = SeedProperties.of(event.get("ResourceProperties"))
    app = composition()
    database = properties.database or app.settings.quota_database
    logger.append_keys(database=database)
    tracer.put_annotation("database", database)
    data: dict[str, Any] = {"Database": database}
    if properties.instance_class is not None:
        data["InstanceClass"] = properties.instance_class
    max_connections: int | None = None
    app_login = app.app_login
    needs_mysql = properties.seed_employees or properties.limit_percent is not None
    if needs_mysql or app_login is not None:
        try:
            with closing(app.connect()) as connection:
                if properties.limit_percent is not None:
                    max_connections = server_variable(connection, "max_connections")
                    data["MaxConnections"] = max_connections
                # Before anything is written: reservations above the limit fail the resource.
                properties.reservations(properties.quota_limit(max_connections), max_connections)
                if properties.seed_employees:
                    data["Employees"] = seed_employees(connection)
                if app_login is not None:
                    limit = properties.quota_limit(max_connections)
                    data |= keep_app_user(app_login, app.settings, connection, limit)
        except DatabaseError as error:
            raise SeedFailed(f"MySQL at {app.connect.describe()} failed: {error}") from error
        except SecretUnavailable as error:
            raise SeedFailed(str(error)) from error
    limit = properties.quota_limit(max_connections)
    groups = properties.reservations(limit, max_connections)
    ttl_ms = properties.default_lease_ttl_ms
    if ttl_ms is None:
        ttl_ms = app.settings.default_lease_ttl_ms
    try:
        status = app.store.set_quota(database, Quota(limit=limit, default_ttl_ms=ttl_ms), groups)
    except ConnleaseError as error:
        raise SeedFailed(f"quota for {database!r} not set: {error}") from error
    data["Limit"] = status.limit
    data["ConnectionsAlarmThreshold"] = status.limit + properties.other_connections
    custom_resource().Data.update(data)
    extra: dict[str, Any] = {"data": data, "in_use": status.in_use}
    if groups is not None:
        extra["groups"] = format_reservations(groups)
    logger.info("seeded", extra=extra)
    return physical_id(database)


def keep_app_user(
    app_login: Credentials, settings: SeederSettings, connection: Any, limit: int
) -> dict[str, Any]:
    """Create or update the application user with MAX_USER_CONNECTIONS = the quota's limit.

    Its secret is read again on every Create and Update, never kept: it may have been
    rotated since this environment read it, and setting an old password back would lock
    the functions out."""
    login = app_login.refresh()
    ensure_app_user(
        connection,
        login.username,
        login.password,
        settings.db_name,
        limit,
        require_ssl=settings.db_app_require_ssl,
    )
    logger.info(
        "application user ensured", extra={"user": login.username, "max_connections": limit}
    )
    return {"AppUser": login.username, "MaxUserConnections": limit}


def composition() -> Seeder:
    try:
        return seeder()
    except ValidationError as error:  # the environment is wrong, not the event
        issues = error.errors(include_url=False)
        names = ", ".join(str(issue["loc"][0]).upper() for issue in issues if issue["loc"])
        # A rule across variables (a model validator) has no one name: say the rule.
        rules = "; ".join(
            issue["msg"].removeprefix("Value error, ") for issue in issues if not issue["loc"]
        )
        reason = f"check {names}" if names else "" if rules else "check its settings"
        reason = "; ".join(part for part in (reason, rules) if part)
        raise SeedFailed(f"the seeder is misconfigured: {reason}") from error


@cache
def custom_resource() -> CfnResource:
    """crhelper's resource, made on the first invocation: its constructor creates boto3
    clients (which need the region) and sets the root logger's level."""
    level = logging.getLevelName(logger.log_level)
    resource = CfnResource(json_logging=False, log_level=level, sleep_on_delete=SLEEP_ON_DELETE_S)
    resource.create(on_create)
    resource.update(on_update)
    resource.delete(on_delete)
    return resource


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> None:
    logger.append_keys(
        request_type=event.get("RequestType"),
        logical_resource_id=event.get("LogicalResourceId"),
        physical_resource_id=event.get("PhysicalResourceId"),
    )
    # Always answers CloudFormation, SUCCESS or FAILED; never raises.
    custom_resource()(event, context)


def _summary(error: ValidationError) -> str:
    parts = []
    for issue in error.errors(include_url=False):
        field = ".".join(str(part) for part in issue["loc"])
        shown = ""
        if field and isinstance(issue.get("input"), str | int):
            value = str(issue["input"])
            if len(value) > MAX_SHOWN_INPUT:
                value = value[:MAX_SHOWN_INPUT] + "..."
            shown = f" (got {value!r})"
        parts.append(f"{field}: {issue['msg']}{shown}" if field else issue["msg"])
    return "; ".join(parts)
