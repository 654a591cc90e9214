"""The application user against a real MariaDB: only the privileges the functions need,
MAX_USER_CONNECTIONS enforced by the server, a rotated password picked up after one 1045,
and REQUIRE SSL (on a throwaway MariaDB with TLS: the shared one has none)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pymysql
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from moto import mock_aws

from adapters.mysql import (
    ACCESS_DENIED,
    USER_LIMIT_REACHED,
    DatabaseError,
    MySqlConnector,
    MySqlEndpoint,
    ensure_app_user,
    set_max_user_connections,
    tls_context,
    user_connections,
)
from adapters.secrets import SecretCredentials

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = MySqlEndpoint(host="127.0.0.1", port=3306, user="root", password="", database="test")
# Quotes, a backslash, a percent sign (pymysql's own placeholder character), a backtick.
NASTY_PASSWORD = "p'a\"s\\s%s`;-- x"
APP_GRANT = "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE TEMPORARY TABLES, LOCK TABLES ON"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def root() -> Iterator[pymysql.connections.Connection[Any]]:
    with closing(MySqlConnector(ROOT, None)()) as connection:
        yield connection


@pytest.fixture
def user(root: pymysql.connections.Connection[Any]) -> Iterator[str]:
    """A fresh user name (with a quote in it, to prove it is escaped); dropped after."""
    name = f"o'app_{uuid.uuid4().hex[:8]}"
    yield name
    with root.cursor() as cursor:
        cursor.execute("DROP USER IF EXISTS %s@'%%'", (name,))


def as_user(user: str, password: str, database: str = "test") -> MySqlConnector:
    return MySqlConnector(
        MySqlEndpoint(
            host=ROOT.host, port=ROOT.port, user=user, password=password, database=database
        ),
        None,
    )


def grants(root: pymysql.connections.Connection[Any], user: str) -> list[str]:
    with root.cursor() as cursor:
        cursor.execute("SHOW GRANTS FOR %s@'%%'", (user,))
        return [row[0] for row in cursor.fetchall()]


def run(connection: pymysql.connections.Connection[Any], sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def test_the_app_user_gets_only_the_privileges_the_functions_need(
    root: pymysql.connections.Connection[Any], user: str
) -> None:
    ensure_app_user(root, user, NASTY_PASSWORD, "test", 2, require_ssl=False)

    usage, on_database = grants(root, user)  # and nothing else
    assert usage.startswith("GRANT USAGE ON *.* TO ")
    assert usage.endswith("WITH MAX_USER_CONNECTIONS 2")
    assert on_database.startswith(f"{APP_GRANT} `test`.* TO ")
    with closing(as_user(user, NASTY_PASSWORD)()) as app:
        run(app, "CREATE TEMPORARY TABLE scratch (id INT)")
        run(app, "INSERT INTO scratch VALUES (1)")
        run(app, "LOCK TABLES scratch WRITE")
        run(app, "UNLOCK TABLES")
        for ddl in ("CREATE TABLE not_mine (id INT)", "DROP TABLE IF EXISTS Employees"):
            with pytest.raises(pymysql.err.OperationalError) as denied:
                run(app, ddl)
            assert denied.value.args[0] == 1142  # ER_TABLEACCESS_DENIED_ERROR
        with pytest.raises(pymysql.err.OperationalError) as no_db:
            run(app, "SELECT * FROM mysql.user")
        assert no_db.value.args[0] == 1142


def test_ensuring_again_sets_the_new_password_and_keeps_one_grant(
    root: pymysql.connections.Connection[Any], user: str
) -> None:
    ensure_app_user(root, user, "first-password", "test", 2, require_ssl=False)
    ensure_app_user(root, user, NASTY_PASSWORD, "test", 2, require_ssl=False)

    assert len(grants(root, user)) == 2
    with pytest.raises(DatabaseError) as refused:
        as_user(user, "first-password")()
    assert refused.value.code == ACCESS_DENIED
    as_user(user, NASTY_PASSWORD)().close()


def test_underscores_and_percents_in_the_database_name_are_not_grant_wildcards(
    root: pymysql.connections.Connection[Any], user: str
) -> None:
    database = f"connlease_g%{uuid.uuid4().hex[:6]}"
    run(root, f"CREATE DATABASE `{database}`")
    try:
        ensure_app_user(root, user, NASTY_PASSWORD, database, 1, require_ssl=False)

        escaped = database.replace("_", "\\_").replace("%", "\\%")
        assert grants(root, user)[1].startswith(f"{APP_GRANT} `{escaped}`.* TO ")
        as_user(user, NASTY_PASSWORD, database)().close()
    finally:
        run(root, f"DROP DATABASE `{database}`")


def test_the_server_refuses_a_connection_beyond_max_user_connections(
    root: pymysql.connections.Connection[Any], user: str
) -> None:
    ensure_app_user(root, user, NASTY_PASSWORD, "test", 2, require_ssl=False)
    connect = as_user(user, NASTY_PASSWORD)
    held = [connect(), connect()]
    try:
        assert user_connections(root, user) == 2

        with pytest.raises(DatabaseError) as refused:
            connect()

        assert refused.value.code == USER_LIMIT_REACHED
        assert "max_user_connections" in refused.value.message
        assert user_connections(root, user) == 2
    finally:
        for connection in held:
            connection.close()


def test_a_quota_change_raises_and_lowers_the_servers_limit(
    root: pymysql.connections.Connection[Any], user: str
) -> None:
    ensure_app_user(root, user, NASTY_PASSWORD, "test", 2, require_ssl=False)
    connect = as_user(user, NASTY_PASSWORD)
    held = [connect(), connect()]
    try:
        set_max_user_connections(root, user, 3)
        held.append(connect())
        assert user_connections(root, user) == 3
        assert grants(root, user)[0].endswith("WITH MAX_USER_CONNECTIONS 3")

        set_max_user_connections(root, user, 1)  # open connections stay, new ones wait
        assert user_connections(root, user) == 3
        with pytest.raises(DatabaseError) as refused:
            connect()
        assert refused.value.code == USER_LIMIT_REACHED
    finally:
        for connection in held:
            connection.close()


def test_a_slot_just_given_back_is_taken_again_without_a_refusal(
    root: pymysql.connections.Connection[Any], user: str
) -> None:
    # The server reaps a closed connection a few milliseconds after the client's quit;
    # the connector waits that out instead of failing the lease's next holder with 1226.
    ensure_app_user(root, user, NASTY_PASSWORD, "test", 1, require_ssl=False)
    connect = as_user(user, NASTY_PASSWORD)

    for _ in range(200):
        connect().close()


# ------------------------------------------------------------- a rotated password


class CountingSecrets:
    """A Secrets Manager client that counts GetSecretValue calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads = 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.reads += 1
        return self._client.get_secret_value(**kwargs)


