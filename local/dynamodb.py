"""An embedded DynamoDB: moto's server on a free loopback port, one request at a time,
billed and throttled as DynamoDB would (`local.dynamodb_capacity`).

moto applies requests on the server's threads without a lock, so concurrent conditional
writes to one item can both pass their condition (DESIGN.md measured a 4th lease on a limit
of 3). DynamoDB applies writes to one item one at a time; serializing every request gives
the same guarantee locally.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import boto3
import moto.cloudwatch.models as moto_cloudwatch
from botocore.config import Config
from moto.cloudwatch.models import Dimension
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from adapters.dynamodb import wait_until_active
from local.capacity_model import CapacityModel
from local.context import LOCAL_REGION
from local.dynamodb_capacity import metered
from local.server import LoopbackService

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Credentials for the local stack only (its region is local.context's); nothing leaves
# loopback.
LOCAL_ACCESS_KEY = LOCAL_SECRET_KEY = "local"


class _QuietRequestHandler(MotoRequestHandler):
    """Keeps werkzeug's per-request access log out of test and demo output."""

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


# moto keeps its backends in process-wide state, so every server in the process shares one.
_ONE_AT_A_TIME = threading.Lock()


def serialized(app: WsgiApp) -> WsgiApp:
    """Wrap a WSGI app so that requests run, and their bodies are produced, one at a time."""

    def run_alone(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with _ONE_AT_A_TIME:
            return list(app(environ, start_response))

    return run_alone


def create_idempotency_table(client: DynamoDBClient, table_name: str) -> None:
    """The table Powertools idempotency expects: key `id`, TTL on `expiration`."""
    try:
        client.create_table(
            TableName=table_name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    except client.exceptions.ResourceInUseException:
        wait_until_active(client, table_name)
        return
    wait_until_active(client, table_name)  # its TTL can be turned on once it is ACTIVE
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"},
    )


class RequestCounter:
    """Counts the requests a boto3 client puts on the wire, by operation, retries included."""

    def __init__(self, client: Any) -> None:
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-send", self._on_send)

    def _on_send(self, request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        if isinstance(target, bytes):
            target = target.decode()
        with self._lock:
            self.sent[target.rsplit(".", 1)[-1]] += 1

    def reset(self) -> None:
        self.sent.clear()


def _pairs(dimensions: list[Dimension]) -> set[tuple[str | None, str | None]]:
    return {(dimension.name, dimension.value) for dimension in dimensions}


def _same_dimensions(metric_dimensions: list[Dimension], dimensions: list[Dimension]) -> bool:
    same_size = len(metric_dimensions) == len(dimensions)
    return same_size and _pairs(metric_dimensions) == _pairs(dimensions)


# moto 5 compares each dimension of a metric with every other one, so a metric of two or
# more dimensions is never "the same" as one already listed: ListMetrics names it once per
# data point, and a reader that queries each metric it lists (adapters.cloudwatch) counts
# every point as often. CloudWatch lists a metric once, and so does every embedded server
# here.
moto_cloudwatch.are_dimensions_same = _same_dimensions


def local_client(endpoint_url: str, config: Config) -> DynamoDBClient:
    """A DynamoDB client for a loopback endpoint, with the local stack's credentials."""
    return cast("DynamoDBClient", local_service_client("dynamodb", endpoint_url, config))


def local_service_client(service: str, endpoint_url: str, config: Config | None = None) -> Any:
    """A client of any service the embedded server answers for (CloudWatch beside
    DynamoDB), with the local stack's credentials."""
    make: Callable[..., Any] = boto3.client  # the stubs' overloads want a literal service
    return make(
        service,
        endpoint_url=endpoint_url,
        region_name=LOCAL_REGION,
        config=config,
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY,
    )


class EmbeddedDynamoDB(LoopbackService):
    """moto's DynamoDB served on 127.0.0.1 with a free port, requests serialized, each
    billed by `capacity` (by default DynamoDB's own per-partition rates, enforced)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, capacity: CapacityModel | None = None
    ) -> None:
        self._host = host
        self._port = port
        self.capacity = capacity or CapacityModel()

    @property
    def endpoint_url(self) -> str:
        return self._url("embedded DynamoDB")

    def start(self) -> str:
        app = serialized(metered(DomainDispatcherApplication(create_backend_app), self.capacity))
        server = make_server(
            self._host, self._port, app, threaded=True, request_handler=_QuietRequestHandler
        )
        self._serve(server, "embedded-dynamodb")
        return self.endpoint_url

    def client(self, **config: Any) -> DynamoDBClient:
        """A low-level client for this endpoint; `config` goes to botocore's Config."""
        return local_client(self.endpoint_url, Config(**config))
