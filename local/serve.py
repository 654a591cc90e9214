"""`make local`: a standing local stack to point the command line at, until Ctrl-C.

Serves the embedded DynamoDB on 127.0.0.1:4566 (the same address answers for CloudWatch,
CloudFormation, STS and Secrets Manager), with the tables connlease-leases and
connlease-idempotency and a quota `demo-mysql`; the helper and the test function on the
local Lambda endpoint, against the MySQL that DB_HOST, DB_PORT, DB_USER, DB_PASSWORD and
DB_NAME name (127.0.0.1:3306, root, no password, test); their EMF lines relayed to the
local CloudWatch, as CloudWatch Logs would. Unless --no-load, callers of the test function
swell and ebb, at their peak more than the quota serves, so that `connlease watch
demo-mysql --local` shows leases in use moving and acquires refused.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.mysql import MySqlEndpoint
from domain import Quota
from local.demo import DemoOptions, seed
from local.demo_setup import MySqlUnusable, check_mysql, mysql_from_environment
from local.dynamodb import EmbeddedDynamoDB
from local.emf_relay import forget_metrics
from local.lambda_endpoint import FunctionSpec
from local.stack import HELPER, TEST, LocalStack, Tables, workload_functions
from service.workload import QueryTime

LOCAL_PORT = 4566  # cli.app.LOCAL_ENDPOINT_URL's, what `connlease ... --local` reaches
DEFAULT_TTL_MS = 60_000
# The metrics the local CloudWatch keeps: an hour, the longest `connlease watch --history`.
KEEP_METRICS_S = 3600


@dataclass(frozen=True)
class ServeOptions:
    port: int = LOCAL_PORT
    database: str = "demo-mysql"
    limit: int = 5
    load: bool = True
    callers: int = 8  # test invocations at once at the load's peak; 1 at its trough
    period_s: float = 60.0  # one swell and ebb
    query_time_s: QueryTime = (0.2, 1.2)
    wait_ms: int = 250  # how long an invocation waits for a lease before it is refused
    mysql: MySqlEndpoint = field(default_factory=mysql_from_environment)


def callers_at(elapsed_s: float, options: ServeOptions) -> int:
    """How many callers invoke `elapsed_s` into the load: 1, rising to `callers` half a
    period in, then back."""
    swell = (1 - math.cos(2 * math.pi * elapsed_s / options.period_s)) / 2
    return 1 + round((options.callers - 1) * swell)


class Load:
    """Callers of the test function, each invoking, pausing a moment and invoking again
    while its turn in the swell lasts."""

    def __init__(self, stack: LocalStack, options: ServeOptions) -> None:
        self._client = stack.lambda_client()
        self._options = options
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self._started = time.monotonic()
        # Daemons: a call in flight when the stack stops must not keep the process alive.
        self._callers = [
            threading.Thread(target=self._call, args=(index,), name=f"caller-{index}", daemon=True)
            for index in range(options.callers)
        ]

    def start(self) -> None:
        for caller in self._callers:
            caller.start()

    def stop(self, within_s: float = 3.0) -> None:
        """Stop calling. A call in flight may last as long as the test function's timeout
        (30 s): it is not waited for past `within_s`, and ends with the stack, whose
        environments stop under it."""
        self._stop.set()
        deadline = time.monotonic() + within_s
        for caller in self._callers:
            caller.join(timeout=max(0.0, deadline - time.monotonic()))

    def _call(self, index: int) -> None:
        rng = random.Random()
        event = json.dumps(
            {"query_time_s": self._options.query_time_s, "wait_budget_ms": self._options.wait_ms}
        )
        while not self._stop.is_set():
            if index >= callers_at(time.monotonic() - self._started, self._options):
                self._stop.wait(0.25)
                continue
            try:
                answer = self._client.invoke(FunctionName=TEST, Payload=event)
                outcome = json.loads(answer["Payload"].read()).get("outcome", "error")
            except Exception:  # a stack stopping under a call: what is counted, not raised
                outcome = "error"
            with self._lock:
                self.outcomes[outcome] += 1
            self._stop.wait(rng.uniform(0.05, 0.5))


def functions_for(options: ServeOptions) -> Callable[[str, Tables], list[FunctionSpec]]:
    def functions(url: str, tables: Tables) -> list[FunctionSpec]:
        # Environments start on the first call, not with the stack: it is up in a second.
        return workload_functions(
            url,
            tables,
            mysql=options.mysql,
            quota_database=options.database,
            concurrency=options.callers,
            provisioned=False,
        )

    return functions


def connlease_command() -> str:
    """The console script as a user can run it from here: the one installed beside this
    interpreter (`make dev` and `make cli`: .venv/bin/connlease), relative to the working
    directory when under it, else `connlease`, from PATH."""
    script = Path(sys.executable).parent / "connlease"
    if not script.is_file():
        return "connlease"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def port_taken(port: int) -> bool:
    """Whether a server listens on the port already (werkzeug's own check exits the
    process with a message of its own)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def serve(options: ServeOptions, console: Console, stopping: threading.Event) -> Counter[str]:
    """Serve until `stopping` is set; the load's outcomes."""
    if options.load:
        check_mysql(options.mysql)
    stack = LocalStack(
        functions_for(options),
        tables=Tables(),
        dynamodb=EmbeddedDynamoDB(port=options.port),
        relay_metrics=True,
    )
    with stack:
        assert stack.lambdas is not None
        store = DynamoDBLeaseStore(stack.dynamodb_client(), stack.tables.leases, SystemClock())
        if options.load:
            # The seeder sets the quota and creates the Employees table the test reads.
            seed(stack, DemoOptions(quota=options.limit, quota_database=options.database))
        else:
            store.set_quota(options.database, Quota(options.limit, DEFAULT_TTL_MS))
        url = stack.dynamodb.endpoint_url
        where = (
            "--local"
            if options.port == LOCAL_PORT
            else f"--endpoint-url {url} --table {stack.tables.leases}"
        )
        console.print(
            f"[bold]connlease local stack[/] on {url}: DynamoDB, CloudWatch, CloudFormation,"
            " STS and Secrets Manager\n"
            f"  tables {stack.tables.leases}, {stack.tables.idempotency}; quota"
            f" {options.database}, limit {options.limit}\n"
            f"  functions {HELPER}, {TEST} at {stack.lambdas.endpoint_url} (Lambda);"
            f" logs in {escape(str(stack.lambdas.log_dir))}"
        )
        load = Load(stack, options) if options.load else None
        if load is not None:
            console.print(
                f"  load: 1 to {options.callers} callers of {TEST} over {options.period_s:g} s,"
                f" each waiting {options.wait_ms} ms at most for a lease;"
                f" MySQL at {escape(options.mysql.describe())}"
            )
            load.start()
        cli = connlease_command()
        console.print(
            f"watch it:  {cli} watch {options.database} {where}\n"
            f"           {cli} status {where}\n"
            f"           {cli} reconcile {options.database} {where}\n"
            "Ctrl-C stops."
        )
        try:
            while not stopping.wait(KEEP_METRICS_S / 60):
                forget_metrics(datetime.now(UTC) - timedelta(seconds=KEEP_METRICS_S))
        finally:
            if load is not None:
                load.stop()
    return Counter() if load is None else load.outcomes


