"""The sqlserver-login and sqlserver-contained-user targets, without a server.

What is real: the module's tag validation, connection strings, token struct, error
classification and statements; ``PasswordLogin`` (the shared apply / verify / revert protocol);
``pyodbc.Error`` itself, built the way pyodbc builds it on Linux (``(sqlstate, "[<state>] <text>
(<native>) (<function>)")``, the first diagnostic record only) with texts in the real drivers'
formats (ODBC Driver 18's as public issue threads quote them, the server's messages as Microsoft
documents them; FreeTDS's recorded from tdsodbc 1.3.17 on this machine).

What stands in: the SQL Server. No SQL Server runs on this machine and none installs from the
reachable registries, so ``FakeServer`` is handed to the engine through its one seam, the
``connect`` callable that is ``pyodbc.connect`` in production. It records every connection
(the connection string, parsed back with the ODBC rules; ``attrs_before``; timeouts) and every
statement with its bound parameters, and it plays a server's part only as far as these tests
need: it accepts a login whose password matches, accepts the hub's token, and runs the
password batch the way SQL Server would (``QUOTENAME`` with its 128-character NULL, the
concatenation, then the ``ALTER LOGIN`` / ``ALTER USER`` it produced, with SQL Server's
permission rules: a login may change its own password with the right ``OLD_PASSWORD``, an admin
anyone's, ``ALTER LOGIN`` only in master). The real server's behaviour is what
tests/integration/test_sqlserver_live.py checks when one is available; the real driver stack is
what tests/integration/test_sqlserver_driver.py checks with FreeTDS.
"""

from __future__ import annotations

import logging
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pyodbc
import pytest

from rotation.errors import (
    AuthenticationFailed,
    InvalidRequest,
    RotationError,
    TargetError,
    TransientError,
    UndoImpossible,
    VerificationFailed,
)
from rotation.passwords import generate
from rotation.settings import Settings
from rotation.targets import target_type
from rotation.targets.base import AdminSpec, Credentials, SecretValue, TargetSpec
from rotation.targets.logins import PasswordLogin, Principal
from rotation.targets.provider import Provider
from rotation.targets.sqlserver import (
    ENTRA_SCOPE,
    KIND_CONTAINED_USER,
    KIND_LOGIN,
    LOGIN_TIMEOUT_SECONDS,
    QUERY_TIMEOUT_SECONDS,
    SQL_COPT_SS_ACCESS_TOKEN,
    STATEMENTS,
    TARGET_TYPE_CONTAINED_USER,
    TARGET_TYPE_LOGIN,
    SqlServerEngine,
    access_token_struct,
    check_sysname,
    connection_string,
    parse_provider,
)

SETTINGS = Settings.from_environ({})
KINDS = (KIND_LOGIN, KIND_CONTAINED_USER)
DRIVER18 = "[Microsoft][ODBC Driver 18 for SQL Server]"


def spec(
    kind: str = KIND_LOGIN,
    provider: str = "myserver.database.windows.net/appdb",
    credential: str = "app",
    admin: AdminSpec | None = None,
) -> TargetSpec:
    return TargetSpec(kind, provider, credential, admin or AdminSpec("self"))


# -- tags -----------------------------------------------------------------------------------------


