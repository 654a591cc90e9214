"""DynamoDB as it bills and limits, for the local stand-ins: moto and the in-memory store
enforce none of it, so a figure measured on them says nothing about cost or ceiling
unless they apply these rules.

- Item size (Developer Guide, "DynamoDB item sizes and formats"): attribute names plus
  values; a number is 1 byte per two significant digits plus 1; a list or map 3 bytes
  plus its elements, each element 1 byte more (a map element's key counts as a name).
- A write costs 1 WCU per started KB of the larger of the item before and after, refused
  conditional writes included; a strongly consistent read 1 RCU per started 4 KB, an
  eventually consistent one half that; a batch read is billed item by item.
- One partition serves at most 1,000 WCU and 3,000 RCU a second; past that DynamoDB
  throttles with `ProvisionedThroughputExceededException`, reason
  `TableWriteKeyRangeThroughputExceeded` (or `...Read...`).
- An expression holds at most 300 operators and functions and 4 KB.

Standard library only, so the in-memory store can use it without an SDK.
"""

from __future__ import annotations

import base64
import math
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
PARTITION_WCU_PER_S = 1_000
PARTITION_RCU_PER_S = 3_000
MAX_EXPRESSION_BYTES = 4096
MAX_EXPRESSION_OPERATORS = 300
MAX_ITEM_BYTES = 400 * 1024

# An item in the wire format: {"name": {"S": "..."}, "other": {"N": "12"}, ...}
AttributeValues = Mapping[str, Mapping[str, Any]]


def item_size(item: AttributeValues | None) -> int:
    """The item's size in bytes as DynamoDB counts it (0 for no item)."""
    if not item:
        return 0
    return sum(_utf8(name) + value_size(value) for name, value in item.items())


def value_size(value: Mapping[str, Any]) -> int:
    ((kind, raw),) = value.items()
    size = _SIZE_OF.get(kind)
    if size is None:
        raise ValueError(f"not a DynamoDB attribute value type: {kind!r}")
    return size(raw)


def number_size(text: str) -> int:
    """1 byte per two significant digits (leading and trailing zeros trimmed), plus 1."""
    digits = Decimal(text).as_tuple().digits
    significant = "".join(map(str, digits)).strip("0") or "0"
    return math.ceil(len(significant) / 2) + 1


def write_units(before: int, after: int) -> int:
    """WCU of one write: started KB of the larger image, at least 1."""
    return max(1, math.ceil(max(before, after) / WRITE_UNIT_BYTES))


