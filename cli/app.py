"""What every command shares: the Typer app, where to act (profile, region, endpoint,
stack or table), one-line errors with the exit codes scripts rely on, and output."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console as Terminal
from typer.core import TyperGroup

from adapters.aws import AwsAccess, AwsSetupError
from adapters.cloudformation import StackNotUsable, stack_outputs
from adapters.mysql import DatabaseError, MySqlConnector, MySqlEndpoint
from adapters.secrets import SecretUnavailable
from domain import ConnleaseError, InvalidInput, StoreUnavailable, UnknownDatabase
from service.bootstrap import Console, build_console, operator_mysql

# Exit codes: 0 done, 1 refused or not found (or a service failed), 2 bad usage.
REFUSED = 1
BAD_USAGE = 2

# `--local`: the local stack as `make local` serves it (every service at one address).
LOCAL_ENDPOINT_URL = "http://127.0.0.1:4566"
LOCAL_REGION = "us-east-1"
LOCAL_TABLE = "connlease-leases"
LOCAL_CREDENTIALS = ("local", "local")
# ... and its MySQL, as `make local` and `make demo` reach it when no DB_* variable says
# otherwise (local/demo_setup.py's mysql_from_environment): 127.0.0.1:3306, root without a
# password, the database test. The local stack's functions log in as that user.
LOCAL_MYSQL = MySqlEndpoint(host="127.0.0.1", port=3306, user="root", password="", database="test")
# Where infra/README.md has the RDS certificate authorities fetched (for the functions' layer).
RDS_CA_BUNDLE = "layer/rds-global-bundle.pem"
NAMESPACE = "connlease"  # the template's POWERTOOLS_METRICS_NAMESPACE

# Names come from callers (a holder is any printable ASCII): never read as markup or emoji.
out = Terminal(highlight=False, markup=False, emoji=False)
err = Terminal(stderr=True, highlight=False, markup=False, emoji=False)
if not sys.stdout.isatty():
    # A pipe or a log file is not 80 columns wide: names an operator copies (a holder for
    # `release --holder`) must not be cut short.
    columns = os.environ.get("COLUMNS", "")
    out.width = int(columns) if columns.isdigit() else 200


class CliError(Exception):
    """A one-line answer and an exit code: what every failure of a command becomes."""

    def __init__(self, message: str, code: int = REFUSED) -> None:
        super().__init__(message)
        self.code = code


class OneLineErrors(TyperGroup):
    """Usage errors as one line (`connlease: error: ...`) and exit 2, not a boxed usage
    screen: scripts read the exit code, people the line. (Typer carries its own Click
    since 0.29; its errors are TyperExceptions with Click's exit codes.)"""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except typer.TyperException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # the help, as asked for
                typer.echo(error.format_message(), err=True)
            else:
                typer.echo(f"connlease: error: {_one_line(error.format_message())}", err=True)
            sys.exit(getattr(error, "exit_code", BAD_USAGE))
        except typer.Abort:
            typer.echo("connlease: stopped", err=True)
            sys.exit(REFUSED)
        sys.exit(code if isinstance(code, int) else 0)


def _one_line(message: str) -> str:
    return " ".join(message.split())


app = typer.Typer(
    name="connlease",
    cls=OneLineErrors,
    help="Operate connlease quotas: leases of MySQL connections for Lambda functions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

P = ParamSpec("P")
R = TypeVar("R")


def answering(command: Callable[P, R]) -> Callable[P, R]:
    """Every failure of a command as one line on stderr and its exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CliError as error:
            fail(str(error), error.code)
        except (InvalidInput, AwsSetupError) as error:
            fail(str(error), BAD_USAGE)
        except UnknownDatabase as error:
            fail(f"no quota for database {error.database!r} (connlease status lists them)")
        except StackNotUsable as error:
            fail(str(error))
        except (SecretUnavailable, DatabaseError) as error:
            fail(f"MySQL: {error}")
        except ConnleaseError as error:
            fail(str(error))

    return run


def fail(message: str, code: int = REFUSED) -> NoReturn:
    err.print(f"connlease: error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def confirm(question: str, refused: str) -> None:
    """Ask at the terminal; no answer (no terminal, end of input) is a no."""
    try:  # on stderr: stdout may be a JSON document's
        agreed = typer.confirm(question, default=False, err=True)
    except typer.Abort:  # end of input: no answer
        agreed = False
    if not sys.stdin.isatty():  # an answer piped in is not echoed: end the question's line
        typer.echo("", err=True)
    if not agreed:
        raise CliError(f"{refused} (--yes skips the question)", REFUSED)


def print_json(document: object) -> None:
    """JSON for scripts: plain stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


# Where to act: the same options on every command, after it or before its arguments.
Profile = Annotated[
    str | None,
    typer.Option(help="AWS profile (default: AWS_PROFILE, then the default profile)."),
]
Region = Annotated[
    str | None, typer.Option(help="AWS region (default: AWS_REGION, then the profile's).")
]
EndpointUrl = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        help="One endpoint for every AWS service (a local stack's).",
    ),
]
Local = Annotated[
    bool,
    typer.Option(
        "--local",
        help=f"The local stack (`make local`): {LOCAL_ENDPOINT_URL}, table {LOCAL_TABLE},"
        f" MySQL at {LOCAL_MYSQL.host}:{LOCAL_MYSQL.port} as {LOCAL_MYSQL.user} (the DB_*"
        " variables and --mysql-* options say otherwise).",
    ),
]
Stack = Annotated[
    str | None,
    typer.Option(
        envvar="CONNLEASE_STACK",
        help="A deployed connlease stack: its outputs name the tables and MySQL.",
    ),
]
Table = Annotated[
    str | None,
    typer.Option(envvar="LEASES_TABLE_NAME", help="The leases table, by name."),
]
Json = Annotated[bool, typer.Option("--json", help="JSON on stdout, for scripts.")]


