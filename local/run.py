"""Run your own function on the local stack: `python -m local.run handler.handler
--code-dir examples/orders` (what `make example` does).

Starts the embedded DynamoDB and the local Lambda endpoint with the helper and your
function, sets a quota, invokes the function as many times as asked, some at once, and
prints what it answered, as it answered (the answers of each status code counted, with
the first of them) and how the quota ended; `--json` prints each invocation, one JSON
object a line. A function error is one line, its errorType and errorMessage; its stack
trace is in the function's log (demo-output/run-logs/NAME.log, or --log-dir).

The function gets what a function deployed beside connlease would: `QUOTA_DATABASE`,
`HELPER_FUNCTION` (or, with `--mode direct`, `LEASES_TABLE_NAME`), the `DB_*` variables
of the MySQL it should use, an AWS region, and SDK endpoints pointing at the local
stand-ins, so its boto3 code runs unchanged. With `--python path/to/venv/bin/python` it
runs in its own virtualenv (where `pip install dist/connlease_client-*.whl` put the
client), seeing its code, that environment and nothing of this repository, as in Lambda.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
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

SAMPLE_CHARS = 300  # of an answer shown in the table; --json prints each whole


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
class Answer:
    """One invocation as the caller saw it."""

    number: int  # 1, 2, ... in the order the invocations were sent
    request_id: str  # the invocation's, as START/END/REPORT RequestId in the log
    duration_ms: float  # the caller's round trip: a wait for an environment, a cold start
    payload: Any  # what the function answered, JSON decoded (its text if it is not JSON)
    function_error: str | None = None  # Lambda's X-Amz-Function-Error ("Unhandled")

    @property
    def status(self) -> str:
        return "ok" if self.function_error is None else "error"

    def document(self) -> dict[str, Any]:
        """`--json`'s line: the invocation and the function's payload as it is."""
        return {
            "invocation": self.number,
            "request_id": self.request_id,
            "duration_ms": round(self.duration_ms, 1),
            "status": self.status,
            "function_error": self.function_error,
            "payload": self.payload,
        }

    def error_line(self) -> str:
        """A function error as one line: `errorType: errorMessage` (its stack trace is in
        the function's log)."""
        payload = self.payload
        if isinstance(payload, dict) and "errorType" in payload:
            message = " ".join(str(payload.get("errorMessage", "")).split())
            return f"{payload['errorType']}: {message}" if message else str(payload["errorType"])
        return _one_line(payload)


@dataclass(frozen=True)
class RunReport:
    invocations: list[Answer]
    quota_after: QuotaStatus
    log_file: Path

    @property
    def answers(self) -> list[Any]:
        """The payloads of the invocations that succeeded, in the order sent."""
        return [found.payload for found in self.invocations if found.function_error is None]

    @property
    def function_errors(self) -> list[str]:
        """Each failed invocation's error, one line."""
        return [found.error_line() for found in self.invocations if found.function_error]


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

        def invoke(number: int) -> Answer:
            started = time.perf_counter()
            response = client.invoke(FunctionName=options.name, Payload=payload)
            body = response["Payload"].read()
            return Answer(
                number=number,
                request_id=response["ResponseMetadata"].get("RequestId", ""),
                duration_ms=(time.perf_counter() - started) * 1000,
                payload=_decoded(body),
                function_error=response.get("FunctionError"),
            )

        with ThreadPoolExecutor(options.concurrency) as pool:
            results = list(pool.map(invoke, range(1, options.invocations + 1)))
        assert stack.lambdas is not None
        log_file = stack.lambdas.log_dir / f"{options.name}.log"
        quota_after = store.status(options.database)
    return RunReport(invocations=results, quota_after=quota_after, log_file=log_file)


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode("utf-8", "replace")


def _one_line(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split())


def _cut(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"


def report_table(options: RunOptions, report: RunReport) -> Table:
    """What the run did: the function's answers as it answered them (grouped by status code,
    each group's count, how many of them differ and its first answer), each kind of function
    error on one line, the round trips and the quota after."""
    table = Table(title=f"{options.name} on the local stack", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("invocations", f"{options.invocations}, {options.concurrency} at once")
    table.add_row("leases", f"{options.mode} mode, quota {options.quota} on {options.database!r}")
    groups: dict[Any, list[Any]] = {}
    for answer in report.answers:
        groups.setdefault(_status_code(answer), []).append(answer)
    for code, answers in sorted(groups.items(), key=lambda group: -len(group[1])):
        distinct = len({json.dumps(answer, sort_keys=True) for answer in answers})
        label = "answered" + (f" {code}" if code is not None else "") + f" ({len(answers)})"
        sample = escape(_cut(_one_line(answers[0])))
        if distinct > 1:
            sample += f"\n[dim]the first of {distinct} different answers; --json prints each[/]"
        table.add_row(label, sample)
    errors: dict[str, int] = {}
    for line in report.function_errors:
        errors[line] = errors.get(line, 0) + 1
    for line, count in sorted(errors.items(), key=lambda error: -error[1]):
        table.add_row(f"function error ({count})", escape(_cut(line)))
    durations = [found.duration_ms for found in report.invocations]
    if durations:
        table.add_row(
            "round trips",
            f"median {statistics.median(durations):.0f} ms, slowest {max(durations):.0f} ms"
            " (a wait for an environment and a cold start included)",
        )
    after = report.quota_after
    table.add_row("quota after the run", f"{after.in_use} in use, {after.remaining} free")
    log = escape(str(report.log_file))
    if report.function_errors:
        log += "\n[dim]stack traces there, each after its START RequestId line[/]"
    table.add_row("the function's log", log)
    return table


def _status_code(answer: Any) -> Any:
    code = answer.get("statusCode") if isinstance(answer, dict) else None
    return code if isinstance(code, int | str) and not isinstance(code, bool) else None


def json_lines(report: RunReport) -> str:
    """`--json`: one object a line, an invocation each, in the order sent."""
    return "".join(
        json.dumps(found.document(), ensure_ascii=False) + "\n" for found in report.invocations
    )


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
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=RunOptions.log_dir,
        help="where the function's log goes (NAME.log: its output and stack traces)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="each invocation on stdout, one JSON object a line (invocation, request_id,"
        " duration_ms, status, function_error, payload); the summary on stderr",
    )
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
    console = Console(stderr=args.json)  # with --json, stdout is the lines' alone
    try:
        report = run_function(options)
    except FileNotFoundError as error:
        console.print(f"[red]{escape(str(error))}[/]")
        return 2
    if args.json:
        sys.stdout.write(json_lines(report))
        sys.stdout.flush()
    console.print(report_table(options, report))
    return 1 if report.function_errors else 0


if __name__ == "__main__":
    sys.exit(main())
