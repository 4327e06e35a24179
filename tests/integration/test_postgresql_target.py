"""The postgresql-login target against a real PostgreSQL server.

Every check of "can this role log in with that password" goes through psql (libpq), not the
target's own driver (psycopg), so a bug in the target cannot confirm itself. After every test the
test's values must appear neither in the captured logs nor in the server log (which records
every ALTER ROLE: log_statement = ddl).
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

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
from rotation.passwords import generate
from rotation.settings import Settings
from rotation.targets import scram, target_type
from rotation.targets.base import AdminSpec, Credentials, SecretValue, TargetSpec
from rotation.targets.logins import PasswordLogin
from rotation.targets.postgresql import PostgresEngine

DATABASE = "appdb"
TARGET = target_type("postgresql-login")
SETTINGS = Settings.from_environ({})


class Values:
    """Hands out test values and remembers them, to prove afterwards that none leaked."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def new(self) -> SecretValue:
        return self.of(generate(TARGET.password_policy).reveal())

    def of(self, text: str) -> SecretValue:
        self.seen.append(text)
        return SecretValue(text)


@pytest.fixture(scope="module")
def cluster(postgres: PostgresCluster) -> PostgresCluster:
    if DATABASE not in postgres.psql("SELECT datname FROM pg_database"):
        postgres.create_database(DATABASE)
    return postgres


@pytest.fixture
def values(cluster: PostgresCluster, caplog: pytest.LogCaptureFixture) -> Iterator[Values]:
    caplog.set_level(logging.DEBUG)
    log_start = len(cluster.server_log())
    vals = Values()
    yield vals
    server_log = cluster.server_log()[log_start:]
    for text in vals.seen:
        assert text not in caplog.text, "a value reached the application log"
        assert text not in server_log, "a value reached the PostgreSQL server log"


def unique(prefix: str = "app") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def make_role(
    cluster: PostgresCluster, password: SecretValue | None, name: str | None = None, **kw: bool
) -> str:
    role = name or unique()
    cluster.create_role(role, password.reveal() if password else None, **kw)
    return role


def target(
    cluster: PostgresCluster,
    role: str,
    admin: AdminSpec,
    *,
    database: str = DATABASE,
    port: int | None = None,
) -> PasswordLogin:
    provider = f"{cluster.host}:{port or cluster.port}/{database}"
    spec = TargetSpec(kind="postgresql-login", provider=provider, credential=role, admin=admin)
    built = TARGET.build(spec, SETTINGS)
    assert isinstance(built, PasswordLogin)
    return built


def logs_in(cluster: PostgresCluster, role: str, value: SecretValue) -> bool:
    return cluster.can_login(role, value.reveal(), DATABASE)


def assert_clean(exc: BaseException, *secret: SecretValue) -> None:
    """The error, and anything it chains to, names no value."""
    seen: BaseException | None = exc
    while seen is not None:
        for value in secret:
            assert value.reveal() not in str(seen)
            assert value.reveal() not in repr(seen)
        seen = seen.__cause__
    assert isinstance(exc, RotationError)


# -- the happy paths, each step run twice ---------------------------------------------------------


def test_self_admin_applies_verifies_and_reverts_each_step_twice(
    cluster: PostgresCluster, values: Values
) -> None:
    old, new = values.new(), values.new()
    role = make_role(cluster, old)
    t = target(cluster, role, AdminSpec("self"))
    using = Credentials(current=old)

    assert t.apply(new=new, using=using) is True
    assert logs_in(cluster, role, new)
    assert not logs_in(cluster, role, old)
    assert t.apply(new=new, using=using) is False, "the second apply finds the new value in force"

    t.verify(value=new)
    t.verify(value=new)
    with pytest.raises(VerificationFailed) as refused:
        t.verify(value=old)
    assert_clean(refused.value, old, new)

    assert t.revert(previous=old, new=new, using=using) is True
    assert logs_in(cluster, role, old)
    assert not logs_in(cluster, role, new)
    assert t.revert(previous=old, new=new, using=using) is False, (
        "the second revert finds the old value in force"
    )


