"""Campaign 5, bad input: hypothesis generates malformed helper events and client arguments
(and well-formed requests for a database with no quota); each must be refused with a typed
error, and none may write.

Every input is malformed by construction: it starts from a request that the README calls
valid and breaks it in a known way (a field missing, unknown, of the wrong type, out of
range, ill-formed, huge or deeply nested), or is no request at all. The field rules are
written out here from the README rather than read from the contract, so the campaign never
judges inputs with the code under test. The quota they name exists and has a lease held,
so any request that slipped through would write: a grant, a release or a renewal.
"""

from __future__ import annotations

import json
import logging
import random
import string
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, cast

from botocore.exceptions import ClientError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as seeded
from hypothesis import strategies as st

import service.helper as helper_service
from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.emf import EmfMetricsSink
from connlease_client.contract import ErrorResponse, MalformedAnswer
from domain import ConnleaseError, DecorrelatedJitter, Granted, Leases, Quota
from domain.groups import Reservation
from local.context import LocalContext
from local.dynamodb import RequestCounter, create_idempotency_table
from reliability.common import Campaign, Figure, Lab, Stopwatch
from service.bootstrap import Helper
from service.client import ConnectionLeases, direct_leases, lambda_leases
from service.settings import HelperSettings

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient

Handler = Callable[[Any, Any], Any]
# Tests wrap the helper's handler in a leaky one to prove that the campaign can fail.
Wrap = Callable[[Handler, Helper], Handler]

HELPER = "bad-input-helper"
HELD_TTL_MS = 15 * 60 * 1000  # live all campaign: a release or renew slipping through changes it
WRITES = ("UpdateItem", "PutItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")
PROBLEMS_SHOWN = 160  # characters of the first offending input shown per kind

# What the README allows (docs/design.md, "Model"), spelled out independently of the code.
ACTIONS = ("acquire", "release", "renew", "status")
NAME_FIRST = string.ascii_letters + string.digits
NAME_CHARS = NAME_FIRST + "._:/@-"
# A proposed secret: 22-64 URL-safe characters drawn at random, never a made-up string; a
# grant token: `secret.fence[.shard]`, whose secret may be as short as 16 (one proposed before
# proposals needed 22) (README, "The helper function"; docs/design.md, "Who may do what").
SECRET_CHARS = string.ascii_letters + string.digits + "_-"
PRINTABLE = "".join(map(chr, range(32, 127)))
MAX_NAME, MIN_SECRET, MAX_SECRET, MAX_HOLDER = 128, 22, 64, 32
MIN_TOKEN_SECRET = 16
# Well-formed proposals: drawn at random, once (seeded), so that no campaign depends on the
# code under test to tell a random one from a made-up one.
_DRAW = random.Random(23)
RANDOM_SECRETS = tuple(
    "".join(_DRAW.choice(SECRET_CHARS) for _ in range(_DRAW.randint(MIN_SECRET, MAX_SECRET)))
    for _ in range(64)
)
# Made-up ones of the right form: the (issue 23), and others as easy to guess.
MADE_UP_SECRETS = (
    "a" * 22,
    "0" * 22,
    "1234567890123456789012",
    "password_password_password",
    "orders-fn-000042-orders-fn-000043",
    "re-granted-secret-0001",
    "correcthorsebatterystaple",
    "abcdefghijklmnopqrstuvwxyz",
)
# A group: a Lambda function's name, 1-64 letters, digits, - and _ (README, "Groups"). The
# quota the campaign uses names these two.
GROUP_CHARS, MAX_GROUP, GROUPS = string.ascii_letters + string.digits + "-_", 64, ("api", "batch")
# The documented limits, written out again on purpose: an oracle independent of the code
# under test (domain.model), so a limit changed there by mistake fails this campaign.
MIN_TTL_MS, MAX_TTL_MS = 100, 24 * 3600 * 1000
MAX_WAIT_MS = 15 * 60 * 1000

ACCEPTED = "accepted (no error)"
NOT_A_DOCUMENT = "not an error document"
UNHANDLED = "unhandled "
INVALID, UNKNOWN = "InvalidInput", "UnknownDatabase"
HELPER_MAX_TTL_MS = HelperSettings.model_fields["max_lease_ttl_ms"].default
UNKNOWN_KIND = "unknown database (well-formed)"
UNKNOWN_GROUP_KIND = "status of an unknown group (well-formed)"


