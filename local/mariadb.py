"""A throwaway MariaDB for `make demo`: on a machine where the server is installed but none
is running, the demo starts its own on a free loopback port, uses it, and stops it.

mariadb-install-db makes a data directory inside a temporary directory (root may log in
over TCP with no password), then mariadbd serves it on 127.0.0.1 with its socket, pid file
and error log in that directory. At the end the server is stopped (SIGTERM: a clean
shutdown) and the directory removed. `--no-defaults` keeps the machine's my.cnf out: nothing
of an installed server's own configuration or data is read or written.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from adapters.mysql import DatabaseError, MySqlConnector, MySqlEndpoint

# Where packages put mariadbd: off most users' PATH (Debian, Ubuntu, Fedora: /usr/sbin).
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin")
# A demo's data is one table of a few rows: a small buffer pool and redo log keep the
# install at about 20 MB and the server's memory under 100 MB (the defaults: 110 MB on disk).
SMALL = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
PORT_TRIES = 3  # a free port may be taken between finding it and the server binding it
LOG_TAIL_LINES = 8


@dataclass(frozen=True)
class MariaDbInstall:
    server: Path  # mariadbd
    install_db: Path  # mariadb-install-db

    @classmethod
    def find(cls, path: str | None = None) -> MariaDbInstall | None:
        """Both programs, each on PATH (`path`, else the environment's) or in an sbin
        directory; None unless both are there."""
        found = [_program(name, path) for name in ("mariadbd", "mariadb-install-db")]
        server, install_db = found
        return cls(server, install_db) if server and install_db else None


def _program(name: str, path: str | None) -> Path | None:
    on_path = shutil.which(name, path=path)
    if on_path:
        return Path(on_path)
    for directory in SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


class ThrowawayFailed(Exception):
    """The throwaway server would not install or start; says why, with its log's end."""


@contextmanager
def throwaway_mariadb(install: MariaDbInstall, database: str = "test") -> Iterator[MySqlEndpoint]:
    """A private MariaDB on 127.0.0.1, a free port, root with no password, `database`
    created; stopped and its files removed on the way out, however the body ends."""
    # Under /tmp where there is one: a socket's path must fit in 107 bytes, which a long
    # TMPDIR (macOS's) can exceed.
    parent = "/tmp" if Path("/tmp").is_dir() else None  # nosec B108: a private mkdtemp under it
    with tempfile.TemporaryDirectory(prefix="connlease-mariadb-", dir=parent) as tmp:
        home = Path(tmp)
        _install(install, home)
        server, endpoint = _start(install, home)
        try:
            connection = MySqlConnector(endpoint, None)()
            try:
                with connection.cursor() as cursor:
                    cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            finally:
                connection.close()
            yield replace(endpoint, database=database, connect_timeout_s=3)
        finally:
            _stop(server)


def _as_root() -> tuple[str, ...]:
    # mariadbd refuses to run as root unless told to; mariadb-install-db then owns the
    # files as root too.
    return ("--user=root",) if hasattr(os, "geteuid") and os.geteuid() == 0 else ()


def _install(install: MariaDbInstall, home: Path) -> None:
    command = [
        str(install.install_db),
        "--no-defaults",
        f"--datadir={home / 'data'}",
        "--auth-root-authentication-method=normal",  # root logs in by password: none
        "--skip-test-db",
        "--skip-name-resolve",
        *_as_root(),
        *SMALL,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ThrowawayFailed(f"{install.install_db} could not run: {error}") from error
    if done.returncode:
        said = _tail(done.stdout + done.stderr)
        raise ThrowawayFailed(f"{install.install_db} failed (exit {done.returncode}):\n{said}")


def _start(install: MariaDbInstall, home: Path) -> tuple[subprocess.Popen[bytes], MySqlEndpoint]:
    log = home / "error.log"
    for _ in range(PORT_TRIES):
        port = free_port()
        log.unlink(missing_ok=True)
        server = subprocess.Popen(
            [
                str(install.server),
                "--no-defaults",
                f"--datadir={home / 'data'}",
                f"--socket={home / 'mariadbd.sock'}",
                f"--pid-file={home / 'mariadbd.pid'}",
                f"--log-error={log}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                *_as_root(),
                *SMALL,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: Ctrl-C in the terminal reaches the demo, which puts
            # max_connections back on this server before it stops it.
            start_new_session=True,
        )
        endpoint = MySqlEndpoint(port=port, user="root", password="", database="")
        if _ready(server, replace(endpoint, connect_timeout_s=1)):
            return server, endpoint
        said = _tail(log.read_text(errors="replace") if log.exists() else "")
        _stop(server)
        if "already in use" not in said:
            raise ThrowawayFailed(f"{install.server} did not start on 127.0.0.1:{port}:\n{said}")
    raise ThrowawayFailed(f"{install.server} found no free port in {PORT_TRIES} tries")


def _ready(server: subprocess.Popen[Any], endpoint: MySqlEndpoint) -> bool:
    """Whether the server took a connection before it exited or the start timed out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while server.poll() is None and time.monotonic() < deadline:
        try:
            MySqlConnector(endpoint, None)().close()
        except DatabaseError:
            time.sleep(0.1)
        else:
            return True
    return False


def _stop(server: subprocess.Popen[Any]) -> None:
    if server.poll() is None:
        server.terminate()
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-LOG_TAIL_LINES:])
