"""What only the mysql-login target does, against a real MariaDB 10.11 server: only the
``mysql_native_password`` hash reaches the server, accounts with a host part, the self path's
check of which account the server matched, TLS as the settings say, quoting under a server-wide
``NO_BACKSLASH_ESCAPES``, and the statements of the MySQL 8 path.

The engine-independent battery (apply / verify / revert, refusals, faults, hostile names, awkward
values) runs against PostgreSQL and MariaDB alike in test_database_targets.py.

Every check of "can this account log in with that password" goes through the ``mariadb`` client,
not the target's own driver (PyMySQL). After every test the test's values must appear neither in
the captured logs nor in the server's general query log (which holds every statement).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from database_battery_helpers import (
    Values,
    logs_in,
    make_login,
    settings_for,
    spec_for,
    target_for,
    unique,
    watched_values,
)

from local.databases.mariadb import MariaDBServer
from rotation.errors import AuthenticationFailed, TargetError
from rotation.settings import Settings
from rotation.targets import mysql
from rotation.targets.base import AdminSpec, Credentials, SecretValue
from rotation.targets.mysql import Account, native_password_hash

ADMIN_SECRET = "mysql-admin"


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDBServer]:
    # As the local stack starts it: MySQL 8 and Azure refuse a login with an expired password.
    with MariaDBServer(disconnect_on_expired_password=True) as server:
        yield server


@pytest.fixture
def values(mariadb: MariaDBServer, caplog: pytest.LogCaptureFixture) -> Iterator[Values]:
    with watched_values(mariadb, caplog) as vals:
        yield vals


def create_account(server: MariaDBServer, user: str, host: str, password: SecretValue) -> None:
    """Account ``'user'@'host'`` (``create_login`` makes ``'user'@'%'`` only), which may use the
    default database."""
    server.execute(
        "CREATE USER %s@%s IDENTIFIED BY PASSWORD %s", (user, host, native_password_hash(password.reveal()))
    )
    server.execute(f"GRANT SELECT ON `{server.default_database}`.* TO %s@%s", (user, host))


def stored_hash(server: MariaDBServer, user: str, host: str) -> str | None:
    rows = server.execute(
        "SELECT authentication_string FROM mysql.user WHERE User = %s AND Host = %s", (user, host)
    )
    return str(rows[0][0]) if rows else None


# -- only the hash reaches the server --------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "café-€-ünïcødé-✓"], ids=["generated", "unicode"])
@pytest.mark.parametrize("admin", ["self", "secret"])
def test_only_the_native_password_hash_reaches_the_general_log(
    mariadb: MariaDBServer, values: Values, admin: str, text: str | None
) -> None:
    old, admin_pw = values.new(), values.new()
    new = values.new() if text is None else values.of(text)
    login = make_login(mariadb, old)
    rotator = make_login(mariadb, admin_pw, unique("rotator"), admin=True)
    start = len(mariadb.server_log())

    if admin == "self":
        t = target_for(mariadb, login, AdminSpec("self"))
        assert t.apply(new=new, using=Credentials(current=old)) is True
    else:
        t = target_for(mariadb, login, AdminSpec("secret", ADMIN_SECRET))
        assert t.apply(new=new, using=Credentials(current=None, admin=admin_pw, admin_login=rotator)) is True

    digest = native_password_hash(new.reveal())
    assert mariadb.stored_hash(login) == digest, "the server stores the hash of the value's UTF-8 bytes"
    assert logs_in(mariadb, login, new), "the mariadb client logs in with the value"
    changes = [
        line
        for line in mariadb.server_log()[start:].splitlines()
        if re.search(r"\bQuery\s+(SET PASSWORD|ALTER USER)", line)
    ]
    expected = (
        f"SET PASSWORD = '{digest}'"
        if admin == "self"
        else f"ALTER USER '{login}'@'%' IDENTIFIED BY PASSWORD '{digest}'"
    )
    assert len(changes) == 1, changes
    assert changes[0].endswith(expected), changes[0]
    # (the values fixture then checks that no plaintext is anywhere in the log)


# -- accounts with a host part ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.%"])
def test_an_account_with_a_host_part(mariadb: MariaDBServer, values: Values, host: str) -> None:
    old, new, admin_pw, other_pw = values.new(), values.new(), values.new(), values.new()
    user = unique()
    create_account(mariadb, user, host, old)
    # The same user name from anywhere else is another account: it must stay as it is.
    make_login(mariadb, other_pw, user)
    rotator = make_login(mariadb, admin_pw, unique("rotator"), admin=True)
    tag = f"{user}@{host}"

    t = target_for(mariadb, tag, AdminSpec("self"))
    assert t.apply(new=new, using=Credentials(current=old)) is True
    t.verify(value=new)
    assert logs_in(mariadb, user, new)
    assert stored_hash(mariadb, user, host) == native_password_hash(new.reveal())

    start = len(mariadb.server_log())
    by_admin = target_for(mariadb, tag, AdminSpec("secret", ADMIN_SECRET))
    using = Credentials(current=None, admin=admin_pw, admin_login=rotator)
    assert by_admin.revert(previous=old, new=new, using=using) is True
    assert f"ALTER USER '{user}'@'{host}' IDENTIFIED BY PASSWORD" in mariadb.server_log()[start:]
    assert logs_in(mariadb, user, old)
    assert stored_hash(mariadb, user, host) == native_password_hash(old.reveal())
    assert stored_hash(mariadb, user, "%") == native_password_hash(other_pw.reveal()), (
        "the account of the same name from any host is untouched"
    )


def test_the_self_path_refuses_when_the_login_matches_another_account(
    mariadb: MariaDBServer, values: Values
) -> None:
    """From 127.0.0.1, 'app'@'127.0.0.1' is matched before the tagged 'app'@'%': a SET PASSWORD
    there would change the wrong account."""
    specific_pw, tagged_pw, new, admin_pw = values.new(), values.new(), values.new(), values.new()
    user = unique()
    create_account(mariadb, user, "127.0.0.1", specific_pw)
    make_login(mariadb, tagged_pw, user)  # 'user'@'%', the tagged one
    t = target_for(mariadb, user, AdminSpec("self"))

    # The value of the more specific account logs in, but to that account: refused for good.
    with pytest.raises(TargetError) as refused:
        t.apply(new=new, using=Credentials(current=specific_pw))
    message = str(refused.value)
    assert "[permanent]" in message
    assert f"{user}@127.0.0.1" in message
    assert f"{user}@%" in message
    # The tagged account's own value does not log in from here at all.
    with pytest.raises(AuthenticationFailed):
        t.apply(new=new, using=Credentials(current=tagged_pw))

    assert stored_hash(mariadb, user, "127.0.0.1") == native_password_hash(specific_pw.reveal())
    assert stored_hash(mariadb, user, "%") == native_password_hash(tagged_pw.reveal())
    assert logs_in(mariadb, user, specific_pw)

    # An admin names the tagged account itself, so it changes that one only.
    rotator = make_login(mariadb, admin_pw, unique("rotator"), admin=True)
    by_admin = target_for(mariadb, user, AdminSpec("secret", ADMIN_SECRET))
    assert by_admin.apply(new=new, using=Credentials(current=None, admin=admin_pw, admin_login=rotator))
    assert stored_hash(mariadb, user, "%") == native_password_hash(new.reveal())
    assert stored_hash(mariadb, user, "127.0.0.1") == native_password_hash(specific_pw.reveal())


# -- TLS, as ROTATION_MYSQL_SSLMODE and ROTATION_MYSQL_SSL_CA say ----------------------------------------


@pytest.mark.parametrize("mode", ["verify-full", "verify-ca"])
def test_tls_verified_against_the_servers_ca(mariadb: MariaDBServer, values: Values, mode: str) -> None:
    old, new = values.new(), values.new()
    login = make_login(mariadb, old)
    settings = settings_for(mariadb, ROTATION_MYSQL_SSLMODE=mode)
    assert settings.mysql_ssl_ca == str(mariadb.ca_file)
    t = target_for(mariadb, login, AdminSpec("self"), settings=settings)

    assert t.apply(new=new, using=Credentials(current=old)) is True
    t.verify(value=new)
    assert logs_in(mariadb, login, new)


def test_the_systems_cas_alone_do_not_trust_the_server(mariadb: MariaDBServer, values: Values) -> None:
    old, new = values.new(), values.new()
    login = make_login(mariadb, old)
    # No ROTATION_MYSQL_SSL_CA: the server's certificate is checked against the system's CAs.
    t = target_for(mariadb, login, AdminSpec("self"), settings=Settings.from_environ({}))

    for attempt in (lambda: t.verify(value=old), lambda: t.apply(new=new, using=Credentials(current=old))):
        with pytest.raises(TargetError) as refused:
            attempt()
        assert "[permanent]" in str(refused.value)
        assert "TLS" in str(refused.value)
    assert logs_in(mariadb, login, old)
    assert not logs_in(mariadb, login, new)


def test_require_mode_encrypts_without_verifying(mariadb: MariaDBServer, values: Values) -> None:
    old, new = values.new(), values.new()
    login = make_login(mariadb, old)
    settings = Settings.from_environ({"ROTATION_MYSQL_SSLMODE": "require"})
    t = target_for(mariadb, login, AdminSpec("self"), settings=settings)

    assert t.apply(new=new, using=Credentials(current=old)) is True
    t.verify(value=new)
    assert t.revert(previous=old, new=new, using=Credentials(current=new)) is True
    assert logs_in(mariadb, login, old)


@pytest.mark.parametrize("mode", ["disable", "prefer", "VERIFY-FULL", "verify_full", "require;x"])
def test_an_unknown_tls_mode_names_the_setting(mariadb: MariaDBServer, mode: str) -> None:
    with pytest.raises(TargetError, match="ROTATION_MYSQL_SSLMODE"):
        target_for(
            mariadb, "app", AdminSpec("self"), settings=settings_for(mariadb, ROTATION_MYSQL_SSLMODE=mode)
        )


# -- quoting whatever the server's sql_mode ---------------------------------------------------------


@pytest.fixture
def no_backslash_escapes(mariadb: MariaDBServer) -> Iterator[None]:
    """NO_BACKSLASH_ESCAPES in the server's global sql_mode, so every new session has it (as a
    DBA may set it), restored afterwards."""
    (before,) = mariadb.execute("SELECT @@GLOBAL.sql_mode")[0]
    mariadb.execute(
        "SET GLOBAL sql_mode = CONCAT_WS(',', NULLIF(@@GLOBAL.sql_mode, ''), 'NO_BACKSLASH_ESCAPES')"
    )
    try:
        assert "NO_BACKSLASH_ESCAPES" in mariadb.execute("SELECT @@SESSION.sql_mode")[0][0]
        yield
    finally:
        mariadb.execute("SET GLOBAL sql_mode = %s", (before,))


@pytest.mark.parametrize("name", ["o\\'brien\\", "back\\slash\\'; DROP USER victim; --", "\\"])
def test_quoting_holds_when_the_server_has_no_backslash_escapes(
    mariadb: MariaDBServer, values: Values, name: str, request: pytest.FixtureRequest
) -> None:
    victim_pw, admin_pw, old, new = values.new(), values.new(), values.new(), values.new()
    victim = make_login(mariadb, victim_pw, unique("victim"))
    rotator = make_login(mariadb, admin_pw, unique("rotator"), admin=True)
    login = f"{unique()}{name}"
    make_login(mariadb, old, login)
    start = len(mariadb.server_log())
    request.getfixturevalue("no_backslash_escapes")  # only now: the accounts above exist

    t = target_for(mariadb, login, AdminSpec("self"))
    assert t.apply(new=new, using=Credentials(current=old)) is True
    assert logs_in(mariadb, login, new)
    by_admin = target_for(mariadb, login, AdminSpec("secret", ADMIN_SECRET))
    assert by_admin.revert(
        previous=old, new=new, using=Credentials(current=None, admin=admin_pw, admin_login=rotator)
    )
    assert logs_in(mariadb, login, old)
    assert logs_in(mariadb, victim, victim_pw), "another account was touched"
    assert mariadb.stored_hash(victim) == native_password_hash(victim_pw.reveal())
    # The target's sessions set their own sql_mode, without NO_BACKSLASH_ESCAPES.
    assert f"SET sql_mode='{mysql.SQL_MODE}'" in mariadb.server_log()[start:]


# -- the MySQL 8 statements (the server here is MariaDB) -------------------------------------------------


class RecordingConnection:
    """Stands in for PyMySQL's connection to a MySQL 8 server, which cannot run here.

    Every statement is recorded; the quoting queries (``SELECT ...``) are answered by the real
    MariaDB server, so the quoting is the server's own; the rest (``ALTER USER ...``) is recorded
    only, together with the text PyMySQL would send for it (``mogrify``).
    """

    def __init__(self, real: pymysql.connections.Connection[Any]) -> None:
        self.real = real
        self.calls: list[tuple[str, tuple[str, ...] | None]] = []
        self.sent: list[str] = []

    def get_server_info(self) -> str:
        return "8.0.36"

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self)


class RecordingCursor:
    def __init__(self, conn: RecordingConnection) -> None:
        self.conn = conn
        self.real = conn.real.cursor()

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()

    def execute(self, sql: str, args: tuple[str, ...] | None = None) -> int:
        self.conn.calls.append((sql, args))
        if sql.startswith("SELECT "):
            return int(self.real.execute(sql, args))
        self.conn.sent.append(self.real.mogrify(sql, args))
        return 0

    def fetchone(self) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.real.fetchone()
        return row


def server_quote(server: MariaDBServer, text: str) -> str:
    return str(server.execute("SELECT QUOTE(%s)", (text,))[0][0])


@pytest.mark.parametrize(
    ("user", "host"),
    [
        ("app", "%"),
        ("o'brien\\\"; DROP USER x; -- %s {}", "10.0.%"),
        ("per%cent%s", "%.example.com"),
    ],
)
def test_the_mysql8_path_sends_the_value_only_as_a_parameter(
    mariadb: MariaDBServer, values: Values, user: str, host: str
) -> None:
    """MySQL 8 (``caching_sha2_password``) takes the plaintext in ``ALTER USER ... IDENTIFIED BY``:
    the server must quote the account, the value must only ever be a parameter of that last
    statement, and a ``%`` in the host part must survive PyMySQL's ``%`` formatting. The server
    here is MariaDB, not MySQL 8: the statements are recorded by a stand-in for the connection,
    and the admin's statement is then run on MariaDB (with its query log off for that session),
    which parses it the same way, to prove it names exactly the tagged account."""
    new = values.of("v'al\\ue\"%s%%{}; --")
    spec = spec_for(mariadb, f"{user}@{host}", AdminSpec("secret", ADMIN_SECRET))
    engine = mysql.MySQLEngine(spec, settings_for(mariadb))
    assert engine.account == Account(user, host)
    real = mariadb.connect()
    try:
        recording = RecordingConnection(real)
        # Not MariaDB by its version: set_password takes the MySQL 8 path.
        mysql._Session(recording, engine, "app_admin").set_password(new, current=None)

        (quote_sql, quote_args), (alter_sql, alter_args) = recording.calls
        assert quote_sql == "SELECT CONCAT('ALTER USER ', QUOTE(%s), '@', QUOTE(%s))"
        assert quote_args == (user, host)
        account = f"{server_quote(mariadb, user)}@{server_quote(mariadb, host)}"
        assert alter_sql == f"ALTER USER {account.replace('%', '%%')} IDENTIFIED BY %s"
        assert alter_args == (new.reveal(),)
        assert new.reveal() not in quote_sql + alter_sql
        (sent,) = recording.sent
        assert sent == f"ALTER USER {account} IDENTIFIED BY {real.escape(new.reveal())}"

        # MariaDB reads the same statement: it changes exactly the tagged account to the value.
        bystander = values.new()
        create_account(mariadb, user, host, values.new())
        create_account(mariadb, user, "192.0.2.1", bystander)
        with real.cursor() as cursor:
            cursor.execute("SET SESSION sql_log_off = 1")
            cursor.execute(sent)  # as sent: no further % formatting
    finally:
        real.close()
    assert stored_hash(mariadb, user, host) == native_password_hash(new.reveal())
    assert stored_hash(mariadb, user, "192.0.2.1") == native_password_hash(bystander.reveal())


def test_the_mysql8_self_change_proves_the_current_value(mariadb: MariaDBServer, values: Values) -> None:
    """MySQL 8 may demand the current password of a self-change (``REPLACE``); both values travel
    as parameters of the one statement. (Recorded only: MariaDB has no ``REPLACE`` clause.)"""
    current, new = values.of("cur'rent\\%s"), values.of('n"ew%%{}')
    spec = spec_for(mariadb, "app@10.0.%", AdminSpec("self"))
    engine = mysql.MySQLEngine(spec, settings_for(mariadb))
    real = mariadb.connect()
    try:
        recording = RecordingConnection(real)
        session = mysql._Session(recording, engine, "app_admin")
        session._alter_user(engine.account, new, current)
        assert recording.calls == [
            ("ALTER USER CURRENT_USER() IDENTIFIED BY %s REPLACE %s", (new.reveal(), current.reveal()))
        ]
        assert recording.sent == [
            "ALTER USER CURRENT_USER() IDENTIFIED BY "
            f"{real.escape(new.reveal())} REPLACE {real.escape(current.reveal())}"
        ]
    finally:
        real.close()


# -- the server's password policy ------------------------------------------------------------------


@pytest.mark.parametrize("admin", ["self", "secret"])
def test_a_policy_that_cannot_check_a_hash_refuses_it_clearly_and_nothing_changes(
    mariadb: MariaDBServer, values: Values, admin: str
) -> None:
    """A password-validation plugin with ``strict_password_validation`` (MariaDB's default) refuses
    any password given as a hash, which it cannot check: the change fails for good, with an error
    that says the server's policy refused it, and the account keeps its password."""
    old, new, admin_pw = values.new(), values.new(), values.new()
    login = make_login(mariadb, old)
    rotator = make_login(mariadb, admin_pw, unique("rotator"), admin=True)
    using = (
        Credentials(current=old)
        if admin == "self"
        else Credentials(current=None, admin=admin_pw, admin_login=rotator)
    )
    spec = AdminSpec("self") if admin == "self" else AdminSpec("secret", ADMIN_SECRET)
    mariadb.execute("INSTALL SONAME 'simple_password_check'")
    try:
        with pytest.raises(TargetError) as refused:
            target_for(mariadb, login, spec).apply(new=new, using=using)
    finally:
        mariadb.execute("UNINSTALL SONAME 'simple_password_check'")
    assert "password policy" in str(refused.value)
    assert "[permanent]" in str(refused.value)
    assert logs_in(mariadb, login, old)
    assert not logs_in(mariadb, login, new)