def read_units(size: int, *, consistent: bool) -> float:
    """RCU of one item read: started 4 KB, at least one unit; half for eventual reads."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


# Operators and functions as DynamoDB counts them in condition, filter, key and update
# expressions. Names (#x), values (:x) and paths are not operators.
_OPERATOR = re.compile(
    r"<>|<=|>=|=|<|>|\+|-"
    r"|\b(?:AND|OR|NOT|BETWEEN|IN)\b"
    r"|\b(?:attribute_exists|attribute_not_exists|attribute_type|begins_with|contains|size"
    r"|if_not_exists|list_append)\s*\(",
    re.IGNORECASE,
)
_CLAUSE = re.compile(r"\b(?:SET|REMOVE|ADD|DELETE)\b", re.IGNORECASE)


def expression_operators(expression: str, *, update: bool = False) -> int:
    """How many operators and functions an expression holds. BETWEEN's AND is part of
    BETWEEN; the dash inside a name or value placeholder is not a minus; in an update
    expression a SET's `=` assigns rather than compares (DynamoDB's own example, `SET a =
    :v1 + :v2 + :v3`, "contains two + operators")."""
    text = re.sub(r"[#:][A-Za-z0-9_-]+", "x", expression)
    text = _CLAUSE.sub(" ", text)
    if update:
        text = text.replace("=", " ")
    count = len(_OPERATOR.findall(text))
    return count - len(re.findall(r"\bBETWEEN\b", text, re.IGNORECASE))


def expression_problem(name: str, expression: object) -> str | None:
    """Why DynamoDB would refuse this expression (named as in the request), or None."""
    if not isinstance(expression, str):
        return f"{name} must be a string"
    size = len(expression.encode())
    if size > MAX_EXPRESSION_BYTES:
        return f"{name} is {size} bytes; at most {MAX_EXPRESSION_BYTES}"
    operators = expression_operators(expression, update=name == "UpdateExpression")
    if operators > MAX_EXPRESSION_OPERATORS:
        return f"{name} has {operators} operators; at most {MAX_EXPRESSION_OPERATORS}"
    return None


class TokenBucket:
    """One partition's throughput for one kind of unit: `rate` a second, holding at most
    one second's worth. A request is admitted while the bucket is not in debt and pays
    what it cost afterwards (its size is known only then), as DynamoDB admits on an
    estimate and charges the actual units."""

    def __init__(self, rate: float, now_s: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._at_s = now_s

    def _refill(self, now_s: float) -> None:
        self._tokens = min(self.rate, self._tokens + (now_s - self._at_s) * self.rate)
        self._at_s = now_s

    def admits(self, now_s: float) -> bool:
        self._refill(now_s)
        return self._tokens > 0

    def pay(self, units: float, now_s: float) -> None:
        self._refill(now_s)
        self._tokens -= units


class Throttled(Exception):
    """A partition is past its throughput: what DynamoDB answers as
    ProvisionedThroughputExceededException with a KeyRangeThroughputExceeded reason."""

    def __init__(self, table: str, key: str, kind: str) -> None:
        self.table, self.key, self.kind = table, key, kind
        self.reason = f"Table{kind}KeyRangeThroughputExceeded"
        super().__init__(
            f"Throughput exceeds the current capacity for one or more partitions "
            f"({self.reason} on {table} key {key})"
        )


@dataclass
class CapacityTotals:
    """What was billed: units and requests by table and operation, and throttles."""

    write_units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    read_units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    requests: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)

    def total_write_units(self) -> float:
        return sum(self.write_units.values())

    def total_read_units(self) -> float:
        return sum(self.read_units.values())


class CapacityModel:
    """Meters every request as DynamoDB bills it and throttles each partition key past
    DynamoDB's per-partition rates, times `scale` (a scale below 1 shrinks both rates,
    so that this machine can reach the ceiling with a load shrunk by as much).

    A partition key stands for a partition: DynamoDB may put several keys on one
    partition, never one item on several, so per key is the most it could serve."""

    def __init__(
        self,
        scale: float = 1.0,
        *,
        enforce: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = scale
        self.enforce = enforce
        self.totals = CapacityTotals()
        self._monotonic = monotonic
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, table: str, key: str, kind: str, now_s: float) -> TokenBucket:
        bucket = self._buckets.get((table, key, kind))
        if bucket is None:
            per_s = PARTITION_WCU_PER_S if kind == "Write" else PARTITION_RCU_PER_S
            bucket = self._buckets[table, key, kind] = TokenBucket(per_s * self.scale, now_s)
        return bucket

    def admit(self, table: str, key: str, kind: str) -> None:
        """Raise Throttled if the key's partition has no throughput left this instant."""
        with self._lock:
            now_s = self._monotonic()
            if self.enforce and not self._bucket(table, key, kind, now_s).admits(now_s):
                self.totals.throttled[f"{table}:{kind}"] += 1
                raise Throttled(table, key, kind)

    def charge_write(self, table: str, key: str, operation: str, before: int, after: int) -> int:
        units = write_units(before, after)
        self._charge(table, key, operation, "Write", units)
        return units

    def charge_read(
        self, table: str, key: str, operation: str, size: int, *, consistent: bool
    ) -> float:
        units = read_units(size, consistent=consistent)
        self._charge(table, key, operation, "Read", units)
        return units

    def _charge(self, table: str, key: str, operation: str, kind: str, units: float) -> None:
        with self._lock:
            now_s = self._monotonic()
            self._bucket(table, key, kind, now_s).pay(units, now_s)
            billed = self.totals.write_units if kind == "Write" else self.totals.read_units
            billed[f"{table}:{operation}"] += units
            self.totals.requests[f"{table}:{operation}"] += 1

    @contextmanager
    def scaled(self, scale: float) -> Iterator[None]:
        """Partitions held to `scale` of DynamoDB's rates for a while, from full buckets."""
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        with self._lock:
            before, self.scale = self.scale, scale
            self._buckets.clear()
        try:
            yield
        finally:
            with self._lock:
                self.scale = before
                self._buckets.clear()

    def reset(self) -> None:
        with self._lock:
            self.totals = CapacityTotals()
            self._buckets.clear()


def _utf8(text: str) -> int:
    return len(text.encode())


def _binary_size(raw: str | bytes) -> int:
    # The wire carries base64; DynamoDB counts the raw bytes.
    return len(raw) if isinstance(raw, bytes | bytearray) else len(base64.b64decode(raw))


_SIZE_OF: dict[str, Callable[[Any], int]] = {
    "S": _utf8,
    "N": number_size,
    "B": _binary_size,
    "BOOL": lambda _: 1,
    "NULL": lambda _: 1,
    "SS": lambda raw: sum(_utf8(s) for s in raw),
    "NS": lambda raw: sum(number_size(n) for n in raw),
    "BS": lambda raw: sum(_binary_size(b) for b in raw),
    "L": lambda raw: 3 + sum(value_size(v) + 1 for v in raw),
    "M": lambda raw: 3 + sum(_utf8(k) + value_size(v) + 1 for k, v in raw.items()),
}