class Spec(NamedTuple):
    """One field of a request, or argument of a call."""

    required: bool
    nullable: bool = False  # an explicit null (None) means "absent", so it is valid


STRING_FIELDS = frozenset({"action", "database", "secret", "token", "holder", "group"})
# The helper's request fields per action (README, "The helper function").
FIELDS: dict[str, dict[str, Spec]] = {
    "acquire": {
        "database": Spec(required=True),
        "secret": Spec(required=False, nullable=True),
        "holder": Spec(required=False),
        "ttl_ms": Spec(required=False, nullable=True),
        "wait_ms": Spec(required=False),
        "group": Spec(required=False, nullable=True),
    },
    "release": {"database": Spec(required=True), "token": Spec(required=True)},
    "renew": {
        "database": Spec(required=True),
        "token": Spec(required=True),
        "renewal": Spec(required=True),
        "ttl_ms": Spec(required=False, nullable=True),
    },
    "status": {"database": Spec(required=True), "group": Spec(required=False, nullable=True)},
}
# The client's arguments per call (client.py and the Leases port): strings and whole numbers.
ARGUMENTS: dict[str, dict[str, Spec]] = {
    "acquire": {
        "database": Spec(required=True),
        "holder": Spec(required=False),
        "ttl_ms": Spec(required=False, nullable=True),
        "secret": Spec(required=False, nullable=True),
        "group": Spec(required=False, nullable=True),
    },
    "release": {"database": Spec(required=True), "token": Spec(required=True)},
    "renew": {
        "database": Spec(required=True),
        "token": Spec(required=True),
        "ttl_ms": Spec(required=False, nullable=True),
    },
    "status": {"database": Spec(required=True), "group": Spec(required=False, nullable=True)},
    "connect": {
        "database": Spec(required=True),
        "group": Spec(required=False, nullable=True),
        "wait_budget_ms": Spec(required=False, nullable=True),
        "ttl_ms": Spec(required=False, nullable=True),
        "safety_margin_ms": Spec(required=False),
    },
}
# What each kind of ill-formed value is called in the breakdown.
ILL_FORMED_KIND = {
    "action": "unknown action",
    "database": "ill-formed database",
    "secret": "ill-formed secret",
    "token": "ill-formed token",
    "holder": "bad holder",
    "ttl_ms": "out of range",
    "wait_ms": "out of range",
    "renewal": "out of range",
    "group": "ill-formed group",
}

# --- values --------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# What only a Python caller can pass: bytes, sets, arbitrary objects, NaN, decimals...
python_values = (
    json_values
    | st.binary(max_size=8)
    | st.builds(object)
    | st.tuples(st.integers())
    | st.frozensets(st.integers(), max_size=3)
    | st.decimals()
    | st.floats()
    | st.complex_numbers(max_magnitude=1e6)
)


def _repeat(pieces: tuple[str, int]) -> str:
    chunk, length = pieces
    return (chunk * length)[:length]


def too_long(alphabet: str, shortest: int, longest: int) -> SearchStrategy[str]:
    return st.tuples(st.text(alphabet, min_size=1, max_size=8), st.integers(shortest, longest)).map(
        _repeat
    )


def with_one_of(alphabet: str, bad: SearchStrategy[str], longest: int) -> SearchStrategy[str]:
    """Well-formed text around one character the alphabet does not allow."""
    side = st.text(alphabet, max_size=longest // 2 - 1)
    return st.tuples(side, bad, side).map("".join)


def _nest(depth: int, as_list: bool, leaf: object) -> object:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"x": value}
    return value


