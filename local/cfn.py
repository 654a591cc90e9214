"""Local stand-ins for CloudFormation's side of a custom resource: the event it sends the
function, and the pre-signed S3 URL that the function PUTs its response to.

crhelper sends the response with `http.client.HTTPSConnection`, whatever the URL's
scheme says (crhelper/utils.py), as a PUT with an empty content-type, verifying the
server with `ssl.create_default_context()`. So the catcher speaks TLS with a throwaway
self-signed certificate, one per process, and a sender must trust it: SSL_CERT_FILE
pointing at a bundle of that certificate and the CA file trusted before
(`trust_environment()`). A started catcher sets that in this process's environment, so
handlers run in-process and the local Lambda's execution environments started from here
on (they inherit it) can answer; being one certificate per process, later catchers are
trusted by warm environments too.
Beware: crhelper retries an unsent response forever (5 tries, a pause, again), so a
sender that cannot reach or trust the catcher hangs rather than fails.
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from local.context import LOCAL_ACCOUNT, LOCAL_REGION
from local.server import LoopbackService

RequestType = Literal["Create", "Update", "Delete"]

RESOURCE_TYPE = "Custom::ConnleaseSeed"
LOGICAL_ID = "SeedDatabase"
SEEDER = "connlease-seeder"
# One local stack per process: the events of a resource's life share its StackId.
LOCAL_STACK_ID = (
    f"arn:aws:cloudformation:{LOCAL_REGION}:{LOCAL_ACCOUNT}:stack/connlease-local/{uuid.uuid4()}"
)
_PATH_PREFIX = "/cfn-responses/"
HANDSHAKE_TIMEOUT_S = 10.0


def custom_resource_event(
    request_type: RequestType,
    properties: Mapping[str, Any],
    response_url: str,
    physical_id: str | None = None,
    old_properties: Mapping[str, Any] | None = None,
    *,
    stack_id: str = LOCAL_STACK_ID,
    function_name: str = SEEDER,
) -> dict[str, Any]:
    """The event CloudFormation sends a Lambda-backed custom resource.

    Property values arrive as CloudFormation passes them: numbers and booleans become
    strings, and ServiceToken is added. Update and Delete name the resource's physical id,
    and an Update carries the properties it had (the new ones unless `old_properties`).
    """
    if request_type not in ("Create", "Update", "Delete"):
        raise ValueError(f"request_type must be Create, Update or Delete, got {request_type!r}")
    if request_type != "Create" and physical_id is None:
        raise ValueError(f"a {request_type} event names the resource's physical_id")
    if request_type != "Update" and old_properties is not None:
        raise ValueError("only an Update event has old_properties")
    token = f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{function_name}"
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": token,
        "ResponseURL": response_url,
        "StackId": stack_id,
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": LOGICAL_ID,
        "ResourceType": RESOURCE_TYPE,
        "ResourceProperties": {"ServiceToken": token} | as_passed(properties),
    }
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    if request_type == "Update":
        old = properties if old_properties is None else old_properties
        event["OldResourceProperties"] = {"ServiceToken": token} | as_passed(old)
    return event


def as_passed(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Property values as CloudFormation hands them to a custom resource: scalars as
    strings, lists and maps kept, and absent (None, i.e. AWS::NoValue) keys left out."""
    return {key: _stringify(value) for key, value in properties.items() if value is not None}


def _stringify(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, Mapping):
        return as_passed(value)
    if isinstance(value, list | tuple):
        return [_stringify(item) for item in value]
    raise TypeError(f"CloudFormation cannot pass a {type(value).__name__} as a property")


@dataclass(frozen=True)
class CaughtResponse:
    """One response PUT: the name in its URL, its parsed body and its content-type."""

    name: str
    body: dict[str, Any]
    content_type: str | None


