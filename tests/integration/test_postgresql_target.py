"""What only the postgresql-login target does, against a real PostgreSQL server: the password
reaches the server as a SCRAM-SHA-256 verifier computed by the hub, never as plaintext, and that
verifier is the one PostgreSQL itself computes, SASLprep included.

The engine-independent battery (apply / verify / revert, refusals, faults, hostile names, awkward
values) runs against PostgreSQL and MariaDB alike in test_database_targets.py.

Every check of "can this role log in with that password" goes through psql (libpq), not the
target's own driver (psycopg). After every test the test's values must appear neither in the
captured logs nor in the server log (which records every ALTER ROLE: log_statement = ddl).
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from database_battery_helpers import (
    AWKWARD_VALUES,
    Values,
    logs_in,
    make_login,
    target_for,
    watched_values,
)

from local.databases.postgresql import PostgresCluster
from rotation.errors import TargetError
from rotation.settings import Settings
from rotation.targets import scram
from rotation.targets.base import AdminSpec, Credentials, TargetSpec
from rotation.targets.logins import PasswordLogin
from rotation.targets.postgresql import PostgresEngine


@pytest.fixture
def values(postgres: PostgresCluster, caplog: pytest.LogCaptureFixture) -> Iterator[Values]:
    with watched_values(postgres, caplog) as vals:
        yield vals


@pytest.mark.parametrize("admin", ["self", "secret"])
def test_the_server_log_shows_the_verifier_never_the_password(
    postgres: PostgresCluster, values: Values, admin: str
) -> None:
    old, new, admin_pw = values.new(), values.new(), values.new()
    role = make_login(postgres, old)
    rotator = make_login(postgres, admin_pw, admin=True)
    start = len(postgres.server_log())

    if admin == "self":
        target_for(postgres, role, AdminSpec("self")).apply(new=new, using=Credentials(current=old))
    else:
        target_for(postgres, role, AdminSpec("secret", "pg-admin")).apply(
            new=new, using=Credentials(current=None, admin=admin_pw, admin_login=rotator)
        )

    statements = [line for line in postgres.server_log()[start:].splitlines() if "ALTER ROLE" in line]
    assert len(statements) == 1
    assert re.search(
        rf"ALTER ROLE {role} WITH PASSWORD \'SCRAM-SHA-256\$4096:[^$]+\$[^:]+:[^\']+\'", statements[0]
    )
    stored = postgres.stored_verifier(role)
    assert stored is not None
    assert stored in statements[0]
    # (the values fixture then checks that no plaintext is anywhere in the log)


#: Values whose bytes SCRAM's SASLprep changes (or gives up on) before hashing: the hub must
#: prepare them exactly as libpq does when it logs in.
SASLPREP_VALUES = [
    "ﬁ-ligature-NFKC",  # SASLprep folds it to "fi": libpq does the same when logging in
    "no\u00a0break\u00adsoft-hyphen",  # mapped to a space and to nothing
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629abc",  # invalid bidi: SASLprep refuses, raw bytes are used
]


@pytest.mark.parametrize("text", SASLPREP_VALUES)
def test_values_saslprep_changes_log_in_afterwards(
    postgres: PostgresCluster, values: Values, text: str
) -> None:
    old = values.new()
    new = values.of(text)
    role = make_login(postgres, old)
    t = target_for(postgres, role, AdminSpec("self"))

    assert t.apply(new=new, using=Credentials(current=old)) is True
    assert logs_in(postgres, role, new), "psql (libpq) logs in with the value"
    t.verify(value=new)
    # and back again, logging in with the value to make the change
    assert t.revert(previous=old, new=new, using=Credentials(current=new)) is True
    assert logs_in(postgres, role, old)


@pytest.mark.parametrize("text", ["plain-ascii", *AWKWARD_VALUES, *SASLPREP_VALUES])
def test_the_verifier_matches_the_one_postgresql_computes(postgres: PostgresCluster, text: str) -> None:
    role = make_login(postgres, None)
    # Let the server hash the plaintext itself (logging switched off for this one statement),
    # then recompute with its salt and iteration count.
    postgres.psql(
        "SET log_statement = 'none';\nALTER ROLE :\"role\" PASSWORD :'pw';\n",
        variables={"role": role, "pw": text},
    )
    stored = postgres.stored_verifier(role)
    assert stored is not None
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$.+", stored)
    assert match
    ours = scram.verifier(text, iterations=int(match[1]), salt=base64.b64decode(match[2]))
    assert ours == stored


def test_a_server_that_refuses_tls_is_a_permanent_error_and_gets_no_password(values: Values) -> None:
    """A server that answers libpq's SSLRequest with "N" (no TLS): with ``sslmode=require`` the
    hub stops there, before any password is sent, with a clear and permanent error. (The server
    is a few lines of the protocol in this test: PostgreSQL itself would need a restart.)"""
    received = bytearray()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]

        def answer() -> None:
            listener.settimeout(10)
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = listener.accept()
                    with conn:
                        received.extend(conn.recv(8))  # SSLRequest: length 8, code 80877103
                        conn.sendall(b"N")
                        received.extend(conn.recv(4096))  # whatever follows (nothing, as it should)

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        spec = TargetSpec("postgresql-login", f"127.0.0.1:{port}/appdb", "app", AdminSpec("self"))
        old, new = values.new(), values.new()
        with pytest.raises(TargetError) as refused:
            PasswordLogin(spec, PostgresEngine(spec, Settings.from_environ({}))).apply(
                new=new, using=Credentials(current=old)
            )
    assert "SSL" in str(refused.value)
    assert "[permanent]" in str(refused.value)
    assert received.startswith(struct.pack("!ii", 8, 80877103))
    for value in (old, new):
        assert value.reveal().encode() not in received


def test_a_server_asking_for_the_cleartext_password_gets_none(
    postgres: PostgresCluster, values: Values
) -> None:
    """A server (a host a tag names) that asks for the password itself instead of SCRAM: the
    hub stops before libpq answers, with a permanent error saying why; psql, which answers,
    proves the server would have let it in. (A server told ``md5`` for a role whose password is
    stored as SCRAM uses SCRAM: nothing to refuse there.)"""
    old = values.new()
    role = make_login(postgres, old)
    postgres.authenticate_with(role, "password")
    assert logs_in(postgres, role, old), "the server takes the password it asks for"
    attempts = postgres.login_attempts()

    with pytest.raises(TargetError) as stopped:
        target_for(postgres, role, AdminSpec("self")).verify(value=old)

    assert "SCRAM-SHA-256" in str(stopped.value)
    assert "[permanent]" in str(stopped.value)
    assert postgres.login_attempts() == attempts + 1
    assert (
        f"connection authorized: user={role}" not in postgres.server_log().split("connection received:")[-1]
    )


def test_the_server_certificate_is_verified_by_default(postgres: PostgresCluster, values: Values) -> None:
    """Without the local CA (certifi's roots, as in Azure) the local server's certificate is not
    trusted: the hub stops before authenticating. ``require`` encrypts without verifying."""
    old = values.new()
    role = make_login(postgres, old)
    assert Settings.from_environ({}).postgresql_sslmode == "verify-full"

    with pytest.raises(TargetError) as untrusted:
        target_for(postgres, role, AdminSpec("self"), settings=Settings.from_environ({})).verify(value=old)
    assert "not trusted" in str(untrusted.value)
    assert "[permanent]" in str(untrusted.value)

    unverified = Settings.from_environ({"ROTATION_POSTGRESQL_SSLMODE": "require"})
    target_for(postgres, role, AdminSpec("self"), settings=unverified).verify(value=old)
    target_for(postgres, role, AdminSpec("self")).verify(value=old)  # verify-full with the local CA


def test_with_the_azure_roots_the_local_server_is_not_trusted(
    postgres: PostgresCluster, values: Values
) -> None:
    """``ROTATION_POSTGRESQL_SSL_CA=azure`` hands libpq Azure's two roots and nothing else: the local
    server's certificate (from the project's own CA) is refused before any password is sent."""
    old = values.new()
    role = make_login(postgres, old)
    azure = Settings.from_environ({"ROTATION_POSTGRESQL_SSL_CA": "azure"})
    with pytest.raises(TargetError) as untrusted:
        target_for(postgres, role, AdminSpec("self"), settings=azure).verify(value=old)
    assert "not trusted" in str(untrusted.value)
    assert "[permanent]" in str(untrusted.value)
    assert f"connection authorized: user={role}" not in postgres.server_log()
