"""The sqlserver targets against a real SQL Server, Azure SQL Database or Managed Instance.

Runs only when ``ROTATION_TEST_SQLSERVER`` names a server; skipped otherwise (no SQL Server runs
on the development machine, and none installs from its registries). Everything is real: the
server, ODBC Driver 18 (or the driver the setting names) and the module. The tests create their
own logins, users and admin principals with unique names and drop them afterwards.

Environment:

- ``ROTATION_TEST_SQLSERVER``: ``host[:port]`` (port 1433 by default), e.g.
  ``myserver.database.windows.net`` or ``localhost:14330``.
- ``ROTATION_TEST_SQLSERVER_ADMIN`` and ``ROTATION_TEST_SQLSERVER_ADMIN_PASSWORD``: a SQL login
  that may create and drop logins and users in the databases below and grant ``ALTER ANY LOGIN``
  / ``ALTER ANY USER`` (sysadmin on SQL Server and Managed Instance; the server admin on Azure SQL
  Database).
- ``ROTATION_TEST_SQLSERVER_DATABASE``: the database logins are proven in (default ``master``);
  each test login gets a user there unless it is ``master``.
- ``ROTATION_TEST_SQLSERVER_CONTAINED_DATABASE``: a database that allows contained users with
  passwords (any user database on Azure SQL Database; on SQL Server ``CONTAINMENT = PARTIAL``
  with ``contained database authentication`` on). The contained-user tests skip without it.
- ``ROTATION_TEST_SQLSERVER_TOKEN``: an Entra access token for ``https://database.windows.net/``
  whose principal holds ``ALTER ANY LOGIN`` (and ``ALTER ANY USER`` in the contained database):
  the managed-identity tests use it as the hub's token, and skip without it.
- ``ROTATION_SQLSERVER_ODBC_DRIVER``: the hub's own setting (default "ODBC Driver 18 for SQL
  Server").

The server's certificate must verify against the system's CAs, as in production (the hub never
turns verification off): for a local container, add its certificate to the trust store.

Every "can it log in" check goes through ``LiveServer.logs_in``: pyodbc with a connection string
this file builds, not the module's, so a bug in the module's connection handling cannot confirm
itself. Azure SQL Database caches login data per database and refreshes it periodically; a
login proven in a user database right after ``ALTER LOGIN`` may meet the cache (see the report
of this target): use ``master`` as the database there if that happens.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyodbc
import pytest
from database_battery_helpers import Values, assert_clean

from rotation.errors import AuthenticationFailed, TargetError, VerificationFailed
from rotation.settings import Settings
from rotation.targets import target_type
from rotation.targets.base import AdminSpec, Credentials, SecretValue, TargetSpec
from rotation.targets.logins import PasswordLogin
from rotation.targets.sqlserver import ENTRA_SCOPE, KIND_CONTAINED_USER, KIND_LOGIN

SERVER = os.environ.get("ROTATION_TEST_SQLSERVER", "").strip()
if not SERVER:
    pytest.skip(
        "no SQL Server to test against: set ROTATION_TEST_SQLSERVER=host[:port] with "
        "ROTATION_TEST_SQLSERVER_ADMIN and ROTATION_TEST_SQLSERVER_ADMIN_PASSWORD",
        allow_module_level=True,
    )

SETTINGS = Settings.from_environ(
    {"ROTATION_SQLSERVER_ODBC_DRIVER": os.environ.get("ROTATION_SQLSERVER_ODBC_DRIVER", "")}
)
HOST, _, PORT = SERVER.partition(":")
PORT = PORT or "1433"
DATABASE = os.environ.get("ROTATION_TEST_SQLSERVER_DATABASE", "").strip() or "master"
CONTAINED = os.environ.get("ROTATION_TEST_SQLSERVER_CONTAINED_DATABASE", "").strip()
TOKEN = os.environ.get("ROTATION_TEST_SQLSERVER_TOKEN", "").strip()

if SETTINGS.sqlserver_odbc_driver not in pyodbc.drivers():
    pytest.skip(
        f"the ODBC driver {SETTINGS.sqlserver_odbc_driver!r} is not installed", allow_module_level=True
    )


def braced(value: str) -> str:
    return "{" + value.replace("}", "}}") + "}"


def unique(prefix: str = "rot") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# Statements of the test's own, every value bound and quoted by the server.
CREATE_LOGIN = (
    "DECLARE @s nvarchar(max) = N'CREATE LOGIN ' + QUOTENAME(?) + N' WITH PASSWORD = N' + QUOTENAME(?, N'''');"
    " EXEC sys.sp_executesql @s;"
)
CREATE_USER_FOR_LOGIN = (
    "DECLARE @s nvarchar(max) = N'CREATE USER ' + QUOTENAME(?) + N' FOR LOGIN ' + QUOTENAME(?);"
    " EXEC sys.sp_executesql @s;"
)
CREATE_CONTAINED_USER = (
    "DECLARE @s nvarchar(max) = N'CREATE USER ' + QUOTENAME(?) + N' WITH PASSWORD = N' + QUOTENAME(?, N'''');"
    " EXEC sys.sp_executesql @s;"
)
GRANT_ALTER_ANY_LOGIN = (
    "DECLARE @s nvarchar(max) = N'GRANT ALTER ANY LOGIN TO ' + QUOTENAME(?); EXEC sys.sp_executesql @s;"
)
GRANT_ALTER_ANY_USER = (
    "DECLARE @s nvarchar(max) = N'GRANT ALTER ANY USER TO ' + QUOTENAME(?); EXEC sys.sp_executesql @s;"
)
# Azure SQL Database grants ALTER ANY LOGIN through this server role instead.
LOGIN_MANAGER = (
    "DECLARE @s nvarchar(max) = N'ALTER SERVER ROLE ##MS_LoginManager## ADD MEMBER ' + QUOTENAME(?);"
    " EXEC sys.sp_executesql @s;"
)
DROP_USER = "DECLARE @s nvarchar(max) = N'DROP USER IF EXISTS ' + QUOTENAME(?); EXEC sys.sp_executesql @s;"
DROP_LOGIN = (
    "IF SUSER_ID(?) IS NOT NULL BEGIN DECLARE @s nvarchar(max) = N'DROP LOGIN ' + QUOTENAME(?);"
    " EXEC sys.sp_executesql @s; END"
)


@dataclass
class LiveServer:
    """The server under test, reached as the test's admin; remembers what it created."""

    logins: list[str] = field(default_factory=list)
    users: list[tuple[str, str]] = field(default_factory=list)  # (database, name)

    def connect(self, database: str, uid: str, pwd: str) -> pyodbc.Connection:
        text = (
            f"Driver={braced(SETTINGS.sqlserver_odbc_driver)};Server=tcp:{HOST},{PORT};"
            f"Database={braced(database)};UID={braced(uid)};PWD={braced(pwd)};Encrypt=yes;"
            "TrustServerCertificate=no;"
        )
        return pyodbc.connect(text, autocommit=True, timeout=15)

    def run(self, database: str, statement: str, *params: str) -> object:
        """Runs ``statement`` as the test's admin; returns the first column of the first row, if any."""
        admin = os.environ["ROTATION_TEST_SQLSERVER_ADMIN"]
        conn = self.connect(database, admin, os.environ["ROTATION_TEST_SQLSERVER_ADMIN_PASSWORD"])
        try:
            cursor = conn.cursor().execute(statement, *params)
            row = cursor.fetchone() if cursor.description else None
            return row[0] if row else None
        finally:
            conn.close()

    @functools.cached_property
    def azure_sql_database(self) -> bool:
        # EngineEdition 5: Azure SQL Database, where a login reaches master only through a user there.
        return self.run("master", "SELECT CAST(SERVERPROPERTY('EngineEdition') AS int)") == 5

    def logs_in(self, kind: str, name: str, value: SecretValue, database: str | None = None) -> bool:
        """Whether ``name`` logs in with ``value`` (to the proving database, or the contained one)."""
        where = database or (DATABASE if kind == KIND_LOGIN else CONTAINED)
        try:
            conn = self.connect(where, name, value.reveal())
        except pyodbc.Error as exc:
            if "(18456)" in str(exc.args[-1]):
                return False
            raise
        try:
            conn.cursor().execute("SELECT 1").fetchone()
        finally:
            conn.close()
        return True

    def create(self, kind: str, value: SecretValue, name: str | None = None) -> str:
        name = name or unique()
        if kind == KIND_LOGIN:
            self.run("master", CREATE_LOGIN, name, value.reveal())
            self.logins.append(name)
            # A user in the proving database, and on Azure SQL Database one in master, where the
            # login changes its own password.
            databases = {DATABASE, "master"} if self.azure_sql_database else {DATABASE} - {"master"}
            for database in sorted(databases):
                self.run(database, CREATE_USER_FOR_LOGIN, name, name)
                self.users.append((database, name))
        else:
            self.run(CONTAINED, CREATE_CONTAINED_USER, name, value.reveal())
            self.users.append((CONTAINED, name))
        return name

    def make_admin(self, kind: str, name: str) -> None:
        if kind == KIND_CONTAINED_USER:
            self.run(CONTAINED, GRANT_ALTER_ANY_USER, name)
        elif self.azure_sql_database:
            self.run("master", LOGIN_MANAGER, name)
        else:
            self.run("master", GRANT_ALTER_ANY_LOGIN, name)

    def drop_all(self) -> None:
        for database, name in reversed(self.users):
            self.run(database, DROP_USER, name)
        for name in reversed(self.logins):
            self.run("master", DROP_LOGIN, name, name)


