"""The lease store on DynamoDB: one item per database, one conditional write per step.

Item layout (docs/design.md, "Storage"): `pk` = the item's key (a database's own, a
shard's `db#i`, a group's share `db~g`), `sk` = "quota", `limit`, `ttl_ms` (default lease
TTL), `leases` (map of lease id -> expiry in epoch ms), `holders` (map of lease id ->
`tag<TAB>holder<TAB>granted-at`), `fences` (map of lease id -> its grant's fence), `fence`
(the item's last fence) and `epoch` (the version of the change that last set its limit).

A quota's root item (the database's own) also says what the quota is: `total` (its
limit), `shards` (how many shard items the pool has), `groups` (map of group -> {t: tag,
r: reserved, b: borrow, m: max, x: retired, s: share shards, c: cap shards, k: capped}),
`last_tag`, `pending` and `settled_at` (domain.item.QuotaConfig).

Each `domain.item` write is one UpdateItem whose condition says what the write's `allows`
says (the contract tests run both stores): this module translates, and decides nothing.
"""

from __future__ import annotations

import random
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import unavailable
from adapters.dynamodb_size import WRITE_UNIT_BYTES, item_size
from domain.errors import CorruptQuota, InvalidInput, StoreUnavailable
from domain.groups import GroupRule, Groups, Reservation
from domain.item import (
    Accept,
    Clear,
    Commit,
    Extend,
    Grant,
    ItemWrite,
    NoteWanted,
    QuotaConfig,
    QuotaState,
    Remove,
    Seal,
    SetLimit,
)
from domain.lease_store import LeaseStore
from domain.model import (
    MAX_HOLDER_LENGTH,
    MAX_LIMIT,
    MAX_TTL_MS,
    SKEW_MARGIN_MS,
    WANTED_REFRESH_MS,
    WANTED_WINDOW_MS,
    Lease,
    Quota,
    is_database_name,
)
from domain.ports import Clock, ItemStore, Written
from domain.shards import shard_item
from domain.tokens import KEY_CHARS, new_secret

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

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


def parse_item(key: str, item: Mapping[str, Any]) -> QuotaState:
    """Read a quota item into the domain's snapshot, or say what is wrong with it."""
    try:
        quota = Quota(_int(key, item, "limit"), _int(key, item, "ttl_ms"))
    except InvalidInput as error:
        raise CorruptQuota(key, str(error)) from error
    leases = _map(key, item, "leases")
    holders = _map(key, item, "holders")
    # An older version's item has no fences: it reads (so that set_quota can upgrade it),
    # but no lease is granted or renewed in it until then.
    fences = _map(key, item, "fences") if "fences" in item else {}
    parsed = []
    for lease_id, value in leases.items():
        if set(value) != {"N"} or not value["N"].isdigit():
            raise CorruptQuota(key, f"lease {lease_id!r} has expiry {value!r}, not epoch ms")
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
        key,
        quota,
        tuple(parsed),
        _wanted_at_ms(item),
        int(item.get("fence", {}).get("N", "0")),
        fenced="fences" in item,
        epoch=_optional_int(key, item, "epoch"),
        config=_config(key, item, quota) if is_database_name(key) else None,
    )


def _config(database: str, item: Mapping[str, Any], own: Quota) -> QuotaConfig:
    """What a root item says of its quota. An older version's root said it otherwise: a
    plain item's limit is the quota's; a split one kept `total`; groups kept their own
    version, last tag and pending flag (read, and dropped by the next change)."""
    limit = _optional_int(database, item, "total", own.limit)
    pending = item.get("pending", item.get("groups_pending", {})).get("BOOL", False) is True
    return QuotaConfig(
        limit,
        own.default_ttl_ms,
        _optional_int(database, item, "shards"),
        _groups(database, item),
        pending,
        _optional_int(database, item, "settled_at"),
        deleted=item.get("deleted", {}).get("BOOL", False) is True,
        version=_optional_int(database, item, "epoch"),
    )


