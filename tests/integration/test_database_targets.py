"""The database-login targets against real servers: one battery, run against every engine.

``postgresql-login`` runs against PostgreSQL 15, ``mysql-login`` against MariaDB 10.11 (started with
``disconnect_on_expired_password``, as the local stack does: MySQL 8 and Azure refuse a login
with an expired password, where MariaDB's default lets it in to "sandbox mode"). Both servers come
from the operating system's packages, in temporary directories, with TLS and statement logs
(``local.databases``). What differs between engines is kept to a few small helpers keyed by
``server.kind`` below; what is specific to one engine lives in ``test_postgresql_target.py`` and
``test_mysql_target.py``.

Every check of "can this login log in with that value" goes through the server's own client
(psql, mariadb), never through the target's driver, so a bug in the target cannot confirm itself.
After every test the test's values must appear neither in the captured logs nor in the server's
log (PostgreSQL's DDL statement log, MariaDB's general query log).
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pymysql
import pytest
from database_battery_helpers import (
    AWKWARD_VALUES,
    Values,
    assert_clean,
    logs_in,
    make_login,
    settings_for,
    spec_for,
    target_for,
    unique,
    watched_values,
)

from local.databases.base import LocalDatabase
from local.databases.mariadb import MariaDBServer
from local.databases.postgresql import PostgresCluster
from local.ports import free_port
from rotation.errors import (
    AuthenticationFailed,
    InvalidRequest,
    RotationError,
    TargetError,
    TransientError,
    UndoImpossible,
    VerificationFailed,
)
from rotation.targets import mysql, postgresql, target_type
from rotation.targets.base import AdminSpec, Credentials, SecretValue, TargetSpec
from rotation.targets.logins import PasswordLogin

POSTGRESQL = postgresql.KIND
MYSQL = mysql.KIND
ADMIN_SECRET = "db-admin"


@pytest.fixture(scope="module")
def mariadb_server() -> Iterator[MariaDBServer]:
    with MariaDBServer(disconnect_on_expired_password=True) as server:
        yield server


@pytest.fixture(scope="module", params=["postgresql", "mariadb"], ids=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> LocalDatabase:
    """Each real server in turn; PostgreSQL is the session's cluster (conftest), MariaDB this
    module's own."""
    database: LocalDatabase = request.getfixturevalue(
        "postgres" if request.param == "postgresql" else "mariadb_server"
    )
    return database


@pytest.fixture
def values(server: LocalDatabase, caplog: pytest.LogCaptureFixture) -> Iterator[Values]:
    with watched_values(server, caplog) as vals:
        yield vals


# -- what differs per engine ------------------------------------------------------------------------

#: The right an admin login needs to change another login's password, as the error names it.
ADMIN_RIGHT = {POSTGRESQL: "CREATEROLE", MYSQL: "CREATE USER"}
#: The engine classes, for a target with a short connect timeout (``build`` uses the default).
ENGINES: dict[str, Callable[..., object]] = {POSTGRESQL: postgresql.PostgresEngine, MYSQL: mysql.MySQLEngine}


def longest_name(kind: str) -> str:
    """A unique login name of the greatest length the engine allows: PostgreSQL counts 63 bytes,
    MySQL/MariaDB 80 characters (here two bytes each)."""
    tag = uuid.uuid4().hex[:8]
    if kind == POSTGRESQL:
        name = tag + "é" * 27 + "x"
        assert len(name.encode()) == postgresql.MAX_IDENTIFIER_BYTES
    else:
        name = tag + "é" * 72
        assert len(name) == mysql.MAX_USER_CHARS
    return name


@contextmanager
def connections_used_up(server: LocalDatabase, login: str, value: SecretValue) -> Iterator[str]:
    """While inside, ``login`` may open no further session; yields a word of the refusal.

    PostgreSQL: ``CONNECTION LIMIT 0``. MariaDB: ``MAX_USER_CONNECTIONS 1`` with one session of
    the login held open (a limit of 0 means "no limit of its own" there).
    """
    if isinstance(server, PostgresCluster):
        server.psql('ALTER ROLE :"role" CONNECTION LIMIT 0', variables={"role": login})
        yield "too many connections"
        return
    assert isinstance(server, MariaDBServer)
    server.execute("ALTER USER %s@%s WITH MAX_USER_CONNECTIONS 1", (login, "%"))
    held = pymysql.connect(
        host=server.host,
        port=server.port,
        user=login,
        password=value.reveal().encode(),
        database=server.default_database,
        ssl_ca=str(server.ca_file),
        connect_timeout=10,
    )
    try:
        yield "max_user_connections"
    finally:
        held.close()


