"""The throwaway MariaDB server the tests, the demo and the benchmarks run against."""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymysql
import pytest
from local_server_helpers import another_server, assert_stops_on, foreground_server

from local.databases.base import DatabaseError, LocalDatabase
from local.databases.mariadb import MariaDBServer, find_binaries, native_password_hash

HOSTILE_LOGIN = "o'brien\"; DROP USER `x`@'%' -- {x} é✓ %_\\"
HOSTILE_DATABASE = "db 'q\"; `t` {x} é✓ %_\\"


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDBServer]:
    """One server for this module, removed at the end even after failures."""
    with MariaDBServer() as server:
        yield server


def connect_as(
    server: MariaDBServer, login: str, password: str, *, database: str | None = None, host: str | None = None
) -> pymysql.connections.Connection[Any]:
    """A PyMySQL login over TCP with TLS, verifying the certificate and the host name."""
    return pymysql.connect(
        host=host or server.host,
        port=server.port,
        user=login,
        password=password,
        database=database or server.default_database,
        ssl_ca=str(server.ca_file),
        ssl_verify_identity=True,
        autocommit=True,
        connect_timeout=10,
    )


def login_error(server: MariaDBServer, login: str, password: str) -> int | None:
    """The error code of a PyMySQL login that then runs SELECT 1; None when both worked."""
    try:
        connection = connect_as(server, login, password)
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except pymysql.MySQLError as e:
        return int(e.args[0])
    return None


def test_configured_like_an_audited_server(mariadb: MariaDBServer) -> None:
    database: LocalDatabase = mariadb  # it follows the contract
    assert (database.kind, database.name, database.host) == ("mysql-login", "mariadb", "127.0.0.1")
    rows = mariadb.execute(
        "SELECT @@bind_address, @@require_secure_transport, @@general_log, @@skip_name_resolve,"
        " @@disconnect_on_expired_password"
    )
    assert rows == [("127.0.0.1", 1, 1, 1, 0)]
    assert {user for (user,) in mariadb.execute("SELECT User FROM mysql.user")} == {
        "hub_admin",
        "mariadb.sys",
    }
    assert mariadb.provider() == f"127.0.0.1:{mariadb.port}/hub_check"
    assert mariadb.provider("appdb") == f"127.0.0.1:{mariadb.port}/appdb"
    assert mariadb.app_settings() == {"ROTATION_MYSQL_SSL_CA": str(mariadb.ca_file)}
    assert mariadb.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_tcp_needs_tls_and_the_certificate_verifies(mariadb: MariaDBServer) -> None:
    mariadb.create_login("local_tls_check", "tls-pw")
    login = functools.partial(
        pymysql.connect,
        host=mariadb.host,
        port=mariadb.port,
        user="local_tls_check",
        password="tls-pw",
        connect_timeout=10,
    )
    with pytest.raises(pymysql.MySQLError) as refused:
        login(ssl_disabled=True)
    assert refused.value.args[0] == 1045  # MariaDB says "access denied" to a plain-text login
    with connect_as(mariadb, "local_tls_check", "tls-pw") as connection, connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        row = cursor.fetchone()
        assert row is not None
        assert row[1].startswith("TLSv1.")
    # The certificate names localhost too, and a client that trusts other CAs refuses it.
    connect_as(mariadb, "local_tls_check", "tls-pw", host="localhost").close()
    with pytest.raises(pymysql.MySQLError, match="CERTIFICATE_VERIFY_FAILED"):
        login(ssl_verify_cert=True, ssl_verify_identity=True)


def test_logins_need_the_right_password_which_never_reaches_the_log(mariadb: MariaDBServer) -> None:
    mariadb.create_login("local_pw_check", "right-one-7Qx")
    assert mariadb.can_login("local_pw_check", "right-one-7Qx")
    assert not mariadb.can_login("local_pw_check", "wrong-one")
    assert not mariadb.can_login("local_no_such_login", "right-one-7Qx")
    assert mariadb.stored_hash("local_pw_check") == native_password_hash("right-one-7Qx")
    # The login changes its own password; then the admin changes it.
    with connect_as(mariadb, "local_pw_check", "right-one-7Qx") as connection, connection.cursor() as cur:
        cur.execute("SET PASSWORD = %s", (native_password_hash("second-one-8Rz"),))
    assert mariadb.can_login("local_pw_check", "second-one-8Rz")
    assert not mariadb.can_login("local_pw_check", "right-one-7Qx")
    mariadb.execute(
        "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s",
        ("local_pw_check", "%", native_password_hash("third-one-9Sy")),
    )
    assert mariadb.can_login("local_pw_check", "third-one-9Sy")
    log = mariadb.server_log()
    assert "local_pw_check" in log, "the statements are in the general log"
    assert native_password_hash("second-one-8Rz") in log
    for password in ("right-one-7Qx", "second-one-8Rz", "third-one-9Sy", mariadb.admin_password):
        assert password not in log
    # The mariadb client sends a password's UTF-8 bytes, and the hash is of those.
    mariadb.create_login("local_unicode_pw", "pässwörd-✓")
    assert mariadb.can_login("local_unicode_pw", "pässwörd-✓")
    assert "pässwörd-✓" not in mariadb.server_log()