def _groups(database: str, item: Mapping[str, Any]) -> Groups | None:
    if "groups" not in item:
        return None
    rules = []
    try:
        for name, raw in _map(database, item, "groups").items():
            fields = raw.get("M", {}) if isinstance(raw, dict) else {}
            limit = fields.get("m", {}).get("N")
            # A retired version's `l` (lending) is ignored: its lent leases just expire.
            reservation = Reservation(
                name,
                int(fields["r"]["N"]),
                fields.get("b", {}).get("BOOL", True),
                None if limit is None else int(limit),
            )
            rules.append(
                GroupRule(
                    reservation,
                    int(fields["t"]["N"]),
                    fields.get("x", {}).get("BOOL", False),
                    int(fields.get("s", {}).get("N", "0")),
                    int(fields.get("c", {}).get("N", "0")),
                    # An older version's capped group had its cap's item: it is still there.
                    fields.get("k", {}).get("BOOL", limit is not None),
                )
            )
    except (KeyError, TypeError, ValueError, InvalidInput) as error:
        raise CorruptQuota(database, f"groups is malformed ({error!r})") from error
    last_tag = item.get("last_tag", item.get("groups_last_tag", {})).get("N", "0")
    return Groups(tuple(sorted(rules, key=lambda rule: rule.tag)), int(last_tag))


def groups_value(groups: Groups) -> AttributeValueTypeDef:
    """The `groups` attribute that holds `groups` (_groups' inverse)."""
    rules: dict[str, AttributeValueTypeDef] = {}
    for rule in groups.rules:
        fields: dict[str, AttributeValueTypeDef] = {
            "t": {"N": str(rule.tag)},
            "r": {"N": str(rule.reservation.reserved)},
            "b": {"BOOL": rule.reservation.borrow},
            "x": {"BOOL": rule.retired},
            "s": {"N": str(rule.share_shards)},
            "c": {"N": str(rule.cap_shards)},
            "k": {"BOOL": rule.capped},
        }
        if rule.reservation.max is not None:
            fields["m"] = {"N": str(rule.reservation.max)}
        rules[rule.group] = {"M": fields}
    return {"M": rules}


def _config_values(config: QuotaConfig) -> tuple[list[str], list[str], dict[str, Any]]:
    """The SET and REMOVE clauses, and their values, that make a root item say `config`."""
    sets = ["#total = :total", "shards = :shards", "pending = :pending", "settled_at = :settled"]
    values: dict[str, Any] = {
        ":total": {"N": str(config.limit)},
        ":shards": {"N": str(config.shards)},
        ":pending": {"BOOL": config.pending},
        ":settled": {"N": str(config.settled_at_ms)},
    }
    if config.deleted:
        sets.append("deleted = :deleted")
        values[":deleted"] = {"BOOL": True}
    # An older version's attributes go with the first change that reads them.
    removes = ["groups_version", "groups_last_tag", "groups_limit", "groups_pending"]
    removes += ["rebalance", "claim_until"]
    if not config.deleted:
        removes.append("deleted")
    if config.groups is not None:
        sets += ["#groups = :groups", "last_tag = :last_tag"]
        values |= {
            ":groups": groups_value(config.groups),
            ":last_tag": {"N": str(config.groups.last_tag)},
        }
    else:
        removes += ["#groups", "last_tag"]
    return sets, removes, values


def quota_item(state: QuotaState) -> Item:
    """The item that holds `state`, as this store writes it: parse_item's inverse (the
    local capacity model sizes the in-memory store's items by it)."""
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
    if state.epoch:
        item["epoch"] = {"N": str(state.epoch)}
    if state.wanted_at_ms:
        item["wanted_at"] = {"N": str(state.wanted_at_ms)}
    if state.config is not None:
        sets, _, values = _config_values(state.config)
        for clause in sets:
            name, value = (part.strip() for part in clause.split("="))
            item[{"#total": "total", "#groups": "groups"}.get(name, name)] = values[value]
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


def _optional_int(database: str, item: Mapping[str, Any], name: str, default: int = 0) -> int:
    return _int(database, item, name) if name in item else default


def _map(database: str, item: Mapping[str, Any], name: str) -> dict[str, Any]:
    raw = item.get(name)
    if not isinstance(raw, dict) or set(raw) != {"M"}:
        raise CorruptQuota(database, f"{name} is {raw!r}, not a map")
    return dict(raw["M"])


