"""A quota item as the DynamoDB store keeps it (docs/design.md, "Storage"): reading one into
the domain's snapshot, writing a snapshot out (the local capacity model sizes items by it),
and how many leases a shard item holds within 1 KB.

`pk` = the item's key (a database's own, a shard's `db#i`, a group's share `db~g`), `sk` =
"quota", `limit`, `ttl_ms` (default lease TTL), `leases` (map of lease id -> expiry in
epoch ms), `holders` (map of lease id -> `tag<TAB>holder<TAB>granted-at`), `fences` (map of
lease id -> its grant's fence), `fence` (the item's last fence) and `epoch` (the version of
the change that last set its limit). A quota's root item (the database's own) also says
what the quota is: `total` (its limit), `shards` (how many shard items the pool has),
`groups` (map of group -> {t: tag, r: reserved, b: borrow, m: max, x: retired, s: share
shards, c: cap shards, k: capped}), `last_tag`, `pending`, `settled_at`, `deleted` and
`fence_floor` (domain.item.QuotaConfig).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.dynamodb_size import WRITE_UNIT_BYTES, item_size
from domain.errors import CorruptQuota, InvalidInput
from domain.groups import GroupRule, Groups, Reservation
from domain.item import QuotaConfig, QuotaState
from domain.model import (
    MAX_HOLDER_LENGTH,
    MAX_LIMIT,
    MAX_TTL_MS,
    Lease,
    Quota,
    is_database_name,
)
from domain.shards import shard_item
from domain.tokens import KEY_CHARS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

Item = dict[str, Any]

QUOTA_SORT_KEY = "quota"


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
        fence_floor=_optional_int(database, item, "fence_floor"),
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


def config_values(config: QuotaConfig) -> tuple[list[str], list[str], dict[str, Any]]:
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
    if config.fence_floor:
        sets.append("fence_floor = :fence_floor")
        values[":fence_floor"] = {"N": str(config.fence_floor)}
    # An older version's attributes go with the first change that reads them.
    removes = ["groups_version", "groups_last_tag", "groups_limit", "groups_pending"]
    removes += ["rebalance", "claim_until"]
    if not config.deleted:
        removes.append("deleted")
    if not config.fence_floor:
        removes.append("fence_floor")
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
        sets, _, values = config_values(state.config)
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