@dataclass(frozen=True)
class Where:
    """Where a command acts, as its options say."""

    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    local: bool = False
    stack: str | None = None
    table: str | None = None
    # The console this command made, to name its table when DynamoDB has none by that name.
    _made: list[Console] = field(default_factory=list, init=False, repr=False, compare=False)

    def console(self) -> Console:
        endpoint = self.endpoint_url or (LOCAL_ENDPOINT_URL if self.local else None)
        aws = AwsAccess(
            self.profile,
            self.region or (LOCAL_REGION if self.local else None),
            endpoint,
            # The local stack's own keys, unless a profile is named: configured credentials
            # (an SSO session, a role to assume) would be refreshed against AWS for nothing.
            local_credentials=LOCAL_CREDENTIALS if self.local and not self.profile else None,
        )
        outputs = stack_outputs(aws.client("cloudformation"), self.stack) if self.stack else {}
        table = (
            self.table or outputs.get("LeasesTableName") or (LOCAL_TABLE if self.local else None)
        )
        if table is None:
            raise CliError(
                "say where the leases are: --stack NAME, --table NAME (or LEASES_TABLE_NAME),"
                " or --local",
                BAD_USAGE,
            )
        console = build_console(aws, table, outputs, NAMESPACE)
        self._made.append(console)
        return console

    def table_missing(self, error: StoreUnavailable) -> CliError | None:
        """DynamoDB's ResourceNotFoundException as the table it did not find, and how to
        name another; None for any other failure."""
        if not error.reason.startswith("ResourceNotFoundException") or not self._made:
            return None
        console = self._made[-1]
        at = console.dynamodb.meta.region_name or "no region"
        if console.aws.endpoint_url:
            at += f" at {console.aws.endpoint_url}"
        if self.table:
            named = "from --table or LEASES_TABLE_NAME"
        elif self.stack:
            named = f"from stack {self.stack}'s LeasesTableName output"
        else:
            named = "--local's: is `make local` serving there?"
        return CliError(
            f"no leases table {console.leases_table!r} in {at} ({named}): name it with"
            " --table NAME (or LEASES_TABLE_NAME) or --stack NAME, in its --region"
        )


# MySQL, for `set --percent` and `reconcile`: the options, else the functions' own DB_*
# variables, else the stack's outputs (its endpoint, and the secret RDS keeps).
MysqlHost = Annotated[
    str | None, typer.Option("--mysql-host", envvar="DB_HOST", help="MySQL host.")
]
MysqlPort = Annotated[
    int | None, typer.Option("--mysql-port", envvar="DB_PORT", help="MySQL port (3306).")
]
MysqlUser = Annotated[
    str | None,
    typer.Option("--mysql-user", envvar="DB_USER", help="MySQL user, without a secret (root)."),
]
MysqlPassword = Annotated[
    str | None,
    typer.Option(
        "--mysql-password",
        envvar="DB_PASSWORD",
        help="MySQL password, without a secret (better: DB_PASSWORD).",
        show_default=False,
    ),
]
MysqlSecret = Annotated[
    str | None,
    typer.Option(
        "--mysql-secret",
        envvar="DB_SECRET_ARN",
        help="A Secrets Manager secret with username and password (as RDS writes it).",
    ),
]
MysqlDatabase = Annotated[
    str | None, typer.Option("--mysql-database", envvar="DB_NAME", help="Schema (test).")
]
MysqlTls = Annotated[
    bool | None,
    typer.Option(
        "--mysql-tls/--no-mysql-tls",
        envvar="DB_TLS",
        help="Connect over TLS (default: with --stack, whose MySQL requires it).",
    ),
]
MysqlCaBundle = Annotated[
    str | None,
    typer.Option(
        "--mysql-ca-bundle",
        envvar="DB_CA_BUNDLE",
        help="CA certificates to verify MySQL's with: RDS's are not in the system's store"
        f" (default: {RDS_CA_BUNDLE} when it exists, as infra/README.md fetches it).",
    ),
]