def test_hostile_login_and_database_names_round_trip(mariadb: MariaDBServer) -> None:
    mariadb.create_login(HOSTILE_LOGIN, "hostile-pw", database=HOSTILE_DATABASE)
    assert mariadb.execute("SELECT User FROM mysql.user WHERE User = %s", (HOSTILE_LOGIN,)) == [
        (HOSTILE_LOGIN,)
    ]
    assert (HOSTILE_DATABASE,) in mariadb.execute("SHOW DATABASES")
    assert mariadb.can_login(HOSTILE_LOGIN, "hostile-pw")
    assert mariadb.can_login(HOSTILE_LOGIN, "hostile-pw", HOSTILE_DATABASE)
    assert not mariadb.can_login(HOSTILE_LOGIN, "other-pw", HOSTILE_DATABASE)
    connection = connect_as(mariadb, HOSTILE_LOGIN, "hostile-pw", database=HOSTILE_DATABASE)
    with connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x INT)")  # ALL on its own database
        cursor.execute("SELECT CURRENT_USER(), DATABASE()")
        assert cursor.fetchone() == (f"{HOSTILE_LOGIN}@%", HOSTILE_DATABASE)
    # "_" and "%" in a grant's database name are wildcards; they were escaped.
    decoy = HOSTILE_DATABASE.replace("_", "X")
    mariadb.create_database(decoy)
    with pytest.raises(DatabaseError, match="1044"):
        mariadb.can_login(HOSTILE_LOGIN, "hostile-pw", decoy)


def test_a_login_without_password_cannot_log_in_until_it_gets_one(mariadb: MariaDBServer) -> None:
    mariadb.create_login("local_no_pw", None)
    assert not mariadb.can_login("local_no_pw", "")
    assert not mariadb.can_login("local_no_pw", "invalid")
    mariadb.execute(
        "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s", ("local_no_pw", "%", native_password_hash("now-one"))
    )
    assert mariadb.can_login("local_no_pw", "now-one")


def test_can_login_raises_for_other_failures(mariadb: MariaDBServer) -> None:
    mariadb.create_login("local_other_failure", "pw-x")
    with pytest.raises(DatabaseError, match=r"1049|1044"):
        mariadb.can_login("local_other_failure", "pw-x", "no_such_database")


def test_an_admin_login_changes_other_passwords_until_the_right_is_taken(mariadb: MariaDBServer) -> None:
    mariadb.create_login("local_admin", "admin-pw", admin=True)
    mariadb.create_login("local_target", "target-pw-1")

    def change(password: str) -> int | None:
        try:
            connection = connect_as(mariadb, "local_admin", "admin-pw")
            with connection, connection.cursor() as cursor:
                cursor.execute(
                    "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s",
                    ("local_target", "%", native_password_hash(password)),
                )
        except pymysql.MySQLError as e:
            return int(e.args[0])
        return None

    assert change("target-pw-2") is None
    assert mariadb.can_login("local_target", "target-pw-2")
    mariadb.set_admin("local_admin", allowed=False)
    assert change("target-pw-3") == 1227  # ER_SPECIFIC_ACCESS_DENIED_ERROR: needs CREATE USER
    assert mariadb.can_login("local_target", "target-pw-2")
    assert mariadb.can_login("local_admin", "admin-pw"), "it still logs in"
    mariadb.set_admin("local_admin", allowed=True)
    assert change("target-pw-3") is None
    assert mariadb.can_login("local_target", "target-pw-3")


def test_an_expired_password_is_refused_until_made_valid_again(mariadb: MariaDBServer) -> None:
    mariadb.create_login("local_expired", "expired-pw")
    mariadb.expire_password("local_expired")
    assert not mariadb.can_login("local_expired", "expired-pw")
    # disconnect_on_expired_password=OFF (the default): PyMySQL is let in to sandbox mode, and
    # its first statement fails.
    assert login_error(mariadb, "local_expired", "expired-pw") == 1820
    assert login_error(mariadb, "local_expired", "wrong") == 1045
    mariadb.expire_password("local_expired", expired=False)
    assert mariadb.can_login("local_expired", "expired-pw")
    assert login_error(mariadb, "local_expired", "expired-pw") is None
    assert mariadb.stored_hash("local_expired") == native_password_hash("expired-pw")


