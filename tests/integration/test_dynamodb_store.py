"""What only the DynamoDB store can show: request counts, malformed items, endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from botocore.config import Config

from adapters.dynamodb import DynamoDBLeaseStore, create_table
from domain import (
    CorruptQuota,
    Granted,
    LeaseLost,
    Quota,
    Rejected,
    ReleaseOutcome,
    Renewed,
    StoreUnavailable,
    UnknownDatabase,
)
from domain.groups import Reservation
from domain.item import NoteWanted
from domain.model import SKEW_MARGIN_MS, WANTED_REFRESH_MS, WANTED_WINDOW_MS
from domain.tokens import new_secret
from local.dynamodb import EmbeddedDynamoDB, RequestCounter
from tests.fakes import FakeClock
from tests.stores import dynamodb_store

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DB = "orders-mysql"
TTL = 30_000
# Well formed, and no grant's: a secret (16-64 characters) and a fence.
NEVER_GRANTED = "never-granted-secret-0001.1"


@pytest.fixture
def counter(dynamodb_client: DynamoDBClient) -> RequestCounter:
    return RequestCounter(dynamodb_client)


@pytest.fixture
def store(
    dynamodb_client: DynamoDBClient, leases_table: str, clock: FakeClock
) -> DynamoDBLeaseStore:
    store = dynamodb_store(dynamodb_client, leases_table, clock)
    store.set_quota(DB, Quota(limit=2, default_ttl_ms=TTL))
    return store


def test_taking_a_free_lease_is_one_write_and_giving_it_back_is_one_write(
    store: DynamoDBLeaseStore, counter: RequestCounter
) -> None:
    result = store.acquire(DB, "orders-fn/1")
    assert isinstance(result, Granted)
    assert dict(counter.sent) == {"UpdateItem": 1}

    counter.reset()
    assert store.release(DB, result.token) is ReleaseOutcome.RELEASED
    assert dict(counter.sent) == {"UpdateItem": 1}


def test_a_full_quota_is_rejected_in_one_request_using_the_item_the_refusal_returns(
    store: DynamoDBLeaseStore, counter: RequestCounter, clock: FakeClock
) -> None:
    store.acquire(DB)
    store.acquire(DB)
    first_refusal = store.acquire(DB)  # notes in the item that someone waits: one more write
    clock.advance(WANTED_REFRESH_MS - 1)
    counter.reset()

    assert isinstance(first_refusal, Rejected)
    assert isinstance(store.acquire(DB), Rejected)
    assert dict(counter.sent) == {"UpdateItem": 1}


def hears_of_waiters(store: DynamoDBLeaseStore, token: str) -> bool | None:
    """What a holder renewing its lease is told of waiters."""
    renewed = store.renew(DB, token)
    assert isinstance(renewed, Renewed)
    return renewed.others_waiting


def test_waiters_note_they_wait_at_most_once_a_refresh_and_holders_hear_of_it(
    store: DynamoDBLeaseStore, counter: RequestCounter, clock: FakeClock
) -> None:
    held = store.acquire(DB)
    assert isinstance(held, Granted)
    assert held.others_waiting is False
    store.acquire(DB)
    counter.reset()

    for _ in range(5):
        assert isinstance(store.acquire(DB), Rejected)
        clock.advance(WANTED_REFRESH_MS // 2)

    # The refusals, and a note at 0, 250 and 500 ms.
    assert dict(counter.sent) == {"UpdateItem": 5 + 3}
    renewed = store.renew(DB, held.token, ttl_ms=60_000)
    assert isinstance(renewed, Renewed)
    assert renewed.remaining == 0
    assert renewed.others_waiting is True
    clock.advance(WANTED_WINDOW_MS)
    assert hears_of_waiters(store, held.token) is False


def test_reclaiming_expired_leases_and_granting_is_one_more_write(
    store: DynamoDBLeaseStore, counter: RequestCounter, clock: FakeClock
) -> None:
    store.acquire(DB, "crashed/1")
    store.acquire(DB, "crashed/2")
    clock.advance(TTL + SKEW_MARGIN_MS)  # expired, and may be reclaimed
    counter.reset()

    result = store.acquire(DB)

    assert isinstance(result, Granted)
    assert len(result.reclaimed) == 2
    assert dict(counter.sent) == {"UpdateItem": 2}


@pytest.fixture
def forgetful_client(embedded_dynamodb: EmbeddedDynamoDB) -> DynamoDBClient:
    """A client whose refused conditional writes come back without the old item, as from
    an endpoint that ignores ReturnValuesOnConditionCheckFailure."""
    client = embedded_dynamodb.client()

    def drop_item(parsed: dict[str, Any], **_: Any) -> None:
        parsed.pop("Item", None)

    client.meta.events.register("after-call.dynamodb.UpdateItem", drop_item)
    return client


def test_without_the_old_item_on_refusal_a_consistent_read_stands_in(
    forgetful_client: DynamoDBClient, leases_table: str, clock: FakeClock
) -> None:
    counter = RequestCounter(forgetful_client)
    store = DynamoDBLeaseStore(forgetful_client, leases_table, clock)
    store.set_quota(DB, Quota(limit=1, default_ttl_ms=TTL))
    first = store.acquire(DB)
    assert isinstance(first, Granted)
    counter.reset()

    rejected = store.acquire(DB)
    assert isinstance(rejected, Rejected)
    assert rejected.in_use == 1
    # The refusal, the read standing in for the item, and the waiters' note.
    assert dict(counter.sent) == {"UpdateItem": 2, "GetItem": 1}

    clock.advance(TTL + SKEW_MARGIN_MS)  # expired, and may be reclaimed
    reclaimed = store.acquire(DB)
    assert isinstance(reclaimed, Granted)
    assert [lease.id for lease in reclaimed.reclaimed] == [first.lease.id]
    assert store.release(DB, first.token) is ReleaseOutcome.ALREADY_RELEASED
    assert store.renew(DB, first.token) == LeaseLost(first.lease.id)
    # A stale token (the reclaimed grant's secret, another grant's fence) is refused too.
    stale = f"{first.token.partition('.')[0]}.{reclaimed.lease.fence}"
    assert store.release(DB, stale) is ReleaseOutcome.ALREADY_RELEASED
    assert store.renew(DB, stale) == LeaseLost(first.lease.id)
    assert store.status(DB).leases == (reclaimed.lease,)
    with pytest.raises(UnknownDatabase):
        store.release("ghost-db", NEVER_GRANTED)


def _raw_item(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": {"S": DB},
        "sk": {"S": "quota"},
        "limit": {"N": "2"},
        "ttl_ms": {"N": str(TTL)},
        "leases": {"M": {}},
        "holders": {"M": {}},
        "fences": {"M": {}},
    }
    for name, value in overrides.items():
        if value is None:
            item.pop(name)
        else:
            item[name] = value
    return item


MALFORMED = {
    "limit missing": _raw_item(limit=None),
    "limit a string": _raw_item(limit={"S": "two"}),
    "limit negative": _raw_item(limit={"N": "-1"}),
    "limit a fraction": _raw_item(limit={"N": "2.5"}),
    "ttl missing": _raw_item(ttl_ms=None),
    "leases missing": _raw_item(leases=None),
    "leases a list": _raw_item(leases={"L": []}),
    "holders a string": _raw_item(holders={"S": "x"}),
    "fences a list": _raw_item(fences={"L": []}),
    "a lease expiry that is text": _raw_item(leases={"M": {"abc": {"S": "soon"}}}),
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("operation", ["acquire", "release", "renew", "status"])
def test_a_malformed_quota_item_is_a_typed_error_and_is_left_as_it_was(
    store: DynamoDBLeaseStore,
    dynamodb_client: DynamoDBClient,
    leases_table: str,
    case: str,
    operation: str,
) -> None:
    dynamodb_client.put_item(TableName=leases_table, Item=MALFORMED[case])
    key = {"pk": {"S": DB}, "sk": {"S": "quota"}}

    def stored() -> Any:
        return dynamodb_client.get_item(TableName=leases_table, Key=key, ConsistentRead=True)[
            "Item"
        ]

    before = stored()
    calls: dict[str, Callable[[], object]] = {
        "acquire": lambda: store.acquire(DB),
        "release": lambda: store.release(DB, NEVER_GRANTED),
        "renew": lambda: store.renew(DB, NEVER_GRANTED),
        "status": lambda: store.status(DB),
    }

    with pytest.raises(CorruptQuota, match=DB):
        calls[operation]()

    after = stored()
    # A grant undone after its write (the item could not be read back) leaves one fence
    # number unused: fences need only increase, and no lease holds that one.
    if operation == "acquire" and "fence" in after:
        assert int(after.pop("fence")["N"]) == int(before.get("fence", {"N": "0"})["N"]) + 1
    assert after == before


def test_set_quota_refuses_to_overwrite_mistyped_lease_maps(
    store: DynamoDBLeaseStore, dynamodb_client: DynamoDBClient, leases_table: str
) -> None:
    dynamodb_client.put_item(TableName=leases_table, Item=_raw_item(leases={"L": []}))

    with pytest.raises(CorruptQuota, match="not a map"):
        store.set_quota(DB, Quota(limit=5, default_ttl_ms=TTL))


def test_set_quota_repairs_a_bad_limit_and_a_missing_map(
    store: DynamoDBLeaseStore, dynamodb_client: DynamoDBClient, leases_table: str
) -> None:
    dynamodb_client.put_item(TableName=leases_table, Item=_raw_item(limit=None, holders=None))

    status = store.set_quota(DB, Quota(limit=5, default_ttl_ms=TTL))

    assert (status.limit, status.in_use) == (5, 0)
    assert isinstance(store.acquire(DB, "fn/1"), Granted)


def test_an_item_from_before_fences_is_upgraded_by_setting_its_quota_again(
    store: DynamoDBLeaseStore, dynamodb_client: DynamoDBClient, leases_table: str, clock: FakeClock
) -> None:
    older = _raw_item(
        fences=None,
        leases={"M": {"4Q0RdejACYL8qX4U": {"N": str(clock.now_ms() + TTL)}}},
        holders={"M": {"4Q0RdejACYL8qX4U": {"S": "fn/older"}}},
    )
    dynamodb_client.put_item(TableName=leases_table, Item=older)

    with pytest.raises(CorruptQuota, match="set its quota again"):
        store.acquire(DB, "fn/new")

    status = store.set_quota(DB, Quota(limit=2, default_ttl_ms=TTL))

    assert [(lease.id, lease.holder, lease.fence) for lease in status.leases] == [
        ("4Q0RdejACYL8qX4U", "fn/older", 0)  # kept, from before fences
    ]
    grant = store.acquire(DB, "fn/new")
    assert isinstance(grant, Granted)
    assert grant.lease.fence == 1
    assert store.release(DB, grant.token) is ReleaseOutcome.RELEASED
    assert store.status(DB).in_use == 1


def test_an_older_versions_lending_still_reads_and_a_lent_entry_is_a_lease_that_expires(
    store: DynamoDBLeaseStore, dynamodb_client: DynamoDBClient, leases_table: str, clock: FakeClock
) -> None:
    """Lending is retired (docs/design.md, "Retired: lending"). An item an older version
    wrote may still carry a group's `l` (its lend bound) and, in the group's share, a lent
    entry (holder entry tagged 9999): both read, and the entry holds its place until it
    expires, as any lease does."""
    store.set_quota(DB, Quota(limit=2, default_ttl_ms=TTL), [Reservation("api", 1, borrow=False)])
    dynamodb_client.update_item(
        TableName=leases_table,
        Key={"pk": {"S": DB}, "sk": {"S": "quota"}},
        UpdateExpression="SET #groups.#api.#l = :lend",
        ExpressionAttributeNames={"#groups": "groups", "#api": "api", "#l": "l"},
        ExpressionAttributeValues={":lend": {"N": "1000"}},
    )
    lent = store.acquire(DB, "batch/1", 1_000, group="api")
    assert isinstance(lent, Granted)
    dynamodb_client.update_item(
        TableName=leases_table,
        Key={"pk": {"S": f"{DB}~api"}, "sk": {"S": "quota"}},
        UpdateExpression="SET holders.#id = :entry",
        ExpressionAttributeNames={"#id": lent.lease.id},
        ExpressionAttributeValues={":entry": {"S": f"9999\tbatch/1\t{clock.now_ms() // 1000}"}},
    )
    fresh = DynamoDBLeaseStore(dynamodb_client, leases_table, clock)  # reads the groups anew

    status = fresh.status(DB)
    assert status.groups is not None
    (api,) = status.groups.groups
    assert (api.group, api.reserved, api.borrow, api.reserved_in_use) == ("api", 1, False, 1)
    assert [(lease.holder, lease.group, lease.borrowed) for lease in status.leases] == [
        ("batch/1", "api", False)
    ]
    assert isinstance(fresh.acquire(DB, "api/1", group="api"), Rejected)
    clock.advance(1_000 + SKEW_MARGIN_MS + 1)
    owner = fresh.acquire(DB, "api/1", group="api")
    assert isinstance(owner, Granted)
    assert [lease.id for lease in owner.reclaimed] == [lent.lease.id]


def test_a_missing_table_is_store_unavailable_with_the_table_named(
    dynamodb_client: DynamoDBClient, clock: FakeClock
) -> None:
    store = DynamoDBLeaseStore(dynamodb_client, "no-such-table", clock)

    with pytest.raises(StoreUnavailable, match="ResourceNotFoundException"):
        store.acquire(DB)


def test_an_unreachable_endpoint_is_store_unavailable(clock: FakeClock) -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(connect_timeout=1, retries={"max_attempts": 1}),
    )
    store = DynamoDBLeaseStore(client, "leases", clock)

    with pytest.raises(StoreUnavailable, match=r"acquire.*Could not connect"):
        store.acquire(DB)
    with pytest.raises(StoreUnavailable, match="release"):
        store.release(DB, new_secret())


def test_create_table_is_idempotent(dynamodb_client: DynamoDBClient, leases_table: str) -> None:
    create_table(dynamodb_client, leases_table)

    table = dynamodb_client.describe_table(TableName=leases_table)["Table"]
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]


def test_an_acquire_whose_answer_was_lost_and_retried_keeps_its_lease(
    store: DynamoDBLeaseStore, dynamodb_client: DynamoDBClient, counter: RequestCounter
) -> None:
    """botocore resends a write whose response it lost; the resent one is refused as a
    duplicate, and the acquirer must recognise the lease as its own, not leak it."""
    resent: list[int] = []

    def lose_first_answer(attempts: int, **_: Any) -> int | None:
        if attempts == 1 and not resent:
            resent.append(attempts)
            return 0  # retry at once, as after a dropped connection
        return None

    # botocore's stubs type handlers as returning None; needs-retry reads the return value.
    handler = cast("Callable[..., None]", lose_first_answer)
    dynamodb_client.meta.events.register("needs-retry.dynamodb.UpdateItem", handler)

    result = store.acquire(DB, "fn/retried")

    assert isinstance(result, Granted)
    assert counter.sent["UpdateItem"] == 2
    status = store.status(DB)
    assert [lease.id for lease in status.leases] == [result.lease.id]


@pytest.mark.parametrize(
    "note",
    [{"S": "yesterday"}, {"N": "1.5"}, {"N": str(10**15)}],
    ids=["mistyped", "fractional", "far ahead"],
)
def test_a_bad_waiters_note_reads_as_none_and_the_next_waiter_replaces_it(
    store: DynamoDBLeaseStore,
    dynamodb_client: DynamoDBClient,
    leases_table: str,
    clock: FakeClock,
    note: dict[str, str],
) -> None:
    held = store.acquire(DB)
    store.acquire(DB)
    dynamodb_client.update_item(
        TableName=leases_table,
        Key={"pk": {"S": DB}, "sk": {"S": "quota"}},
        UpdateExpression="SET wanted_at = :bad",
        ExpressionAttributeValues={":bad": note},
    )

    assert isinstance(held, Granted)
    assert hears_of_waiters(store, held.token) is False
    assert isinstance(store.acquire(DB), Rejected)  # a waiter: its note replaces the bad one
    assert hears_of_waiters(store, held.token) is True


def test_a_waiter_that_saw_a_stale_note_does_not_write_over_a_fresh_one(
    store: DynamoDBLeaseStore, clock: FakeClock
) -> None:
    store.acquire(DB)
    store.acquire(DB)
    store.acquire(DB)  # refused: notes now
    noted_at = clock.now_ms()
    clock.advance(100)

    written = store.items.write(DB, NoteWanted(clock.now_ms()))  # a waiter's older snapshot

    assert not written.applied
    assert store.status(DB).leases  # the item is intact
    item = store.items.read(DB)
    assert item is not None
    assert item.wanted_at_ms == noted_at