def test_both_kinds_are_registered_from_one_module() -> None:
    assert target_type(KIND_LOGIN) is TARGET_TYPE_LOGIN
    assert target_type(KIND_CONTAINED_USER) is TARGET_TYPE_CONTAINED_USER
    for kind in KINDS:
        policy = target_type(kind).password_policy
        # Azure SQL: 8 to 128 characters from three of four categories; the policy requires all four.
        assert 8 <= policy.length <= 128
        assert len(policy.required) == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("myserver.database.windows.net/appdb", Provider("myserver.database.windows.net", 1433, "appdb")),
        (
            "mi.public.abc123.database.windows.net:3342/app",
            Provider("mi.public.abc123.database.windows.net", 3342, "app"),
        ),
        ("127.0.0.1:14330/master", Provider("127.0.0.1", 14330, "master")),
        ("[2001:db8::1]/appdb", Provider("2001:db8::1", 1433, "appdb")),
        (
            "db.example.com/my db;with {odd} 'chars'",
            Provider("db.example.com", 1433, "my db;with {odd} 'chars'"),
        ),
        ("db.example.com/" + "d" * 128, Provider("db.example.com", 1433, "d" * 128)),
    ],
)
def test_valid_providers(value: str, expected: Provider) -> None:
    assert parse_provider(value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("myserver.database.windows.net", "names no database"),
        ("sqlserver://db.example.com/app", "is a URL"),
        ("Server=tcp:db,1433;Database=app", "is not a host name"),
        ("tcp:db.example.com,1433/app", "port"),
        ("db.example.com:0/app", "port '0'"),
        ("[fe80::1%eth0]/app", "scope ids"),
        ("db.example.com/" + "d" * 129, "129 UTF-16 code units"),
        ("db.example.com/a\x00b", "control characters"),
    ],
)
def test_invalid_providers_name_the_tag(value: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_provider(value)
    assert "rotation-provider" in str(err.value)
    assert why in str(err.value)


HOSTILE_NAMES = [
    "app",
    "it's",
    'say "hi"',
    "]; DROP LOGIN sa; --",
    "[bracketed]",
    "brace}{name",
    "semi;colon=equals",
    "back\\slash",
    "ünï cødé",
    "x" * 128,
    "\U0001f600" * 64,  # 128 UTF-16 code units
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_accepted(kind: str, name: str) -> None:
    target_type(kind).validate(spec(kind, credential=name))


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("x" * 129, "129 UTF-16 code units"),
        ("\U0001f600" * 65, "130 UTF-16 code units"),  # 65 characters, but sysname counts UTF-16
        ("", "empty"),
        (" app", "whitespace"),
        ("a\nb", "control characters"),
    ],
)
def test_invalid_names_name_the_tag(name: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        TARGET_TYPE_LOGIN.validate(spec(credential=name))
    assert "rotation-credential" in str(err.value)
    assert why in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_admin_modes(kind: str) -> None:
    validate = target_type(kind).validate
    validate(spec(kind, admin=AdminSpec("self")))
    validate(spec(kind, admin=AdminSpec("secret", "sql-admin")))
    validate(spec(kind, admin=AdminSpec("managed-identity")))
    with pytest.raises(InvalidRequest, match="names no secret"):
        validate(spec(kind, admin=AdminSpec("secret")))
    with pytest.raises(InvalidRequest, match="'kerberos' is not supported"):
        validate(spec(kind, admin=AdminSpec("kerberos")))


def test_build_validates_and_checks_the_driver_setting() -> None:
    assert isinstance(TARGET_TYPE_LOGIN.build(spec(), SETTINGS), PasswordLogin)
    with pytest.raises(InvalidRequest, match="rotation-provider"):
        TARGET_TYPE_LOGIN.build(spec(provider="nowhere"), SETTINGS)
    # An empty setting means the default ("ODBC Driver 18 for SQL Server"); a control character
    # cannot be part of a driver's name.
    assert Settings.from_environ({"ROTATION_SQLSERVER_ODBC_DRIVER": " "}).sqlserver_odbc_driver == (
        "ODBC Driver 18 for SQL Server"
    )
    for bad in ("ODBC\nDriver", "FreeTDS\x00"):
        with pytest.raises(TargetError, match="ROTATION_SQLSERVER_ODBC_DRIVER"):
            TARGET_TYPE_LOGIN.build(spec(), Settings.from_environ({"ROTATION_SQLSERVER_ODBC_DRIVER": bad}))


def test_admin_login_names_are_checked_with_their_tag() -> None:
    check_sysname("rotator", what="login name", tag="rotation-credential of 'sql-admin'")
    with pytest.raises(InvalidRequest, match="rotation-credential of 'sql-admin'"):
        check_sysname("r" * 129, what="login name", tag="rotation-credential of 'sql-admin'")


# -- connection strings -----------------------------------------------------------------------


def parse_odbc(text: str) -> dict[str, str]:
    """A connection string read back with the ODBC rules ODBC Driver 18 follows: ``key=value``
    pairs separated by ``;``; a value in braces runs to the ``}`` that is not doubled, and ``}}``
    inside it is one ``}``. Keys are case-insensitive (upper-cased here)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        key = text[i:eq].strip().upper()
        assert key not in fields, f"{key} twice"
        i = eq + 1
        if text.startswith("{", i):
            value, i = [], i + 1
            while True:
                if text[i] == "}":
                    if text.startswith("}}", i):
                        value.append("}")
                        i += 2
                        continue
                    i += 1
                    break
                value.append(text[i])
                i += 1
            fields[key] = "".join(value)
            assert i == len(text) or text[i] == ";", f"junk after the braced value of {key}"
        else:
            end = text.find(";", i)
            end = len(text) if end < 0 else end
            fields[key] = text[i:end]
            i = end
        i += 1
    return fields


PROVIDER = Provider("myserver.database.windows.net", 1433, "appdb")


@pytest.mark.parametrize(
    "value", ["plain", "close}brace}}twice", "{starts-with-a-brace}", "semi;colon=equals", " spaced ", "ünï€"]
)
def test_values_are_braced_and_read_back_whole(value: str) -> None:
    text = connection_string(
        driver="ODBC Driver 18 for SQL Server", provider=PROVIDER, database=value, uid=value, pwd=value
    )
    fields = parse_odbc(text)
    assert (fields["DATABASE"], fields["UID"], fields["PWD"]) == (value, value, value)
    assert f"PWD={{{value.replace('}', '}}')}}};" in text


def test_the_connection_string_for_a_password_login() -> None:
    text = connection_string(
        driver="ODBC Driver 18 for SQL Server", provider=PROVIDER, database="appdb", uid="app", pwd="pw"
    )
    assert text == (
        "Driver={ODBC Driver 18 for SQL Server};Server=tcp:myserver.database.windows.net,1433;"
        "Database={appdb};UID={app};PWD={pw};Encrypt=yes;TrustServerCertificate=no;APP=keyvault-rotation-hub;"
    )


def test_a_token_connection_carries_no_uid_pwd_or_authentication() -> None:
    fields = parse_odbc(connection_string(driver="D", provider=PROVIDER, database="appdb"))
    assert not {"UID", "PWD", "AUTHENTICATION", "TRUSTED_CONNECTION"} & set(fields)
    assert (fields["ENCRYPT"], fields["TRUSTSERVERCERTIFICATE"]) == ("yes", "no")


def test_ipv6_hosts_go_in_bare_after_the_protocol() -> None:
    fields = parse_odbc(
        connection_string(driver="D", provider=Provider("2001:db8::1", 14330, "appdb"), database="appdb")
    )
    assert fields["SERVER"] == "tcp:2001:db8::1,14330"


def test_a_nul_character_is_refused_rather_than_cutting_the_string_short() -> None:
    with pytest.raises(TargetError, match="NUL") as err:
        connection_string(driver="D", provider=PROVIDER, database="appdb", uid="app", pwd="before\x00after")
    assert "before" not in str(err.value)


# -- the access token ---------------------------------------------------------------------------


def test_access_token_struct_follows_the_documented_layout() -> None:
    token = "eyJ0eXAiOiJKV1QifQ.payload.signature"
    raw = access_token_struct(token)
    (size,) = struct.unpack("<I", raw[:4])
    assert size == 2 * len(token) == len(raw) - 4, "byte count of the UTF-16-LE data, no terminator"
    assert raw[:4] == bytes([size & 0xFF, size >> 8 & 0xFF, 0, 0]), "little-endian"
    assert raw[4:] == bytes(b for ch in token.encode() for b in (ch, 0)), "each ASCII byte followed by 0"
    assert raw[4:].decode("utf-16-le") == token


# -- the stand-in server ------------------------------------------------------------------------

IDENTITY = "<hub identity>"
_EXPRESSION = re.compile(r"DECLARE @sql nvarchar\(max\) = (?P<expr>.*?);\nIF @sql IS NULL\n", re.DOTALL)
_TOKEN = re.compile(r"\s*(N'(?:[^']|'')*'|QUOTENAME\(\?\)|QUOTENAME\(\?, N''''\)|\+)")
_ALTER = re.compile(
    r"ALTER (?P<what>LOGIN|USER) \[(?P<name>(?:[^\]]|\]\])*)\] WITH PASSWORD = N'(?P<new>(?:[^']|'')*)'"
    r"(?: OLD_PASSWORD = N'(?P<old>(?:[^']|'')*)')?",
    re.DOTALL,
)


def quotename(value: str, quote: str = "[") -> str | None:
    """T-SQL's QUOTENAME: NULL past 128 UTF-16 code units, the closing quote doubled."""
    if len(value.encode("utf-16-le")) // 2 > 128:
        return None
    close = "]" if quote == "[" else quote
    return quote + value.replace(close, close * 2) + close


def built_statement(batch: str, params: tuple[str, ...]) -> str | None:
    """What the server's ``@sql`` holds after the DECLARE: the batch's own expression evaluated
    with its bound parameters (string literals, QUOTENAME and ``+``; NULL propagates)."""
    match = _EXPRESSION.search(batch)
    assert match, "the batch builds @sql in one DECLARE"
    expr, parts, args = match["expr"], [], list(params)
    position = 0
    while position < len(expr):
        token = _TOKEN.match(expr, position)
        assert token, f"unexpected T-SQL at {expr[position:]!r}"
        position = token.end()
        item = token[1]
        if item == "+":
            continue
        if item.startswith("N'"):
            parts.append(item[2:-1].replace("''", "'"))
        else:
            parts.append(quotename(args.pop(0), "'" if "N''''" in item else "["))
    assert not args, "every bound parameter is used"
    return None if None in parts else "".join(p for p in parts if p is not None)


def odbc_error(sqlstate: str, text: str, native: int, function: str = "SQLDriverConnect") -> pyodbc.Error:
    """A pyodbc.Error as pyodbc builds it on Linux: the first diagnostic record."""
    return pyodbc.Error(sqlstate, f"[{sqlstate}] {text} ({native}) ({function})")


@dataclass
class Connection:
    fields: dict[str, str]
    autocommit: bool
    login_timeout: int
    attrs_before: dict[int, Any] | None
    principal: str
    query_timeout: int = 0
    closed: bool = False


@dataclass
class Statement:
    sql: str
    params: tuple[str, ...]
    principal: str
    database: str


@dataclass
class FakeServer:
    """A SQL Server as far as these tests need one (see the module docstring)."""

    passwords: dict[str, str] = field(default_factory=dict)
    admins: set[str] = field(default_factory=set)
    token: str | None = None
    connections: list[Connection] = field(default_factory=list)
    statements: list[Statement] = field(default_factory=list)
    #: Raised by connect, or by the next statement, instead of what the server would do.
    connect_error: pyodbc.Error | None = None
    statement_error: pyodbc.Error | None = None
    #: Azure SQL Database's login cache: after a server login's password changes, this many
    #: logins to a user database still check the previous password.
    stale_logins: int = 0
    _stale: dict[str, tuple[str, int]] = field(default_factory=dict)

    def connect(
        self,
        connstring: str,
        /,
        *,
        autocommit: bool = False,
        timeout: int = 0,
        attrs_before: dict[int, Any] | None = None,
    ) -> FakeConnection:
        fields = parse_odbc(connstring)
        if self.connect_error is not None:
            raise self.connect_error
        if attrs_before and SQL_COPT_SS_ACCESS_TOKEN in attrs_before:
            raw = attrs_before[SQL_COPT_SS_ACCESS_TOKEN]
            (size,) = struct.unpack("<I", raw[:4])
            principal, ok = IDENTITY, raw[4 : 4 + size].decode("utf-16-le") == self.token
            user = "<token-identified principal>"
        else:
            principal = user = fields["UID"]
            expected = self.passwords.get(principal)
            previous, left = self._stale.get(principal, ("", 0))
            if left and fields["DATABASE"] != "master":
                self._stale[principal] = (previous, left - 1)
                expected = previous
            ok = expected == fields["PWD"]
        if not ok:
            raise odbc_error("28000", f"{DRIVER18}[SQL Server]Login failed for user '{user}'.", 18456)
        conn = Connection(fields, autocommit, timeout, attrs_before, principal)
        self.connections.append(conn)
        return FakeConnection(self, conn)

    def execute(self, conn: Connection, sql: str, params: tuple[str, ...]) -> None:
        database = conn.fields["DATABASE"]
        self.statements.append(Statement(sql, params, conn.principal, database))
        if self.statement_error is not None:
            error, self.statement_error = self.statement_error, None
            raise error
        if sql == "SELECT 1":
            return
        assert sql in STATEMENTS.values(), "only the module's constant batches are sent"
        built = built_statement(sql, params)
        if built is None:
            message = "A name or password is longer than 128 characters; QUOTENAME refused it."
            raise odbc_error("42000", f"{DRIVER18}[SQL Server]{message}", 50000, "SQLExecDirectW")
        alter = _ALTER.fullmatch(built)
        assert alter, f"the batch builds one ALTER statement, not {built!r}"
        what, name = alter["what"], alter["name"].replace("]]", "]")
        new = alter["new"].replace("''", "'")
        old = alter["old"].replace("''", "'") if alter["old"] is not None else None
        if what == "LOGIN" and database != "master":
            raise odbc_error(
                "42000",
                f"{DRIVER18}[SQL Server]'ALTER LOGIN' is not supported in this version of SQL Server.",
                40514,
                "SQLExecDirectW",
            )
        allowed = conn.principal in self.admins or conn.principal == IDENTITY
        if conn.principal == name and old is not None:
            allowed = self.passwords.get(name) == old
        if name not in self.passwords or not allowed:
            raise odbc_error(
                "42000",
                f"{DRIVER18}[SQL Server]Cannot alter the {what.lower()} '{name}', because it does not exist "
                "or you do not have permission.",
                15151,
                "SQLExecDirectW",
            )
        if what == "LOGIN" and self.stale_logins:
            self._stale[name] = (self.passwords[name], self.stale_logins)
        self.passwords[name] = new


class FakeConnection:
    def __init__(self, server: FakeServer, conn: Connection) -> None:
        self._server, self.record = server, conn

    @property
    def timeout(self) -> int:
        return self.record.query_timeout

    @timeout.setter
    def timeout(self, value: int) -> None:
        self.record.query_timeout = value

    def cursor(self) -> FakeCursor:
        return FakeCursor(self._server, self.record)

    def close(self) -> None:
        self.record.closed = True


class FakeCursor:
    def __init__(self, server: FakeServer, conn: Connection) -> None:
        self._server, self._conn = server, conn

    def execute(self, sql: str, *params: str) -> FakeCursor:
        self._server.execute(self._conn, sql, params)
        return self

    def fetchone(self) -> tuple[int]:
        return (1,)

    def close(self) -> None:
        pass


def new_value() -> SecretValue:
    return generate(TARGET_TYPE_LOGIN.password_policy)


def build(
    server: FakeServer, kind: str, login: str, admin: AdminSpec, *, settle_seconds: float = 0.0
) -> PasswordLogin:
    s = spec(kind, credential=login, admin=admin)
    engine = SqlServerEngine(s, SETTINGS, connect=server.connect, settle_seconds=settle_seconds)
    return PasswordLogin(s, engine)


def assert_clean(exc: BaseException, *values: SecretValue) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        for value in values:
            assert value.reveal() not in str(seen)
            assert value.reveal() not in repr(seen)
        seen = seen.__cause__
    assert isinstance(exc, RotationError)


# -- statements, through the stand-in ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("own", [False, True])
def test_the_batches_are_constants_quoted_by_the_server(kind: str, own: bool) -> None:
    batch = STATEMENTS[(kind, own)]
    assert batch.count("?") == (3 if own else 2)
    assert "QUOTENAME(?)" in batch
    assert batch.count("QUOTENAME(?, N'''')") == (2 if own else 1)
    assert "EXEC sys.sp_executesql @sql" in batch
    assert ("OLD_PASSWORD" in batch) is own
    assert f"ALTER {'LOGIN' if kind == KIND_LOGIN else 'USER'} " in batch
    assert "IF @sql IS NULL" in batch
    assert "THROW 50000" in batch


def test_the_server_builds_a_correctly_quoted_statement_from_hostile_input() -> None:
    batch = STATEMENTS[(KIND_LOGIN, True)]
    built = built_statement(batch, ("we]ird'; --", "new'pw]", "old''pw"))
    assert built == "ALTER LOGIN [we]]ird'; --] WITH PASSWORD = N'new''pw]' OLD_PASSWORD = N'old''''pw'"


@pytest.mark.parametrize("kind", KINDS)
def test_self_change_sends_old_password_as_a_bound_parameter(kind: str) -> None:
    old, new = new_value(), new_value()
    server = FakeServer(passwords={"app": old.reveal()})
    target = build(server, kind, "app", AdminSpec("self"))

    assert target.apply(new=new, using=Credentials(current=old)) is True

    (change,) = [s for s in server.statements if s.sql != "SELECT 1"]
    assert change.sql == STATEMENTS[(kind, True)]
    assert change.params == ("app", new.reveal(), old.reveal())
    assert change.principal == "app"
    assert change.database == ("master" if kind == KIND_LOGIN else "appdb")
    for value in (old, new):
        assert value.reveal() not in change.sql
    assert server.passwords["app"] == new.reveal()


@pytest.mark.parametrize("kind", KINDS)
def test_an_admin_change_has_no_old_password(kind: str) -> None:
    admin_pw, old, new = new_value(), new_value(), new_value()
    server = FakeServer(passwords={"app": old.reveal(), "rotator": admin_pw.reveal()}, admins={"rotator"})
    target = build(server, kind, "app", AdminSpec("secret", "sql-admin"))

    assert target.apply(new=new, using=Credentials(current=None, admin=admin_pw, admin_login="rotator"))

    (change,) = [s for s in server.statements if s.sql != "SELECT 1"]
    assert change.sql == STATEMENTS[(kind, False)]
    assert change.params == ("app", new.reveal())
    assert (change.principal, change.database) == ("rotator", "master" if kind == KIND_LOGIN else "appdb")


@pytest.mark.parametrize("kind", KINDS)
def test_the_token_path_passes_the_struct_and_no_credentials(kind: str) -> None:
    old, new = new_value(), new_value()
    server = FakeServer(passwords={"app": old.reveal()}, token="eyJ.token.sig")
    scopes: list[str] = []

    def token_source(scope: str) -> SecretValue:
        scopes.append(scope)
        return SecretValue("eyJ.token.sig")

    target = build(server, kind, "app", AdminSpec("managed-identity"))
    assert target.apply(new=new, using=Credentials(current=None, access_token=token_source)) is True

    assert scopes == [ENTRA_SCOPE]
    (as_identity,) = [c for c in server.connections if c.principal == IDENTITY]
    assert as_identity.attrs_before == {SQL_COPT_SS_ACCESS_TOKEN: access_token_struct("eyJ.token.sig")}
    assert not {"UID", "PWD", "AUTHENTICATION"} & set(as_identity.fields)
    assert as_identity.fields["DATABASE"] == ("master" if kind == KIND_LOGIN else "appdb")
    (change,) = [s for s in server.statements if s.sql != "SELECT 1"]
    assert change.params == ("app", new.reveal())
    assert server.passwords["app"] == new.reveal()


def test_every_connection_encrypts_verifies_and_times_out() -> None:
    old, new = new_value(), new_value()
    server = FakeServer(passwords={"app": old.reveal()})
    target = build(server, KIND_LOGIN, "app", AdminSpec("self"))
    target.apply(new=new, using=Credentials(current=old))
    target.verify(value=new)

    assert server.connections
    for conn in server.connections:
        assert conn.fields["ENCRYPT"] == "yes"
        assert conn.fields["TRUSTSERVERCERTIFICATE"] == "no"
        assert conn.fields["SERVER"] == "tcp:myserver.database.windows.net,1433"
        assert conn.fields["DRIVER"] == "ODBC Driver 18 for SQL Server"
        assert conn.fields["APP"] == "keyvault-rotation-hub"
        assert conn.autocommit is True
        assert conn.login_timeout == LOGIN_TIMEOUT_SECONDS
        assert conn.query_timeout == QUERY_TIMEOUT_SECONDS
        assert conn.closed
    logins = [c for c in server.connections if c.fields["DATABASE"] == "appdb"]
    assert logins, "a login is proven in the provider's database"
    assert all(c.fields["UID"] == "app" for c in logins)


def test_a_name_over_128_characters_fails_clearly_in_the_server() -> None:
    # Validation refuses such names; this is the batch's own guard, as a spec built past
    # validation would meet it: QUOTENAME returns NULL and the batch throws instead of running.
    server = FakeServer(passwords={"rotator": "adminpw"}, admins={"rotator"})
    engine = SqlServerEngine(spec(), SETTINGS, connect=server.connect)
    engine.login = "n" * 129
    admin = Principal("rotator", SecretValue("adminpw"), description="the admin secret")
    with (
        pytest.raises(TargetError, match="over 128 characters"),
        engine.session(admin, purpose="change", hide=()) as session,
    ):
        session.set_password(SecretValue("new-value"), current=None)


# -- the whole protocol, through the stand-in ---------------------------------------------------


@dataclass
class Setup:
    server: FakeServer
    target: PasswordLogin
    using: Credentials


def setup(kind: str, mode: str, login: str = "app") -> tuple[Setup, SecretValue]:
    old = new_value()
    server = FakeServer(passwords={login: old.reveal()})
    if mode == "self":
        using = Credentials(current=old)
        admin = AdminSpec("self")
    elif mode == "secret":
        admin_pw = new_value()
        server.passwords["rotator"] = admin_pw.reveal()
        server.admins.add("rotator")
        using = Credentials(current=None, admin=admin_pw, admin_login="rotator")
        admin = AdminSpec("secret", "sql-admin")
    else:
        server.token = "eyJ.hub.token"
        using = Credentials(current=None, access_token=lambda scope: SecretValue("eyJ.hub.token"))
        admin = AdminSpec("managed-identity")
    return Setup(server, build(server, kind, login, admin), using), old


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["self", "secret", "managed-identity"])
def test_apply_verify_revert_each_twice(kind: str, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s, old = setup(kind, mode)
    new = new_value()
    t, server = s.target, s.server

    assert t.apply(new=new, using=s.using) is True
    assert server.passwords["app"] == new.reveal()
    assert t.apply(new=new, using=s.using) is False, "the second apply finds the new value in force"
    changes = len([x for x in server.statements if x.sql != "SELECT 1"])

    t.verify(value=new)
    t.verify(value=new)
    with pytest.raises(VerificationFailed) as refused:
        t.verify(value=old)
    assert_clean(refused.value, old, new)

    # A self admin's revert logs in with the new value; the others need no value of the login.
    assert t.revert(previous=old, new=new, using=s.using) is True
    assert server.passwords["app"] == old.reveal()
    assert t.revert(previous=old, new=new, using=s.using) is False
    assert len([x for x in server.statements if x.sql != "SELECT 1"]) == changes + 1

    for value in (old, new):
        assert value.reveal() not in caplog.text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("login", ["]; DROP LOGIN sa; --", "it's [odd]", "\U0001f600" * 64])
def test_hostile_names_change_only_that_principal(kind: str, login: str) -> None:
    s, _ = setup(kind, "self", login)
    victim = new_value()
    s.server.passwords["victim"] = victim.reveal()
    new = new_value()

    assert s.target.apply(new=new, using=s.using) is True
    s.target.verify(value=new)
    assert s.server.passwords == {login: new.reveal(), "victim": victim.reveal()}


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_current_value_changes_nothing(kind: str) -> None:
    s, real = setup(kind, "self")
    wrong, new = new_value(), new_value()

    with pytest.raises(AuthenticationFailed) as refused:
        s.target.apply(new=new, using=Credentials(current=wrong))

    assert "current value" in str(refused.value)
    assert "18456" in str(refused.value)
    assert_clean(refused.value, real, wrong, new)
    assert s.server.passwords["app"] == real.reveal()
    assert not [x for x in s.server.statements if x.sql != "SELECT 1"]


def test_server_logins_wait_for_azure_sqls_login_cache_and_contained_users_do_not() -> None:
    """Azure SQL Database checks a login against a per-database cache that is refreshed now and
    then: right after ALTER LOGIN the user database may still refuse the new password. Verify
    keeps trying for a while (60 s by default) before it calls the value refused."""
    assert SqlServerEngine(spec(KIND_LOGIN), SETTINGS).settle_seconds == 60
    assert SqlServerEngine(spec(KIND_CONTAINED_USER), SETTINGS).settle_seconds == 0

    old, new = new_value(), new_value()
    server = FakeServer(passwords={"app": old.reveal()}, stale_logins=2)
    target = build(server, KIND_LOGIN, "app", AdminSpec("self"), settle_seconds=5)
    assert target.apply(new=new, using=Credentials(current=old)) is True
    started = time.monotonic()
    target.verify(value=new)  # refused twice by the stale cache, then accepted
    assert 2.5 < time.monotonic() - started < 5

    server = FakeServer(passwords={"app": old.reveal()}, stale_logins=2)
    impatient = build(server, KIND_LOGIN, "app", AdminSpec("self"), settle_seconds=0)
    impatient.apply(new=new, using=Credentials(current=old))
    with pytest.raises(VerificationFailed):
        impatient.verify(value=new)


def test_a_wrong_token_is_refused_and_nothing_changes() -> None:
    s, old = setup(KIND_LOGIN, "managed-identity")
    new = new_value()
    bad = Credentials(current=None, access_token=lambda scope: SecretValue("eyJ.stale.token"))
    with pytest.raises(AuthenticationFailed) as refused:
        s.target.apply(new=new, using=bad)
    assert "managed identity" in str(refused.value)
    assert_clean(refused.value, SecretValue("eyJ.stale.token"), old, new)
    assert s.server.passwords["app"] == old.reveal()


def test_an_admin_without_permission_is_a_permanent_error() -> None:
    s, old = setup(KIND_LOGIN, "secret")
    s.server.admins.clear()
    with pytest.raises(TargetError) as refused:
        s.target.apply(new=new_value(), using=s.using)
    assert "ALTER ANY LOGIN" in str(refused.value)
    assert "[permanent]" in str(refused.value)
    assert s.server.passwords["app"] == old.reveal()


def test_revert_is_impossible_when_nothing_at_hand_logs_in() -> None:
    s, real = setup(KIND_LOGIN, "self")
    previous, new = new_value(), new_value()
    with pytest.raises(UndoImpossible) as undo:
        s.target.revert(previous=previous, new=new, using=Credentials(current=previous))
    assert_clean(undo.value, real, previous, new)
    assert s.server.passwords["app"] == real.reveal()


# -- errors -------------------------------------------------------------------------------------

SECRET = "Sekr3t-Value-Never-Shown"

#: (phase, sqlstate, driver text, native, expected class, fragment of the message)
# fmt: off
ERRORS = [
    # Login refused.
    ("connect", "28000", f"{DRIVER18}[SQL Server]Login failed for user 'app'.", 18456, AuthenticationFailed, "refused"),
    ("connect", "28000", f"{DRIVER18}[SQL Server]Login failed for user 'app'. Reason: The password of the account has expired.", 18487, AuthenticationFailed, "18487"),
    ("connect", "28000", f"{DRIVER18}[SQL Server]Login failed for user 'app'. Reason: The password of the account must be changed.", 18488, AuthenticationFailed, "18488"),
    ("connect", "28000", f"{DRIVER18}[SQL Server]Login failed for user 'app'. Reason: The account is disabled.", 18470, AuthenticationFailed, "18470"),
    ("connect", "42000", "[FreeTDS][SQL Server]Login failed for user 'app'.", 18456, AuthenticationFailed, "refused"),
    ("connect", "28000", f"{DRIVER18}[SQL Server]Login failed for user '<token-identified principal>'.", 18456, AuthenticationFailed, "refused"),
    # What passes.
    ("connect", "42000", f'{DRIVER18}[SQL Server]Cannot open database "appdb" requested by the login. The login failed.', 4060, TransientError, "4060"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]Database 'appdb' on server 'myserver' is not currently available. Please retry the connection later.", 40613, TransientError, "40613"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]The service has encountered an error processing your request. Please try again.", 40197, TransientError, "40197"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]The service is currently busy. Retry the request after 10 seconds.", 40501, TransientError, "40501"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]The service has encountered an error processing your request. Please try again.", 40540, TransientError, "40540"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]Cannot process request. Not enough resources to process request.", 49918, TransientError, "49918"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]Cannot process create or update request. Too many create or update operations in progress.", 49919, TransientError, "49919"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]Cannot process request. Too many operations in progress.", 49920, TransientError, "49920"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]Resource ID : 1. The request limit for the database is 60 and has been reached.", 10928, TransientError, "10928"),
    ("connect", "42000", f"{DRIVER18}[SQL Server]Resource ID : 1. The min guarantee is 0, max limit is 60 and the current usage for the database is 60.", 10929, TransientError, "10929"),
    ("connect", "08001", f"{DRIVER18}TCP Provider: The wait operation timed out.\r\n", 258, TransientError, "258"),
    ("connect", "08001", f"{DRIVER18}TCP Provider: Error code 0x2749", 10057, TransientError, "10057"),
    ("connect", "08001", f"{DRIVER18}TCP Provider: Error code 0x2746", 10054, TransientError, "10054"),
    ("connect", "HYT00", f"{DRIVER18}Login timeout expired", 0, TransientError, "HYT00"),
    ("connect", "08001", "[FreeTDS][SQL Server]Unable to connect to data source", 0, TransientError, "08001"),
    ("statement", "HYT00", "[FreeTDS][SQL Server]Timeout expired", 0, TransientError, "HYT00"),
    ("statement", "08S01", f"{DRIVER18}Communication link failure", 0, TransientError, "08S01"),
    ("connect", "08S01", "[FreeTDS][SQL Server]Unable to connect: Adaptive Server is unavailable or does not exist", 20009, TransientError, "08S01"),
    ("statement", "40001", f"{DRIVER18}[SQL Server]Transaction (Process ID 52) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction.", 1205, TransientError, "1205"),
    # TLS: will not pass by retrying.
    ("connect", "08001", f"{DRIVER18}SSL Provider: [error:0A000086:SSL routines::certificate verify failed:unable to get local issuer certificate]", -1, TargetError, "TLS"),
    ("connect", "08001", f"{DRIVER18}SSL Provider: [error:1416F086:SSL routines:tls_process_server_certificate:certificate verify failed:self signed certificate]", -1, TargetError, "TLS"),
    ("connect", "08001", f"{DRIVER18}SSL Provider: The certificate chain was issued by an authority that is not trusted.\r\n", -2146893019, TargetError, "TLS"),
    ("connect", "08001", f"{DRIVER18}SSL Provider: [error:0A000102:SSL routines::unsupported protocol]", -1, TargetError, "TLS"),
    # Permanent, and said clearly.
    ("statement", "42000", f"{DRIVER18}[SQL Server]Cannot alter the login 'app', because it does not exist or you do not have permission.", 15151, TargetError, "ALTER ANY LOGIN"),
    ("statement", "42000", f"{DRIVER18}[SQL Server]User does not have permission to perform this action.", 15247, TargetError, "not permitted"),
    ("statement", "42000", f"{DRIVER18}[SQL Server]Password validation failed. The password does not meet the operating system policy requirements because it is not complex enough.", 15118, TargetError, "password policy"),
    ("statement", "42000", f"{DRIVER18}[SQL Server]Password validation failed. The password does not meet the operating system policy requirements because it is too short.", 15116, TargetError, "password policy"),
    ("statement", "42000", f"{DRIVER18}[SQL Server]Password validation failed. The password for the user is too recent to change.", 15114, TargetError, "password policy"),
    ("statement", "42000", f"{DRIVER18}[SQL Server]A name or password is longer than 128 characters; QUOTENAME refused it.", 50000, TargetError, "over 128 characters"),
    # The driver itself.
    ("connect", "01000", "[unixODBC][Driver Manager]Can't open lib 'ODBC Driver 18 for SQL Server' : file not found", 0, TargetError, "ROTATION_SQLSERVER_ODBC_DRIVER"),
    ("connect", "IM002", "[unixODBC][Driver Manager]Data source name not found and no default driver specified", 0, TargetError, "ROTATION_SQLSERVER_ODBC_DRIVER"),
]
# fmt: on