def test_a_locked_login_is_refused_until_unlocked(mariadb: MariaDBServer) -> None:
    mariadb.create_login("local_locked", "locked-pw")
    mariadb.set_login_allowed("local_locked", allowed=False)
    assert not mariadb.can_login("local_locked", "locked-pw")
    assert login_error(mariadb, "local_locked", "locked-pw") == 4151  # ER_ACCOUNT_LOCKED
    assert login_error(mariadb, "local_locked", "wrong") == 1045
    mariadb.set_login_allowed("local_locked", allowed=True)
    assert mariadb.can_login("local_locked", "locked-pw")


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_held_password_changes_wait_and_go_through_on_release(mariadb: MariaDBServer) -> None:
    mariadb.create_login("local_held", "held-pw-1")
    mariadb.create_login("local_held_admin", "held-admin-pw", admin=True)
    mariadb.create_login("local_bystander", "bystander-pw")

    def own_change() -> None:
        with connect_as(mariadb, "local_held", "held-pw-1") as connection, connection.cursor() as cur:
            cur.execute("SET PASSWORD = %s", (native_password_hash("held-pw-2"),))

    def admin_change() -> None:
        connection = connect_as(mariadb, "local_held_admin", "held-admin-pw")
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s",
                ("local_held", "%", native_password_hash("held-pw-3")),
            )

    for change, new_password in ((own_change, "held-pw-2"), (admin_change, "held-pw-3")):
        assert not mariadb.password_change_waiting("local_held")
        with ThreadPoolExecutor(max_workers=1) as pool:
            future: Future[None]
            with mariadb.hold_password_changes("local_held"):
                future = pool.submit(change)
                assert _wait_for(lambda: mariadb.password_change_waiting("local_held")), mariadb.execute(
                    "SELECT USER, STATE, INFO FROM information_schema.PROCESSLIST"
                )
                time.sleep(0.3)
                assert not future.done(), "the change waits"
                assert not mariadb.password_change_waiting("local_bystander")
                assert mariadb.can_login("local_bystander", "bystander-pw"), "logins go on"
            future.result(timeout=10)
        assert not mariadb.password_change_waiting("local_held")
        assert mariadb.can_login("local_held", new_password)
    assert "held-pw" not in mariadb.server_log()


def test_a_held_change_of_a_hostile_login_is_seen_however_the_statement_quotes_it(
    mariadb: MariaDBServer,
) -> None:
    login = "held " + HOSTILE_LOGIN
    mariadb.create_login(login, "hostile-held-1")

    def hub_like_change() -> None:
        # As the hub builds it: the server quotes the account and the hash with QUOTE().
        with mariadb.connect() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT CONCAT('SET PASSWORD FOR ', QUOTE(%s), '@', QUOTE(%s), ' = ', QUOTE(%s))",
                (login, "%", native_password_hash("hostile-held-2")),
            )
            row = cursor.fetchone()
            assert row is not None
            cursor.execute(row[0])

    with ThreadPoolExecutor(max_workers=1) as pool:
        with mariadb.hold_password_changes(login):
            future = pool.submit(hub_like_change)
            assert _wait_for(lambda: mariadb.password_change_waiting(login))
            assert not mariadb.password_change_waiting(HOSTILE_LOGIN), "a name it contains is not it"
            assert not future.done()
        future.result(timeout=10)
    assert mariadb.can_login(login, "hostile-held-2")


def test_hold_releases_its_lock_when_the_block_raises(mariadb: MariaDBServer) -> None:
    with pytest.raises(RuntimeError), mariadb.hold_password_changes("anyone"):
        raise RuntimeError("boom")
    mariadb.create_login("local_after_hold", "after-pw")  # would wait on a leftover lock
    assert mariadb.can_login("local_after_hold", "after-pw")


def test_a_second_server_is_independent_and_leaves_nothing_behind(mariadb: MariaDBServer) -> None:
    with another_server(lambda: MariaDBServer(disconnect_on_expired_password=True), mariadb) as other:
        # With disconnect_on_expired_password=ON the expired login itself is refused.
        other.expire_password("only_here")
        assert login_error(other, "only_here", "pw-one") == 1862  # ER_MUST_CHANGE_PASSWORD_LOGIN
        assert not other.can_login("only_here", "pw-one")


def test_foreground_mode_prints_how_to_connect_but_no_password() -> None:
    with foreground_server("local.databases.mariadb") as (proc, output):
        found = re.search(r"on 127\.0\.0\.1:(\d+).*password in (\S+)\)", output, re.DOTALL)
        assert found, output
        option_file = Path(found[2])
        password = re.search(r"^password=(.+)$", option_file.read_text(), re.MULTILINE)
        assert password, "the option file holds the admin password"
        assert password[1] not in output
        client = subprocess.run(
            [
                str(find_binaries()["mariadb"]),
                f"--defaults-file={option_file}",
                "--batch",
                "--skip-column-names",
                "-e",
                "SELECT 42, @@port",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert client.stdout.split() == ["42", found[1]], client.stderr
        assert_stops_on(proc, signal.SIGTERM, option_file.parent)


def test_the_admin_option_file_is_private(mariadb: MariaDBServer) -> None:
    assert mariadb.option_file.stat().st_mode & 0o077 == 0
    assert mariadb.admin_user in mariadb.option_file.read_text()