huge_strings = st.tuples(st.sampled_from(NAME_FIRST), st.integers(10_000, 1_000_000)).map(_repeat)
deep_junk = st.builds(_nest, st.integers(20, 300), st.booleans(), json_scalars)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wrong_type(name: str, nullable: bool, values: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """A value of the wrong type for the field; never null where null is allowed."""
    if name in STRING_FIELDS:
        return (values | st.integers(0, 10**6)).filter(
            lambda v: not isinstance(v, str) and not (nullable and v is None)
        )
    # A number as text, a whole number as a float (1000.0): still not a whole number.
    values = values | st.integers().map(str) | st.integers(-(10**9), 10**9).map(float)
    return values.filter(lambda v: not is_int(v) and not (nullable and v is None))


ill_formed: dict[str, SearchStrategy[Any]] = {
    "action": st.text(max_size=20).filter(lambda action: action not in ACTIONS),
    "database": st.one_of(
        st.just(""),
        too_long(NAME_CHARS, MAX_NAME + 1, 3 * MAX_NAME),
        st.tuples(st.sampled_from("._:/@-"), st.text(NAME_CHARS, max_size=40)).map("".join),
        with_one_of(NAME_CHARS, st.characters().filter(lambda c: c not in NAME_CHARS), MAX_NAME),
    ),
    "secret": st.one_of(
        st.just(""),
        st.text(SECRET_CHARS, min_size=1, max_size=MIN_SECRET - 1),  # too easy to guess
        st.sampled_from(MADE_UP_SECRETS),
        st.tuples(st.sampled_from(SECRET_CHARS), st.integers(MIN_SECRET, MAX_SECRET)).map(
            lambda repeated: repeated[0] * repeated[1]
        ),
        too_long(SECRET_CHARS, MAX_SECRET + 1, 3 * MAX_SECRET),
        with_one_of(
            SECRET_CHARS, st.characters().filter(lambda c: c not in SECRET_CHARS), MAX_SECRET
        ),
    ),
    "token": st.one_of(
        st.just(""),
        # A secret too short or too long, whatever follows it: a lease id is such a one.
        st.tuples(
            st.text(SECRET_CHARS, min_size=1, max_size=MIN_TOKEN_SECRET - 1)
            | too_long(SECRET_CHARS, MAX_SECRET + 1, 3 * MAX_SECRET),
            st.sampled_from(["", ".1", ".12.3"]),
        ).map("".join),
        # A well-formed secret with a fence or shard that is not a number.
        st.tuples(
            st.text(SECRET_CHARS, min_size=MIN_TOKEN_SECRET, max_size=MAX_SECRET),
            st.sampled_from([".", ".x", ".1.", ".1.y", "..1", ".-1", ".1.2.3"]),
        ).map("".join),
        with_one_of(
            SECRET_CHARS,
            st.characters().filter(lambda c: c not in SECRET_CHARS and c != "."),
            MAX_SECRET,
        ),
    ),
    "holder": st.one_of(
        too_long(PRINTABLE, MAX_HOLDER + 1, 4 * MAX_HOLDER),
        with_one_of(PRINTABLE, st.characters().filter(lambda c: c not in PRINTABLE), MAX_HOLDER),
    ),
    "ttl_ms": st.integers(max_value=MIN_TTL_MS - 1) | st.integers(min_value=MAX_TTL_MS + 1),
    "wait_ms": st.integers(max_value=-1) | st.integers(min_value=MAX_WAIT_MS + 1),
    "renewal": st.integers(max_value=0),
    "group": st.one_of(
        st.just(""),
        too_long(GROUP_CHARS, MAX_GROUP + 1, 3 * MAX_GROUP),
        with_one_of(GROUP_CHARS, st.characters().filter(lambda c: c not in GROUP_CHARS), MAX_GROUP),
    ),
}


SOURCES = ("direct", "lambda")


@dataclass(frozen=True)
class HelperCase:
    """An event for the helper, and the error type it must be answered with."""

    kind: str
    event: Any
    expected: str


@dataclass(frozen=True)
class ClientCase:
    """A call of the client library, and the error it must raise."""

    kind: str
    source: str  # direct_leases or lambda_leases
    call: str  # a store method, or "connect" on ConnectionLeases
    arguments: dict[str, Any]
    expected: str


class Inputs:
    """Well-formed values around the quota that exists and the lease held in it: what
    every malformed input starts from."""

    def __init__(self, known: str, held: str) -> None:
        """`held`: the token of the lease held in the quota `known`."""
        secrets = st.sampled_from(RANDOM_SECRETS)
        self.valid: dict[str, SearchStrategy[Any]] = {
            "database": st.just(known),
            "secret": secrets,
            # Grant tokens, with their fence: a secret alone is a release's only (a proposer's
            # give-back), and a renewal of it is malformed (tests/unit/test_helper.py).
            "token": st.just(held)
            | st.tuples(secrets, st.integers(1, 10**6).map(".{}".format)).map("".join),
            "holder": st.text(PRINTABLE, max_size=MAX_HOLDER),
            # Within the helper's own longest (its default policy), which refuses longer.
            "ttl_ms": st.integers(MIN_TTL_MS, HELPER_MAX_TTL_MS),
            "wait_ms": st.integers(0, 50),  # short: nothing here should wait at all
            "renewal": st.integers(1, 1000),
            "wait_budget_ms": st.integers(0, 50),
            "safety_margin_ms": st.integers(0, 2000),
            "group": st.sampled_from(GROUPS),
        }
        self.unknown_database = st.text(NAME_CHARS, max_size=MAX_NAME - 6).map("ghost-".__add__)
        self.unknown_group = st.text(GROUP_CHARS, max_size=MAX_GROUP - 6).map("ghost-".__add__)

    def fields(self, draw: DrawFn, specs: dict[str, Spec]) -> dict[str, Any]:
        """Every required field and some optional ones, each well-formed."""
        values = {}
        for name, spec in specs.items():
            if spec.required or draw(st.booleans()):
                valid = self.valid[name]
                values[name] = draw(st.none() | valid if spec.nullable else valid)
        return values

    def events(self) -> SearchStrategy[HelperCase]:
        return weighted(
            (15, malformed_event(self)),
            (2, not_an_object),
            (3, unknown_database_event(self)),
            (1, unknown_group_event(self)),
        )

    def calls(self) -> SearchStrategy[ClientCase]:
        return weighted(
            (17, malformed_call(self)),
            (3, unknown_database_call(self)),
            (1, unknown_group_call(self)),
        )


def weighted(*choices: tuple[int, SearchStrategy[Any]]) -> SearchStrategy[Any]:
    """One of the strategies, drawn in proportion to the weights (st.one_of gives each
    the same share)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda chosen: chosen
    )


def how_many_faults(draw: DrawFn) -> int:
    """One fault mostly; now and then two or three in one input."""
    return draw(st.integers(2, 3)) if draw(st.integers(0, 4)) == 0 else 1


# Ways to break an event: the general ones, and an ill-formed value for each field.
FAULTS = (
    "missing field",
    "unknown field",
    "wrong JSON type",
    "huge string",
    "deeply nested junk",
    *ill_formed,
)


def fits(fault: str, action: str) -> bool:
    """Whether `fault` can break a request for `action`: one with the field it is about."""
    return fault not in ill_formed or fault == "action" or fault in FIELDS[action]


@st.composite
def malformed_event(draw: DrawFn, inputs: Inputs) -> HelperCase:
    # The first fault picks the action, so that faults of fields only one action has (a
    # holder, a renewal) come up as often as the others.
    fault = draw(st.sampled_from(FAULTS))
    action = draw(st.sampled_from([action for action in ACTIONS if fits(fault, action)]))
    event = {"action": action} | inputs.fields(draw, FIELDS[action])
    kinds = [break_event(draw, action, event, fault)]
    for _ in range(how_many_faults(draw) - 1):
        more = draw(st.sampled_from([fault for fault in FAULTS if fits(fault, action)]))
        kinds.append(break_event(draw, action, event, more))
    kind = kinds[0] if len(kinds) == 1 else "several faults"
    if draw(st.integers(0, 9)) == 0:
        # The helper reads a string event as a JSON document: the same faults, encoded.
        return HelperCase(f"{kind}, JSON-encoded", json.dumps(event), INVALID)
    return HelperCase(kind, event, INVALID)


def break_event(draw: DrawFn, action: str, event: dict[str, Any], fault: str) -> str:
    """Break `event` with `fault`; say how, for the breakdown."""
    specs = FIELDS[action]
    fields = ["action", *specs]
    if fault == "missing field":
        required = ["action", *(name for name, spec in specs.items() if spec.required)]
        event.pop(draw(st.sampled_from(required)), None)
    elif fault == "unknown field":
        name = draw(st.text(max_size=30).filter(lambda key: key not in fields))
        event[name] = draw(json_values | huge_strings)
    elif fault == "wrong JSON type":
        name = draw(st.sampled_from(fields))
        nullable = name != "action" and specs[name].nullable
        event[name] = draw(wrong_type(name, nullable, json_values))
    elif fault == "huge string":
        event[draw(st.sampled_from([f for f in fields if f in STRING_FIELDS]))] = draw(huge_strings)
    elif fault == "deeply nested junk":
        event[draw(st.sampled_from(fields))] = draw(deep_junk)
    else:
        event[fault] = draw(ill_formed[fault])
        return ILL_FORMED_KIND[fault]
    return fault


@st.composite
def unknown_database_event(draw: DrawFn, inputs: Inputs) -> HelperCase:
    action = draw(st.sampled_from(ACTIONS))
    event = {"action": action} | inputs.fields(draw, FIELDS[action])
    event["database"] = draw(inputs.unknown_database)
    return HelperCase(UNKNOWN_KIND, event, UNKNOWN)


@st.composite
def unknown_group_event(draw: DrawFn, inputs: Inputs) -> HelperCase:
    event = {"action": "status"} | inputs.fields(draw, FIELDS["status"])
    event["group"] = draw(inputs.unknown_group)
    return HelperCase(UNKNOWN_GROUP_KIND, event, INVALID)


@st.composite
def malformed_call(draw: DrawFn, inputs: Inputs) -> ClientCase:
    call = draw(st.sampled_from(list(ARGUMENTS)))
    specs = ARGUMENTS[call]
    arguments = inputs.fields(draw, specs)
    kinds = []
    for _ in range(how_many_faults(draw)):
        name = draw(st.sampled_from(list(specs)))
        how = draw(st.sampled_from(["type", "ill-formed", "huge", "deep"]))
        if how == "ill-formed" and name in ill_formed:
            arguments[name] = draw(ill_formed[name])
            kinds.append(ILL_FORMED_KIND[name])
        elif how == "huge" and name in STRING_FIELDS:
            arguments[name] = draw(huge_strings)
            kinds.append("huge string")
        elif how == "deep":
            arguments[name] = draw(deep_junk)
            kinds.append("deeply nested junk")
        else:
            arguments[name] = draw(wrong_type(name, specs[name].nullable, python_values))
            kinds.append("wrong type")
    kind = kinds[0] if len(kinds) == 1 else "several faults"
    return ClientCase(kind, draw(st.sampled_from(SOURCES)), call, arguments, INVALID)


@st.composite
def unknown_database_call(draw: DrawFn, inputs: Inputs) -> ClientCase:
    call = draw(st.sampled_from(list(ARGUMENTS)))
    arguments = inputs.fields(draw, ARGUMENTS[call])
    arguments["database"] = draw(inputs.unknown_database)
    return ClientCase(UNKNOWN_KIND, draw(st.sampled_from(SOURCES)), call, arguments, UNKNOWN)


@st.composite
def unknown_group_call(draw: DrawFn, inputs: Inputs) -> ClientCase:
    arguments = inputs.fields(draw, ARGUMENTS["status"])
    arguments["group"] = draw(inputs.unknown_group)
    return ClientCase(
        UNKNOWN_GROUP_KIND, draw(st.sampled_from(SOURCES)), "status", arguments, INVALID
    )


# Lists, strings, null, numbers, nested junk: anything but a JSON object.
not_an_object = (
    (json_values | deep_junk)
    .filter(lambda value: not isinstance(value, dict))
    .map(lambda event: HelperCase("not an object", event, INVALID))
)

# --- what is watched -----------------------------------------------------------------------


class WriteWatch:
    """Write requests a client sends (RequestCounter) and, by table, those DynamoDB applied."""

    def __init__(self, client: DynamoDBClient) -> None:
        self._requests = RequestCounter(client)
        self.applied: Counter[str] = Counter()
        client.meta.events.register("before-parameter-build.dynamodb", self._note_table)
        client.meta.events.register("after-call.dynamodb", self._on_answer)

    @staticmethod
    def _note_table(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["table"] = params.get("TableName", "several tables")

    def _on_answer(self, http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.name in WRITES and http_response.status_code == 200:
            self.applied[context.get("table", "?")] += 1

    @property
    def sent(self) -> int:
        return sum(self._requests.sent[operation] for operation in WRITES)


def table_items(client: DynamoDBClient, tables: tuple[str, ...]) -> Counter[str]:
    """Every item of the tables (consistent scans), as canonical JSON."""
    items: Counter[str] = Counter()
    for table in tables:
        for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            items.update(
                json.dumps([table, item], sort_keys=True) for item in page.get("Items", [])
            )
    return items


class InProcessLambda:
    """Enough of a Lambda client for `lambda_leases`: a RequestResponse invoke of the rig's
    helper handler in this process, JSON both ways, failures reported as Lambda does."""

    def __init__(self, rig: Rig) -> None:
        self._rig = rig

    def invoke(self, **request: Any) -> dict[str, Any]:
        try:
            event = json.loads(request["Payload"], parse_constant=_not_json)
        except ValueError as error:
            raise ClientError(
                {"Error": {"Code": "InvalidRequestContentException", "Message": str(error)}},
                "Invoke",
            ) from error
        try:
            answer = json.dumps(self._rig.handle(event))
        except Exception as error:
            self._rig.escapes += 1
            failure = {"errorType": type(error).__name__, "errorMessage": str(error)}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _body(failure)}
        return {"StatusCode": 200, "Payload": _body(answer)}


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data


def _body(document: object) -> _Body:
    return _Body((document if isinstance(document, str) else json.dumps(document)).encode())


class Rig:
    """What the campaign talks to, all through one DynamoDB client whose writes are watched:
    the helper's handler in-process (the lab's leases table, an idempotency table of its
    own), and the client library both ways, direct and through that handler."""

    def __init__(self, lab: Lab, seed: int, wrap: Wrap | None) -> None:
        setup = lab.client()
        self.known = lab.new_database(limit=3, ttl_ms=60_000)
        lab.store(setup).set_quota(
            self.known,
            Quota(3, 60_000),
            [Reservation(GROUPS[0], 1), Reservation(GROUPS[1], 0, max=1)],
        )
        held = lab.store(setup).acquire(self.known, "bad-input/held", ttl_ms=HELD_TTL_MS)
        if not isinstance(held, Granted):
            raise RuntimeError(f"the new quota {self.known} refused its first lease")
        self.held = held.token
        self.tables = (lab.table, f"{self.known}-idempotency")
        create_idempotency_table(setup, self.tables[1])
        self.scan: Callable[[], Counter[str]] = lambda: table_items(setup, self.tables)

        client = lab.client()
        self.writes = WriteWatch(client)
        settings = HelperSettings(
            leases_table_name=lab.table,
            idempotency_table_name=self.tables[1],
            dynamodb_endpoint_url=lab.dynamodb.endpoint_url,
        )
        clock = SystemClock()
        self.app = Helper(  # as build_helper wires it, on the watched client
            settings=settings,
            store=DynamoDBLeaseStore(client, lab.table, clock),
            clock=clock,
            metrics=EmfMetricsSink(helper_service.metrics, settings.powertools_metrics_namespace),
            backoff=DecorrelatedJitter(base_ms=10, cap_ms=250),
            rng=random.Random(seed),
            dynamodb=client,
        )
        self.handler = helper_service.handler
        if wrap is not None:
            self.handler = wrap(self.handler, self.app)
        self.escapes = 0  # exceptions that escaped the handler under lambda_leases
        self.leases: dict[str, Leases] = {
            "direct": direct_leases(lab.table, client),
            "lambda": lambda_leases(HELPER, cast("LambdaClient", InProcessLambda(self))),
        }

    def handle(self, event: Any) -> Any:
        return self.handler(event, LocalContext(HELPER, timeout_s=30))

    def send(self, event: Any) -> Any:
        """As Lambda delivers an event: from the JSON the caller sent, answer back to JSON."""
        answer = self.handle(json.loads(json.dumps(event)))
        json.dumps(answer)  # the runtime must be able to send it back
        return answer

    def call(self, case: ClientCase) -> None:
        leases = self.leases[case.source]
        arguments = dict(case.arguments)
        if case.call != "connect":
            getattr(leases, case.call)(**arguments)
            return
        connection_leases = ConnectionLeases(
            leases,
            arguments.pop("database"),
            **{
                name: arguments.pop(name)
                for name in ["safety_margin_ms", "group"]
                if name in arguments
            },
        )
        context = LocalContext("bad-input-caller", timeout_s=2)
        with connection_leases.connect(object, context=context, **arguments):
            pass


@contextmanager
def serving(rig: Rig) -> Iterator[None]:
    """The helper module's handler builds this rig's app, and logs only its errors: a
    warning per refused event (and Powertools' for each invocation that recorded no
    metric) would drown the output."""
    built, level = helper_service.helper, helper_service.logger.log_level
    helper_service.helper = lambda: rig.app
    helper_service.logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "No application metrics to publish")
            yield
    finally:
        helper_service.helper = built
        helper_service.logger.setLevel(level)
        helper_service.metrics.clear_metrics()


# --- tallies -------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one part of the campaign saw, per kind of input. Unhandled: an exception that
    escaped the helper or is not a ConnleaseError, or an answer that is not an error document."""

    part: str
    exact_types: bool  # the helper owes InvalidInput or UnknownDatabase; a client, any typed error
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    first_problem: dict[str, str] = field(default_factory=dict)
    unhandled: int = 0
    accepted: int = 0
    unexpected: int = 0
    malformed_writes: int = 0  # write requests sent while a malformed input was handled
    unknown_writes: int = 0  # ... while a well-formed one for an unknown database was

    @property
    def examples(self) -> int:
        return sum(sum(seen.values()) for seen in self.outcomes.values())

    @property
    def malformed(self) -> int:
        return self.examples - sum(self.outcomes.get(UNKNOWN_KIND, Counter()).values())

    def record(self, kind: str, expected: str, outcome: str, writes: int, shown: object) -> None:
        self.outcomes[kind][outcome] += 1
        if expected == UNKNOWN:
            self.unknown_writes += writes
        else:
            self.malformed_writes += writes
        problem = ""
        if outcome == NOT_A_DOCUMENT or outcome.startswith(UNHANDLED):
            self.unhandled += 1
            problem = outcome
        elif outcome == ACCEPTED:
            self.accepted += 1
            problem = outcome
        elif outcome != expected:
            self.unexpected += 1
            problem = f"{outcome}, not {expected}"
        if expected != UNKNOWN and writes:
            problem = problem or f"{writes} write requests"
        if problem and kind not in self.first_problem:
            # Shown in a Markdown table (docs/reliability.md): no bare pipes.
            shown_text = repr(shown)[:PROBLEMS_SHOWN].replace("|", "\\|")
            self.first_problem[kind] = f"{problem}: {shown_text}"

    def figures(self, examples: int) -> list[Figure]:
        unexpected = f"{self.part}: refused with another error type than expected"
        return [
            Figure.at_least(f"{self.part}: examples run", self.examples, examples),
            Figure(f"{self.part}: malformed", self.malformed),
            Figure.exactly(f"{self.part}: unhandled exceptions", self.unhandled, 0),
            Figure.exactly(f"{self.part}: malformed ones accepted", self.accepted, 0),
            Figure.exactly(unexpected, self.unexpected, 0)
            if self.exact_types
            else Figure(unexpected, self.unexpected),  # typed, so within the target
            Figure.exactly(
                f"{self.part}: write requests sent for malformed ones", self.malformed_writes, 0
            ),
            # Conditional writes refused for want of the item, and idempotency records.
            Figure(f"{self.part}: write requests sent for unknown databases", self.unknown_writes),
        ]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "part": self.part,
                "kind": kind,
                "examples": sum(seen.values()),
                "outcomes": ", ".join(f"{name} {n}" for name, n in seen.most_common()),
                "first problem": self.first_problem.get(kind, ""),
            }
            for kind, seen in sorted(self.outcomes.items())
        ]