@pytest.fixture
def secrets() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def login(user: str, password: str) -> str:
    return json.dumps({"username": user, "password": password, "host": "x", "port": 3306})


def test_a_connector_with_a_rotated_password_reads_the_secret_again_once_and_connects(
    root: pymysql.connections.Connection[Any], user: str, secrets: Any
) -> None:
    arn = secrets.create_secret(Name=user, SecretString=login(user, "before-rotation"))["ARN"]
    ensure_app_user(root, user, "before-rotation", "test", 2, require_ssl=False)
    reader = CountingSecrets(secrets)
    connect = MySqlConnector(ROOT, None, SecretCredentials(reader, arn))
    connect().close()
    connect().close()
    assert reader.reads == 1  # read once, then kept

    # The rotation: the database's password first, then the secret's current version.
    ensure_app_user(root, user, NASTY_PASSWORD, "test", 2, require_ssl=False)
    secrets.put_secret_value(SecretId=arn, SecretString=login(user, NASTY_PASSWORD))

    with closing(connect()) as connection:
        run(connection, "SELECT 1")
    assert reader.reads == 2
    connect().close()
    assert reader.reads == 2
    assert connect.describe() == f"{user}@127.0.0.1:3306/test"


def test_a_secret_that_is_still_wrong_after_the_second_read_is_a_1045(
    root: pymysql.connections.Connection[Any], user: str, secrets: Any
) -> None:
    arn = secrets.create_secret(Name=user, SecretString=login(user, "not-it"))["ARN"]
    ensure_app_user(root, user, NASTY_PASSWORD, "test", 2, require_ssl=False)
    reader = CountingSecrets(secrets)

    with pytest.raises(DatabaseError) as refused:
        MySqlConnector(ROOT, None, SecretCredentials(reader, arn))()

    assert refused.value.code == ACCESS_DENIED
    assert reader.reads == 2  # one read again, no more