@dataclass(frozen=True)
class MysqlOptions:
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    secret: str | None = None
    database: str | None = None
    tls: bool | None = None
    ca_bundle: str | None = None

    @property
    def login_user(self) -> str:
        """The user the command logs in as without a secret: on the local stack, the one
        its functions log in as too."""
        return self.user or LOCAL_MYSQL.user

    def connector(self, console: Console, local: bool = False) -> MySqlConnector:
        """A connector as these options, or else the stack's outputs, or else (`local`)
        the local stack's MySQL, say."""
        outputs = console.outputs
        host = self.host or outputs.get("DatabaseEndpoint") or (LOCAL_MYSQL.host if local else None)
        if not host:
            raise CliError(
                "say where MySQL is: --mysql-host (or DB_HOST), --stack, or --local", BAD_USAGE
            )
        port = self.port if self.port is not None else int(outputs.get("DatabasePort", "3306"))
        if not 1 <= port <= 65535:
            raise CliError(f"--mysql-port: must be from 1 to 65535, got {port}", BAD_USAGE)
        # What is not given, the local MariaDB's login fills in.
        endpoint = MySqlEndpoint(
            host=host,
            port=port,
            user=self.login_user,
            password=self.password or LOCAL_MYSQL.password,
            database=self.database or LOCAL_MYSQL.database,
        )
        secret = self.secret or (None if self.user else outputs.get("DatabaseSecretArn"))
        tls = self.tls if self.tls is not None else bool(outputs)
        ca_bundle = self.ca_bundle or (RDS_CA_BUNDLE if Path(RDS_CA_BUNDLE).is_file() else None)
        return operator_mysql(console.aws, endpoint, secret, tls, ca_bundle)


# The options that say where to act, and how to reach MySQL: every command that takes a
# `where: Where` (or `mysql: MysqlOptions`) parameter gets them instead, under these names.
WHERE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "profile": (Profile, None),
    "region": (Region, None),
    "endpoint_url": (EndpointUrl, None),
    "local": (Local, False),
    "stack": (Stack, None),
    "table": (Table, None),
}
MYSQL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "mysql_host": (MysqlHost, None),
    "mysql_port": (MysqlPort, None),
    "mysql_user": (MysqlUser, None),
    "mysql_password": (MysqlPassword, None),
    "mysql_secret": (MysqlSecret, None),
    "mysql_database": (MysqlDatabase, None),
    "mysql_tls": (MysqlTls, None),
    "mysql_ca_bundle": (MysqlCaBundle, None),
}


def acting(command: Callable[..., R]) -> Callable[..., R]:
    """The shared options where to act, given to the command as `where`; a table DynamoDB
    does not have, named as such."""

    @functools.wraps(command)
    def run(*args: Any, where: Where, **kwargs: Any) -> R:
        try:
            return command(*args, where=where, **kwargs)
        except StoreUnavailable as error:
            missing = where.table_missing(error)
            if missing is None:
                raise
            raise missing from error

    return _grouped("where", WHERE_OPTIONS, lambda values: Where(**values), run)


def on_mysql(command: Callable[..., R]) -> Callable[..., R]:
    """The shared MySQL options, given to the command as `mysql`."""
    return _grouped(
        "mysql",
        MYSQL_OPTIONS,
        lambda values: MysqlOptions(**{name[len("mysql_") :]: v for name, v in values.items()}),
        command,
    )


def _grouped(
    parameter: str,
    options: dict[str, tuple[Any, Any]],
    build: Callable[[dict[str, Any]], object],
    command: Callable[..., R],
) -> Callable[..., R]:
    """`command` with its `parameter` replaced, in the signature Typer reads, by `options`;
    called with the object `build` makes of their values."""
    signature = inspect.signature(command, eval_str=True)
    kept = [found for found in signature.parameters.values() if found.name != parameter]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in options.items()
    ]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> R:
        values = {name: kwargs.pop(name) for name in options}
        return command(*args, **kwargs, **{parameter: build(values)})

    run.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    return run
