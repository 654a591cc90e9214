"""The lease store on DynamoDB: one item per database, one conditional write per step.

Item layout (DESIGN.md section 4): `pk` = database (or a shard's `database#i`), `sk` =
"quota", `limit`, `ttl_ms` (default lease TTL), `leases` (map of lease id -> expiry in
epoch ms), `holders` (map of lease id -> holder, only for leases that named one), `fences`
(map of lease id -> its grant's fence) and `fence` (the item's last fence). Taking a lease
is one UpdateItem, giving it back is one UpdateItem.

A quota with groups (domain.groups) keeps them in its root item: `groups` (map of group
-> {t: tag, r: reserved, b: borrow, m: max, x: retired}) and `groups_version`. A group's
pool lease carries its group's tag in its holder entry, `tag<TAB>holder` (a holder is
printable ASCII, so never holds a tab): no map an older item lacks.
"""

from __future__ import annotations

import random
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import unavailable
from adapters.dynamodb_limits import WRITE_UNIT_BYTES, item_size
from domain.decisions import Reclaim
from domain.errors import CorruptQuota, InvalidInput, StoreUnavailable, UnknownDatabase
from domain.groups import GroupRule, Groups, Reservation
from domain.model import (
    MAX_HOLDER_LENGTH,
    MAX_LIMIT,
    MAX_TTL_MS,
    SKEW_MARGIN_MS,
    WANTED_REFRESH_MS,
    WANTED_WINDOW_MS,
    Lease,
    Quota,
    QuotaState,
    ShardLayout,
)
from domain.ports import Clock, LeaseStore, NewLease, Write
from domain.shards import shard_item
from domain.tokens import KEY_CHARS, new_secret

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

Item = dict[str, Any]

QUOTA_SORT_KEY = "quota"
BATCH_GET_LIMIT = 100  # keys in one BatchGetItem
BATCH_GET_ROUNDS = 4
KEY_SCHEMA: tuple[tuple[str, Literal["HASH", "RANGE"]], ...] = (("pk", "HASH"), ("sk", "RANGE"))

# Checked by every write that adds, so a malformed item is refused before it is changed.
_WELL_FORMED = (
    "attribute_type(#limit, :N) AND attribute_type(#ttl, :N)"
    " AND attribute_type(leases, :M) AND attribute_type(holders, :M)"
    " AND attribute_type(fences, :M)"
)
_TYPE_VALUES: dict[str, AttributeValueTypeDef] = {":N": {"S": "N"}, ":M": {"S": "M"}}
_NAMES = {"#limit": "limit", "#ttl": "ttl_ms"}
# The maps every quota item has; set_quota adds any that is missing (an older item's).
_MAPS_KEPT = (
    "leases = if_not_exists(leases, :empty), holders = if_not_exists(holders, :empty),"
    " fences = if_not_exists(fences, :empty)"
)


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
    layout = _layout(database, item)
    groups = _groups(database, item)
    leases = _map(database, item, "leases")
    holders = _map(database, item, "holders")
    # An older version's item has no fences: it reads (so that set_quota can upgrade it,
    # split or not), but no lease is granted or renewed in it until then (_fenced).
    fences = _map(database, item, "fences") if "fences" in item else {}
    parsed = []
    for lease_id, value in leases.items():
        if set(value) != {"N"} or not value["N"].isdigit():
            raise CorruptQuota(database, f"lease {lease_id!r} has expiry {value!r}, not epoch ms")
        tag, holder, granted_s = _holder_entry(holders.get(lease_id, {}).get("S", ""))
        fence = fences.get(lease_id, {}).get("N", "0")
        parsed.append(
            Lease(
                lease_id,
                holder,
                int(value["N"]),
                int(fence),
                tag=tag,
                granted_at_ms=granted_s * 1000,
            )
        )
    return QuotaState(
        database,
        quota,
        tuple(parsed),
        _wanted_at_ms(item),
        layout,
        int(item.get("fence", {}).get("N", "0")),
        fenced="fences" in item,
        groups=groups,
    )