def _parser() -> argparse.ArgumentParser:
    defaults = ServeOptions.__dataclass_fields__
    parser = argparse.ArgumentParser(
        prog="make local ARGS=...",
        description=(__doc__ or "").split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=defaults["port"].default,
        help="where every service answers (--local reaches 4566)",
    )
    parser.add_argument("--database", default=defaults["database"].default, help="the quota's")
    parser.add_argument(
        "--limit", type=int, default=defaults["limit"].default, help="the quota's limit"
    )
    parser.add_argument(
        "--load",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="invoke the test function, more at once than the quota serves at the peak",
    )
    parser.add_argument(
        "--callers",
        type=int,
        default=defaults["callers"].default,
        help="test invocations at once at the load's peak",
    )
    parser.add_argument(
        "--period",
        type=float,
        default=defaults["period_s"].default,
        help="seconds of one swell and ebb of the load",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: not a port")
    if args.limit < 1 or args.callers < 1 or args.period <= 0:
        parser.error("--limit, --callers and --period must be above 0")
    try:
        mysql = mysql_from_environment()
    except ValueError as error:
        parser.error(str(error))
    options = ServeOptions(
        port=args.port,
        database=args.database,
        limit=args.limit,
        load=args.load,
        callers=args.callers,
        period_s=args.period,
        mysql=mysql,
    )
    console = Console(highlight=False, soft_wrap=True)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt  # asked twice: now, whatever it was doing
        stopping.set()

    # Ctrl-C and SIGTERM alike end the wait, and then the stack, in order.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if port_taken(options.port):
        console.print(
            f"[red]port {options.port} is taken[/] (is `make local` running already?);"
            " another: make local ARGS='--port 4567'"
        )
        return 2
    try:
        outcomes = serve(options, console, stopping)
    except MySqlUnusable as error:
        console.print(error.explain())
        return 2
    said = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.most_common())
    console.print(f"stopped; test invocations: {said}" if said else "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
