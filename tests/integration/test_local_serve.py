"""`make local` (`python -m local.serve`): a standing stack the command line reaches, that
shows refusals under its load, and stops cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.cloudwatch import MetricReader
from cli.app import NAMESPACE
from domain.ports import Metric
from local.emf_relay import cloudwatch_client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONNLEASE = Path(sys.executable).parent / "connlease"
LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Served:
    def __init__(self, process: subprocess.Popen[bytes], output: Path, port: int) -> None:
        self.process, self.output, self.port = process, output, port
        self.url = f"http://127.0.0.1:{port}"

    def said(self) -> str:
        return self.output.read_text()

    def wait_until_up(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while "Ctrl-C stops." not in self.said():
            assert self.process.poll() is None, f"it ended:\n{self.said()}"
            assert time.monotonic() < deadline, f"not up within {timeout_s} s:\n{self.said()}"
            time.sleep(0.2)

    def stop(self, signum: int, timeout_s: float = 10) -> float:
        """Send `signum`; the seconds it took to end."""
        started = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout=timeout_s)
        return time.monotonic() - started


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*options: str) -> Served:
        port = free_port()
        output = tmp_path / f"serve-{port}.out"
        with output.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "local.serve", "--port", str(port), *options],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(Served(process, output, port))
        started[-1].wait_until_up()
        return started[-1]

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait()


def connlease(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONNLEASE), *args],
        env=os.environ | LOCAL_AWS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_it_serves_the_demo_quota_to_the_command_line_and_stops_on_ctrl_c(
    serve: Callable[..., Served],
) -> None:
    served = serve("--no-load")

    answer = connlease(
        "status",
        "demo-mysql",
        "--endpoint-url",
        served.url,
        "--table",
        "connlease-leases",
        "--json",
    )

    assert answer.returncode == 0, answer.stderr
    status = json.loads(answer.stdout)
    assert (status["database"], status["limit"], status["in_use"]) == ("demo-mysql", 5, 0)
    said = served.said()
    assert f"on {served.url}" in said
    where = f"--endpoint-url {served.url} --table connlease-leases"
    # The script where it is installed (.venv/bin/connlease in a checkout): what to type.
    script = CONNLEASE.relative_to(ROOT) if CONNLEASE.is_relative_to(ROOT) else CONNLEASE
    assert f"{script} watch demo-mysql {where}" in said
    assert f"{script} reconcile demo-mysql {where}" in said

    took_s = served.stop(signal.SIGINT)

    assert served.process.returncode == 0
    assert took_s < 5
    assert served.said().rstrip().endswith("stopped")


def test_its_load_is_refused_at_times_and_the_refusals_reach_cloudwatch(
    serve: Callable[..., Served],
) -> None:
    # A quota of 2 against up to 6 callers, swelling every 6 s.
    served = serve("--limit", "2", "--callers", "6", "--period", "6")
    reader = MetricReader(cloudwatch_client(served.url), NAMESPACE)

    deadline = time.monotonic() + 90
    refused = 0.0
    while refused == 0:
        assert time.monotonic() < deadline, f"no refusal reached CloudWatch:\n{served.said()}"
        time.sleep(1)
        end = datetime.now(UTC) + timedelta(seconds=1)
        counts = reader.per_second(
            Metric.NO_CONNECTIONS_LEFT, "demo-mysql", end - timedelta(minutes=2), end
        )
        refused = sum(counts.values())

    took_s = served.stop(signal.SIGTERM, timeout_s=30)

    assert served.process.returncode == 0
    assert took_s < 10
    last = served.said().rstrip().splitlines()[-1]
    assert last.startswith("stopped; test invocations: ")
    assert "succeeded" in last
