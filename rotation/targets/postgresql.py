"""Target ``postgresql-login``: the password of a PostgreSQL role, changed through psycopg 3.

psycopg's binary wheels carry libpq, so this target needs no operating-system driver: it runs on
Azure's Functions images as deployed (tests/deploy proves it).

Tags (validated here, without connecting):

- ``rotation-provider``: ``<host>[:<port>]/<database>``, port 5432 by default; the host is a
  DNS name, an IPv4 address or a bracketed IPv6 address. Example:
  ``myserver.postgres.database.azure.com:5432/appdb``. The database is the one every login
  of this target connects to (the role must be allowed to connect to it).
- ``rotation-credential``: the role's exact name, as stored (case-sensitive, unquoted).
- ``rotation-admin``: ``self`` (the role logs in with its current value and changes its own
  password), ``secret:<name>`` (another secret in the same vault whose value is the password
  of an admin role, whose own ``rotation-credential`` tag names that role and whose
  ``rotation-provider`` names this server: host and port must match) or
  ``managed-identity`` (the hub's identity logs in with an Entra access token as its
  password, as Azure Database for PostgreSQL flexible server accepts; its role is the setting
  ``ROTATION_POSTGRESQL_ENTRA_ROLE``). The admin role needs ``CREATEROLE``.

Every session is TLS (``ROTATION_POSTGRESQL_SSLMODE``, ``verify-full`` by default, against
``ROTATION_POSTGRESQL_SSL_CA``: a CA file, ``azure`` for only the two roots Azure's servers chain
to, or by default certifi's whole bundle, which holds them) and authenticates by SCRAM-SHA-256 only (libpq's ``require_auth``): a server that asks for the
cleartext or an MD5 password is refused before libpq answers it, so a host named in a tag cannot
collect a password that way. The hub's Entra token is the one exception: Azure takes it as a
cleartext password, over the verified TLS.

The change is ``ALTER ROLE <role> WITH PASSWORD '<SCRAM-SHA-256 verifier>'``, the statement
built by the server (``format('%I %L')``) and the verifier computed here, so the plaintext
never reaches the server's statement log or activity views. Connection parameters go to libpq
as separate keywords (psycopg quotes each), never as one string built here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import certifi
import psycopg

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
from rotation.targets import TargetType, scram
from rotation.targets.azure_database_roots import AZURE, azure_roots_file
from rotation.targets.base import SecretValue, TargetSpec, TokenSource
from rotation.targets.logins import PasswordLogin, Principal, Purpose, check_admin, scrub
from rotation.targets.provider import NameRule, Provider, ProviderFormat

logger = logging.getLogger(__name__)

KIND = "postgresql-login"
DEFAULT_PORT = 5432
CONNECT_TIMEOUT_SECONDS = 15
STATEMENT_TIMEOUT = "30s"
# TLS is always on: "disable", "allow" and "prefer" would let a password travel in the clear.
SSL_MODES = ("require", "verify-ca", "verify-full")
# What a session may authenticate with: a password only by SCRAM (the server never sees it), the
# hub's Entra token as the cleartext password Azure asks for (or by SCRAM, where a server
# takes a token that way: the local one does).
AUTH_FOR_PASSWORDS = "scram-sha-256"
AUTH_FOR_TOKENS = "password,scram-sha-256"
# PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1): a longer tag would change
# the password of another role than the one named.
MAX_IDENTIFIER_BYTES = 63
# The audience of Entra tokens for Azure Database for PostgreSQL (and MySQL) flexible server.
ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
APPLICATION_NAME = "keyvault-rotation-hub"

PASSWORD_POLICY = DATABASE_POLICY


# -- validation (no connection) ---------------------------------------------------------------


PROVIDER = ProviderFormat(
    default_port=DEFAULT_PORT,
    example="myserver.postgres.database.azure.com:5432/appdb",
    database=NameRule("PostgreSQL", max_bytes=MAX_IDENTIFIER_BYTES),
)
parse_provider = PROVIDER.parse


def check_role_name(value: str, *, tag: str = "rotation-credential") -> None:
    """Raises InvalidRequest naming ``tag`` when ``value`` cannot be a PostgreSQL login role.

    Any character but NUL is legal in a quoted identifier, so quotes, spaces and semicolons
    are accepted (the server quotes the name); what is refused is what PostgreSQL would
    silently alter (a name over 63 bytes is truncated) or reserves for itself.
    """
    PROVIDER.database.check(value, what="role name", tag=tag)
    if value.startswith("pg_"):
        raise InvalidRequest(f"{tag} {value!r}: role names starting with 'pg_' are reserved by PostgreSQL")
    if value in ("public", "none"):
        raise InvalidRequest(f"{tag} {value!r} is a reserved role name")


def validate(spec: TargetSpec) -> None:
    """Check the provider, credential and admin tags of a ``postgresql-login`` secret.

    Raises:
        InvalidRequest: a tag is malformed or asks for something unsupported; names the tag.
    """
    parse_provider(spec.provider)
    check_role_name(spec.credential)
    check_admin(spec)


# -- the engine ---------------------------------------------------------------------------------


# What a pg_shdepend entry says about the role it refers to.
_DEPENDENCY = {
    "o": "owns",
    "a": "holds privileges on",
    "i": "holds privileges on",
    "r": "is named in a policy on",
}


class _Session:
    def __init__(self, conn: psycopg.Connection[Any], engine: PostgresEngine, as_login: str):
        self._conn = conn
        self._engine = engine
        self._as_login = as_login

    def check(self) -> None:
        self._conn.execute("SELECT 1").fetchone()

    def set_password(self, new: SecretValue, *, current: SecretValue | None) -> None:
        # PostgreSQL 16+ makes the iteration count a setting; before, it is fixed at 4096.
        row = self._conn.execute("SELECT current_setting('scram_iterations', true)").fetchone()
        iterations = int(str(row[0])) if row and row[0] else scram.DEFAULT_ITERATIONS
        verifier = SecretValue(scram.verifier(new.reveal(), iterations=iterations))
        role = self._engine.login
        # ALTER ROLE takes no bind parameters: the server builds the statement, quoting the
        # name (%I) and the verifier (%L); nothing is pasted into SQL text here. (%% is
        # psycopg's escape for a literal %.)
        row = self._conn.execute(
            "SELECT format('ALTER ROLE %%I WITH PASSWORD %%L', %s::text, %s::text)", (role, verifier.reveal())
        ).fetchone()
        if row is None:
            raise TargetError("the server returned no ALTER ROLE statement")
        try:
            self._conn.execute(str(row[0]).encode())
        except psycopg.Error as exc:
            hide = (new, verifier, *((current,) if current else ()))
            raise _statement_error(exc, self._as_login, self._engine, hide) from None

    def compare_logins(self, first: str, second: str) -> list[str]:
        roles = {
            str(name): sorted(str(g) for g in groups)
            for name, groups in self._conn.execute(
                "SELECT r.rolname, coalesce(array_agg(g.rolname) FILTER (WHERE g.rolname IS NOT NULL), '{}') "
                "FROM pg_roles r LEFT JOIN pg_auth_members m ON m.member = r.oid "
                "LEFT JOIN pg_roles g ON g.oid = m.roleid WHERE r.rolname = ANY(%s) GROUP BY r.rolname",
                ([first, second],),
            ).fetchall()
        }
        differences = [f"login {login!r} does not exist" for login in (first, second) if login not in roles]
        if differences:
            return differences
        if roles[first] != roles[second]:
            differences.append(
                f"{first!r} is a member of {roles[first] or 'no group role'}, {second!r} of "
                f"{roles[second] or 'no group role'}: make both members of the same group roles "
                "(GRANT <role> TO <login>), which hold the privileges"
            )
        for login in (first, second):
            # pg_shdepend records every object a role owns ('o'), holds privileges on ('a', 'i')
            # or has a policy on ('r'), in this database and among shared objects; default
            # privileges the role set are objects it owns, too.
            held = [
                f"{_DEPENDENCY.get(str(row[1]), 'depends on')} {row[0]}"
                for row in self._conn.execute(
                    "SELECT pg_describe_object(classid, objid, objsubid), deptype FROM pg_shdepend "
                    "WHERE refclassid = 'pg_authid'::regclass "
                    "AND refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s) "
                    "AND dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) "
                    "ORDER BY 1 LIMIT 6",
                    (login,),
                ).fetchall()
            ]
            if held:
                differences.append(
                    f"{login!r} {', '.join(held[:5])}{' ...' if len(held) > 5 else ''}: grant to the group role "
                    "instead, and make it the owner (ALTER ... OWNER TO <role>; REASSIGN OWNED BY <login> TO <role>)"
                )
        return differences


class PostgresEngine:
    """One role on one server (see ``rotation.targets.logins.Engine``)."""

    def __init__(
        self, spec: TargetSpec, settings: Settings, *, connect_timeout: int = CONNECT_TIMEOUT_SECONDS
    ) -> None:
        validate(spec)
        self.provider = parse_provider(spec.provider)
        self.login = spec.credential
        self.what = f"role {self.login!r} on {self.provider}"
        self.settle_seconds = 0.0
        self._ssl = _tls_parameters(settings)
        self._entra_role = settings.postgresql_entra_role
        if spec.admin.mode == "managed-identity":
            if not self._entra_role:
                raise TargetError(
                    "rotation-admin 'managed-identity' needs the setting ROTATION_POSTGRESQL_ENTRA_ROLE: "
                    "the PostgreSQL role of the hub's managed identity"
                )
            check_role_name(self._entra_role, tag="ROTATION_POSTGRESQL_ENTRA_ROLE")
        self._connect_timeout = connect_timeout

    @contextlib.contextmanager
    def session(
        self, principal: Principal, *, purpose: Purpose, hide: tuple[SecretValue, ...]
    ) -> Iterator[_Session]:
        hide = (principal.secret, *hide)
        try:
            conn = psycopg.connect(
                host=self.provider.host,
                port=self.provider.port,
                dbname=self.provider.database,
                user=principal.login,
                password=principal.secret.reveal(),
                **self._ssl,
                require_auth=AUTH_FOR_TOKENS if principal.token else AUTH_FOR_PASSWORDS,
                connect_timeout=self._connect_timeout,
                # Bounds every statement on the server's side (a lock wait included).
                options=f"-c statement_timeout={STATEMENT_TIMEOUT}",
                application_name=APPLICATION_NAME,
                autocommit=True,
            )
        except psycopg.Error as exc:
            # "from None": the driver's exception is replaced by one whose text has been scrubbed.
            raise _connect_error(exc, principal.login, self.provider, hide) from None
        try:
            yield _Session(conn, self, principal.login)
        except psycopg.Error as exc:
            raise _statement_error(exc, principal.login, self, hide) from None
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def identity_principal(self, token: TokenSource) -> Principal:
        # Azure Database for PostgreSQL takes the token as the password of the identity's role.
        return Principal(
            self._entra_role,
            token(ENTRA_SCOPE),
            description=f"the hub's managed identity (role {self._entra_role!r})",
            token=True,
        )

    def check_admin_login(self, name: str, *, tag: str) -> None:
        check_role_name(name, tag=tag)


def _tls_parameters(settings: Settings) -> dict[str, Any]:
    """libpq's TLS keywords for ``ROTATION_POSTGRESQL_SSLMODE`` and ``ROTATION_POSTGRESQL_SSL_CA``
    (a PEM file; ``azure``: the two roots Azure's servers chain to; empty: certifi's bundle).

    ``require`` gets no root certificate: libpq would then verify the chain after all.

    Raises:
        TargetError: an unknown mode, or a CA file that cannot be read.
    """
    mode = settings.postgresql_sslmode
    if mode not in SSL_MODES:
        raise TargetError(f"ROTATION_POSTGRESQL_SSLMODE {mode!r} is not one of {SSL_MODES}")
    if mode == "require":
        return {"sslmode": mode}
    if settings.postgresql_ssl_ca.strip().lower() == AZURE:
        return {"sslmode": mode, "sslrootcert": azure_roots_file()}
    root = settings.postgresql_ssl_ca or certifi.where()
    if not os.access(root, os.R_OK) or not os.path.isfile(root):
        raise TargetError(f"ROTATION_POSTGRESQL_SSL_CA {root!r} cannot be read")
    return {"sslmode": mode, "sslrootcert": root}


# -- errors -------------------------------------------------------------------------------------

# libpq reports a failed connection without a SQLSTATE, so its cause is told apart by the text
# (the server's messages are English unless lc_messages says otherwise; Azure's are).
_AUTH_REFUSED = (
    "password authentication failed",
    "is not permitted to log in",
    "no password supplied",
    "password is expired",
)
_TRANSIENT_TEXT = (
    "connection refused",
    "timeout expired",
    "timed out",
    "could not connect",
    "failed to resolve host",
    "could not translate host name",
    "no route to host",
    "network is unreachable",
    "connection reset",
    "server closed the connection unexpectedly",
    "too many connections",
    "remaining connection slots are reserved",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "ssl syscall error",
)
# SQLSTATE classes of failures that pass: connection (08), resources (53), operator
# intervention (57: shutdown, cancel, statement timeout), serialization (40).
_TRANSIENT_STATES = ("08", "53", "57", "40")


def _driver_text(exc: psycopg.Error, hide: tuple[SecretValue, ...]) -> str:
    # psycopg prefixes "connection failed: " to every failed connection; the rest is libpq's.
    return scrub(str(exc).removeprefix("connection failed: "), hide)


def _connect_error(
    exc: psycopg.Error, login: str, provider: Provider, hide: tuple[SecretValue, ...]
) -> RotationError:
    text = _driver_text(exc, hide)
    lowered = text.lower()
    where = f"logging in as {login!r} to {provider}"
    if any(marker in lowered for marker in _AUTH_REFUSED):
        return AuthenticationFailed(f"{where} was refused: {text}")
    if "authentication method requirement" in lowered:
        return TargetError(
            f"{where} was stopped by the hub: the server asked for another method than SCRAM-SHA-256, "
            f"the only one the hub answers with a password ({text}); store the role's password as "
            "SCRAM (password_encryption = scram-sha-256) and allow scram-sha-256 in pg_hba.conf"
        )
    if "certificate verify failed" in lowered or "server certificate" in lowered:
        return TargetError(
            f"{where} failed: the server's certificate is not trusted for this host ({text}); "
            "ROTATION_POSTGRESQL_SSL_CA names the CA bundle, ROTATION_POSTGRESQL_SSLMODE how much is checked"
        )
    if isinstance(exc, psycopg.errors.ConnectionTimeout) or any(m in lowered for m in _TRANSIENT_TEXT):
        return TransientError(f"{where} failed: {text}")
    return TargetError(f"{where} failed: {text}")


def _statement_error(
    exc: psycopg.Error, login: str, engine: PostgresEngine, hide: tuple[SecretValue, ...]
) -> RotationError:
    state = exc.sqlstate or ""
    text = _driver_text(exc, hide)
    where = f"changing the password of {engine.what} as {login!r}"
    # "tuple concurrently updated": two sessions altered the role at once (a duplicate run of
    # the step); the retry finds the new value in force.
    lost = not state and isinstance(exc, psycopg.OperationalError)  # the connection broke
    if state.startswith(_TRANSIENT_STATES) or "concurrently updated" in text or lost:
        return TransientError(f"{where} failed [{state}]: {text}")
    if state == "42501":
        return TargetError(f"{where} is not permitted (the login needs CREATEROLE) [{state}]: {text}")
    return TargetError(f"{where} failed [{state}]: {text}")


def build(spec: TargetSpec, settings: Settings) -> PasswordLogin:
    """Raises InvalidRequest when the spec's tags are malformed."""
    return PasswordLogin(spec, PostgresEngine(spec, settings))


def endpoint(spec: TargetSpec) -> Endpoint:
    """Where a login of ``spec`` connects (for values that carry it: rotation/formats)."""
    where = parse_provider(spec.provider)
    return Endpoint(engine="postgresql", host=where.host, port=where.port, database=where.database)


TARGET_TYPE = TargetType(
    name=KIND,
    build=build,
    password_policy=PASSWORD_POLICY,
    validate=validate,
    endpoint=endpoint,
    alternating=True,
)