def answer_outcome(answer: Any) -> str:
    """The error type of a well-formed error document; else what the answer was instead."""
    if isinstance(answer, dict) and answer.get("ok") is True:
        return ACCEPTED
    try:
        document = ErrorResponse.read(answer)
    except MalformedAnswer:
        return NOT_A_DOCUMENT
    if document.error.type == INVALID and not document.error.details:
        return NOT_A_DOCUMENT  # a refused event must say which field was wrong
    return document.error.type


def send_event(rig: Rig, tally: Tally, case: HelperCase) -> None:
    before = rig.writes.sent
    try:
        outcome = answer_outcome(rig.send(case.event))
    except Exception as error:
        outcome = f"{UNHANDLED}{type(error).__name__}"
    tally.record(case.kind, case.expected, outcome, rig.writes.sent - before, case.event)


def make_call(rig: Rig, tally: Tally, case: ClientCase) -> None:
    before, escapes = rig.writes.sent, rig.escapes
    try:
        rig.call(case)
    except ConnleaseError as error:
        outcome = type(error).__name__
    except Exception as error:
        outcome = f"{UNHANDLED}{type(error).__name__}"
    else:
        outcome = ACCEPTED
    if rig.escapes > escapes:
        outcome = f"{UNHANDLED}in the helper"
    shown = (case.source, case.call, case.arguments)
    tally.record(case.kind, case.expected, outcome, rig.writes.sent - before, shown)


