"""`python -m local.run` checks every argument before it starts anything: a bad one is one
line and exit 2. What it prints: the function's answers as it gave them, a function error
on one line (its stack trace left to the log), and `--json`'s line an invocation."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from domain import QuotaStatus
from local.run import Answer, RunOptions, RunReport, json_lines, main, report_table


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--quota", "5000"], "limit"),
        (["--quota", "0"], "limit"),
        (["--database", "orders mysql"], "database"),
        (["--name", "connlease-helper"], "helper"),
        (["--name", "my/function"], "--name"),
        (["--timeout", "0"], "--timeout"),
        (["--timeout", "1000"], "--timeout"),
        (["--invocations", "0"], "--invocations"),
        (["--env", "NOVALUE"], "NAME=VALUE"),
        (["--python", "/no/such/venv/bin/python"], "--python"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_2_before_anything_starts(
    arguments: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["handler.handler", *arguments])

    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert says in error
    assert "Traceback" not in error


def test_a_port_that_is_no_number_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DB_PORT", "mysql")

    with pytest.raises(SystemExit) as exited:
        main(["handler.handler"])

    assert exited.value.code == 2
    assert "DB_PORT must be a port number" in capsys.readouterr().err


# What a run prints, from a report made by hand: no stack is started.

QUOTA_AFTER = QuotaStatus(
    database="local-mysql",
    limit=2,
    default_ttl_ms=60_000,
    in_use=0,
    remaining=2,
    expired=0,
    leases=(),
)
OPTIONS = RunOptions(handler="handler.handler", name="orders", invocations=5, concurrency=2)
STACK_TRACE = ['  File "/code/handler.py", line 9, in handler\n    raise KeyError(order)\n']


def answer(number: int, payload: Any, error: str | None = None) -> Answer:
    return Answer(number, f"req-{number}", 10.0 * number, payload, error)


REPORT = RunReport(
    invocations=[
        answer(1, {"statusCode": 200, "connection_id": 4711, "lease_wait_ms": 0}),
        answer(2, {"statusCode": 200, "connection_id": 4712, "lease_wait_ms": 35}),
        answer(3, {"statusCode": 503, "error": "no database connection free; try again"}),
        answer(
            4,
            {
                "errorMessage": "'order 42'\nnot found",
                "errorType": "KeyError",
                "requestId": "req-4",
                "stackTrace": STACK_TRACE,
            },
            "Unhandled",
        ),
        answer(5, [1, 2.5, True]),
    ],
    quota_after=QUOTA_AFTER,
    log_file=Path("demo-output/run-logs/orders.log"),
)


def printed(report: RunReport) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(report_table(OPTIONS, report))
    return console.export_text()


def test_the_table_shows_answers_as_the_function_gave_them() -> None:
    text = printed(REPORT)

    assert "<number>" not in text
    assert '{"statusCode": 200, "connection_id": 4711, "lease_wait_ms": 0}' in text
    assert "the first of 2 different answers; --json prints each" in text
    assert '{"statusCode": 503, "error": "no database connection free; try again"}' in text
    assert "[1, 2.5, true]" in text
    labels = [line.split("│")[1].strip() for line in text.splitlines() if line.count("│") == 3]
    assert [label for label in labels if label.startswith("answered")] == [
        "answered 200 (2)",
        "answered 503 (1)",
        "answered (1)",
    ]


def test_a_function_error_is_one_line_and_its_stack_trace_is_left_to_the_log() -> None:
    text = printed(REPORT)

    assert REPORT.function_errors == ["KeyError: 'order 42' not found"]
    (row,) = [line for line in text.splitlines() if "function error" in line]
    assert "function error (1)" in row
    assert "KeyError: 'order 42' not found" in row
    assert "stackTrace" not in text
    assert "handler.py" not in text
    assert "demo-output/run-logs/orders.log" in text
    assert "stack traces there, each after its START RequestId line" in text


def test_alike_answers_are_counted_as_one_and_shown_whole() -> None:
    same = {"statusCode": 200, "order": {"id": 7, "total": 19.99}}
    report = RunReport([answer(n, same) for n in (1, 2, 3)], QUOTA_AFTER, Path("orders.log"))

    text = printed(report)

    assert "answered 200 (3)" in text
    assert '{"statusCode": 200, "order": {"id": 7, "total": 19.99}}' in text
    assert "different answers" not in text
    assert "stack traces" not in text


def test_json_is_one_object_a_line_with_the_payload_as_it_is() -> None:
    lines = json_lines(REPORT).splitlines()

    documents = [json.loads(line) for line in lines]
    assert [document["invocation"] for document in documents] == [1, 2, 3, 4, 5]
    assert documents[0] == {
        "invocation": 1,
        "request_id": "req-1",
        "duration_ms": 10.0,
        "status": "ok",
        "function_error": None,
        "payload": {"statusCode": 200, "connection_id": 4711, "lease_wait_ms": 0},
    }
    failed = documents[3]
    assert (failed["status"], failed["function_error"]) == ("error", "Unhandled")
    assert failed["payload"]["stackTrace"] == STACK_TRACE  # the raw payload, whole
    assert documents[4]["payload"] == [1, 2.5, True]


def test_a_payload_that_is_not_json_is_kept_as_text() -> None:
    failed = answer(1, "Task timed out\n after 3.00 seconds", "Unhandled")

    assert failed.error_line() == "Task timed out after 3.00 seconds"
    assert failed.document()["payload"] == "Task timed out\n after 3.00 seconds"
