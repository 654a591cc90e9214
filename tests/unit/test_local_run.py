"""`python -m local.run` checks every argument before it starts anything: a bad one is one
line and exit 2."""

from __future__ import annotations

import pytest

from local.run import main


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