# -- the happy paths, each step run twice ---------------------------------------------------------


def test_self_admin_applies_verifies_and_reverts_each_step_twice(
    server: LocalDatabase, values: Values
) -> None:
    old, new = values.new(), values.new()
    login = make_login(server, old)
    t = target_for(server, login, AdminSpec("self"))
    using = Credentials(current=old)

    assert t.apply(new=new, using=using) is True
    assert logs_in(server, login, new)
    assert not logs_in(server, login, old)
    assert t.apply(new=new, using=using) is False, "the second apply finds the new value in force"

    t.verify(value=new)
    t.verify(value=new)
    with pytest.raises(VerificationFailed) as refused:
        t.verify(value=old)
    assert_clean(refused.value, old, new)

    assert t.revert(previous=old, new=new, using=using) is True
    assert logs_in(server, login, old)
    assert not logs_in(server, login, new)
    assert t.revert(previous=old, new=new, using=using) is False, (
        "the second revert finds the old value in force"
    )


def test_a_login_changing_itself_is_refused_nothing_on_a_first_apply(
    server: LocalDatabase, values: Values
) -> None:
    """Its current value logging in says the change is not done: a first apply opens one session
    and the server refuses none (no failed login in the audit log, none towards a lockout). A
    rerun is refused the current value once, then finds the new value in force."""
    old, new = values.new(), values.new()
    login = make_login(server, old)
    t = target_for(server, login, AdminSpec("self"))
    attempts, refused = server.login_attempts(), server.refused_logins(login)

    assert t.apply(new=new, using=Credentials(current=old)) is True
    assert (server.login_attempts() - attempts, server.refused_logins(login) - refused) == (1, 0)
    assert t.apply(new=new, using=Credentials(current=old)) is False
    assert (server.login_attempts() - attempts, server.refused_logins(login) - refused) == (3, 1)
    assert logs_in(server, login, new)


def test_secret_admin_applies_verifies_and_reverts_each_step_twice(
    server: LocalDatabase, values: Values
) -> None:
    admin_pw, old, new = values.new(), values.new(), values.new()
    # An admin that is not a superuser (PostgreSQL: CREATEROLE; MySQL: CREATE USER), as on Azure.
    admin = make_login(server, admin_pw, unique("rotator"), admin=True)
    login = make_login(server, old)
    t = target_for(server, login, AdminSpec("secret", ADMIN_SECRET))
    # The admin path needs no current value: it rescues a login whose password was lost.
    using = Credentials(current=None, admin=admin_pw, admin_login=admin)

    assert t.apply(new=new, using=using) is True
    assert logs_in(server, login, new)
    assert not logs_in(server, login, old)
    assert t.apply(new=new, using=using) is False
    t.verify(value=new)
    t.verify(value=new)

    assert t.revert(previous=old, new=new, using=using) is True
    assert logs_in(server, login, old)
    assert not logs_in(server, login, new)
    assert t.revert(previous=old, new=None, using=using) is False
    assert logs_in(server, admin, admin_pw), "the admin's own password is untouched"


# -- refusals leave everything as it was -----------------------------------------------------------


def test_wrong_current_value_is_refused_and_nothing_changes(server: LocalDatabase, values: Values) -> None:
    real, wrong, new = values.new(), values.new(), values.new()
    login = make_login(server, real)
    t = target_for(server, login, AdminSpec("self"))

    with pytest.raises(AuthenticationFailed) as refused:
        t.apply(new=new, using=Credentials(current=wrong))

    assert "current value" in str(refused.value)
    assert login in str(refused.value)
    assert "[permanent]" in str(refused.value)
    assert_clean(refused.value, real, wrong, new)
    assert logs_in(server, login, real)
    assert not logs_in(server, login, new)