class Answers:
    """A Secrets Manager client whose secret changes on every read."""

    def __init__(self, *secret_strings: str) -> None:
        self._left = list(secret_strings)

    def get_secret_value(self, **_: Any) -> dict[str, str]:
        return {"SecretString": self._left.pop(0)}


def test_two_different_wrong_passwords_are_tried_once_each_then_raised(
    root: pymysql.connections.Connection[Any], user: str
) -> None:
    ensure_app_user(root, user, NASTY_PASSWORD, "test", 2, require_ssl=False)
    answers = Answers(login(user, "wrong-1"), login(user, "wrong-2"), login(user, NASTY_PASSWORD))
    connect = MySqlConnector(ROOT, None, SecretCredentials(answers, "arn:aws:secretsmanager:x"))

    with pytest.raises(DatabaseError) as refused:
        connect()

    assert refused.value.code == ACCESS_DENIED
    assert len(answers._left) == 1  # the right one was never read


# ------------------------------------------------------------- REQUIRE SSL


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_file: Path

    def endpoint(self, user: str = "root", password: str = "") -> MySqlEndpoint:
        return MySqlEndpoint(port=self.port, user=user, password=password, database="mysql")


def write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it, valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connlease test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def as_root_if_root() -> list[str]:
    # mariadbd refuses to run as root unless told to (CI here runs as root).
    return ["--user=root"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    """A throwaway MariaDB with TLS on a free loopback port, stopped and removed after."""
    install, server = shutil.which("mariadb-install-db"), shutil.which("mariadbd")
    if install is None or server is None:
        pytest.skip("needs mariadb-install-db and mariadbd (Debian's mariadb-server)")
    folder = Path(tempfile.mkdtemp(prefix="connlease-tls-"))
    data = folder / "data"
    ca_file, cert, key = write_certificates(folder)
    subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *as_root_if_root(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            server,
            "--no-defaults",
            f"--datadir={data}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={folder / 's.sock'}",
            f"--pid-file={folder / 's.pid'}",
            f"--log-error={folder / 'error.log'}",
            "--innodb-buffer-pool-size=16M",
            "--skip-log-bin",
            f"--ssl-ca={ca_file}",
            f"--ssl-cert={cert}",
            f"--ssl-key={key}",
            *as_root_if_root(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        running = TlsServer(port, ca_file)
        deadline = time.monotonic() + 20
        while True:
            try:
                MySqlConnector(running.endpoint(), None)().close()
                break
            except DatabaseError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (folder / "error.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"the TLS MariaDB did not start:\n{log}")
                time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_require_ssl_refuses_the_app_user_without_tls_and_admits_it_with(
    tls_server: TlsServer,
) -> None:
    with closing(MySqlConnector(tls_server.endpoint(), None)()) as admin:
        ensure_app_user(admin, "connlease_app", NASTY_PASSWORD, "mysql", 2)
        with admin.cursor() as cursor:
            cursor.execute("SHOW GRANTS FOR 'connlease_app'@'%'")
            usage = cursor.fetchone()
    assert usage is not None
    assert "REQUIRE SSL" in usage[0]
    endpoint = tls_server.endpoint("connlease_app", NASTY_PASSWORD)

    with pytest.raises(DatabaseError) as refused:
        MySqlConnector(endpoint, None)()
    assert refused.value.code == ACCESS_DENIED

    tls = tls_context(str(tls_server.ca_file))
    with closing(MySqlConnector(endpoint, tls)()) as app, app.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        row = cursor.fetchone()
    assert row is not None
    assert row[1].startswith("TLS")


def test_the_app_user_can_drop_tls_where_the_server_has_none(tls_server: TlsServer) -> None:
    with closing(MySqlConnector(tls_server.endpoint(), None)()) as admin:
        ensure_app_user(admin, "connlease_local", NASTY_PASSWORD, "mysql", 1, require_ssl=False)

    MySqlConnector(tls_server.endpoint("connlease_local", NASTY_PASSWORD), None)().close()
