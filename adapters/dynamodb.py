"""The lease store on DynamoDB: one item per database, one conditional write per step.

Item layout (DESIGN.md section 4): `pk` = database, `sk` = "quota" (room for shards of one
quota later), `limit`, `ttl_ms` (default lease TTL), `leases` (map of lease id -> expiry
in epoch ms) and `holders` (map of lease id -> holder, only for leases that named one).
Taking a lease is one UpdateItem, giving it back is one UpdateItem.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import unavailable
from domain.decisions import Reclaim
from domain.errors import CorruptQuota, InvalidInput, UnknownDatabase
from domain.model import (
    WANTED_REFRESH_MS,
    WANTED_WINDOW_MS,
    Lease,
    Quota,
    QuotaState,
    new_lease_id,
)
from domain.ports import Clock, LeaseStore, NewLease, Write

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

Item = dict[str, Any]

QUOTA_SORT_KEY = "quota"
KEY_SCHEMA: tuple[tuple[str, Literal["HASH", "RANGE"]], ...] = (("pk", "HASH"), ("sk", "RANGE"))

# Checked by every write that adds, so a malformed item is refused before it is changed.
_WELL_FORMED = (
    "attribute_type(#limit, :N) AND attribute_type(#ttl, :N)"
    " AND attribute_type(leases, :M) AND attribute_type(holders, :M)"
)
_TYPE_VALUES: dict[str, AttributeValueTypeDef] = {":N": {"S": "N"}, ":M": {"S": "M"}}
_NAMES = {"#limit": "limit", "#ttl": "ttl_ms"}


def create_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the leases table (on-demand) if it does not exist; for local stacks and tests."""
    # A table made already may be CREATING still: waited for all the same.
    with suppress(client.exceptions.ResourceInUseException):
        client.create_table(
            TableName=table_name,
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in KEY_SCHEMA],
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"} for name, _ in KEY_SCHEMA
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    wait_until_active(client, table_name)


def wait_until_active(client: DynamoDBClient, table_name: str, *, delay_s: int = 1) -> None:
    """Return once the table is ACTIVE: a new table is CREATING for a while, and DynamoDB
    refuses reads and writes to it until then (moto makes it ACTIVE at once)."""
    client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": delay_s, "MaxAttempts": 300 // delay_s}
    )


def parse_item(database: str, item: Mapping[str, Any]) -> QuotaState:
    """Read a quota item into the domain's snapshot, or say what is wrong with it."""
    try:
        quota = Quota(_int(database, item, "limit"), _int(database, item, "ttl_ms"))
    except InvalidInput as error:
        raise CorruptQuota(database, str(error)) from error
    leases = _map(database, item, "leases")
    holders = _map(database, item, "holders")
    parsed = []
    for lease_id, value in leases.items():
        if set(value) != {"N"} or not value["N"].isdigit():
            raise CorruptQuota(database, f"lease {lease_id!r} has expiry {value!r}, not epoch ms")
        holder = holders.get(lease_id, {}).get("S", "")
        parsed.append(Lease(lease_id, holder, int(value["N"])))
    return QuotaState(database, quota, tuple(parsed), _wanted_at_ms(item))


def quota_item(state: QuotaState) -> Item:
    """The item that holds `state`, as this store writes it: parse_item's inverse (the
    in-memory store sizes its writes by it)."""
    item: Item = {
        "pk": {"S": state.database},
        "sk": {"S": QUOTA_SORT_KEY},
        "limit": {"N": str(state.quota.limit)},
        "ttl_ms": {"N": str(state.quota.default_ttl_ms)},
        "leases": {"M": {lease.id: {"N": str(lease.expires_at_ms)} for lease in state.leases}},
        "holders": {"M": {lease.id: {"S": lease.holder} for lease in state.leases if lease.holder}},
    }
    if state.wanted_at_ms:
        item["wanted_at"] = {"N": str(state.wanted_at_ms)}
    return item


def _wanted_at_ms(item: Mapping[str, Any]) -> int:
    """The waiters' note is advisory: a malformed one reads as none (and is overwritten by
    the next waiter) rather than making the whole quota unusable."""
    raw = item.get("wanted_at")
    if isinstance(raw, dict) and set(raw) == {"N"} and raw["N"].isdigit():
        return int(raw["N"])
    return 0


def _int(database: str, item: Mapping[str, Any], name: str) -> int:
    raw = item.get(name)
    if not isinstance(raw, dict) or set(raw) != {"N"} or not raw["N"].lstrip("-").isdigit():
        raise CorruptQuota(database, f"{name} is {raw!r}, not a whole number")
    return int(raw["N"])