def test_wrong_admin_value_is_refused_and_nothing_changes(server: LocalDatabase, values: Values) -> None:
    admin_pw, wrong, old, new = values.new(), values.new(), values.new(), values.new()
    admin = make_login(server, admin_pw, unique("rotator"), admin=True)
    login = make_login(server, old)
    t = target_for(server, login, AdminSpec("secret", ADMIN_SECRET))

    with pytest.raises(AuthenticationFailed) as refused:
        t.apply(new=new, using=Credentials(current=old, admin=wrong, admin_login=admin))

    assert ADMIN_SECRET in str(refused.value)
    assert_clean(refused.value, admin_pw, wrong, old, new)
    assert logs_in(server, login, old)
    assert not logs_in(server, login, new)
    assert logs_in(server, admin, admin_pw)


def test_admin_without_the_right_to_change_passwords_is_a_permanent_error(
    server: LocalDatabase, values: Values
) -> None:
    admin_pw, old, new = values.new(), values.new(), values.new()
    admin = make_login(server, admin_pw, unique("weak"), admin=True)
    server.set_admin(admin, allowed=False)
    login = make_login(server, old)
    t = target_for(server, login, AdminSpec("secret", ADMIN_SECRET))

    attempts: list[Callable[[], bool]] = [
        lambda: t.apply(new=new, using=Credentials(current=old, admin=admin_pw, admin_login=admin)),
        lambda: t.revert(
            previous=new, new=old, using=Credentials(current=None, admin=admin_pw, admin_login=admin)
        ),
    ]
    for attempt in attempts:
        with pytest.raises(TargetError) as refused:
            attempt()
        assert ADMIN_RIGHT[server.kind] in str(refused.value)
        assert "[permanent]" in str(refused.value)
        assert_clean(refused.value, admin_pw, old, new)
    assert logs_in(server, login, old)
    assert not logs_in(server, login, new)


def test_admin_secret_must_name_its_login(server: LocalDatabase, values: Values) -> None:
    old, new, admin_pw = values.new(), values.new(), values.new()
    login = make_login(server, old)
    t = target_for(server, login, AdminSpec("secret", ADMIN_SECRET))

    with pytest.raises(InvalidRequest, match=rf"{ADMIN_SECRET}.*rotation-credential") as refused:
        t.apply(new=new, using=Credentials(current=old, admin=admin_pw))
    assert_clean(refused.value, old, new, admin_pw)
    assert logs_in(server, login, old)


def test_revert_is_impossible_when_nothing_at_hand_logs_in(server: LocalDatabase, values: Values) -> None:
    real, previous, new = values.new(), values.new(), values.new()
    login = make_login(server, real)

    with pytest.raises(UndoImpossible) as self_undo:
        target_for(server, login, AdminSpec("self")).revert(
            previous=previous, new=new, using=Credentials(current=previous)
        )
    assert_clean(self_undo.value, real, previous, new)

    wrong_admin = values.new()
    admin = make_login(server, values.new(), unique("rotator"), admin=True)
    with pytest.raises(UndoImpossible) as admin_undo:
        target_for(server, login, AdminSpec("secret", ADMIN_SECRET)).revert(
            previous=previous, new=new, using=Credentials(current=None, admin=wrong_admin, admin_login=admin)
        )
    assert admin in str(admin_undo.value), "the error names the admin login that was refused"
    assert_clean(admin_undo.value, real, previous, new, wrong_admin)
    assert logs_in(server, login, real)


def test_a_login_that_may_not_log_in_fails_verification(server: LocalDatabase, values: Values) -> None:
    value = values.new()
    login = make_login(server, value)
    server.set_login_allowed(login, allowed=False)

    with pytest.raises(VerificationFailed) as refused:
        target_for(server, login, AdminSpec("self")).verify(value=value)
    assert_clean(refused.value, value)

    server.set_login_allowed(login, allowed=True)
    target_for(server, login, AdminSpec("self")).verify(value=value)


def test_an_expired_password_fails_verification_and_cannot_change_itself(
    server: LocalDatabase, values: Values
) -> None:
    old, new = values.new(), values.new()
    login = make_login(server, old)
    server.expire_password(login)
    t = target_for(server, login, AdminSpec("self"))

    with pytest.raises(VerificationFailed) as unverified:
        t.verify(value=old)
    with pytest.raises(AuthenticationFailed) as refused:
        t.apply(new=new, using=Credentials(current=old))

    assert "[permanent]" in str(refused.value)
    assert_clean(unverified.value, old, new)
    assert_clean(refused.value, old, new)
    assert not logs_in(server, login, new)
    server.expire_password(login, expired=False)
    assert logs_in(server, login, old), "the password is still the old one"
    assert not logs_in(server, login, new)