def _groups(database: str, item: Mapping[str, Any]) -> Groups | None:
    if "groups" not in item:
        return None
    rules = []
    try:
        for name, raw in _map(database, item, "groups").items():
            fields = raw.get("M", {}) if isinstance(raw, dict) else {}
            # An older version's "l" (lending, retired) is ignored.
            limit = fields.get("m", {}).get("N")
            reservation = Reservation(
                name,
                int(fields["r"]["N"]),
                fields.get("b", {}).get("BOOL", True),
                None if limit is None else int(limit),
            )
            retired = fields.get("x", {}).get("BOOL", False)
            rules.append(GroupRule(reservation, int(fields["t"]["N"]), retired))
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptQuota(database, f"groups is malformed ({error!r})") from error
    return Groups(
        tuple(sorted(rules, key=lambda rule: rule.tag)),
        _int(database, item, "groups_version"),
        int(item.get("groups_last_tag", {}).get("N", "0")),
        int(item.get("groups_limit", {}).get("N", "0")),
        item.get("groups_pending", {}).get("BOOL", False) is True,
    )


def groups_value(groups: Groups) -> AttributeValueTypeDef:
    """The `groups` attribute that holds `groups` (_groups' inverse)."""
    rules: dict[str, AttributeValueTypeDef] = {}
    for rule in groups.rules:
        fields: dict[str, AttributeValueTypeDef] = {
            "t": {"N": str(rule.tag)},
            "r": {"N": str(rule.reservation.reserved)},
            "b": {"BOOL": rule.reservation.borrow},
            "x": {"BOOL": rule.retired},
        }
        if rule.reservation.max is not None:
            fields["m"] = {"N": str(rule.reservation.max)}
        rules[rule.group] = {"M": fields}
    return {"M": rules}


def _fenced(state: QuotaState) -> QuotaState:
    """The state a grant or a renewal was refused on; one refused for want of a fences map
    is an older version's item, and says how to upgrade it."""
    if not state.fenced:
        raise CorruptQuota(
            state.database, "it has no fences (an older version's item): set its quota again"
        )
    return state


def _layout(database: str, item: Mapping[str, Any]) -> ShardLayout | None:
    """A split quota's root names its shards; any other item does not."""
    if "shards" not in item:
        return None
    return ShardLayout(
        _int(database, item, "total"),
        _int(database, item, "shards"),
        rebalance=item.get("rebalance") == {"BOOL": True},
    )


def quota_item(state: QuotaState) -> Item:
    """The item that holds `state`, as this store writes it: parse_item's inverse (the
    in-memory store sizes its writes by it)."""
    item: Item = {
        "pk": {"S": state.database},
        "sk": {"S": QUOTA_SORT_KEY},
        "limit": {"N": str(state.quota.limit)},
        "ttl_ms": {"N": str(state.quota.default_ttl_ms)},
        "leases": {"M": {lease.id: {"N": str(lease.expires_at_ms)} for lease in state.leases}},
        "holders": {
            "M": {
                lease.id: {"S": holder_entry(lease.tag, lease.holder, lease.granted_at_ms)}
                for lease in state.leases
            }
        },
        "fences": {"M": {lease.id: {"N": str(lease.fence)} for lease in state.leases}},
    }
    if state.fence:
        item["fence"] = {"N": str(state.fence)}
    if state.wanted_at_ms:
        item["wanted_at"] = {"N": str(state.wanted_at_ms)}
    if state.groups is not None:
        item |= {
            "groups": groups_value(state.groups),
            "groups_version": {"N": str(state.groups.version)},
            "groups_last_tag": {"N": str(state.groups.last_tag)},
            "groups_limit": {"N": str(state.groups.limit)},
            "groups_pending": {"BOOL": state.groups.pending},
        }
    if state.layout is not None:
        item |= {
            "total": {"N": str(state.layout.limit)},
            "shards": {"N": str(state.layout.shards)},
            "rebalance": {"BOOL": state.layout.rebalance},
        }
    return item


