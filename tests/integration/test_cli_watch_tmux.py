"""`connlease watch` in a real terminal: tmux runs it at 120x40, and the test reads the
screen a person would see, takes a lease and sees it counted, then presses Ctrl-C."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aws_lambda_powertools import Metrics

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.emf import EmfMetricsSink
from cli.app import NAMESPACE
from cli.watch import sparkline
from domain import Granted, Quota
from domain.ports import Metric
from local.dynamodb import EmbeddedDynamoDB
from local.emf_relay import cloudwatch_client, publish

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

CONNLEASE = Path(sys.executable).parent / "connlease"
SCREEN_TIMEOUT_S = 20.0


@dataclass
class Terminal:
    """A shell in a 120x40 tmux pane of its own (a private tmux server), typed into as a
    person would."""

    socket: str
    session: str

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        ).stdout

    def open(self) -> None:
        environment = {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
            "LANG": "C.UTF-8",
            "PS1": "$ ",
        }
        # What this process has that a person's terminal would not: a profile, a width.
        unset = ["-u", "AWS_PROFILE", "-u", "COLUMNS", "-u", "LINES"]
        shell = ["env", *unset, *(f"{k}={v}" for k, v in environment.items()), "sh"]
        size = ["-x", "120", "-y", "40"]
        self.tmux("new-session", "-d", "-s", self.session, *size, shlex.join(shell))
        self.wait_for(r"(?m)^\$$")  # the prompt (a screen's lines come without trailing blanks)

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-t", self.session, "-l", line)
        self.tmux("send-keys", "-t", self.session, "Enter")

    def press(self, key: str) -> None:
        self.tmux("send-keys", "-t", self.session, key)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The screen's first match of `pattern` once it shows (`.string`: the screen)."""
        deadline = time.monotonic() + SCREEN_TIMEOUT_S
        while True:
            screen = self.screen()
            found = re.search(pattern, screen)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"the screen never showed {pattern!r}; it shows:\n{screen}")
            time.sleep(0.2)

    def exit_status(self) -> int:
        """The exit status of the command that ended last, as the shell says it."""
        self.type('echo "exit status $?"')
        # Typed while the command still ran, the line shows before the prompt it runs at.
        return int(self.wait_for(r"(?m)exit status (\d+)$")[1])


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed to check `connlease watch` in a terminal: apt install tmux")
    name = f"connlease-watch-{uuid.uuid4().hex[:8]}"
    terminal = Terminal(socket=name, session=name)
    try:
        terminal.open()
        yield terminal
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


def watch(database: str, endpoint_url: str, table: str, *options: str) -> str:
    where = ["--endpoint-url", endpoint_url, "--table", table]
    return shlex.join([str(CONNLEASE), "watch", database, *where, *options])


def refusals_line(database: str, count: int, seconds_ago: int) -> str:
    """The EMF line the helper prints after `count` refused acquires, `seconds_ago`."""
    metrics = Metrics(namespace=NAMESPACE, service="connlease-helper")
    metrics.clear_metrics()
    sink = EmfMetricsSink(metrics, NAMESPACE)
    for _ in range(count):
        sink.record(Metric.NO_CONNECTIONS_LEFT, 1, database)
    document: dict[str, Any] = dict(metrics.serialize_metric_set())
    metrics.clear_metrics()
    document["_aws"]["Timestamp"] -= seconds_ago * 1000
    return json.dumps(document)


def test_watch_shows_the_quota_live_and_stops_on_ctrl_c(
    terminal: Terminal,
    embedded_dynamodb: EmbeddedDynamoDB,
    dynamodb_client: DynamoDBClient,
    leases_table: str,
) -> None:
    database = f"watch-{uuid.uuid4().hex[:6]}"
    store = DynamoDBLeaseStore(dynamodb_client, leases_table, SystemClock())
    store.set_quota(database, Quota(limit=5, default_ttl_ms=120_000))
    for n in range(3):
        assert isinstance(store.acquire(database, f"orders-fn/{n}"), Granted)
    # Refusals as the functions log them, through the local stack's EMF relay: 4 in one
    # second, 2 in another.
    publish(
        cloudwatch_client(embedded_dynamodb.endpoint_url),
        [refusals_line(database, 4, seconds_ago=3), refusals_line(database, 2, seconds_ago=8)],
    )

    terminal.type(
        watch(database, embedded_dynamodb.endpoint_url, leases_table, "--interval", "0.5")
    )

    terminal.wait_for(rf"connlease watch {database}")
    # The status table's row: limit 5, 3 in use, 2 remaining, none expired.
    terminal.wait_for(rf"│ {database} │\s+5 │\s+3 │\s+2 │\s+0 │")
    # A bar a second, as high as 3 of 5 is: three seconds of it, to see it change after.
    three = re.escape(sparkline([3], top=5))
    terminal.wait_for(rf"in use\s+[▁-█ ]*{three}{{3}}\s+3 now, peak 3 of 5")
    refused = terminal.wait_for(r"refused/s\s+([▁-█]+)\s+peak 4/s, 6 in 1m00s")
    # 2 refusals, then 4 five seconds later at full height; none before, between or since.
    assert re.fullmatch(r"▁+▅▁{4}█▁+", refused[1])
    assert re.search(r"reads: 1 item per refresh", terminal.screen())

    assert isinstance(store.acquire(database, "orders-fn/3"), Granted)

    terminal.wait_for(rf"│ {database} │\s+5 │\s+4 │\s+1 │\s+0 │")
    four = re.escape(sparkline([4], top=5))
    terminal.wait_for(rf"in use\s+[▁-█ ]*{three}[▁-█]*{four}\s+4 now, peak 4 of 5")

    terminal.press("C-c")

    terminal.wait_for(
        rf"watched {database} for \S+: \d+ reads; in use 4 of 5 at the end, peak 4; "
        r"6 refused in the last 1m00s"
    )
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.screen()


def test_watch_of_a_database_without_a_quota_says_so_in_one_line(
    terminal: Terminal, embedded_dynamodb: EmbeddedDynamoDB, leases_table: str
) -> None:
    terminal.type(watch("no-such-mysql", embedded_dynamodb.endpoint_url, leases_table))

    terminal.wait_for(r"connlease: error: no quota")
    assert terminal.exit_status() == 1
    screen = terminal.screen()
    # One line (the command typed may wrap onto the next lines of the pane: not counted),
    # and no live view began.
    said = [line for line in screen.splitlines() if line.startswith("connlease:")]
    assert said == [
        "connlease: error: no quota for database 'no-such-mysql' (connlease status lists them)"
    ]
    assert "in use" not in screen
    assert "refused/s" not in screen