def _map(database: str, item: Mapping[str, Any], name: str) -> dict[str, Any]:
    raw = item.get(name)
    if not isinstance(raw, dict) or set(raw) != {"M"}:
        raise CorruptQuota(database, f"{name} is {raw!r}, not a map")
    return dict(raw["M"])


class DynamoDBLeaseStore(LeaseStore):
    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        clock: Clock,
        lease_ids: Callable[[], str] = new_lease_id,
    ) -> None:
        super().__init__(clock, lease_ids)
        self._client = client
        self._table = table_name

    def _key(self, database: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": {"S": database}, "sk": {"S": QUOTA_SORT_KEY}}

    def _update(self, operation: str, database: str, **request: Any) -> tuple[bool, Item | None]:
        """One conditional UpdateItem: (applied, the item after it, or before a refusal)."""
        request.setdefault("ReturnValuesOnConditionCheckFailure", "ALL_OLD")
        try:
            response = self._client.update_item(
                TableName=self._table, Key=self._key(database), **request
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False, cast("Item | None", error.response.get("Item"))
            _unavailable(operation, error)
        except BotoCoreError as error:
            _unavailable(operation, error)
        return True, response.get("Attributes")

    def _get(self, database: str, operation: str) -> Item:
        try:
            response = self._client.get_item(
                TableName=self._table, Key=self._key(database), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            _unavailable(operation, error)
        item = response.get("Item")
        if item is None:
            raise UnknownDatabase(database)
        return item

    def _seen(self, database: str, item: Item | None, operation: str) -> Item:
        """The item a refused write saw. Real DynamoDB returns it with the refusal; other
        endpoints may not, and then a consistent read stands in."""
        return item if item is not None else self._get(database, operation)

    def _grant_values(
        self, lease: NewLease, now_ms: int
    ) -> tuple[list[str], dict[str, str], dict[str, AttributeValueTypeDef]]:
        names = {"#id": lease.id}
        values: dict[str, AttributeValueTypeDef] = {":now": {"N": str(now_ms)}}
        if lease.ttl_ms is None:
            sets = ["leases.#id = #ttl + :now"]  # the quota's default, read by DynamoDB
        else:
            sets = ["leases.#id = :now + :ttl"]
            values[":ttl"] = {"N": str(lease.ttl_ms)}
        if lease.holder:
            sets.append("holders.#id = :holder")
            values[":holder"] = {"S": lease.holder}
        return sets, names, values

    def _add(self, database: str, lease: NewLease, now_ms: int) -> Write:
        sets, names, values = self._grant_values(lease, now_ms)
        applied, item = self._update(
            "acquire",
            database,
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression=(
                f"{_WELL_FORMED} AND size(leases) < #limit AND attribute_not_exists(leases.#id)"
            ),
            ExpressionAttributeNames=_NAMES | names,
            ExpressionAttributeValues=_TYPE_VALUES | values,
            ReturnValues="ALL_NEW",
        )
        return self._outcome(database, lease, applied, item, "acquire")

    def _reclaim(self, database: str, plan: Reclaim, lease: NewLease | None, now_ms: int) -> Write:
        names: dict[str, str] = {}
        values: dict[str, AttributeValueTypeDef] = {}
        removes, guards = [], [_WELL_FORMED]
        for n, victim in enumerate(plan.victims):
            names[f"#v{n}"] = victim.id
            values[f":v{n}"] = {"N": str(victim.expires_at_ms)}
            removes += [f"leases.#v{n}", f"holders.#v{n}"]
            guards.append(f"leases.#v{n} = :v{n}")
        update = "REMOVE " + ", ".join(removes)
        max_size = plan.max_size_before()
        if max_size is not None:
            guards.append("#limit >= :limit AND size(leases) <= :max_size")
            values |= {":limit": {"N": str(plan.limit)}, ":max_size": {"N": str(max_size)}}
        if lease is not None:
            sets, lease_names, lease_values = self._grant_values(lease, now_ms)
            update += " SET " + ", ".join(sets)
            guards.append("attribute_not_exists(leases.#id)")
            names |= lease_names
            values |= lease_values
        applied, item = self._update(
            "acquire",
            database,
            UpdateExpression=update,
            ConditionExpression=" AND ".join(guards),
            ExpressionAttributeNames=_NAMES | names,
            ExpressionAttributeValues=_TYPE_VALUES | values,
            ReturnValues="ALL_NEW",
        )
        return self._outcome(database, lease, applied, item, "acquire")

    def _outcome(
        self, database: str, lease: NewLease | None, applied: bool, item: Item | None, op: str
    ) -> Write:
        if not applied:
            return Write(False, parse_item(database, self._seen(database, item, op)))
        try:
            return Write(True, parse_item(database, item or {}))
        except CorruptQuota:
            # A lease entry was malformed (the item-level checks passed): undo our grant so
            # the failed call leaves the table as it found it.
            if lease is not None:
                self._remove(database, lease.id)
            raise

    def _remove(self, database: str, lease_id: str) -> bool:
        applied, item = self._update(
            "release",
            database,
            UpdateExpression="REMOVE leases.#id, holders.#id",
            ConditionExpression="attribute_exists(leases.#id)",
            ExpressionAttributeNames={"#id": lease_id},
        )
        if not applied:
            parse_item(database, self._seen(database, item, "release"))
        return applied

    def _note_wanted(self, database: str, now_ms: int) -> None:
        # Only over a note that is stale, far ahead (a bad clock) or malformed: waiters who
        # saw the same stale note write it once between them, and a fresh note stays.
        self._update(
            "note_wanted",
            database,
            UpdateExpression="SET wanted_at = :now",
            ConditionExpression=(
                "attribute_exists(pk) AND (attribute_not_exists(wanted_at)"
                " OR NOT attribute_type(wanted_at, :N)"
                " OR NOT (wanted_at BETWEEN :fresh AND :ahead))"
            ),
            ExpressionAttributeValues={
                ":N": {"S": "N"},
                ":now": {"N": str(now_ms)},
                ":fresh": {"N": str(now_ms - WANTED_REFRESH_MS + 1)},
                ":ahead": {"N": str(now_ms + WANTED_WINDOW_MS)},
            },
            ReturnValuesOnConditionCheckFailure="NONE",
        )

    def _extend(self, database: str, lease_id: str, ttl_ms: int | None, now_ms: int) -> Write:
        values: dict[str, AttributeValueTypeDef] = {":now": {"N": str(now_ms)}}
        if ttl_ms is None:
            expiry = "#ttl + :now"
        else:
            expiry = ":now + :ttl"
            values[":ttl"] = {"N": str(ttl_ms)}
        applied, item = self._update(
            "renew",
            database,
            UpdateExpression=f"SET leases.#id = {expiry}",
            ConditionExpression=f"{_WELL_FORMED} AND leases.#id > :now",
            ExpressionAttributeNames=_NAMES | {"#id": lease_id},
            ExpressionAttributeValues=_TYPE_VALUES | values,
            ReturnValues="ALL_NEW",
        )
        return Write(applied, parse_item(database, self._seen(database, item, "renew")))

    def _read(self, database: str) -> QuotaState:
        return parse_item(database, self._get(database, "status"))

    def _write_quota(self, database: str, quota: Quota) -> QuotaState:
        applied, item = self._update(
            "set_quota",
            database,
            UpdateExpression=(
                "SET #limit = :limit, #ttl = :ttl,"
                " leases = if_not_exists(leases, :empty), holders = if_not_exists(holders, :empty)"
            ),
            # Keeps live leases and repairs a missing map, but will not overwrite a
            # mistyped one: the leases it held could be live.
            ConditionExpression=(
                "attribute_not_exists(pk) OR ("
                "(attribute_not_exists(leases) OR attribute_type(leases, :M))"
                " AND (attribute_not_exists(holders) OR attribute_type(holders, :M)))"
            ),
            ExpressionAttributeNames=_NAMES,
            ExpressionAttributeValues={
                ":M": {"S": "M"},
                ":limit": {"N": str(quota.limit)},
                ":ttl": {"N": str(quota.default_ttl_ms)},
                ":empty": {"M": {}},
            },
            ReturnValues="ALL_NEW",
        )
        item = self._seen(database, item, "set_quota")
        if not applied:
            raise CorruptQuota(database, "leases or holders is not a map")
        return parse_item(database, item)

    def _delete_quota(self, database: str) -> bool:
        try:
            response = self._client.delete_item(
                TableName=self._table, Key=self._key(database), ReturnValues="ALL_OLD"
            )
        except (ClientError, BotoCoreError) as error:
            _unavailable("delete_quota", error)
        return "Attributes" in response


def _unavailable(operation: str, error: ClientError | BotoCoreError) -> NoReturn:
    raise unavailable(operation, error) from error