def holder_entry(tag: int, holder: str, granted_at_ms: int) -> str:
    """A lease's entry in `holders`: its group's tag (0: none), its holder and when it was
    granted (epoch seconds: operators ask how long a lease has been held), tab-separated
    (a holder is printable ASCII, never a tab)."""
    return f"{tag}{TAG_SEPARATOR}{holder}{TAG_SEPARATOR}{granted_at_ms // 1000}"


def _holder_entry(entry: str) -> tuple[int, str, int]:
    """(tag, holder, granted at in epoch seconds) of a `holders` entry; an older version's
    entry is the holder alone, or the tag and the holder (granted at 0: not known)."""
    parts = entry.split(TAG_SEPARATOR)
    if len(parts) == 1:
        return 0, entry, 0
    tag = int(parts[0]) if parts[0].isdigit() else 0
    granted_s = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
    return tag, parts[1], granted_s


TAG_SEPARATOR = "\t"
# The longest entry a lease adds to an item: its key (8 characters) with its expiry (13
# digits: 8 bytes), its holder entry (a group's tag of up to 4 digits, the longest holder
# and a grant time of 10 digits, with two tabs), and its fence (up to 10^12 grants: 7
# bytes), each in its map with a byte of overhead.
_SHARD_ENTRY_BYTES = (
    (KEY_CHARS + 8 + 1) + (KEY_CHARS + 4 + MAX_HOLDER_LENGTH + 10 + 2 + 1) + (KEY_CHARS + 7 + 1)
)
_LONGEST_FENCE = 10**12