def test_secret_admin_applies_verifies_and_reverts_each_step_twice(
    cluster: PostgresCluster, values: Values
) -> None:
    admin_pw, old, new = values.new(), values.new(), values.new()
    # A CREATEROLE admin that is not a superuser, as on Azure Database for PostgreSQL.
    admin = make_role(cluster, admin_pw, unique("rotator"), createrole=True)
    role = make_role(cluster, old)
    t = target(cluster, role, AdminSpec("secret", "pg-admin"))
    # The admin path needs no current value: it rescues a role whose password was lost.
    using = Credentials(current=None, admin=admin_pw, admin_login=admin)

    assert t.apply(new=new, using=using) is True
    assert logs_in(cluster, role, new)
    assert not logs_in(cluster, role, old)
    assert t.apply(new=new, using=using) is False
    t.verify(value=new)

    assert t.revert(previous=old, new=new, using=using) is True
    assert logs_in(cluster, role, old)
    assert not logs_in(cluster, role, new)
    assert t.revert(previous=old, new=None, using=using) is False
    assert logs_in(cluster, admin, admin_pw), "the admin's own password is untouched"


def test_the_server_log_shows_the_verifier_never_the_password(
    cluster: PostgresCluster, values: Values
) -> None:
    old, new = values.new(), values.new()
    role = make_role(cluster, old)
    start = len(cluster.server_log())

    target(cluster, role, AdminSpec("self")).apply(new=new, using=Credentials(current=old))

    statements = [line for line in cluster.server_log()[start:].splitlines() if "ALTER ROLE" in line]
    assert len(statements) == 1
    assert re.search(
        rf"ALTER ROLE {role} WITH PASSWORD \'SCRAM-SHA-256\$4096:[^$]+\$[^:]+:[^\']+\'", statements[0]
    )
    assert cluster.stored_verifier(role) in statements[0]
    # (the values fixture then checks that neither plaintext is anywhere in the log)


# -- refusals leave everything as it was -----------------------------------------------------------


def test_wrong_current_value_is_refused_and_nothing_changes(cluster: PostgresCluster, values: Values) -> None:
    real, wrong, new = values.new(), values.new(), values.new()
    role = make_role(cluster, real)
    t = target(cluster, role, AdminSpec("self"))

    with pytest.raises(AuthenticationFailed) as refused:
        t.apply(new=new, using=Credentials(current=wrong))

    assert "current value" in str(refused.value)
    assert role in str(refused.value)
    assert_clean(refused.value, real, wrong, new)
    assert logs_in(cluster, role, real)
    assert not logs_in(cluster, role, new)


def test_wrong_admin_value_is_refused_and_nothing_changes(cluster: PostgresCluster, values: Values) -> None:
    admin_pw, wrong, old, new = values.new(), values.new(), values.new(), values.new()
    admin = make_role(cluster, admin_pw, unique("rotator"), createrole=True)
    role = make_role(cluster, old)
    t = target(cluster, role, AdminSpec("secret", "pg-admin"))

    with pytest.raises(AuthenticationFailed) as refused:
        t.apply(new=new, using=Credentials(current=old, admin=wrong, admin_login=admin))

    assert "pg-admin" in str(refused.value)
    assert_clean(refused.value, admin_pw, wrong, old, new)
    assert logs_in(cluster, role, old)
    assert not logs_in(cluster, role, new)


def test_admin_without_createrole_is_a_permanent_error(cluster: PostgresCluster, values: Values) -> None:
    admin_pw, old, new = values.new(), values.new(), values.new()
    admin = make_role(cluster, admin_pw, unique("weak"))
    role = make_role(cluster, old)
    t = target(cluster, role, AdminSpec("secret", "pg-admin"))

    with pytest.raises(TargetError) as refused:
        t.apply(new=new, using=Credentials(current=old, admin=admin_pw, admin_login=admin))

    assert "CREATEROLE" in str(refused.value)
    assert "[permanent]" in str(refused.value)
    assert_clean(refused.value, admin_pw, old, new)
    assert logs_in(cluster, role, old)