@pytest.fixture
def server() -> Iterator[LiveServer]:
    live = LiveServer()
    try:
        yield live
    finally:
        live.drop_all()


@pytest.fixture
def values(caplog: pytest.LogCaptureFixture) -> Iterator[Values]:
    caplog.set_level(logging.DEBUG)
    vals = Values(KIND_LOGIN)
    yield vals
    for text in vals.seen:
        assert text not in caplog.text, "a value reached the application log"


def needs(kind: str, mode: str = "self") -> None:
    if kind == KIND_CONTAINED_USER and not CONTAINED:
        pytest.skip("set ROTATION_TEST_SQLSERVER_CONTAINED_DATABASE to test contained users")
    if mode == "managed-identity" and not TOKEN:
        pytest.skip("set ROTATION_TEST_SQLSERVER_TOKEN to test the managed-identity admin")


def target(kind: str, name: str, admin: AdminSpec) -> PasswordLogin:
    database = DATABASE if kind == KIND_LOGIN else CONTAINED
    spec = TargetSpec(kind, f"{HOST}:{PORT}/{database}", name, admin)
    built = target_type(kind).build(spec, SETTINGS)
    assert isinstance(built, PasswordLogin)
    return built


def changer(
    server: LiveServer, kind: str, mode: str, values: Values, current: SecretValue
) -> tuple[AdminSpec, Credentials]:
    """The ``rotation-admin`` tag and what the step would read for it."""
    if mode == "self":
        return AdminSpec("self"), Credentials(current=current)
    if mode == "secret":
        admin_pw = values.new()
        admin = server.create(kind, admin_pw, unique("rotator"))
        server.make_admin(kind, admin)
        return AdminSpec("secret", "sql-admin"), Credentials(current=None, admin=admin_pw, admin_login=admin)

    def token(scope: str) -> SecretValue:
        assert scope == ENTRA_SCOPE
        return SecretValue(TOKEN)

    return AdminSpec("managed-identity"), Credentials(current=None, access_token=token)