# -- what passes and what does not ------------------------------------------------------------------

#: How long a failed connection may take here: the server is local, the timeout 1 second.
CONNECT_BOUND_SECONDS = 5.0


def test_an_unreachable_server_is_transient(server: LocalDatabase, values: Values) -> None:
    old, new = values.new(), values.new()
    t = target_for(server, "app", AdminSpec("self"), port=free_port())  # nothing listens there
    using = Credentials(current=old)

    for attempt in (
        lambda: t.apply(new=new, using=using),
        lambda: t.verify(value=new),
        lambda: t.revert(previous=old, new=new, using=using),
    ):
        started = time.monotonic()
        with pytest.raises(TransientError) as failed:
            attempt()
        assert time.monotonic() - started < CONNECT_BOUND_SECONDS
        assert "[transient]" in str(failed.value)
        assert_clean(failed.value, old, new)


def test_a_server_that_never_answers_times_out_as_transient(server: LocalDatabase, values: Values) -> None:
    value = values.new()
    outcome: list[BaseException | None] = []
    # Accepts TCP connections and never says a word: a hung server or a black-holing firewall.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        spec = spec_for(server, "app", AdminSpec("self"), port=silent.getsockname()[1])
        engine = ENGINES[server.kind](spec, settings_for(server), connect_timeout=1)
        t = PasswordLogin(spec, engine)  # type: ignore[arg-type]

        def attempt() -> None:
            try:
                t.verify(value=value)
            except BaseException as exc:
                outcome.append(exc)
            else:
                outcome.append(None)

        started = time.monotonic()
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(CONNECT_BOUND_SECONDS)
        in_time = not worker.is_alive()
        elapsed = time.monotonic() - started
    # Closing the listening socket resets a connection still waiting, which ends the attempt.
    worker.join(60)

    assert in_time, f"still waiting for the server after {elapsed:.1f}s with a 1s connect timeout"
    failure = outcome[0]
    assert isinstance(failure, TransientError), repr(failure)
    assert re.search(r"time(out|d out)", str(failure), re.IGNORECASE)
    assert_clean(failure, value)


@pytest.mark.parametrize("prefix", ["app", "app_TLS"], ids=["plain-name", "name-with-TLS"])
def test_too_many_connections_is_transient(server: LocalDatabase, values: Values, prefix: str) -> None:
    value = values.new()
    login = make_login(server, value, unique(prefix))
    t = target_for(server, login, AdminSpec("self"))
    with connections_used_up(server, login, value) as refusal, pytest.raises(TransientError) as failed:
        t.verify(value=value)
    assert refusal in str(failed.value)
    assert "[transient]" in str(failed.value)
    assert_clean(failed.value, value)


def test_a_missing_database_is_permanent(server: LocalDatabase, values: Values) -> None:
    value = values.new()
    login = make_login(server, value)
    with pytest.raises(TargetError) as failed:
        target_for(server, login, AdminSpec("self"), database="no_such_db").verify(value=value)
    assert "no_such_db" in str(failed.value)
    assert "[permanent]" in str(failed.value)
    assert_clean(failed.value, value)


def test_an_unknown_host_is_transient_and_names_it(server: LocalDatabase, values: Values) -> None:
    """A host name that does not resolve (DNS may come back, so it is retried) gets an error that
    names the host; nothing is sent anywhere."""
    value = values.new()
    spec = TargetSpec(
        server.kind, f"no-such-host.invalid:{server.port}/{server.default_database}", "app", AdminSpec("self")
    )
    with pytest.raises(TransientError) as failed:
        target_type(server.kind).build(spec, settings_for(server)).verify(value=value)
    assert "no-such-host.invalid" in str(failed.value)
    assert_clean(failed.value, value)


def test_an_admin_changing_a_login_that_does_not_exist_changes_nothing(
    server: LocalDatabase, values: Values
) -> None:
    """The tag names a login the server does not have: the admin's change is refused for good,
    with an error that names the login, and the admin itself is untouched."""
    admin_pw, new = values.new(), values.new()
    admin = make_login(server, admin_pw, unique("rotator"), admin=True)
    missing = unique("missing")
    t = target_for(server, missing, AdminSpec("secret", ADMIN_SECRET))
    with pytest.raises(TargetError) as refused:
        t.apply(new=new, using=Credentials(current=None, admin=admin_pw, admin_login=admin))
    assert missing in str(refused.value)
    assert "[permanent]" in str(refused.value)
    assert_clean(refused.value, admin_pw, new)
    assert logs_in(server, admin, admin_pw)