def test_admin_secret_must_name_its_role(cluster: PostgresCluster, values: Values) -> None:
    old, new, admin_pw = values.new(), values.new(), values.new()
    role = make_role(cluster, old)
    t = target(cluster, role, AdminSpec("secret", "pg-admin"))

    with pytest.raises(InvalidRequest, match=r"pg-admin.*rotation-credential"):
        t.apply(new=new, using=Credentials(current=old, admin=admin_pw))


def test_revert_is_impossible_when_nothing_at_hand_logs_in(cluster: PostgresCluster, values: Values) -> None:
    real, previous, new = values.new(), values.new(), values.new()
    role = make_role(cluster, real)

    with pytest.raises(UndoImpossible) as self_undo:
        target(cluster, role, AdminSpec("self")).revert(
            previous=previous, new=new, using=Credentials(current=previous)
        )
    assert_clean(self_undo.value, real, previous, new)

    wrong_admin = values.new()
    admin = make_role(cluster, values.new(), unique("rotator"), createrole=True)
    with pytest.raises(UndoImpossible) as admin_undo:
        target(cluster, role, AdminSpec("secret", "pg-admin")).revert(
            previous=previous, new=new, using=Credentials(current=None, admin=wrong_admin, admin_login=admin)
        )
    assert_clean(admin_undo.value, real, previous, new, wrong_admin)
    assert logs_in(cluster, role, real)


def test_a_role_that_may_not_log_in_fails_verification(cluster: PostgresCluster, values: Values) -> None:
    value = values.new()
    role = make_role(cluster, value, login=False)
    with pytest.raises(VerificationFailed):
        target(cluster, role, AdminSpec("self")).verify(value=value)


# -- what passes and what does not ------------------------------------------------------------------


def test_an_unreachable_server_is_transient(cluster: PostgresCluster, values: Values) -> None:
    old, new = values.new(), values.new()
    t = target(cluster, "app", AdminSpec("self"), port=free_port())  # nothing listens there
    using = Credentials(current=old)

    for attempt in (
        lambda: t.apply(new=new, using=using),
        lambda: t.verify(value=new),
        lambda: t.revert(previous=old, new=new, using=using),
    ):
        with pytest.raises(TransientError) as failed:
            attempt()
        assert "[transient]" in str(failed.value)
        assert_clean(failed.value, old, new)


def test_a_server_that_never_answers_times_out_as_transient(cluster: PostgresCluster, values: Values) -> None:
    # Accepts TCP connections and never says a word: a hung server or a black-holing firewall.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        spec = TargetSpec("postgresql-login", f"127.0.0.1:{port}/{DATABASE}", "app", AdminSpec("self"))
        t = PasswordLogin(spec, PostgresEngine(spec, SETTINGS, connect_timeout=1))
        started = time.monotonic()
        with pytest.raises(TransientError, match="timeout"):
            t.verify(value=values.new())
        assert time.monotonic() - started < 5


def test_too_many_connections_is_transient(cluster: PostgresCluster, values: Values) -> None:
    value = values.new()
    role = make_role(cluster, value)
    cluster.psql('ALTER ROLE :"role" CONNECTION LIMIT 0', variables={"role": role})
    with pytest.raises(TransientError, match="too many connections"):
        target(cluster, role, AdminSpec("self")).verify(value=value)


def test_a_missing_database_is_permanent(cluster: PostgresCluster, values: Values) -> None:
    value = values.new()
    role = make_role(cluster, value)
    with pytest.raises(TargetError, match="does not exist"):
        target(cluster, role, AdminSpec("self"), database="no_such_db").verify(value=value)


