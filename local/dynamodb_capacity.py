"""The embedded DynamoDB's capacity model: moto answers every request at once and bills
nothing, so this wraps it to bill and limit as DynamoDB does (`local.capacity_model`, with
the sizes of `adapters.dynamodb_size`).

Per request, inside the embedded server's one-at-a-time lock:
- an expression over 4 KB or 300 operators is refused with a ValidationException;
- a partition key past its partition's throughput is answered with
  `ProvisionedThroughputExceededException` and a `KeyRangeThroughputExceeded` reason (a
  batch read leaves such keys in `UnprocessedKeys`), so the SDK's retries and the
  client's backoff run as they would on AWS;
- the item before and after a write is sized from moto's own copy, and the units billed
  (refused conditional writes included) go to the model's totals and, when the request
  asks for `ReturnConsumedCapacity`, into the answer in place of moto's guess.

Metered: GetItem, PutItem, UpdateItem, DeleteItem, BatchGetItem; other operations (table
management, Query, Scan, batch and transactional writes) pass through unbilled.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends

from adapters.dynamodb_size import expression_problem, item_size
from local.capacity_model import CapacityModel, Throttled

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_ITEM_WRITES = ("PutItem", "UpdateItem", "DeleteItem")
_EXPRESSIONS = (
    "UpdateExpression",
    "ConditionExpression",
    "ProjectionExpression",
    "KeyConditionExpression",
    "FilterExpression",
)
_REGION = re.compile(r"Credential=[^/]+/\d+/([a-z0-9-]+)/dynamodb/")
_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"


@dataclass
class _Answer:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def code(self) -> int:
        return int(self.status.split()[0])

    def error_type(self) -> str:
        if self.code < 400:
            return ""
        try:
            return str(json.loads(self.body).get("__type", "")).rpartition("#")[2]
        except ValueError:
            return ""


def metered(app: WsgiApp, capacity: CapacityModel) -> WsgiApp:
    """Wrap the (already serialized) moto app with the capacity model."""

    def run(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        operation = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        if operation not in (*_ITEM_WRITES, "GetItem", "BatchGetItem"):
            return list(app(environ, start_response))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            request = json.loads(environ["wsgi.input"].read(length) or b"{}")
        except ValueError as error:
            answer = _error("SerializationException", f"the request is not JSON: {error}")
        else:
            answer = _Request(app, environ, capacity, _region(environ)).serve(operation, request)
        headers = [(k, v) for k, v in answer.headers if k.lower() not in _RECOMPUTED]
        headers += [
            ("Content-Length", str(len(answer.body))),
            ("x-amz-crc32", str(zlib.crc32(answer.body))),
        ]
        start_response(answer.status, headers)
        return [answer.body]

    return run


_RECOMPUTED = {"content-length", "x-amz-crc32"}


class _Request:
    def __init__(
        self, app: WsgiApp, environ: dict[str, Any], capacity: CapacityModel, region: str
    ) -> None:
        self._app, self._environ, self._capacity = app, environ, capacity
        self._backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][region]

    def serve(self, operation: str, request: Any) -> _Answer:
        refusal = _refusal(operation, request)
        if refusal is not None:
            return refusal
        if operation == "BatchGetItem":
            return self._batch_get(request)
        table = request.get("TableName", "")
        try:
            key = self._key(table, request.get("Key") or request.get("Item") or {})
        except Exception:
            return self._call(request)
        kind = "Read" if operation == "GetItem" else "Write"
        try:
            self._capacity.admit(table, _partition(key), kind)
        except Throttled as throttled:
            return _throttled(throttled, self._table_arn(table))
        before = self._size(table, key)
        answer = self._call(request)
        if answer.code >= 400 and answer.error_type() != "ConditionalCheckFailedException":
            return answer  # refused before any work: not billed
        if kind == "Read":
            units = self._capacity.charge_read(
                table,
                _partition(key),
                operation,
                before,
                consistent=bool(request.get("ConsistentRead")),
            )
        else:
            units = self._capacity.charge_write(
                table, _partition(key), operation, before, self._size(table, key)
            )
        return _with_consumed(answer, request, table, units, kind)

    def _batch_get(self, request: dict[str, Any]) -> _Answer:
        admitted, unprocessed, throttled = self._admit_keys(request)
        if throttled is not None and not admitted:
            return _throttled(throttled, self._table_arn(throttled.table))
        answer = self._call({**request, "RequestItems": admitted})
        if answer.code >= 400:
            return answer
        document = json.loads(answer.body)
        left = document.get("UnprocessedKeys", {})  # what moto itself left undone
        consumed = [
            self._bill_batch(table, wanted, left.get(table, {}).get("Keys", []))
            for table, wanted in admitted.items()
        ]
        for table, held in unprocessed.items():
            merged = left.setdefault(table, {**held, "Keys": []})
            merged["Keys"] = merged.get("Keys", []) + held["Keys"]
        if left:
            document["UnprocessedKeys"] = left
        if request.get("ReturnConsumedCapacity", "NONE") != "NONE":
            document["ConsumedCapacity"] = consumed
        return _Answer(answer.status, answer.headers, json.dumps(document).encode())

    def _admit_keys(
        self, request: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], Throttled | None]:
        """The batch's keys whose partitions have throughput left, and those that do not."""
        admitted: dict[str, Any] = {}
        unprocessed: dict[str, Any] = {}
        throttled: Throttled | None = None
        for table, wanted in request.get("RequestItems", {}).items():
            keys, held = [], []
            for raw in wanted.get("Keys", []):
                try:
                    self._capacity.admit(table, _partition(self._key(table, raw)), "Read")
                    keys.append(raw)
                except Throttled as error:
                    throttled = error
                    held.append(raw)
                except Exception:  # a bad key: moto's own answer says what is wrong
                    keys.append(raw)
            if keys:
                admitted[table] = {**wanted, "Keys": keys}
            if held:
                unprocessed[table] = {**wanted, "Keys": held}
        return admitted, unprocessed, throttled

    def _bill_batch(self, table: str, wanted: dict[str, Any], left: list[Any]) -> dict[str, Any]:
        """Bill each item read, as DynamoDB bills a batch; not the keys left unprocessed."""
        units = 0.0
        for raw in wanted["Keys"]:
            if raw in left:
                continue
            key = self._key(table, raw)
            units += self._capacity.charge_read(
                table,
                _partition(key),
                "BatchGetItem",
                self._size(table, key),
                consistent=bool(wanted.get("ConsistentRead")),
            )
        return {"TableName": table, "CapacityUnits": units, "ReadCapacityUnits": units}

    def _call(self, request: dict[str, Any]) -> _Answer:
        body = json.dumps(request).encode()
        environ = dict(self._environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            started[:] = [status, headers]

        chunks = b"".join(self._app(environ, start_response))
        return _Answer(started[0], list(started[1]), chunks)

    def _key(self, table_name: str, raw: dict[str, Any]) -> dict[str, Any]:
        table = self._backend.get_table(table_name)
        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        return {name: raw[name] for name in names}

    def _size(self, table: str, key: dict[str, Any]) -> int:
        item = self._backend.get_item(table, key)
        return item_size(item.to_json()["Attributes"]) if item is not None else 0

    def _table_arn(self, table: str) -> str:
        try:
            return str(self._backend.get_table(table).table_arn)
        except Exception:
            return table


def _refusal(operation: str, request: Any) -> _Answer | None:
    """What DynamoDB answers before any work: a body that is no object, an expression over
    its limits (a batch read names its projection per table)."""
    if not isinstance(request, dict):
        return _error("SerializationException", "the request is not a JSON object")
    per_table = request.get("RequestItems", {}) if operation == "BatchGetItem" else {}
    for part in (request, *(p for p in per_table.values() if isinstance(p, dict))):
        for name in _EXPRESSIONS:
            problem = expression_problem(name, part.get(name, ""))
            if problem:
                return _error("ValidationException", f"Invalid {name}: {problem}")
    return None


def _partition(key: dict[str, Any]) -> str:
    """The partition key's value, standing for its partition (the first key attribute)."""
    return json.dumps(next(iter(key.values())), sort_keys=True)


def _region(environ: dict[str, Any]) -> str:
    found = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
    return found.group(1) if found else "us-east-1"


def _with_consumed(
    answer: _Answer, request: dict[str, Any], table: str, units: float, kind: str
) -> _Answer:
    if answer.code >= 400 or request.get("ReturnConsumedCapacity", "NONE") == "NONE":
        return answer
    document = json.loads(answer.body or b"{}")
    document["ConsumedCapacity"] = {
        "TableName": table,
        "CapacityUnits": units,
        f"{kind}CapacityUnits": units,
    }
    return _Answer(answer.status, answer.headers, json.dumps(document).encode())


def _error(kind: str, message: str, **extra: Any) -> _Answer:
    body = json.dumps({"__type": _ERROR_PREFIX + kind, "message": message, **extra}).encode()
    return _Answer("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0")], body)


def _throttled(throttled: Throttled, table_arn: str) -> _Answer:
    return _error(
        "ProvisionedThroughputExceededException",
        str(throttled),
        ThrottlingReasons=[{"reason": throttled.reason, "resource": table_arn}],
    )