def test_a_concurrent_second_apply_changes_nothing_more(server: LocalDatabase, values: Values) -> None:
    # Two deliveries of the same step racing: both end with the login on the new value.
    old, new = values.new(), values.new()
    login = make_login(server, old)
    t = target_for(server, login, AdminSpec("self"))
    results: list[bool | BaseException] = []

    def run() -> None:
        try:
            results.append(t.apply(new=new, using=Credentials(current=old)))
        except RotationError as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # The loser finds the new value in force, applies it again, or collides with the winner
    # inside the server (PostgreSQL: "tuple concurrently updated"): a transient error, whose
    # retry is a no-op.
    assert True in results
    for result in results:
        assert isinstance(result, bool | TransientError), str(result)
        if isinstance(result, TransientError):
            assert t.apply(new=new, using=Credentials(current=old)) is False
    assert logs_in(server, login, new)
    assert not logs_in(server, login, old)


# -- hostile names and awkward values ----------------------------------------------------------------

LONGEST = "<the longest name the engine allows>"
HOSTILE_LOGINS = [
    "it's",
    "it\\'s",
    'say "hi"',
    "semi;colon'; DROP USER victim; DROP ROLE victim; --",
    "brace}{name",
    "back\\slash\\",
    "`back`ticks`",
    "per%cent_under%s",
    "Mixed Case",
    "ünï cødé ✓",
    LONGEST,
]


@pytest.mark.parametrize("name", HOSTILE_LOGINS)
def test_hostile_login_names_change_only_that_login(server: LocalDatabase, values: Values, name: str) -> None:
    victim_pw, admin_pw, old, new = values.new(), values.new(), values.new(), values.new()
    victim = make_login(server, victim_pw, unique("victim"))
    admin = make_login(server, admin_pw, unique("rotator"), admin=True)
    # Unique per run, the name's own ending kept last.
    login = longest_name(server.kind) if name == LONGEST else f"{uuid.uuid4().hex[:8]} {name}"
    make_login(server, old, login)
    if name == LONGEST:
        with pytest.raises(InvalidRequest, match="rotation-credential"):
            target_for(server, login + "x", AdminSpec("self"))  # refused, never truncated

    # The login changes its own password ...
    t = target_for(server, login, AdminSpec("self"))
    assert t.apply(new=new, using=Credentials(current=old)) is True
    t.verify(value=new)
    assert logs_in(server, login, new)
    assert not logs_in(server, login, old)
    # ... and an admin changes it back, naming it in the statement.
    by_admin = target_for(server, login, AdminSpec("secret", ADMIN_SECRET))
    assert by_admin.revert(
        previous=old, new=new, using=Credentials(current=None, admin=admin_pw, admin_login=admin)
    )
    assert logs_in(server, login, old)
    assert not logs_in(server, login, new)
    assert logs_in(server, victim, victim_pw), "another login was touched"
    assert logs_in(server, admin, admin_pw), "the admin was touched"


def test_hostile_database_name(server: LocalDatabase, values: Values) -> None:
    database = f"d b;}}{{'\"`%_\\é✓{uuid.uuid4().hex[:6]}"
    old, new = values.new(), values.new()
    login = make_login(server, old)
    server.create_database(database, owner=login)
    t = target_for(server, login, AdminSpec("self"), database=database)

    assert t.apply(new=new, using=Credentials(current=old)) is True
    t.verify(value=new)
    assert logs_in(server, login, new, database)
    assert t.revert(previous=old, new=new, using=Credentials(current=new)) is True
    assert logs_in(server, login, old, database)


@pytest.mark.parametrize("text", AWKWARD_VALUES)
def test_awkward_values_log_in_afterwards(server: LocalDatabase, values: Values, text: str) -> None:
    old = values.new()
    new = values.of(text)
    login = make_login(server, old)
    t = target_for(server, login, AdminSpec("self"))

    assert t.apply(new=new, using=Credentials(current=old)) is True
    assert logs_in(server, login, new), "the server's own client logs in with the value"
    t.verify(value=new)
    # and back again, logging in with the awkward value to make the change
    assert t.revert(previous=old, new=new, using=Credentials(current=new)) is True
    assert logs_in(server, login, old)
    assert not logs_in(server, login, new)