def test_a_concurrent_second_apply_changes_nothing_more(cluster: PostgresCluster, values: Values) -> None:
    # Two deliveries of the same step racing: both end with the role on the new value.
    old, new = values.new(), values.new()
    role = make_role(cluster, old)
    t = target(cluster, role, AdminSpec("self"))
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
    # inside the server ("tuple concurrently updated"): a transient error, whose retry is a no-op.
    assert True in results
    for result in results:
        assert isinstance(result, bool | TransientError), str(result)
        if isinstance(result, TransientError):
            assert t.apply(new=new, using=Credentials(current=old)) is False
    assert logs_in(cluster, role, new)
    assert not logs_in(cluster, role, old)


# -- hostile names and awkward values ----------------------------------------------------------------

HOSTILE_ROLES = [
    "it's",
    'say "hi"',
    "semi;colon; DROP ROLE victim; --",
    "brace}{name",
    "back\\slash",
    "Mixed Case",
    "ünï cødé",
    "x" * 63,
]


@pytest.mark.parametrize("role", HOSTILE_ROLES)
def test_hostile_role_names_change_only_that_role(
    cluster: PostgresCluster, values: Values, role: str
) -> None:
    victim_pw, old, new = values.new(), values.new(), values.new()
    victim = make_role(cluster, victim_pw, unique("victim"))
    # Unique per run, unless the name already uses all 63 bytes.
    role = make_role(cluster, old, role if len(role.encode()) > 54 else f"{role} {uuid.uuid4().hex[:8]}")
    t = target(cluster, role, AdminSpec("self"))

    assert t.apply(new=new, using=Credentials(current=old)) is True
    t.verify(value=new)
    assert logs_in(cluster, role, new)
    assert t.revert(previous=old, new=new, using=Credentials(current=old)) is True
    assert logs_in(cluster, role, old)
    assert logs_in(cluster, victim, victim_pw), "another role was touched"


def test_hostile_database_name(cluster: PostgresCluster, values: Values) -> None:
    database = f"d b;}}{{'\"{uuid.uuid4().hex[:6]}"
    old, new = values.new(), values.new()
    role = make_role(cluster, old)
    cluster.create_database(database, owner=role)
    t = target(cluster, role, AdminSpec("self"), database=database)

    assert t.apply(new=new, using=Credentials(current=old)) is True
    assert cluster.can_login(role, new.reveal(), database)


AWKWARD_VALUES = [
    "close}brace}}twice",
    "{starts-with-a-brace}",
    "semi;colon=equals",
    "quote'double\"back\\slash",
    " spaces  inside and around ",
    "café-€-ünïcødé",
    "ﬁ-ligature-NFKC",  # SASLprep folds it to "fi": libpq does the same when logging in
    "no\u00a0break\u00adsoft-hyphen",  # mapped to a space and to nothing
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629abc",  # invalid bidi: SASLprep refuses, raw bytes are used
]


@pytest.mark.parametrize("text", AWKWARD_VALUES)
def test_awkward_values_log_in_afterwards(cluster: PostgresCluster, values: Values, text: str) -> None:
    old = values.new()
    new = values.of(text)
    role = make_role(cluster, old)
    t = target(cluster, role, AdminSpec("self"))

    assert t.apply(new=new, using=Credentials(current=old)) is True
    assert logs_in(cluster, role, new), "psql (libpq) logs in with the value"
    t.verify(value=new)
    # and back again, logging in with the awkward value to make the change
    assert t.revert(previous=old, new=new, using=Credentials(current=new)) is True
    assert logs_in(cluster, role, old)


@pytest.mark.parametrize("text", ["plain-ascii", *AWKWARD_VALUES])
def test_the_verifier_matches_the_one_postgresql_computes(cluster: PostgresCluster, text: str) -> None:
    role = make_role(cluster, None)
    # Let the server hash the plaintext itself (logging switched off for this one statement),
    # then recompute with its salt and iteration count.
    cluster.psql(
        "SET log_statement = 'none';\nALTER ROLE :\"role\" PASSWORD :'pw';\n",
        variables={"role": role, "pw": text},
    )
    stored = cluster.stored_verifier(role)
    assert stored is not None
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$.+", stored)
    assert match
    ours = scram.verifier(text, iterations=int(match[1]), salt=base64.b64decode(match[2]))
    assert ours == stored
