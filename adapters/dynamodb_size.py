"""DynamoDB's documented sizes, which the store needs to size its items and its requests
and the local stand-ins to bill and refuse as DynamoDB does.

- Item size (Developer Guide, "DynamoDB item sizes and formats"): attribute names plus
  values; a number is 1 byte per two significant digits plus 1; a list or map 3 bytes
  plus its elements, each element 1 byte more (a map element's key counts as a name).
  An item holds at most 400 KB.
- The units a request costs: a write 1 WCU per started KB of the larger of the item before
  and after, refused conditional writes included; a strongly consistent read 1 RCU per
  started 4 KB, an eventually consistent one half that; a batch read is billed item by item.
- An expression holds at most 300 operators and functions and 4 KB.

The capacity model that meters and throttles with these rules is local.capacity_model.
Standard library only, so the in-memory store can use it without an SDK.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
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
