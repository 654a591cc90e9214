"""Run your own function on the local stack: `python -m local.run handler.handler
--code-dir examples/orders` (what `make example` does).

Starts the embedded DynamoDB and the local Lambda endpoint with the helper and your
function, sets a quota, invokes the function as many times as asked, some at once, and
prints what it answered and how the quota ended. The function gets what a function
deployed beside connlease would: `QUOTA_DATABASE`, `HELPER_FUNCTION` (or, with
`--mode direct`, `LEASES_TABLE_NAME`), the `DB_*` variables of the MySQL it should use,
an AWS region, and SDK endpoints pointing at the local stand-ins, so its boto3 code
runs unchanged. With `--python path/to/venv/bin/python` it runs in its own virtualenv
(where `pip install dist/connlease_client-*.whl` put the client), seeing its code, that
environment and nothing of this repository, as in Lambda.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.mysql import MySqlEndpoint
from domain import ConnleaseError, Quota, QuotaStatus
from domain.model import check_database, check_limit
from local.demo_setup import mysql_from_environment
from local.lambda_endpoint import FunctionSpec
from local.stack import HELPER, LocalStack, Tables, database_environment, helper_function


@dataclass(frozen=True)
class RunOptions:
    handler: str  # as the template's Handler: module.function, relative to code_dir
    code_dir: Path = Path()
    name: str = "my-function"
    event: Any = field(default_factory=dict)
    invocations: int = 10
    concurrency: int = 4
    quota: int = 2
    database: str = "local-mysql"
    mode: Literal["lambda", "direct"] = "lambda"
    environment: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30
    mysql: MySqlEndpoint = field(default_factory=mysql_from_environment)
    log_dir: Path = Path("demo-output") / "run-logs"
    # The Python of the function's own environment (a virtualenv where its dependencies,
    # connlease-client among them, are installed): the function then sees its code, that
    # environment and nothing of this repository. None: this repository's Python.
    python: Path | None = None


@dataclass(frozen=True)
class RunReport:
    answers: list[Any]
    function_errors: list[str]
    quota_after: QuotaStatus
    log_file: Path


def function_spec(options: RunOptions, tables: Tables) -> FunctionSpec:
    leases = (
        {"HELPER_FUNCTION": HELPER}
        if options.mode == "lambda"
        else {"LEASES_TABLE_NAME": tables.leases}
    )
    return FunctionSpec(
        name=options.name,
        handler=options.handler,
        environment=database_environment(options.mysql, options.database)
        | leases
        | {"POWERTOOLS_SERVICE_NAME": options.name}
        | options.environment,
        timeout_s=options.timeout_s,
        concurrency=options.concurrency,
        code_dir=str(options.code_dir.resolve()),
        python=None if options.python is None else str(options.python),
    )


def run_function(options: RunOptions) -> RunReport:
    code_dir = options.code_dir.resolve()
    if not code_dir.is_dir():
        raise FileNotFoundError(f"--code-dir {options.code_dir} is not a directory")
    # The function's environments import from its code dir first, as Lambda puts the
    # function's package first (function_spec); the helper's do not see it, or a function's
    # own `service` or `domain` would hide the helper's.
    tables = Tables(f"{options.name}-leases", f"{options.name}-idempotency")

    def functions(url: str, tables: Tables) -> list[FunctionSpec]:
        specs = [function_spec(options, tables)]
        if options.mode == "lambda":
            specs.insert(0, helper_function(url, tables, concurrency=options.concurrency))
        return specs

    with LocalStack(functions, tables=tables, log_dir=options.log_dir) as stack:
        store = DynamoDBLeaseStore(stack.dynamodb_client(), tables.leases, SystemClock())
        store.set_quota(options.database, Quota(limit=options.quota, default_ttl_ms=60_000))
        client = stack.lambda_client()
        payload = json.dumps(options.event).encode()

        def invoke(_: int) -> tuple[Any, str | None]:
            response = client.invoke(FunctionName=options.name, Payload=payload)
            answer = json.loads(response["Payload"].read() or b"null")
            return answer, response.get("FunctionError")

        with ThreadPoolExecutor(options.concurrency) as pool:
            results = list(pool.map(invoke, range(options.invocations)))
        assert stack.lambdas is not None
        log_file = stack.lambdas.log_dir / f"{options.name}.log"
        quota_after = store.status(options.database)
    return RunReport(
        answers=[answer for answer, error in results if error is None],
        function_errors=[json.dumps(answer) for answer, error in results if error is not None],
        quota_after=quota_after,
        log_file=log_file,
    )


def report_table(options: RunOptions, report: RunReport) -> Table:
    table = Table(title=f"{options.name} on the local stack", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("invocations", f"{options.invocations}, {options.concurrency} at once")
    table.add_row("leases", f"{options.mode} mode, quota {options.quota} on {options.database!r}")
    shapes = Counter(json.dumps(_shape(answer), sort_keys=True) for answer in report.answers)
    for shape, count in shapes.most_common():
        table.add_row(f"answered ({count})", escape(shape))
    for error in report.function_errors[:3]:
        table.add_row("function error", escape(error))
    after = report.quota_after
    table.add_row("quota after the run", f"{after.in_use} in use, {after.remaining} free")
    table.add_row("the function's log", str(report.log_file))
    return table


def _shape(answer: Any) -> Any:
    """An answer with its numbers blanked (but a status code), so answers alike count
    together."""
    if isinstance(answer, dict):
        return {
            key: value if key == "statusCode" else _shape(value) for key, value in answer.items()
        }
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        return "<number>"
    return answer


_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _function_name(name: str) -> str:
    if not _FUNCTION_NAME.fullmatch(name) or name == HELPER:
        raise argparse.ArgumentTypeError(
            f"--name {name!r}: 1-64 letters, digits, - and _, and not the helper's {HELPER!r}"
        )
    return name


def _at_least_one(flag: str, value: int) -> int:
    if value < 1:
        raise argparse.ArgumentTypeError(f"{flag} must be at least 1, got {value}")
    return value


def _timeout_s(value: float) -> float:
    if not 1 <= value <= 900:
        raise argparse.ArgumentTypeError(f"--timeout is {value} s; Lambda allows 1 to 900")
    return value


def _python(path: Path | None) -> Path | None:
    if path is not None and not (path.is_file() and os.access(path, os.X_OK)):
        raise argparse.ArgumentTypeError(f"--python {path}: no Python interpreter there")
    return path


def _environment(pairs: list[str]) -> dict[str, str]:
    variables = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise argparse.ArgumentTypeError(f"--env wants NAME=VALUE, got {pair!r}")
        variables[name] = value
    return variables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.run", description=__doc__)
    parser.add_argument("handler", help="module.function, as the template's Handler")
    parser.add_argument("--code-dir", type=Path, default=Path(), help="the function's CodeUri")
    parser.add_argument("--name", default="my-function")
    parser.add_argument("--event", type=json.loads, default={}, help="the event, as JSON")
    parser.add_argument("-n", "--invocations", type=int, default=10)
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--quota", type=int, default=2)
    parser.add_argument("--database", default="local-mysql", help="the quota's name")
    parser.add_argument("--mode", choices=["lambda", "direct"], default="lambda")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--timeout", type=float, default=30, help="the function's, in s")
    parser.add_argument("--log-dir", type=Path, default=RunOptions.log_dir)
    parser.add_argument(
        "--python",
        type=Path,
        help="the Python of the function's own virtualenv (where you pip-installed "
        "connlease-client): the function runs there, without this repository's packages",
    )
    args = parser.parse_args(argv)
    # Everything is checked before anything starts: one line and exit 2 for a bad argument.
    try:
        options = RunOptions(
            handler=args.handler,
            code_dir=args.code_dir,
            name=_function_name(args.name),
            event=args.event,
            invocations=_at_least_one("--invocations", args.invocations),
            concurrency=_at_least_one("--concurrency", args.concurrency),
            quota=check_limit(args.quota),
            database=check_database(args.database),
            mode=args.mode,
            environment=_environment(args.env),
            timeout_s=_timeout_s(args.timeout),
            log_dir=args.log_dir,
            mysql=mysql_from_environment(),
            python=_python(args.python),
        )
    except (ConnleaseError, ValueError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    console = Console()
    try:
        report = run_function(options)
    except FileNotFoundError as error:
        console.print(f"[red]{escape(str(error))}[/]")
        return 2
    console.print(report_table(options, report))
    return 1 if report.function_errors else 0


if __name__ == "__main__":
    sys.exit(main())