@pytest.mark.parametrize(("phase", "sqlstate", "text", "native", "expected", "fragment"), ERRORS)
def test_error_classification(
    phase: str, sqlstate: str, text: str, native: int, expected: type[RotationError], fragment: str
) -> None:
    server = FakeServer(passwords={"app": SECRET})
    # A driver has no reason to echo a value; the text is scrubbed whatever it says.
    error = odbc_error(
        sqlstate,
        f"{text} [echo: {SECRET}]",
        native,
        "SQLDriverConnect" if phase == "connect" else "SQLExecDirectW",
    )
    if phase == "connect":
        server.connect_error = error
    else:
        server.statement_error = error
    engine = SqlServerEngine(spec(), SETTINGS, connect=server.connect)
    own = Principal("app", SecretValue(SECRET), description="the current value")

    with pytest.raises(RotationError) as raised, engine.session(own, purpose="change", hide=()) as session:
        session.set_password(SecretValue("next-value"), current=SecretValue(SECRET))

    assert type(raised.value) is expected, str(raised.value)
    assert fragment in str(raised.value)
    assert_clean(raised.value, SecretValue(SECRET), SecretValue("next-value"))
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__, "the driver's own exception, unscrubbed, is not chained"


def test_joined_records_are_all_read_and_4060_counts_as_transient() -> None:
    # pyodbc on Windows joins the records with "; " (on Linux it reads the first only); a
    # database unavailable during failover says 4060 and then 18456.
    server = FakeServer(passwords={"app": SECRET})
    server.connect_error = pyodbc.Error(
        "42000",
        f'[42000] {DRIVER18}[SQL Server]Cannot open database "appdb" requested by the login. The login failed. (4060) '
        f"(SQLDriverConnect); [28000] {DRIVER18}[SQL Server]Login failed for user 'app'. (18456)",
    )
    target = build(server, KIND_LOGIN, "app", AdminSpec("self"))
    with pytest.raises(TransientError, match="4060,18456"):
        target.verify(value=SecretValue(SECRET))


