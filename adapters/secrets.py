"""Database logins: fixed (local), or from a Secrets Manager secret in the RDS format.

A secret is read once per execution environment and kept: reading it on every connect
would cost a Secrets Manager call per invocation. When it has been rotated meanwhile,
MySQL refuses the kept password (1045) and the connector asks for `refresh()`, once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from domain import ConnleaseError


class SecretUnavailable(ConnleaseError):
    """A database secret could not be read, or is not JSON with a username and password."""

    def __init__(self, secret_id: str, reason: str) -> None:
        super().__init__(f"database secret {secret_id} unusable: {reason}")
        self.secret_id = secret_id
        self.reason = reason


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(default="", repr=False)  # never in a log line or a traceback


class Credentials(Protocol):
    """Where a connector's login comes from."""

    def current(self) -> Login:
        """The login to connect with (read once, then kept)."""
        ...

    def refresh(self) -> Login:
        """The login read again, after the database refused the kept one."""
        ...


class FixedCredentials:
    """A login given up front (DB_USER/DB_PASSWORD): nothing to read again."""

    def __init__(self, login: Login) -> None:
        self._login = login

    def current(self) -> Login:
        return self._login

    def refresh(self) -> Login:
        return self._login


class SecretCredentials:
    """The login in a Secrets Manager secret: JSON with `username` and `password`, as RDS
    writes it (`host`, `port`, `dbname`, `engine` may be there too; DB_HOST, DB_PORT and
    DB_NAME say where to connect, so they are not read here)."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client  # a secretsmanager client; made on first use if lazy
        self.secret_id = secret_id
        self._login: Login | None = None
        self._lock = threading.Lock()  # threads of one environment read the secret once

    def current(self) -> Login:
        with self._lock:
            if self._login is None:
                self._login = self._read()
            return self._login

    def refresh(self) -> Login:
        with self._lock:
            self._login = self._read()
            return self._login

    def _read(self) -> Login:
        try:
            answer = self._client.get_secret_value(SecretId=self.secret_id)
        except ClientError as error:
            details = error.response.get("Error", {})
            code, message = details.get("Code", "error"), details.get("Message", "")
            raise SecretUnavailable(self.secret_id, f"{code}: {message}") from error
        except BotoCoreError as error:  # no region, no credentials, endpoint unreachable
            raise SecretUnavailable(self.secret_id, str(error)) from error
        return parse_login(self.secret_id, answer.get("SecretString"))


def parse_login(secret_id: str, text: object) -> Login:
    """A secret's JSON read into a Login; the error names what is missing, never a value."""
    if not isinstance(text, str):
        raise SecretUnavailable(secret_id, "it has no SecretString (a binary secret?)")
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise SecretUnavailable(secret_id, "its SecretString is not a JSON object")
    missing = [
        key
        for key in ("username", "password")
        if not isinstance(document.get(key), str) or not document[key]
    ]
    if missing:
        raise SecretUnavailable(
            secret_id, f"its JSON needs a non-empty string {' and '.join(missing)}"
        )
    return Login(document["username"], document["password"])
