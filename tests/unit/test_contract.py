"""The helper's answers as callers read them (connlease_client.contract): what the helper
writes reads back the same, fields a newer helper adds are ignored, and anything else is a
MalformedAnswer that says where, never what (an answer may hold a token); read with the
standard library alone."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from connlease_client.contract import (
    AcquireResponse,
    ErrorBody,
    ErrorDetail,
    ErrorResponse,
    LeaseDoc,
    MalformedAnswer,
    ReleaseResponse,
    RenewResponse,
    StatusResponse,
)
from domain.model import MAX_TTL_MS, GroupStatus, GroupsView, Lease, QuotaStatus
from domain.tokens import MAX_FENCE

TOKEN = "s3cr3t-token-value"
LEASE = Lease("lease-1", "orders/8f14e45f", 1_700_000_060_000, 7, group="orders")
GRANTED = AcquireResponse(
    outcome="granted",
    database="orders-mysql",
    lease=LeaseDoc.of(LEASE),
    token=TOKEN,
    remaining=2,
    reclaimed=[LeaseDoc.of(LEASE, labelled=True)],
    waited_ms=12,
    others_waiting=False,
)
STATUS = StatusResponse.of(
    QuotaStatus(
        database="orders-mysql",
        limit=4,
        default_ttl_ms=60_000,
        in_use=1,
        remaining=3,
        expired=0,
        leases=(LEASE,),
        groups=GroupsView(2, 0, (GroupStatus("orders", 2, True, None, 1, 0),)),
    )
)
ANSWERS = [
    GRANTED,
    AcquireResponse(
        outcome="no_capacity",
        database="orders-mysql",
        remaining=0,
        limit=4,
        in_use=4,
        retry_after_ms=250,
    ),
    ReleaseResponse(outcome="already_released", database="orders-mysql"),
    RenewResponse(outcome="renewed", database="orders-mysql", lease=LeaseDoc.of(LEASE)),
    RenewResponse(outcome="lost", database="orders-mysql"),
    STATUS,
    ErrorResponse(
        error=ErrorBody(
            type="InvalidInput",
            message="malformed event",
            details=[ErrorDetail(field="ttl_ms", message="must be positive")],
        )
    ),
]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda answer: type(answer).__name__)
def test_what_the_helper_writes_reads_back_the_same(answer: Any) -> None:
    assert type(answer).read(answer.document()) == answer


def test_a_document_leaves_out_absent_fields_at_every_depth() -> None:
    document = AcquireResponse(
        outcome="no_capacity", database="orders-mysql", remaining=0, limit=4
    ).document()
    status = STATUS.document()

    assert document == {
        "ok": True,
        "action": "acquire",
        "outcome": "no_capacity",
        "database": "orders-mysql",
        "remaining": 0,
        "reclaimed": [],
        "waited_ms": 0,
        "limit": 4,
    }
    assert "max" not in status["groups"][0]
    assert status["leases"][0]["id"] != LEASE.id  # shown only as its label


def test_what_the_domain_gets_back_is_what_was_written() -> None:
    read = StatusResponse.read(STATUS.document()).to_domain()

    assert read.groups == GroupsView(2, 0, (GroupStatus("orders", 2, True, None, 1, 0),))
    assert AcquireResponse.read(GRANTED.document()).lease == LeaseDoc.of(LEASE)
    assert LeaseDoc.of(LEASE).to_domain() == LEASE


def test_fields_a_newer_helper_adds_are_ignored_at_every_depth() -> None:
    document = GRANTED.document()
    document["new_field"] = {"anything": [1, 2]}
    document["lease"]["priority"] = "high"

    assert AcquireResponse.read(document) == GRANTED


def _changed(path: str, value: Any) -> dict[str, Any]:
    document = GRANTED.document()
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("remaining", True, "must be an integer"),
        ("remaining", "2", "must be an integer"),
        ("remaining", 2.0, "must be an integer"),
        ("remaining", KeyError, "is missing"),
        ("database", None, "must be a string"),
        ("ok", 1, "must be true"),
        ("outcome", "maybe", 'must be "granted", "no_capacity"'),
        ("others_waiting", 0, "must be a boolean"),
        ("lease", [], "must be an object"),
        ("lease.fence", -1, "must be at least 0"),
        ("lease.fence", MAX_FENCE + 1, f"must be at most {MAX_FENCE}"),
        ("lease.expires_at_ms", 2**53 + 1, "must be at most"),
        ("reclaimed", {}, "must be a list"),
        ("reclaimed.0.holder", 5, "must be a string"),
        ("retry_after_ms", MAX_TTL_MS + 1, "must be at most"),
    ],
)
def test_a_field_not_as_the_answer_says_is_named_and_its_value_never_shown(
    path: str, value: Any, problem: str
) -> None:
    with pytest.raises(MalformedAnswer) as caught:
        AcquireResponse.read(_changed(path, value))

    assert caught.value.where == path
    assert problem in caught.value.problem
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("document", [None, [], "granted", 3])
def test_an_answer_that_is_no_object_is_malformed(document: Any) -> None:
    with pytest.raises(MalformedAnswer, match="the answer: must be an object"):
        ReleaseResponse.read(document)


def test_an_answer_of_another_action_is_malformed() -> None:
    with pytest.raises(MalformedAnswer) as caught:
        ReleaseResponse.read(STATUS.document())

    assert caught.value.where == "action"


def test_the_answers_are_read_without_pydantic() -> None:
    # What a function using the client loads: pydantic made unimportable, as where it is
    # not installed.
    probe = (
        "import sys; sys.modules['pydantic'] = None\n"
        "from connlease_client.contract import AcquireResponse\n"
        f"print(AcquireResponse.read({GRANTED.document()!r}).outcome)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert ran.stdout.strip() == "granted"