def test_errors_without_the_driver_format_are_still_permanent_and_clean() -> None:
    server = FakeServer(passwords={"app": SECRET})
    server.connect_error = pyodbc.Error(f"something odd {SECRET}")
    target = build(server, KIND_LOGIN, "app", AdminSpec("self"))
    with pytest.raises(TargetError) as raised:
        target.verify(value=SecretValue(SECRET))
    assert_clean(raised.value, SecretValue(SECRET))


# -- preflight: the changer's login, nothing changed -----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["self", "secret", "managed-identity"])
def test_the_preflight_logs_in_as_the_changer_where_a_change_would_and_changes_nothing(
    kind: str, mode: str
) -> None:
    s, old = setup(kind, mode)

    who = s.target.check_changer(using=s.using)

    [conn] = s.server.connections
    expected = {"self": "app", "secret": "rotator", "managed-identity": IDENTITY}[mode]
    assert conn.principal == expected
    # The session a change opens: server logins change their passwords in master.
    assert conn.fields["DATABASE"] == ("master" if kind == KIND_LOGIN else "appdb")
    assert [x.sql for x in s.server.statements] == ["SELECT 1"]
    assert s.server.passwords["app"] == old.reveal()
    assert old.reveal() not in who


@pytest.mark.parametrize("kind", KINDS)
def test_the_preflight_names_a_refused_admin_and_changes_nothing(kind: str) -> None:
    s, old = setup(kind, "secret")
    wrong = new_value()

    with pytest.raises(AuthenticationFailed) as refused:
        s.target.check_changer(using=Credentials(current=None, admin=wrong, admin_login="rotator"))

    assert "the admin secret 'sql-admin' is refused" in str(refused.value)
    assert "18456" in str(refused.value)
    assert_clean(refused.value, wrong, old)
    assert s.server.passwords["app"] == old.reveal()
    assert s.server.statements == []