class DynamoDBItems(ItemStore):
    """Quota items in a DynamoDB table: a read is a consistent GetItem, a write one
    conditional UpdateItem (the item it refused on comes back with the refusal)."""

    def __init__(self, client: DynamoDBClient, table_name: str, clock: Clock) -> None:
        self.client = client
        self.table = table_name
        self._clock = clock  # paces the retries of a batch read's unprocessed keys

    def _key(self, key: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": {"S": key}, "sk": {"S": QUOTA_SORT_KEY}}

    def read(self, key: str) -> QuotaState | None:
        try:
            response = self.client.get_item(
                TableName=self.table, Key=self._key(key), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            _unavailable("status", error)
        item = response.get("Item")
        return None if item is None else parse_item(key, item)

    def read_many(self, keys: Sequence[str]) -> dict[str, QuotaState]:
        found: dict[str, QuotaState] = {}
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            batch = [self._key(key) for key in keys[start : start + BATCH_GET_LIMIT]]
            for item in self._batch_get(batch):
                key = item["pk"]["S"]
                found[key] = parse_item(key, item)
        return found

    def _batch_get(self, keys: list[dict[str, AttributeValueTypeDef]]) -> list[Item]:
        """One BatchGetItem, with what DynamoDB leaves unprocessed (a throttled partition)
        asked for again after a short pause, a few times."""
        items: list[Item] = []
        for attempt in range(BATCH_GET_ROUNDS):
            try:
                response = self.client.batch_get_item(
                    RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
                )
            except (ClientError, BotoCoreError) as error:
                _unavailable("read shards", error)
            items += response.get("Responses", {}).get(self.table, [])
            left = response.get("UnprocessedKeys", {}).get(self.table)
            keys = list(left["Keys"]) if left and "Keys" in left else []
            if not keys:
                return items
            self._clock.sleep_ms(20 * 2**attempt)
        raise StoreUnavailable("read shards", "keys left unprocessed (throttled)", True)

    def write(self, key: str, write: ItemWrite) -> Written:
        operation, request = _request(write)
        request.setdefault("ReturnValuesOnConditionCheckFailure", "ALL_OLD")
        try:
            response = self.client.update_item(
                TableName=self.table, Key=self._key(key), ReturnValues="ALL_NEW", **request
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                _unavailable(operation, error)
            seen = cast("Item | None", error.response.get("Item"))
            if seen is None:
                # Real DynamoDB returns the item with the refusal; where an endpoint does
                # not, a consistent read stands in.
                return Written(False, self.read(key))
            return Written(False, parse_item(key, seen))
        except BotoCoreError as error:
            _unavailable(operation, error)
        try:
            return Written(True, parse_item(key, response.get("Attributes", {})))
        except CorruptQuota:
            # A lease entry was malformed (the item-level checks passed): undo our grant so
            # the failed call leaves the table as it found it.
            if isinstance(write, Grant):
                self.write(key, Remove(write.lease.id, None))
            raise

    def delete(self, key: str, epoch: int | None = None) -> bool:
        request: dict[str, Any] = {}
        if epoch is not None:  # domain.item.may_forget
            request = {
                "ConditionExpression": "epoch = :epoch",
                "ExpressionAttributeValues": {":epoch": {"N": str(epoch)}},
            }
        try:
            response = self.client.delete_item(
                TableName=self.table, Key=self._key(key), ReturnValues="ALL_OLD", **request
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            _unavailable("delete_quota", error)
        except BotoCoreError as error:
            _unavailable("delete_quota", error)
        return "Attributes" in response

    def all_keys(self) -> list[str]:
        """A Scan of the keys alone (billed by the size of the items it reads, as any scan
        is): for an operator's listing, never on a lease's path."""
        keys = []
        try:
            pages = self.client.get_paginator("scan").paginate(
                TableName=self.table,
                ProjectionExpression="pk",
                FilterExpression="sk = :quota",
                ExpressionAttributeValues={":quota": {"S": QUOTA_SORT_KEY}},
            )
            for page in pages:
                keys += [item["pk"]["S"] for item in page.get("Items", [])]
        except (ClientError, BotoCoreError) as error:
            _unavailable("list databases", error)
        return keys


class DynamoDBLeaseStore(LeaseStore):
    """A LeaseStore over a DynamoDB table."""

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
        self.dynamodb = DynamoDBItems(client, table_name, clock)
        super().__init__(
            self.dynamodb,
            clock,
            secrets,
            shard_capacity=shard_capacity,
            rng=rng,
            reclaim_grace_ms=reclaim_grace_ms,
        )


Request = dict[str, Any]

# The maps every quota item has; a change adds any that is missing (an older item's), but
# will not overwrite a mistyped one (the leases it held could be live).
_MAPS_TYPED = (
    "(attribute_not_exists(leases) OR attribute_type(leases, :M))"
    " AND (attribute_not_exists(holders) OR attribute_type(holders, :M))"
    " AND (attribute_not_exists(fences) OR attribute_type(fences, :M))"
)


def _at_epoch(epoch: int) -> str:
    """An item at a change's version; one without `epoch` (no change has written it) is
    at version 0."""
    if epoch == 0:
        return "attribute_exists(pk) AND (attribute_not_exists(epoch) OR epoch = :epoch)"
    return "epoch = :epoch"


def _request(write: ItemWrite) -> tuple[str, Request]:
    """The UpdateItem that applies `write`: its condition is domain.item's `allows`."""
    if isinstance(write, Grant):
        return "acquire", _grant(write)
    if isinstance(write, Clear):
        names, victims, removes, guards = _victims(write.victims)
        return "acquire", _update(
            "REMOVE " + ", ".join(removes),
            " AND ".join(["attribute_type(fences, :M)", *guards]),
            names,
            victims | {":M": {"S": "M"}},
        )
    if isinstance(write, Remove):
        condition = "attribute_exists(leases.#id) AND attribute_type(fences, :M)"
        values: dict[str, Any] = {":M": {"S": "M"}}
        if write.fence is not None:
            condition += " AND fences.#id = :fence"
            values[":fence"] = {"N": str(write.fence)}
        return "release", _update(
            "REMOVE leases.#id, holders.#id, fences.#id", condition, {"#id": write.lease_id}, values
        )
    if isinstance(write, Extend):
        condition = f"{_WELL_FORMED} AND leases.#id > :now AND leases.#id < :expires"
        values = _TYPE_VALUES | {
            ":now": {"N": str(write.now_ms)},
            ":expires": {"N": str(write.expires_at_ms)},
        }
        if write.fence is not None:
            condition += " AND fences.#id = :fence"
            values[":fence"] = {"N": str(write.fence)}
        return "renew", _update(
            "SET leases.#id = :expires", condition, _NAMES | {"#id": write.lease_id}, values
        )
    if isinstance(write, NoteWanted):
        # Only over a note that is stale, far ahead (a bad clock) or malformed: waiters who
        # saw the same stale note write it once between them, and a fresh note stays.
        return "note_wanted", _update(
            "SET wanted_at = :now",
            "attribute_exists(pk) AND (attribute_not_exists(wanted_at)"
            " OR NOT attribute_type(wanted_at, :N)"
            " OR NOT (wanted_at BETWEEN :fresh AND :ahead))",
            {},
            {
                ":N": {"S": "N"},
                ":now": {"N": str(write.now_ms)},
                ":fresh": {"N": str(write.now_ms - WANTED_REFRESH_MS + 1)},
                ":ahead": {"N": str(write.now_ms + WANTED_WINDOW_MS)},
            },
        )
    return "set_quota", _change(write)


def _change(write: Seal | SetLimit | Accept | Commit) -> Request:
    if isinstance(write, SetLimit):
        return _update(
            "SET #limit = :limit, #ttl = :ttl",
            _at_epoch(write.epoch),
            _NAMES,
            {
                ":epoch": {"N": str(write.epoch)},
                ":limit": {"N": str(write.quota.limit)},
                ":ttl": {"N": str(write.quota.default_ttl_ms)},
            },
        )
    if isinstance(write, Seal):
        return _update(
            f"SET #limit = :zero, #ttl = :ttl, epoch = :epoch, {_MAPS_KEPT}",
            f"(attribute_not_exists(epoch) OR epoch < :epoch) AND {_MAPS_TYPED}",
            _NAMES,
            {
                ":M": {"S": "M"},
                ":zero": {"N": "0"},
                ":ttl": {"N": str(write.default_ttl_ms)},
                ":epoch": {"N": str(write.epoch)},
                ":empty": {"M": {}},
            },
        )
    sets, removes, values = _config_values(write.config)
    names = {"#total": "total"} | (
        {"#groups": "groups"} if "#groups" in " ".join(sets + removes) else {}
    )
    if isinstance(write, Commit):
        values[":epoch"] = {"N": str(write.epoch)}
        return _update(
            "SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
            _at_epoch(write.epoch),
            names,
            values,
        )
    sets += ["#limit = :own", "#ttl = :ttl", "epoch = :next", _MAPS_KEPT]
    values |= {
        ":M": {"S": "M"},
        ":own": {"N": str(write.own_limit)},
        ":ttl": {"N": str(write.config.default_ttl_ms)},
        ":next": {"N": str(write.seen + 1)},
        ":empty": {"M": {}},
    }
    condition = "(attribute_not_exists(epoch) OR epoch = :seen)"
    values[":seen"] = {"N": str(write.seen)}
    if write.settle_at_ms is not None:
        # As the root reads (adapters.dynamodb._config): an older version's flag, no time.
        condition += (
            " AND (pending = :true OR (attribute_not_exists(pending) AND groups_pending = :true))"
            " AND (attribute_not_exists(settled_at) OR settled_at <= :settled_before)"
        )
        values |= {
            ":true": {"BOOL": True},
            ":settled_before": {"N": str(write.settle_at_ms - write.settle_every_ms)},
        }
    return _update(
        "SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
        f"{condition} AND {_MAPS_TYPED}",
        _NAMES | names,
        values,
    )


def _grant(write: Grant) -> Request:
    lease = write.lease
    names, values, removes, guards = _victims(write.victims)
    names |= _NAMES | {"#id": lease.id, "#fence": "fence"}
    values |= _TYPE_VALUES | {
        ":now": {"N": str(write.now_ms)},
        ":zero": {"N": "0"},
        ":one": {"N": "1"},
        ":holder": {"S": holder_entry(lease.tag, lease.holder, write.now_ms)},
    }
    # Both right-hand sides read the item before the write: the grant's fence is the
    # item's new last one.
    next_fence = "if_not_exists(#fence, :zero) + :one"
    sets = [f"fences.#id = {next_fence}", f"#fence = {next_fence}", "holders.#id = :holder"]
    if lease.ttl_ms is None:
        sets.append("leases.#id = #ttl + :now")  # the item's default, read by DynamoDB
    else:
        sets.append("leases.#id = :now + :ttl")
        values[":ttl"] = {"N": str(lease.ttl_ms)}
    guards = [_WELL_FORMED, *guards, "attribute_not_exists(leases.#id)"]
    if write.victims:
        guards.append("#limit >= :planned AND size(leases) <= :max_size")
        values |= {
            ":planned": {"N": str(write.planned_limit)},
            ":max_size": {"N": str(write.planned_limit + len(write.victims) - 1)},
        }
    else:
        guards.append("size(leases) < #limit")
    update = ("REMOVE " + ", ".join(removes) + " " if removes else "") + "SET " + ", ".join(sets)
    return _update(update, " AND ".join(guards), names, values)


def _victims(
    victims: tuple[Lease, ...],
) -> tuple[dict[str, str], dict[str, Any], list[str], list[str]]:
    """Each victim removed, and guarded by the expiry seen (a renewed one is spared)."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    removes, guards = [], []
    for n, victim in enumerate(victims):
        names[f"#v{n}"] = victim.id
        values[f":v{n}"] = {"N": str(victim.expires_at_ms)}
        removes += [f"leases.#v{n}", f"holders.#v{n}", f"fences.#v{n}"]
        guards.append(f"leases.#v{n} = :v{n}")
    return names, values, removes, guards


def _update(update: str, condition: str, names: dict[str, str], values: dict[str, Any]) -> Request:
    request: Request = {"UpdateExpression": update, "ConditionExpression": condition}
    if names:
        request["ExpressionAttributeNames"] = names
    if values:
        request["ExpressionAttributeValues"] = values
    return request


def _unavailable(operation: str, error: ClientError | BotoCoreError) -> NoReturn:
    raise unavailable(operation, error) from error
