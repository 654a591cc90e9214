"""A small `make demo` end to end: MariaDB, embedded DynamoDB, local Lambda, all four
functions; the same burst without connlease (error 1040) and with it; the throwaway MariaDB
the demo starts where none is running; max_connections put back when the demo is stopped.

The bursts run on a throwaway MariaDB of their own where the server is installed (as here):
the demo lowers max_connections, which other clients of a shared server would meet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.mysql import (
    CLIENT_ERROR,
    DatabaseError,
    MySqlConnector,
    MySqlEndpoint,
    server_variable,
)
from domain import KeepWarm
from local import demo_setup
from local.demo import (
    SPARE_CONNECTIONS,
    WITH,
    WITHOUT,
    DemoOptions,
    DemoReport,
    chart_figure,
    lease_ttl_ms,
    main,
    quota_after,
    run_demo,
)
from local.demo_setup import (
    MaxConnectionsFixed,
    MySqlUnreachable,
    demo_mysql,
    mysql_from_environment,
)
from local.mariadb import MariaDbInstall, free_port, throwaway_mariadb

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parents[2]
INSTALLED = MariaDbInstall.find()
needs_mariadb = pytest.mark.skipif(INSTALLED is None, reason="mariadbd is not installed")


@pytest.fixture(scope="module")
def demo_server() -> Iterator[MySqlEndpoint]:
    """A throwaway MariaDB where the server is installed; else the one DB_HOST names."""
    if INSTALLED is None:
        yield mysql_from_environment()
        return
    with throwaway_mariadb(INSTALLED) as endpoint:
        yield endpoint


def max_connections_of(server: MySqlEndpoint) -> int:
    connection = MySqlConnector(server, None)()
    try:
        return server_variable(connection, "max_connections")
    finally:
        connection.close()


def burst_of_36(tmp_path: Path, mysql: MySqlEndpoint, **options: Any) -> DemoOptions:
    """36 invocations at concurrency 12 on a quota of 4, each holding its connection 50 ms:
    three callers for every lease (each environment is a process that imports the function
    cold, so a wider burst costs `make test` seconds and tests nothing more). The run with
    connlease alone: the comparison has its own, smaller burst."""
    return DemoOptions(
        iterations=36,
        concurrency=12,
        quota=4,
        query_time_s=0.05,
        output_dir=tmp_path,
        mysql=mysql,
        show_progress=False,
        without_connlease=False,
        **options,
    )


@pytest.fixture(scope="module")
def compared(demo_server: MySqlEndpoint, tmp_path_factory: pytest.TempPathFactory) -> DemoReport:
    """24 invocations at concurrency 8 on a quota of 2, each holding its connection 200 ms
    (long enough that the bare burst's connections overlap), without connlease and then
    with it. Direct mode: no helper environments to start cold."""
    return run_demo(
        DemoOptions(
            iterations=24,
            concurrency=8,
            quota=2,
            query_time_s=0.2,
            mode="direct",
            output_dir=tmp_path_factory.mktemp("compared"),
            mysql=demo_server,
            quota_database="it-demo-compared",
            show_progress=False,
        )
    )


def test_without_connlease_the_burst_meets_error_1040_and_with_it_none_within_the_quota(
    compared: DemoReport, demo_server: MySqlEndpoint
) -> None:
    bare, leased = compared.without_connlease, compared.with_connlease
    quota = compared.options.quota

    assert bare is not None
    assert compared.room == quota + SPARE_CONNECTIONS
    assert bare.too_many_connections > 0
    assert bare.peak_connections > quota
    assert leased.too_many_connections == 0
    assert leased.db_errors == {}
    assert 1 <= leased.peak_connections <= quota
    assert leased.accounted == leased.invocations == 24
    assert compared.max_connections < compared.max_connections_before
    assert max_connections_of(demo_server) == compared.max_connections_before  # put back


def test_the_chart_is_drawn_from_both_runs(compared: DemoReport) -> None:
    bare, leased = compared.runs

    assert [run.name for run in compared.runs] == [WITHOUT, WITH]
    for run in compared.runs:
        # Every invocation's log line, and MySQL's count through the burst and after it.
        assert len(run.calls) == run.invocations == 24
        assert min(at_s for at_s, _ in run.connections) < 0 < run.seconds
        assert max(at_s for at_s, _ in run.connections) >= run.seconds
        assert run.peak_connections in {held for _, held in run.connections}
    assert sum(bare.errors_per_second().values()) == bare.too_many_connections
    assert all(call.lease_wait_s is None for call in bare.calls)
    assert leased.errors_per_second() == {}
    assert all(call.lease_wait_s is not None for call in leased.calls)
    figure = chart_figure(compared)
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    assert [title.split(":")[0] for title in titles] == [WITHOUT, WITH]
    assert compared.chart.stat().st_size > 10_000


# Direct mode's burst is the comparison's: another here would cost `make test` 25 s.
@pytest.mark.parametrize("mode", ["lambda"])
def test_a_burst_of_36_at_concurrency_12_stays_within_a_quota_of_4(
    tmp_path: Path, mode: str, demo_server: MySqlEndpoint
) -> None:
    options = burst_of_36(tmp_path, demo_server, mode=mode, quota_database=f"it-demo-{mode}")

    report = run_demo(options)
    run = report.with_connlease

    assert report.runs == (run,)
    assert report.max_connections == report.max_connections_before  # left alone
    assert run.db_errors == {}
    assert 1 <= run.peak_connections <= 4
    assert run.accounted == run.invocations == 36
    assert run.outcomes.get("succeeded", 0) > 0
    assert run.quota_after is not None
    assert (run.quota_after.in_use, run.quota_after.remaining) == (0, 4)
    assert report.chart.exists()
    assert report.chart.stat().st_size > 10_000


def test_with_warm_leases_the_burst_stays_within_the_quota_and_kept_leases_are_in_it(
    tmp_path: Path, demo_server: MySqlEndpoint
) -> None:
    options = burst_of_36(
        tmp_path, demo_server, mode="direct", lease_hold_ms=300, quota_database="it-demo-warm"
    )

    report = run_demo(options)
    run = report.with_connlease

    assert run.db_errors == {}
    assert 1 <= run.peak_connections <= 4
    assert run.accounted == run.invocations == 36
    assert run.outcomes.get("succeeded", 0) > 0
    # Environments frozen after their last invocation keep their leases, but not for
    # longer than a hold, one invocation's TTL and the idle close.
    warm = KeepWarm(hold_ms=300)
    latest_end_ms = time.time() * 1000 + warm.ttl_ms(lease_ttl_ms(options))
    assert run.quota_after is not None
    assert all(lease.expires_at_ms <= latest_end_ms for lease in run.quota_after.leases)
    if run.quota_after.in_use:
        assert "kept by warm environments" in quota_after(report)


def test_stopped_with_sigterm_the_demo_puts_max_connections_back(
    demo_server: MySqlEndpoint, tmp_path: Path
) -> None:
    before = max_connections_of(demo_server)
    environment = os.environ | {
        "DB_HOST": demo_server.host,
        "DB_PORT": str(demo_server.port),
        "DB_USER": demo_server.user,
        "DB_PASSWORD": demo_server.password,
        "DB_NAME": demo_server.database,
        "PYTHONPATH": str(REPOSITORY),
    }
    command = [sys.executable, "-m", "local.demo", "-n", "4", "-c", "2", "-q", "1"]
    demo = subprocess.Popen(
        [*command, "--output-dir", str(tmp_path)],
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while max_connections_of(demo_server) == before and demo.poll() is None:
            assert time.monotonic() < deadline, "the demo never lowered max_connections"
            time.sleep(0.05)
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    assert code == 128 + signal.SIGTERM
    assert max_connections_of(demo_server) == before


def test_an_account_that_may_not_set_max_connections_is_told_to_run_connlease_alone(
    demo_server: MySqlEndpoint, tmp_path: Path
) -> None:
    before = max_connections_of(demo_server)
    user, password = f"plain_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    admin = MySqlConnector(demo_server, None)()
    try:
        with admin.cursor() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cursor.execute(f"GRANT ALL ON `{demo_server.database}`.* TO %s@'%%'", (user,))
        plain = replace(demo_server, user=user, password=password)
        options = replace(burst_of_36(tmp_path, plain), without_connlease=True)

        with pytest.raises(MaxConnectionsFixed) as refused:
            run_demo(options)
    finally:
        with admin.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        admin.close()

    said = refused.value.explain()
    assert f"would not let user '{user}' set max_connections" in said
    assert "--connlease-only" in said
    assert max_connections_of(demo_server) == before


@needs_mariadb
def test_with_nothing_at_the_default_port_the_demo_starts_a_throwaway_mariadb_and_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in demo_setup.NAMING_A_SERVER:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(demo_setup, "DEFAULT_PORT", free_port())
    database = f"demo_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DB_NAME", database)
    said: list[str] = []

    with demo_mysql(said.append) as server:
        connection = MySqlConnector(server, None)()
        with connection.cursor() as cursor:
            cursor.execute("SELECT DATABASE(), @@datadir, @@port")
            row = cursor.fetchone()
        assert row is not None
        used, datadir, port = row
        connection.close()

    assert (server.host, server.port, server.user) == ("127.0.0.1", port, "root")
    assert used == database
    assert "throwaway MariaDB" in said[0]
    assert not Path(datadir).exists()  # removed with its temp directory
    with pytest.raises(DatabaseError) as refused:  # and the server is gone
        MySqlConnector(replace(server, connect_timeout_s=1), None)()
    assert refused.value.code == CLIENT_ERROR


def test_a_server_the_user_named_is_never_replaced_by_a_throwaway_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_PORT", str(free_port()))

    with pytest.raises(MySqlUnreachable), demo_mysql(lambda _: None):
        pytest.fail("no server answers there, and none may stand in for it")


def test_without_mariadb_installed_the_demo_says_how_to_point_it_at_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in demo_setup.NAMING_A_SERVER:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(demo_setup, "DEFAULT_PORT", free_port())
    monkeypatch.setattr(MariaDbInstall, "find", classmethod(lambda cls, path=None: None))

    code = main(["--output-dir", str(tmp_path)])

    said = " ".join(capsys.readouterr().out.split())
    assert code == 2
    assert "not reachable at root@127.0.0.1" in said
    assert "DB_HOST" in said
    assert "Or install MariaDB's server" in said
    assert "Traceback" not in said


def test_without_a_reachable_mysql_the_demo_says_how_to_point_it_at_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DB_PORT", "3999")

    code = main(["--output-dir", str(tmp_path)])

    out = capsys.readouterr().out
    assert code == 2
    assert "not reachable at root@127.0.0.1:3999/test" in out
    assert "DB_HOST" in out
    assert "Traceback" not in out


def test_with_a_database_that_does_not_exist_the_demo_says_so_and_how_to_create_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = f"no_such_db_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DB_NAME", missing)

    code = main(["--output-dir", str(tmp_path)])

    said = " ".join(capsys.readouterr().out.split())  # the console wraps its lines
    assert code == 2
    assert f"The database '{missing}' does not exist" in said
    assert f"CREATE DATABASE `{missing}`" in said
    assert "DB_NAME" in said
    assert "not reachable" not in said
    assert "Traceback" not in said


def test_with_a_wrong_password_the_demo_says_access_was_denied_not_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    endpoint = mysql_from_environment()
    monkeypatch.setenv("DB_PASSWORD", f"{endpoint.password}-wrong-{uuid.uuid4().hex[:6]}")

    code = main(["--output-dir", str(tmp_path)])

    said = " ".join(capsys.readouterr().out.split())
    assert code == 2
    assert f"denied access to user '{endpoint.user}'" in said
    assert "DB_USER and DB_PASSWORD" in said
    assert "not reachable" not in said
    assert "Traceback" not in said
