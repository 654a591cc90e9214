"""Each typed write of domain.item as the one conditional UpdateItem that applies it on
DynamoDB: its condition says what the write's `allows` says, no more and no less
(tests/integration/test_item_rules_on_dynamodb.py holds the two to one answer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.dynamodb_item import config_values, holder_entry
from domain.item import (
    Accept,
    Clear,
    Commit,
    Extend,
    Grant,
    ItemWrite,
    NoteWanted,
    Remove,
    Seal,
    SetLimit,
)
from domain.model import WANTED_REFRESH_MS, WANTED_WINDOW_MS, Lease

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

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


Request = dict[str, Any]

# The maps every quota item has; a change adds any that is missing (an older item's), but
# will not overwrite a mistyped one (the leases it held could be live).
_MAPS_TYPED = (
    "(attribute_not_exists(leases) OR attribute_type(leases, :M))"
    " AND (attribute_not_exists(holders) OR attribute_type(holders, :M))"
    " AND (attribute_not_exists(fences) OR attribute_type(fences, :M))"
)


def _below_epoch(epoch: int) -> str:
    """An item at an earlier version than `epoch` (none: version 0), or no item at all."""
    if epoch == 0:
        return "attribute_not_exists(pk)"
    return "(attribute_not_exists(epoch) OR epoch < :epoch)"


def _at_epoch(epoch: int) -> str:
    """An item at a change's version; one without `epoch` (no change has written it) is
    at version 0."""
    if epoch == 0:
        return "attribute_exists(pk) AND (attribute_not_exists(epoch) OR epoch = :epoch)"
    return "epoch = :epoch"


def request_for(write: ItemWrite) -> tuple[str, Request]:
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
        sealed: dict[str, Any] = {
            ":M": {"S": "M"},
            ":zero": {"N": "0"},
            ":ttl": {"N": str(write.default_ttl_ms)},
            ":epoch": {"N": str(write.epoch)},
            ":empty": {"M": {}},
        }
        update = f"SET #limit = :zero, #ttl = :ttl, epoch = :epoch, {_MAPS_KEPT}"
        if write.fence_floor:  # an item that has given no grant numbers them from the floor
            update += ", fence = if_not_exists(fence, :floor)"
            sealed[":floor"] = {"N": str(write.fence_floor)}
        return _update(update, f"{_below_epoch(write.epoch)} AND {_MAPS_TYPED}", _NAMES, sealed)
    sets, removes, values = config_values(write.config)
    names = {"#total": "total"} | (
        {"#groups": "groups"} if "#groups" in " ".join(sets + removes) else {}
    )
    if isinstance(write, Commit):
        values[":epoch"] = {"N": str(write.epoch)}
        if write.config.deleted:  # a deleted quota's root holds no lease
            sets += ["leases = :empty", "holders = :empty", "fences = :empty"]
            values[":empty"] = {"M": {}}
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
    # The version read: none (0) is a missing item or one no change has written.
    condition = (
        "(attribute_not_exists(epoch) OR epoch = :seen)" if write.seen == 0 else "epoch = :seen"
    )
    values[":seen"] = {"N": str(write.seen)}
    # A commit since the read raised the fence floor (without moving the version).
    condition += " AND (attribute_not_exists(fence_floor) OR fence_floor <= :floor)"
    values[":floor"] = {"N": str(write.config.fence_floor)}
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
    if lease.epoch is not None:  # a borrowed lease: only at the version its caller read
        guards.append(f"({_at_epoch(lease.epoch)})")
        values[":epoch"] = {"N": str(lease.epoch)}
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