class ResponseCatcher(LoopbackService):
    """A loopback HTTPS server that accepts the PUTs custom resources send to their
    ResponseURL, as S3 does for CloudFormation, and keeps each body in arrival order."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, export_trust: bool = True
    ) -> None:
        self._host, self._port = host, port
        self._export_trust = export_trust
        self._caught: list[CaughtResponse] = []
        self._problems: list[str] = []
        self._arrived = threading.Condition()

    @property
    def endpoint_url(self) -> str:
        return self._url("response catcher", scheme="https")

    @property
    def ca_file(self) -> str:
        """The catcher's self-signed certificate (PEM): the one thing a sender must trust."""
        return str(_local_tls(self._host).cert)

    def trust_environment(self) -> dict[str, str]:
        """Environment under which `ssl.create_default_context()` (so crhelper) trusts the
        catcher as well as everything it trusted before."""
        return {"SSL_CERT_FILE": str(_local_tls(self._host).bundle)}

    def url_for(self, name: str) -> str:
        """A ResponseURL for one request, shaped like CloudFormation's pre-signed S3 URL."""
        return (
            f"{self.endpoint_url}{_PATH_PREFIX}{quote(name, safe='')}"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=7200"
        )

    @property
    def responses(self) -> list[dict[str, Any]]:
        """Every response body received so far, in order."""
        with self._arrived:
            return [caught.body for caught in self._caught]

    @property
    def caught(self) -> list[CaughtResponse]:
        with self._arrived:
            return list(self._caught)

    def responses_for(self, name: str) -> list[dict[str, Any]]:
        with self._arrived:
            return [caught.body for caught in self._caught if caught.name == name]

    @property
    def problems(self) -> list[str]:
        """Requests the catcher refused, and TLS handshakes that failed."""
        with self._arrived:
            return list(self._problems)

    def wait_for(
        self, count: int, timeout_s: float = 10.0, name: str | None = None
    ) -> list[dict[str, Any]]:
        """The first `count` responses (to `name`'s URL, if given), once they have arrived."""

        def arrived() -> list[dict[str, Any]]:
            return [c.body for c in self._caught if name is None or c.name == name]

        with self._arrived:
            if not self._arrived.wait_for(lambda: len(arrived()) >= count, timeout_s):
                problems = "; ".join(self._problems) or "none"
                raise TimeoutError(
                    f"{len(arrived())} of {count} custom resource responses arrived "
                    f"within {timeout_s} s (problems: {problems})"
                )
            return arrived()[:count]

    def start(self) -> str:
        files = _local_tls(self._host)
        if self._export_trust:
            # Kept after stop(): environments started meanwhile still answer later catchers.
            os.environ.update(self.trust_environment())
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(files.cert, files.key)
        self._serve(
            _TlsServer((self._host, self._port), _handler_for(self), tls), "cfn-response-catcher"
        )
        return self.endpoint_url

    def _keep(self, caught: CaughtResponse) -> None:
        with self._arrived:
            self._caught.append(caught)
            self._arrived.notify_all()

    def _note(self, problem: str) -> None:
        with self._arrived:
            self._problems.append(problem)
            self._arrived.notify_all()


@dataclass(frozen=True)
class _TlsFiles:
    key: Path
    cert: Path
    bundle: Path  # cert + the CA file trusted before: what SSL_CERT_FILE points at


@cache
def _local_tls(host: str) -> _TlsFiles:
    """The catchers' key and certificate for `host`: made once per process, in a private
    temporary directory removed at exit."""
    directory = Path(tempfile.mkdtemp(prefix="connlease-cfn-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    files = _TlsFiles(
        directory / "catcher.key", directory / "catcher.pem", directory / "bundle.pem"
    )
    _write_self_signed(host, files.key, files.cert)
    files.bundle.write_text(files.cert.read_text() + _default_trusted_pem(files.bundle))
    return files


def _write_self_signed(host: str, key_file: Path, cert_file: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connlease local cfn responses")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
                if _is_ip(host)
                else [x509.DNSName(host)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _default_trusted_pem(ours: Path) -> str:
    """The CA file OpenSSL trusts by default now (SSL_CERT_FILE or its built-in path)."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).is_file() and Path(cafile) != ours:
        return "\n" + Path(cafile).read_text()
    return ""


class _TlsServer(ThreadingHTTPServer):
    """TLS on accepted sockets; the handshake runs on the request's thread, so a client
    that never completes one cannot stall the server."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext,
    ) -> None:
        self._tls = tls
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        return (
            self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False),
            address,
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, ssl.SSLError | ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


def _handler_for(catcher: ResponseCatcher) -> type[BaseHTTPRequestHandler]:
    class ResponseHandler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, closed after the answer, like crhelper uses it.
        timeout = HANDSHAKE_TIMEOUT_S

        def setup(self) -> None:
            self.request.settimeout(self.timeout)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as error:
                catcher._note(f"TLS handshake from {self.client_address[0]} failed: {error}")
                raise
            super().setup()

        def do_PUT(self) -> None:
            path = urlsplit(self.path).path
            if not path.startswith(_PATH_PREFIX):
                self._refuse(HTTPStatus.NOT_FOUND, f"PUT to {path}: not a response URL")
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw)
            except ValueError:
                self._refuse(HTTPStatus.BAD_REQUEST, f"PUT to {path}: body is not JSON")
                return
            if not isinstance(body, dict):
                self._refuse(HTTPStatus.BAD_REQUEST, f"PUT to {path}: body is not an object")
                return
            name = unquote(path.removeprefix(_PATH_PREFIX))
            catcher._keep(CaughtResponse(name, body, self.headers.get("Content-Type")))
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self._not_put()

        def do_POST(self) -> None:
            self._not_put()

        def _not_put(self) -> None:
            self._refuse(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} {self.path}: only PUT is accepted"
            )

        def _refuse(self, status: HTTPStatus, problem: str) -> None:
            catcher._note(problem)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log in test and demo output

    return ResponseHandler