def drive(
    strategy: SearchStrategy[Any], examples: int, seed: int, each: Callable[[Any], None]
) -> None:
    """Run `each` on at least `examples` inputs that hypothesis draws from `strategy`
    (generation only: nothing to shrink, as `each` records rather than raises)."""
    ran = 0
    round_seed = seed
    while ran < examples:

        @seeded(round_seed)
        @settings(
            max_examples=examples - ran,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def one(case: Any) -> None:
            nonlocal ran
            ran += 1
            each(case)

        one()
        round_seed += 1_000_003  # hypothesis may stop a round short: draw the rest afresh


# --- the campaign --------------------------------------------------------------------------


class Size(TypedDict):
    examples: int


# The version `make test` runs, well under 30 s: a couple of hundred of each.
SHORT = Size(examples=180)


def run(
    lab: Lab,
    examples: int = 1000,
    seed: int = 0,
    *,
    client_calls: int | None = None,
    wrap: Wrap | None = None,
) -> Campaign:
    """`examples` helper events and `client_calls` client calls (as many by default);
    `wrap` replaces the handler under test (the helper's own) with one built around it."""
    calls_wanted = examples if client_calls is None else client_calls
    watch = Stopwatch()
    rig = Rig(lab, seed, wrap)
    inputs = Inputs(rig.known, rig.held)
    events, calls = (
        Tally("helper events", exact_types=True),
        Tally("client calls", exact_types=False),
    )
    before = rig.scan()
    with serving(rig):
        drive(inputs.events(), examples, seed, lambda case: send_event(rig, events, case))
        drive(inputs.calls(), calls_wanted, seed + 1, lambda case: make_call(rig, calls, case))
    after = rig.scan()
    differing = sum(((before - after) + (after - before)).values())
    leases_table, idempotency_table = rig.tables
    campaign = Campaign(
        title="Bad input",
        what=(
            f"hypothesis: {events.examples} helper events and {calls.examples} client calls "
            "(direct and through the helper), malformed by construction or naming a database "
            "with no quota, against the helper's handler in-process on the embedded DynamoDB; "
            "the named quota exists with a lease held, so a request that slipped through "
            "would write"
        ),
        figures=[
            *events.figures(examples),
            *calls.figures(calls_wanted),
            Figure.exactly(
                "writes applied to the leases table", rig.writes.applied[leases_table], 0
            ),
            # Powertools' in-progress records for a release or renew of an unknown
            # database, deleted again when the store refuses.
            Figure(
                "writes applied to the idempotency table (records put, then deleted)",
                rig.writes.applied[idempotency_table],
            ),
            Figure.exactly("items differing in the two tables, after vs before", differing, 0),
        ],
        table=events.rows() + calls.rows(),
    )
    lab.store().release(rig.known, rig.held)
    campaign.seconds = watch.seconds
    return campaign