def entries_per_shard(database: str) -> int:
    """How many leases a shard item holds and still weighs at most 1 KB, so that every
    write to it costs 1 WCU: its fixed attributes (sized as `quota_item` writes them, the
    longest values) and then entries of the longest size."""
    empty = QuotaState(
        shard_item(database, 9999),
        Quota(MAX_LIMIT, MAX_TTL_MS),
        (),
        wanted_at_ms=9_999_999_999_999,
        fence=_LONGEST_FENCE,
    )
    free = WRITE_UNIT_BYTES - item_size(quota_item(empty))
    return max(1, free // _SHARD_ENTRY_BYTES)


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
        secrets: Callable[[], str] = new_secret,
        *,
        rng: random.Random | None = None,
        shard_capacity: Callable[[str], int] = entries_per_shard,
        reclaim_grace_ms: int = SKEW_MARGIN_MS,
    ) -> None:
        """`shard_capacity`: leases per shard item; by default what fits 1 KB (tests pass
        fewer, to split small quotas)."""
        super().__init__(
            clock,
            secrets,
            shard_capacity=shard_capacity,
            rng=rng,
            reclaim_grace_ms=reclaim_grace_ms,
        )
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
        names = {"#id": lease.id, "#fence": "fence"}
        values: dict[str, AttributeValueTypeDef] = {
            ":now": {"N": str(now_ms)},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
        }
        # Both right-hand sides read the item before the write: the grant's fence is the
        # item's new last one.
        next_fence = "if_not_exists(#fence, :zero) + :one"
        sets = [f"fences.#id = {next_fence}", f"#fence = {next_fence}"]
        if lease.ttl_ms is None:
            sets.append("leases.#id = #ttl + :now")  # the quota's default, read by DynamoDB
        else:
            sets.append("leases.#id = :now + :ttl")
            values[":ttl"] = {"N": str(lease.ttl_ms)}
        sets.append("holders.#id = :holder")
        values[":holder"] = {"S": holder_entry(lease.tag, lease.holder, now_ms)}
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
            removes += [f"leases.#v{n}", f"holders.#v{n}", f"fences.#v{n}"]
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
            return Write(False, _fenced(parse_item(database, self._seen(database, item, op))))
        try:
            return Write(True, parse_item(database, item or {}))
        except CorruptQuota:
            # A lease entry was malformed (the item-level checks passed): undo our grant so
            # the failed call leaves the table as it found it.
            if lease is not None:
                self._remove(database, lease.id, None)
            raise

    def _remove(self, database: str, lease_id: str, fence: int | None) -> bool:
        condition = "attribute_exists(leases.#id)"
        values: dict[str, AttributeValueTypeDef] = {}
        if fence is not None:
            condition += " AND fences.#id = :fence"
            values[":fence"] = {"N": str(fence)}
        applied, item = self._update(
            "release",
            database,
            UpdateExpression="REMOVE leases.#id, holders.#id, fences.#id",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#id": lease_id},
            **({"ExpressionAttributeValues": values} if values else {}),
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

    def _extend(
        self, database: str, lease_id: str, fence: int | None, expires_at_ms: int, now_ms: int
    ) -> Write:
        values: dict[str, AttributeValueTypeDef] = {
            ":now": {"N": str(now_ms)},
            ":expires": {"N": str(expires_at_ms)},
        }
        condition = f"{_WELL_FORMED} AND leases.#id > :now AND leases.#id < :expires"
        if fence is not None:
            condition += " AND fences.#id = :fence"
            values[":fence"] = {"N": str(fence)}
        applied, item = self._update(
            "renew",
            database,
            UpdateExpression="SET leases.#id = :expires",
            ConditionExpression=condition,
            ExpressionAttributeNames=_NAMES | {"#id": lease_id},
            ExpressionAttributeValues=_TYPE_VALUES | values,
            ReturnValues="ALL_NEW",
        )
        return Write(applied, _fenced(parse_item(database, self._seen(database, item, "renew"))))

    def _read(self, database: str) -> QuotaState:
        return parse_item(database, self._get(database, "status"))

    def _read_items(self, items: list[str]) -> dict[str, QuotaState]:
        found: dict[str, QuotaState] = {}
        for start in range(0, len(items), BATCH_GET_LIMIT):
            keys = [self._key(item) for item in items[start : start + BATCH_GET_LIMIT]]
            for item in self._batch_get(keys):
                database = item["pk"]["S"]
                found[database] = parse_item(database, item)
        return found

    def _batch_get(self, keys: list[dict[str, AttributeValueTypeDef]]) -> list[Item]:
        """One BatchGetItem, with what DynamoDB leaves unprocessed (a throttled partition)
        asked for again after a short pause, a few times."""
        items: list[Item] = []
        for attempt in range(BATCH_GET_ROUNDS):
            try:
                response = self._client.batch_get_item(
                    RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}}
                )
            except (ClientError, BotoCoreError) as error:
                _unavailable("read shards", error)
            items += response.get("Responses", {}).get(self._table, [])
            left = response.get("UnprocessedKeys", {}).get(self._table)
            keys = list(left["Keys"]) if left and "Keys" in left else []
            if not keys:
                return items
            self._clock.sleep_ms(20 * 2**attempt)
        raise StoreUnavailable("read shards", "keys left unprocessed (throttled)", True)

    def _write_layout(self, database: str, ttl_ms: int, layout: ShardLayout, seen: int) -> Write:
        applied, item = self._update(
            "set_quota",
            database,
            UpdateExpression=(
                "SET #limit = :zero, #ttl = :ttl, #total = :total, shards = :shards,"
                f" rebalance = :rebalance, {_MAPS_KEPT}"
                " REMOVE claim_until"
            ),
            # The root keeps what it holds: a lease taken in it since it was read refuses this.
            ConditionExpression=(
                "(attribute_not_exists(leases) OR"
                " (attribute_type(leases, :M) AND size(leases) <= :seen))"
                " AND (attribute_not_exists(holders) OR attribute_type(holders, :M))"
                " AND (attribute_not_exists(fences) OR attribute_type(fences, :M))"
            ),
            ExpressionAttributeNames=_NAMES | {"#total": "total"},
            ExpressionAttributeValues={
                ":M": {"S": "M"},
                ":zero": {"N": "0"},
                ":seen": {"N": str(seen)},
                ":ttl": {"N": str(ttl_ms)},
                ":total": {"N": str(layout.limit)},
                ":shards": {"N": str(layout.shards)},
                ":rebalance": {"BOOL": layout.rebalance},
                ":empty": {"M": {}},
            },
            ReturnValues="ALL_NEW",
        )
        return Write(applied, parse_item(database, self._seen(database, item, "set_quota")))

    def _claim_rebalance(self, database: str, now_ms: int, until_ms: int) -> bool:
        applied, _ = self._update(
            "rebalance",
            database,
            UpdateExpression="SET claim_until = :until",
            ConditionExpression=(
                "rebalance = :true AND (attribute_not_exists(claim_until) OR claim_until <= :now)"
            ),
            ExpressionAttributeValues={
                ":true": {"BOOL": True},
                ":now": {"N": str(now_ms)},
                ":until": {"N": str(until_ms)},
            },
            ReturnValuesOnConditionCheckFailure="NONE",
        )
        return applied

    def _write_quota(self, database: str, quota: Quota, *, at_most_held: bool = False) -> Write:
        # Keeps live leases and repairs a missing map, but will not overwrite a mistyped one
        # (the leases it held could be live), nor a split quota's root.
        condition = (
            "(attribute_not_exists(leases) OR attribute_type(leases, :M))"
            " AND (attribute_not_exists(holders) OR attribute_type(holders, :M))"
            " AND (attribute_not_exists(fences) OR attribute_type(fences, :M))"
            " AND attribute_not_exists(shards)"
        )
        if at_most_held:
            condition += " AND (attribute_not_exists(leases) OR size(leases) <= :limit)"
        applied, item = self._update(
            "set_quota",
            database,
            UpdateExpression=f"SET #limit = :limit, #ttl = :ttl, {_MAPS_KEPT}",
            ConditionExpression=f"attribute_not_exists(pk) OR ({condition})",
            ExpressionAttributeNames=_NAMES,
            ExpressionAttributeValues={
                ":M": {"S": "M"},
                ":limit": {"N": str(quota.limit)},
                ":ttl": {"N": str(quota.default_ttl_ms)},
                ":empty": {"M": {}},
            },
            ReturnValues="ALL_NEW",
        )
        state = parse_item(database, self._seen(database, item, "set_quota"))
        if not applied and state.layout is None and not at_most_held:
            raise CorruptQuota(database, "leases, holders or fences is not a map")
        return Write(applied, state)

    def _write_groups(self, database: str, groups: Groups, seen: int) -> bool:
        condition = "attribute_exists(pk) AND " + (
            "attribute_not_exists(groups_version)" if seen == 0 else "groups_version = :seen"
        )
        values: dict[str, AttributeValueTypeDef] = {
            ":groups": groups_value(groups),
            ":version": {"N": str(groups.version)},
            ":last_tag": {"N": str(groups.last_tag)},
            ":limit": {"N": str(groups.limit)},
            ":pending": {"BOOL": groups.pending},
        }
        if seen:
            values[":seen"] = {"N": str(seen)}
        applied, _ = self._update(
            "set_quota",
            database,
            UpdateExpression=(
                "SET #groups = :groups, groups_version = :version, groups_last_tag = :last_tag,"
                " groups_limit = :limit, groups_pending = :pending"
            ),
            ConditionExpression=condition,
            ExpressionAttributeNames={"#groups": "groups"},
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="NONE",
        )
        return applied

    def _delete_quota(self, database: str) -> bool:
        try:
            response = self._client.delete_item(
                TableName=self._table, Key=self._key(database), ReturnValues="ALL_OLD"
            )
        except (ClientError, BotoCoreError) as error:
            _unavailable("delete_quota", error)
        return "Attributes" in response

    def _quota_keys(self) -> list[str]:
        """A Scan of the keys alone (billed by the size of the items it reads, as any scan
        is): for an operator's listing, never on a lease's path."""
        keys = []
        try:
            pages = self._client.get_paginator("scan").paginate(
                TableName=self._table,
                ProjectionExpression="pk",
                FilterExpression="sk = :quota",
                ExpressionAttributeValues={":quota": {"S": QUOTA_SORT_KEY}},
            )
            for page in pages:
                keys += [item["pk"]["S"] for item in page.get("Items", [])]
        except (ClientError, BotoCoreError) as error:
            _unavailable("list databases", error)
        return keys


def _unavailable(operation: str, error: ClientError | BotoCoreError) -> NoReturn:
    raise unavailable(operation, error) from error