KINDS = [KIND_LOGIN, KIND_CONTAINED_USER]
MODES = ["self", "secret", "managed-identity"]


# -- the battery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_apply_verify_revert_each_twice(server: LiveServer, values: Values, kind: str, mode: str) -> None:
    needs(kind, mode)
    old, new = values.new(), values.new()
    name = server.create(kind, old)
    admin, using = changer(server, kind, mode, values, old)
    t = target(kind, name, admin)

    assert t.apply(new=new, using=using) is True
    assert server.logs_in(kind, name, new)
    assert not server.logs_in(kind, name, old)
    assert t.apply(new=new, using=using) is False, "the second apply finds the new value in force"

    t.verify(value=new)
    t.verify(value=new)
    with pytest.raises(VerificationFailed) as refused:
        t.verify(value=old)
    assert_clean(refused.value, old, new)

    assert t.revert(previous=old, new=new, using=using) is True
    assert server.logs_in(kind, name, old)
    assert not server.logs_in(kind, name, new)
    assert t.revert(previous=old, new=new, using=using) is False, "the second revert finds the old value"


HOSTILE_NAMES = ["it's", 'say "hi"', "]; DROP LOGIN victim; --", "[bracketed]", "brace}{name", "ünï cødé"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_change_only_that_principal(
    server: LiveServer, values: Values, kind: str, name: str
) -> None:
    needs(kind)
    victim_pw, old, new = values.new(), values.new(), values.new()
    victim = server.create(kind, victim_pw, unique("victim"))
    name = server.create(kind, old, f"{name} {uuid.uuid4().hex[:8]}")
    t = target(kind, name, AdminSpec("self"))

    assert t.apply(new=new, using=Credentials(current=old)) is True
    t.verify(value=new)
    assert t.revert(previous=old, new=new, using=Credentials(current=old)) is True
    assert server.logs_in(kind, name, old)
    assert server.logs_in(kind, victim, victim_pw), "another principal was touched"


AWKWARD_VALUES = [
    "close}brace}}twice",
    "{starts-with-a-brace}",
    "semi;colon=equals",
    "quote'double\"Q1x",
    "café-€-ünï Aa1",
]


@pytest.mark.parametrize("awkward", AWKWARD_VALUES)
def test_awkward_current_values_travel_intact(server: LiveServer, values: Values, awkward: str) -> None:
    # A value set by hand before the first rotation may hold anything the policy leaves out.
    old, new = values.of(awkward + "-Zz9"), values.new()
    name = server.create(KIND_LOGIN, old)
    t = target(KIND_LOGIN, name, AdminSpec("self"))
    assert t.apply(new=new, using=Credentials(current=old)) is True
    assert t.revert(previous=old, new=new, using=Credentials(current=old)) is True
    assert server.logs_in(KIND_LOGIN, name, old)


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_current_value_changes_nothing(server: LiveServer, values: Values, kind: str) -> None:
    needs(kind)
    real, wrong, new = values.new(), values.new(), values.new()
    name = server.create(kind, real)
    with pytest.raises(AuthenticationFailed) as refused:
        target(kind, name, AdminSpec("self")).apply(new=new, using=Credentials(current=wrong))
    assert_clean(refused.value, real, wrong, new)
    assert server.logs_in(kind, name, real)
    assert not server.logs_in(kind, name, new)


@pytest.mark.parametrize("kind", KINDS)
def test_an_admin_without_permission_is_permanent(server: LiveServer, values: Values, kind: str) -> None:
    needs(kind)
    weak_pw, old, new = values.new(), values.new(), values.new()
    weak = server.create(kind, weak_pw, unique("weak"))
    name = server.create(kind, old)
    t = target(kind, name, AdminSpec("secret", "sql-admin"))
    with pytest.raises(TargetError) as refused:
        t.apply(new=new, using=Credentials(current=None, admin=weak_pw, admin_login=weak))
    assert "15151" in str(refused.value)
    assert_clean(refused.value, weak_pw, old, new)
    assert server.logs_in(kind, name, old)
