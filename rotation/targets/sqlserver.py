"""Targets ``sqlserver-login`` and ``sqlserver-contained-user``: a SQL Server password, changed
through pyodbc and "ODBC Driver 18 for SQL Server" (Azure SQL Database, Azure SQL Managed
Instance, SQL Server).

Azure's Functions Python image installs unixODBC and ODBC Driver 18 and no other database
driver, and the Flex Consumption plan runs no custom image, so this target uses that driver
(the setting ``ROTATION_SQLSERVER_ODBC_DRIVER`` names it).

The ``rotation-target`` tag chooses the kind of principal:

- ``sqlserver-login``: a server login. ``ALTER LOGIN`` runs in ``master`` (Azure SQL Database
  accepts it nowhere else); logins are proven by logging in to the provider's database.
- ``sqlserver-contained-user``: a contained database user (a user with a password, Azure SQL
  Database's usual kind). ``ALTER USER`` runs in the provider's database, where the user lives.

Tags (validated here, without connecting):

- ``rotation-provider``: ``<host>[:<port>]/<database>``, port 1433 by default, e.g.
  ``myserver.database.windows.net/appdb``.
- ``rotation-credential``: the login or user name (a sysname: at most 128 UTF-16 code units,
  anything but control characters; the server quotes it).
- ``rotation-admin``: ``self`` (the login changes its own password and gives its current one as
  ``OLD_PASSWORD``), ``secret:<name>`` (another secret in the same vault whose value is the
  password of an admin login, named by that secret's own ``rotation-credential`` tag, holding
  ``ALTER ANY LOGIN``, or ``ALTER ANY USER`` in the database for contained users) or
  ``managed-identity`` (the hub's Entra token for ``https://database.windows.net/.default``,
  given to the driver as ``SQL_COPT_SS_ACCESS_TOKEN``; the identity needs the same permission).

T-SQL takes no variables for ``PASSWORD``, so the statement is built inside the server: one
batch whose bound parameters are the name and the values, quoted by ``QUOTENAME`` and run by
``sp_executesql``; nothing is pasted into SQL text here. ``QUOTENAME`` returns NULL past 128
characters; the batch then fails with its own error instead of running a NULL statement.

Every connection encrypts and verifies the server's certificate (``Encrypt=yes;
TrustServerCertificate=no``, not configurable); logins time out after 15 s and statements after
30 s. Connection pooling is off, so "log in afresh" means a new login.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyodbc

from rotation.errors import (
    AuthenticationFailed,
    InvalidRequest,
    RotationError,
    TargetError,
    TransientError,
)
from rotation.formats import Endpoint
from rotation.passwords import DATABASE_POLICY
from rotation.settings import Settings
from rotation.targets import TargetType
from rotation.targets.base import SecretValue, TargetSpec, TokenSource
from rotation.targets.logins import PasswordLogin, Principal, Purpose, check_admin, scrub
from rotation.targets.provider import NameRule, Provider, ProviderFormat

logger = logging.getLogger(__name__)

# A pooled connection would be handed back already authenticated, and "verify" would prove an
# old login instead of the new value. pyodbc reads this once, before its first connection.
pyodbc.pooling = False

KIND_LOGIN = "sqlserver-login"
KIND_CONTAINED_USER = "sqlserver-contained-user"
KINDS = (KIND_LOGIN, KIND_CONTAINED_USER)
DEFAULT_PORT = 1433
LOGIN_TIMEOUT_SECONDS = 15
QUERY_TIMEOUT_SECONDS = 30
LOGIN_SETTLE_SECONDS = 60.0
# sysname is nvarchar(128): 128 UTF-16 code units. QUOTENAME returns NULL for longer input.
MAX_SYSNAME = 128
# Azure SQL Database takes ALTER LOGIN only in master.
LOGIN_DATABASE = "master"
ENTRA_SCOPE = "https://database.windows.net/.default"
# msodbcsql.h: the pre-connect attribute that carries an Entra access token.
SQL_COPT_SS_ACCESS_TOKEN = 1256
APPLICATION_NAME = "keyvault-rotation-hub"
DRIVER_SETTING = "ROTATION_SQLSERVER_ODBC_DRIVER"

# 32 characters of all four classes: well inside SQL Server's rules for CHECK_POLICY logins and
# Azure SQL's (8 to 128 characters, three of the four categories).
PASSWORD_POLICY = DATABASE_POLICY


# -- the statements: constants, every value a bound parameter -----------------------------------


def _alter(principal: str, *, own: bool) -> str:
    old = " + N' OLD_PASSWORD = N' + QUOTENAME(?, N'''')" if own else ""
    return (
        "SET NOCOUNT ON;\n"
        f"DECLARE @sql nvarchar(max) = N'ALTER {principal} ' + QUOTENAME(?)"
        f" + N' WITH PASSWORD = N' + QUOTENAME(?, N''''){old};\n"
        "IF @sql IS NULL\n"
        "    THROW 50000, N'A name or password is longer than 128 characters; QUOTENAME refused it.', 1;\n"
        "EXEC sys.sp_executesql @sql;"
    )


#: ``(kind, own)`` -> the batch. Parameters: the name, the new value, and (own) the current one.
STATEMENTS: dict[tuple[str, bool], str] = {
    (KIND_LOGIN, False): _alter("LOGIN", own=False),
    (KIND_LOGIN, True): _alter("LOGIN", own=True),
    (KIND_CONTAINED_USER, False): _alter("USER", own=False),
    (KIND_CONTAINED_USER, True): _alter("USER", own=True),
}
CHECK_STATEMENT = "SELECT 1"


# -- validation (no connection) ---------------------------------------------------------------


#: sysname is nvarchar(128): 128 UTF-16 code units (QUOTENAME returns NULL for longer input).
SYSNAME = NameRule("SQL Server", max_utf16_units=MAX_SYSNAME)
PROVIDER = ProviderFormat(
    default_port=DEFAULT_PORT, example="myserver.database.windows.net:1433/appdb", database=SYSNAME
)
parse_provider = PROVIDER.parse


def check_sysname(value: str, *, what: str, tag: str) -> None:
    """Raises InvalidRequest naming ``tag`` when ``value`` cannot be a SQL Server name: any
    character but control characters (the server quotes names), at most 128 UTF-16 code units."""
    SYSNAME.check(value, what=what, tag=tag)


def validate(spec: TargetSpec) -> None:
    """Check the provider, credential and admin tags of a ``sqlserver-login`` or
    ``sqlserver-contained-user`` secret.

    Raises:
        InvalidRequest: a tag is malformed or asks for something unsupported; names the tag.
    """
    if spec.kind not in KINDS:
        raise InvalidRequest(f"rotation-target {spec.kind!r} is not one of {KINDS}")
    parse_provider(spec.provider)
    what = "login name" if spec.kind == KIND_LOGIN else "user name"
    check_sysname(spec.credential, what=what, tag="rotation-credential")
    check_admin(spec)


# -- the driver's side: connection string and access token -------------------------------------


def access_token_struct(token: str) -> bytes:
    """The ``ACCESSTOKEN`` struct ``SQL_COPT_SS_ACCESS_TOKEN`` points to: the token's UTF-16-LE
    bytes, prefixed by their byte count as a 4-byte little-endian unsigned integer (no
    terminator counted)."""
    data = token.encode("utf-16-le")
    return struct.pack("<I", len(data)) + data


def _braced(value: str, *, field: str) -> str:
    """``{value}`` with ``}`` doubled: the ODBC form in which ``;``, ``=``, spaces and braces are
    data. Raises TargetError for NUL, which would end the whole connection string early."""
    if "\x00" in value:
        raise TargetError(f"the {field} for the connection string contains a NUL character")
    return "{" + value.replace("}", "}}") + "}"


def connection_string(
    *, driver: str, provider: Provider, database: str, uid: str | None = None, pwd: str | None = None
) -> str:
    """The ODBC Driver 18 connection string; it holds ``pwd`` when given, so it is never logged.

    ``Server=tcp:<host>,<port>``: the protocol prefix ends at the first colon and the port follows
    a comma, so an IPv6 address goes in bare (``tcp:2001:db8::1,1433``). With a token, ``uid`` and
    ``pwd`` are left out: the driver refuses a token together with UID, PWD or Authentication.
    The login timeout is set as ``SQL_ATTR_LOGIN_TIMEOUT`` (pyodbc's ``timeout``), which every
    version of the driver honours; the keyword form exists only from 18.7 on.

    Raises:
        TargetError: a value holds a NUL character.
    """
    parts = [
        f"Driver={_braced(driver, field=DRIVER_SETTING)}",
        f"Server=tcp:{provider.host},{provider.port}",
        f"Database={_braced(database, field='database')}",
    ]
    if uid is not None:
        parts.append(f"UID={_braced(uid, field='login name')}")
        parts.append(f"PWD={_braced(pwd or '', field='password')}")
    parts += ["Encrypt=yes", "TrustServerCertificate=no", f"APP={APPLICATION_NAME}"]
    return ";".join(parts) + ";"


class _Cursor(Protocol):
    def execute(self, sql: str, *params: Any) -> object: ...

    def fetchone(self) -> object: ...

    def close(self) -> None: ...


class _Connection(Protocol):
    timeout: int

    def cursor(self) -> _Cursor: ...

    def close(self) -> None: ...


class Connect(Protocol):
    """What the engine calls to open a connection: ``pyodbc.connect``'s signature."""

    def __call__(
        self,
        connstring: str,
        /,
        *,
        autocommit: bool = False,
        timeout: int = 0,
        attrs_before: dict[int, int | bytes | bytearray | str | Sequence[str]] | None = None,
    ) -> _Connection: ...


# -- the engine ---------------------------------------------------------------------------------


class _Session:
    def __init__(self, conn: _Connection, engine: SqlServerEngine):
        self._conn = conn
        self._engine = engine

    def check(self) -> None:
        cursor = self._conn.cursor()
        try:
            cursor.execute(CHECK_STATEMENT)
            cursor.fetchone()
        finally:
            cursor.close()

    def compare_logins(self, first: str, second: str) -> list[str]:
        raise TargetError("rotation-strategy 'alternating' is not supported for SQL Server")

    def set_password(self, new: SecretValue, *, current: SecretValue | None) -> None:
        statement = STATEMENTS[(self._engine.kind, current is not None)]
        params = [self._engine.login, new.reveal()]
        if current is not None:
            params.append(current.reveal())
        cursor = self._conn.cursor()
        try:
            cursor.execute(statement, *params)
        finally:
            cursor.close()


class SqlServerEngine:
    """One login or contained user on one server (see ``rotation.targets.logins.Engine``).

    ``connect`` opens connections (``pyodbc.connect`` unless a test gives a stand-in);
    ``settle_seconds`` overrides how long verify waits for a new password to be accepted.
    """

    def __init__(
        self,
        spec: TargetSpec,
        settings: Settings,
        *,
        connect: Connect = pyodbc.connect,
        login_timeout: int = LOGIN_TIMEOUT_SECONDS,
        query_timeout: int = QUERY_TIMEOUT_SECONDS,
        settle_seconds: float | None = None,
    ) -> None:
        validate(spec)
        self.kind = spec.kind
        self.provider = parse_provider(spec.provider)
        self.login = spec.credential
        if self.kind == KIND_LOGIN:
            self.what = f"login {self.login!r} on {self.provider}"
        else:
            self.what = f"contained user {self.login!r} in {self.provider}"
        # Azure SQL Database caches logins in each database and refreshes that cache now and
        # then: a server login's new password may be refused there for a while. Contained users
        # live in their database and are current at once.
        if settle_seconds is None:
            settle_seconds = LOGIN_SETTLE_SECONDS if self.kind == KIND_LOGIN else 0.0
        self.settle_seconds = settle_seconds
        self.driver = settings.sqlserver_odbc_driver
        if not self.driver.strip() or any(ord(ch) < 32 for ch in self.driver):
            raise TargetError(f"{DRIVER_SETTING} {self.driver!r} is not an ODBC driver name")
        self._connect = connect
        self._login_timeout = login_timeout
        self._query_timeout = query_timeout

    def database(self, purpose: Purpose) -> str:
        """Where a session of ``purpose`` connects: ``master`` to change a server login, the
        provider's database for everything else."""
        return LOGIN_DATABASE if self.kind == KIND_LOGIN and purpose == "change" else self.provider.database

    @contextlib.contextmanager
    def session(
        self, principal: Principal, *, purpose: Purpose, hide: tuple[SecretValue, ...]
    ) -> Iterator[_Session]:
        hide = (principal.secret, *hide)
        who = principal.description if principal.token else repr(principal.login)
        database = self.database(purpose)
        attrs: dict[int, int | bytes | bytearray | str | Sequence[str]] | None = None
        if principal.token:
            attrs = {SQL_COPT_SS_ACCESS_TOKEN: access_token_struct(principal.secret.reveal())}
            text = connection_string(driver=self.driver, provider=self.provider, database=database)
        else:
            text = connection_string(
                driver=self.driver,
                provider=self.provider,
                database=database,
                uid=principal.login,
                pwd=principal.secret.reveal(),
            )
        try:
            conn = self._connect(text, autocommit=True, timeout=self._login_timeout, attrs_before=attrs)
        except pyodbc.Error as exc:
            # "from None": the driver's exception is replaced by one whose text has been scrubbed.
            raise _connect_error(exc, f"logging in as {who} to {self.provider} ({database})", hide) from None
        try:
            conn.timeout = self._query_timeout
            yield _Session(conn, self)
        except pyodbc.Error as exc:
            doing = "changing the password of" if purpose == "change" else "checking"
            raise _statement_error(exc, f"{doing} {self.what} as {who}", hide) from None
        finally:
            with contextlib.suppress(pyodbc.Error):
                conn.close()

    def identity_principal(self, token: TokenSource) -> Principal:
        return Principal("", token(ENTRA_SCOPE), description="the hub's managed identity", token=True)

    def check_admin_login(self, name: str, *, tag: str) -> None:
        check_sysname(name, what="login name", tag=tag)


# -- errors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """What a ``pyodbc.Error`` says: the first SQLSTATE, every record's native error number, and
    the text. pyodbc's message is ``[<SQLSTATE>] <text> (<native>) (<function>)``; on Windows
    further records follow after ``; `` (on Linux and macOS pyodbc reads only the first)."""

    sqlstate: str
    natives: tuple[int, ...]
    text: str


_RECORD = re.compile(
    r"\[(?P<state>[0-9A-Z]{5})\] .*? \((?P<native>-?\d+)\)(?=(?: \(\w+\))?(?:; \[|$))", re.DOTALL
)


def diagnose(exc: pyodbc.Error, hide: tuple[SecretValue, ...] = ()) -> Diagnosis:
    """The SQLSTATE, native numbers and scrubbed text of a driver error."""
    args = exc.args
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        state, message = args[0], args[1]
    else:
        state, message = "", " ".join(str(a) for a in args)
    natives = tuple(int(m["native"]) for m in _RECORD.finditer(message))
    return Diagnosis(sqlstate=state, natives=natives, text=scrub(message, hide))


# Login refused: failed (18456), password expired (18487) or to be changed (18488), login
# disabled (18470), locked out (18486), untrusted domain (18452).
_REFUSED = frozenset({18456, 18487, 18488, 18470, 18486, 18452})
# What passes: the database is unavailable (4060, also during failover; a database the login
# may not open says the same, and is told apart by no one), Azure SQL's reconfiguration,
# throttling and resource errors, deadlocks and lock timeouts, and the drivers' network
# errors (10053/10054/10060 reset and timed out, 10057/10061 not connected and refused,
# 233/64 broken pipes, 258 wait timeout, 997 overlapped I/O). Microsoft.Data.SqlClient's
# default transient list, plus the ones the Linux driver reports.
_TRANSIENT = frozenset(
    {
        4060,
        4221,
        40143,
        40197,
        40501,
        40540,
        40613,
        42108,
        42109,
        49918,
        49919,
        49920,
        10928,
        10929,
        1204,
        1205,
        1222,
        10053,
        10054,
        10057,
        10060,
        10061,
        233,
        64,
        258,
        997,
    }
)
# Communication link failure, unable to connect, timeouts (login and query), deadlock.
_TRANSIENT_STATES = frozenset({"08S01", "08001", "HYT00", "HYT01", "40001"})
# The server's password policy: too recent (15114), cannot be used (15115), too short (15116),
# too long (15117), not complex enough (15118), in history (15119).
_POLICY = frozenset({15114, 15115, 15116, 15117, 15118, 15119})
_NO_SUCH_PRINCIPAL = 15151  # "does not exist or you do not have permission"
_NO_PERMISSION = frozenset({15247, 229, 300, 916})
_TOO_LONG = 50000  # the batch's own THROW: QUOTENAME returned NULL
# The driver manager cannot find or load the driver: IM002/IM003, or unixODBC's 01000.
_NO_DRIVER_STATES = frozenset({"IM002", "IM003"})
_TLS = re.compile(
    r"SSL Provider|SSL routines|certificate|\bTLS\b|\bSSL\b|encryption not supported|does not support encryption",
    re.IGNORECASE,
)


def _connect_error(exc: pyodbc.Error, where: str, hide: tuple[SecretValue, ...]) -> RotationError:
    d = diagnose(exc, hide)
    codes = f"[{d.sqlstate} {','.join(map(str, d.natives)) or '-'}]"
    if d.sqlstate in _NO_DRIVER_STATES or "can't open lib" in d.text.lower():
        return TargetError(
            f"{where} failed: the ODBC driver named by {DRIVER_SETTING} is not installed or cannot be "
            f"loaded {codes}: {d.text}"
        )
    # Numbers first: the text holds names (a login may be called "TLS"), the numbers do not.
    if any(n in _TRANSIENT for n in d.natives):
        return TransientError(f"{where} failed {codes}: {d.text}")
    if any(n in _REFUSED for n in d.natives) or d.sqlstate == "28000":
        return AuthenticationFailed(f"{where} was refused {codes}: {d.text}")
    if _TLS.search(d.text):
        # A certificate that does not verify, or a server that will not encrypt: retrying
        # changes neither, and turning verification off is not an option this hub offers.
        return TargetError(f"{where} failed: TLS could not be set up {codes}: {d.text}")
    if d.sqlstate in _TRANSIENT_STATES:
        return TransientError(f"{where} failed {codes}: {d.text}")
    return TargetError(f"{where} failed {codes}: {d.text}")


def _statement_error(exc: pyodbc.Error, where: str, hide: tuple[SecretValue, ...]) -> RotationError:
    d = diagnose(exc, hide)
    codes = f"[{d.sqlstate} {','.join(map(str, d.natives)) or '-'}]"
    if any(n in _TRANSIENT for n in d.natives) or d.sqlstate in _TRANSIENT_STATES:
        return TransientError(f"{where} failed {codes}: {d.text}")
    if _NO_SUCH_PRINCIPAL in d.natives:
        return TargetError(
            f"{where} failed: the principal does not exist, or the session may not alter it (an admin "
            f"needs ALTER ANY LOGIN, or ALTER ANY USER for contained users) {codes}: {d.text}"
        )
    if any(n in _NO_PERMISSION for n in d.natives):
        return TargetError(f"{where} is not permitted {codes}: {d.text}")
    if any(n in _POLICY for n in d.natives):
        return TargetError(
            f"{where} failed: the server's password policy refuses the value {codes}: {d.text}"
        )
    if _TOO_LONG in d.natives:
        return TargetError(f"{where} failed: a name or value is over 128 characters {codes}: {d.text}")
    return TargetError(f"{where} failed {codes}: {d.text}")


def build(spec: TargetSpec, settings: Settings) -> PasswordLogin:
    """Raises InvalidRequest when the spec's tags are malformed, TargetError when the driver
    setting is."""
    return PasswordLogin(spec, SqlServerEngine(spec, settings))


def endpoint(spec: TargetSpec) -> Endpoint:
    """Where a login of ``spec`` connects (for values that carry it: rotation/formats)."""
    where = parse_provider(spec.provider)
    return Endpoint(engine="sqlserver", host=where.host, port=where.port, database=where.database)


TARGET_TYPE_LOGIN = TargetType(
    name=KIND_LOGIN, build=build, password_policy=PASSWORD_POLICY, validate=validate, endpoint=endpoint
)
TARGET_TYPE_CONTAINED_USER = TargetType(
    name=KIND_CONTAINED_USER,
    build=build,
    password_policy=PASSWORD_POLICY,
    validate=validate,
    endpoint=endpoint,
)
TARGET_TYPES = (TARGET_TYPE_LOGIN, TARGET_TYPE_CONTAINED_USER)
