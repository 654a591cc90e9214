"""The README's example function, run on the local stack as `make example` runs it: the
example can never rot, and a user's own function runs there the same way."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from local.demo_setup import mysql_from_environment
from local.run import RunOptions, main, run_function
from local.watch import ConnectionWatcher

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders"


def example(tmp_path: Path, **changes: Any) -> RunOptions:
    """What `make example` runs: six at once on a quota of two, each holding 200 ms."""
    options = RunOptions(
        handler="handler.handler",
        code_dir=EXAMPLE,
        event={"hold_s": 0.2},
        invocations=12,
        concurrency=6,
        quota=2,
        log_dir=tmp_path,
    )
    return replace(options, **changes)


@pytest.mark.parametrize("mode", ["lambda", "direct"])
def test_the_example_function_answers_every_call_within_its_quota(
    tmp_path: Path, mode: str
) -> None:
    watcher = ConnectionWatcher(mysql_from_environment())
    with watcher.watching():
        report = run_function(example(tmp_path, mode=mode))

    assert report.function_errors == []
    assert [answer["statusCode"] for answer in report.answers] == [200] * 12
    # Six at once on a quota of two: some waited for a lease, none connected past it.
    assert max(answer["lease_wait_ms"] for answer in report.answers) > 0
    assert watcher.peak_above_baseline <= 2
    assert report.quota_after.in_use == 0


def test_the_example_answers_a_malformed_event_with_a_400_and_takes_no_lease(
    tmp_path: Path,
) -> None:
    report = run_function(example(tmp_path, event={"hold_s": "long"}, invocations=2))

    assert {answer["statusCode"] for answer in report.answers} == {400}
    assert report.quota_after.in_use == 0


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table's lines whole, as a wide terminal shows them."""
    monkeypatch.setenv("COLUMNS", "200")


def test_a_function_that_fails_to_import_is_reported_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    code = main(
        ["missing.handler", "--code-dir", str(EXAMPLE), "-n", "1", "--log-dir", str(tmp_path)]
    )

    assert code == 1
    out = capsys.readouterr().out
    assert "Runtime.ImportModuleError.ModuleNotFoundError: No module named 'missing'" in out
    assert "Traceback" in (tmp_path / "my-function.log").read_text()


def test_json_prints_each_invocation_and_the_answer_as_the_function_gave_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    code = main(
        [
            "handler.handler", "--code-dir", str(EXAMPLE), "--name", "orders",
            "--event", '{"hold_s": 0.05}', "-n", "3", "-c", "3", "--quota", "2",
            "--log-dir", str(tmp_path), "--json",
        ]
    )  # fmt: skip

    assert code == 0
    printed = capsys.readouterr()
    documents = [json.loads(line) for line in printed.out.splitlines()]
    assert [document["invocation"] for document in documents] == [1, 2, 3]
    log = (tmp_path / "orders.log").read_text()
    for document in documents:
        assert set(document) == {
            "invocation",
            "request_id",
            "duration_ms",
            "status",
            "function_error",
            "payload",
        }
        assert (document["status"], document["function_error"]) == ("ok", None)
        assert document["duration_ms"] > 0
        assert f"START RequestId: {document['request_id']}" in log
        payload = document["payload"]
        assert payload["statusCode"] == 200
        assert isinstance(payload["connection_id"], int)  # a number, never "<number>"
        assert isinstance(payload["lease_wait_ms"], int)
    assert len({document["request_id"] for document in documents}) == 3
    # The summary is for people, on stderr; stdout is the lines' alone.
    assert "answered 200 (3)" in printed.err
    assert "<number>" not in printed.out + printed.err


FAILING = """
def handler(event, context):
    if event.get("order") == 42:
        raise ValueError("order 42:\\n  not found")
    return {"statusCode": 200, "order": event.get("order")}
"""


def test_a_function_error_is_one_line_with_its_stack_trace_in_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    code_dir = tmp_path / "function"
    code_dir.mkdir()
    (code_dir / "failing_orders.py").write_text(FAILING)
    logs = tmp_path / "logs"

    code = main(
        [
            "failing_orders.handler", "--code-dir", str(code_dir), "--name", "failing",
            "--event", '{"order": 42}', "-n", "2", "-c", "2", "--log-dir", str(logs),
        ]
    )  # fmt: skip

    assert code == 1
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if "function error" in line]
    assert "function error (2)" in row
    assert "ValueError: order 42: not found" in row
    for trace in ("Traceback", "stackTrace", "failing_orders.py", "line 4"):
        assert trace not in out
    assert str(logs / "failing.log") in out
    log = (logs / "failing.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "failing_orders.py" in log
    assert "ValueError: order 42:" in log
