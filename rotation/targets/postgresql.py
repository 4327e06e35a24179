"""Target ``postgresql-login``: the password of a PostgreSQL role, changed through pyodbc.

Tags (validated here, without connecting):

- ``rotation-provider``: ``<host>[:<port>]/<database>``, port 5432 by default; the host is a
  DNS name, an IPv4 address or a bracketed IPv6 address. Example:
  ``myserver.postgres.database.azure.com:5432/appdb``. The database is the one every login
  of this target connects to (the role must be allowed to connect to it).
- ``rotation-credential``: the role's exact name, as stored (case-sensitive, unquoted).
- ``rotation-admin``: ``self`` (the role logs in with its current value and changes its own
  password) or ``secret:<name>``: another secret in the same vault whose value is the
  password of an admin role, and whose own ``rotation-credential`` tag names that role
  (``Credentials.admin_login``). The admin role needs ``CREATEROLE`` (or superuser).
  ``managed-identity`` is refused: an Entra token can log in, but PostgreSQL's password
  logins are not Entra principals the hub could act for.

The change is ``ALTER ROLE <role> WITH PASSWORD '<SCRAM-SHA-256 verifier>'``, the statement
built by the server (``format('%I %L')``) and the verifier computed here, so the plaintext
never reaches the server's statement log or activity views.

Connection strings: psqlODBC decodes braces only in ``PWD``, so the role and database names
go through libpq's own option string (``pqopt``), where libpq's quoting carries any character.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import pyodbc

from rotation.errors import (
    AuthenticationFailed,
    InvalidRequest,
    RotationError,
    TargetError,
    TransientError,
    UndoImpossible,
    VerificationFailed,
)
from rotation.passwords import PasswordPolicy
from rotation.settings import Settings
from rotation.targets import TargetType, scram
from rotation.targets.base import Credentials, SecretValue, TargetSpec

logger = logging.getLogger(__name__)

KIND = "postgresql-login"
DEFAULT_PORT = 5432
CONNECT_TIMEOUT_SECONDS = 15
STATEMENT_TIMEOUT = "30s"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1): a longer tag would change
# the password of another role than the one named.
MAX_IDENTIFIER_BYTES = 63

# The hub's own path copes with every character (the verifier travels as a SQL literal quoted
# by the server, the password in ODBC braces). Consumers do not: they paste the value into
# URLs (``@ : / ? # % & [ ]``), key=value connection strings (``; = { }``, spaces) and quoted
# literals (``' " ` \``). Leaving those out costs under 8 bits of 200.
PASSWORD_POLICY = PasswordPolicy(length=32, exclude="\"'`\\;={}@:/?#%&[]")

_PROVIDER_FORMAT = "<host>[:<port>]/<database>, e.g. myserver.postgres.database.azure.com:5432/appdb"
_PROVIDER = re.compile(r"(?P<host>\[[^\]]*\]|[^:/\[\]]*)(?::(?P<port>[^/]*))?/(?P<database>.*)", re.DOTALL)
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class Provider:
    host: str
    port: int
    database: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.database}"


# -- validation (no connection) ---------------------------------------------------------------


def parse_provider(value: str, *, tag: str = "rotation-provider") -> Provider:
    """Raises InvalidRequest naming ``tag`` when ``value`` is not ``host[:port]/database``."""
    if "://" in value:
        raise InvalidRequest(f"{tag} {value!r} is a URL; give {_PROVIDER_FORMAT}")
    match = _PROVIDER.fullmatch(value)
    if not match:
        raise InvalidRequest(f"{tag} {value!r} is not {_PROVIDER_FORMAT}")
    host, port_text, database = match["host"], match["port"], match["database"]
    if host.startswith("["):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise InvalidRequest(f"{tag} {value!r}: {host!r} is not an IPv6 address") from None
    elif not _is_host_name(host):
        raise InvalidRequest(
            f"{tag} {value!r}: {host!r} is not a host name or IP address ({_PROVIDER_FORMAT})"
        )
    port = DEFAULT_PORT
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise InvalidRequest(f"{tag} {value!r}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    _check_name(database, what="database", tag=tag)
    return Provider(host=host, port=port, database=database)


def _is_host_name(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(host)
        return True
    return all(_DNS_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))


def check_role_name(value: str, *, tag: str = "rotation-credential") -> None:
    """Raises InvalidRequest naming ``tag`` when ``value`` cannot be a PostgreSQL login role.

    Any character but NUL is legal in a quoted identifier, so quotes, spaces and semicolons
    are accepted (the server quotes the name); what is refused is what PostgreSQL would
    silently alter (a name over 63 bytes is truncated) or reserves for itself.
    """
    _check_name(value, what="role name", tag=tag)
    if value.startswith("pg_"):
        raise InvalidRequest(f"{tag} {value!r}: role names starting with 'pg_' are reserved by PostgreSQL")
    if value in ("public", "none"):
        raise InvalidRequest(f"{tag} {value!r} is a reserved role name")


def _check_name(value: str, *, what: str, tag: str) -> None:
    if not value:
        raise InvalidRequest(f"{tag}: the {what} is empty")
    if value != value.strip():
        raise InvalidRequest(f"{tag} {value!r}: the {what} has leading or trailing whitespace")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidRequest(f"{tag} {value!r}: the {what} contains control characters")
    size = len(value.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        raise InvalidRequest(
            f"{tag} {value!r}: the {what} is {size} bytes long; PostgreSQL allows {MAX_IDENTIFIER_BYTES}"
        )


def validate(spec: TargetSpec) -> None:
    """Check the provider, credential and admin tags of a ``postgresql-login`` secret.

    Raises:
        InvalidRequest: a tag is malformed or asks for something unsupported; names the tag.
    """
    parse_provider(spec.provider)
    check_role_name(spec.credential)
    if spec.admin.mode == "managed-identity":
        raise InvalidRequest(
            f"rotation-admin 'managed-identity' is not supported for {KIND}: a PostgreSQL password "
            "login is changed by itself ('self') or by an admin role ('secret:<name>')"
        )
    if spec.admin.mode == "secret":
        if not spec.admin.secret_name:
            raise InvalidRequest("rotation-admin 'secret:<name>' names no secret")
    elif spec.admin.mode != "self":
        raise InvalidRequest(
            f"rotation-admin {spec.admin.mode!r} is not supported for {KIND} (use 'self' or 'secret:<name>')"
        )


# -- the target ---------------------------------------------------------------------------------


class PostgresLogin:
    """One role on one server, as a ``Target`` (see ``rotation.targets.base``)."""

    def __init__(
        self, spec: TargetSpec, settings: Settings, *, connect_timeout: int = CONNECT_TIMEOUT_SECONDS
    ):
        validate(spec)
        self.spec = spec
        self.role = spec.credential
        self.provider = parse_provider(spec.provider)
        self._driver = settings.postgresql_odbc_driver
        if settings.postgresql_sslmode not in SSL_MODES:
            # psqlODBC has its own default sslmode that pqopt may not override, so the setting
            # goes into the connection string as is: only a known value may.
            raise TargetError(
                f"ROTATION_POSTGRESQL_SSLMODE {settings.postgresql_sslmode!r} is not one of {SSL_MODES}"
            )
        self._sslmode = settings.postgresql_sslmode
        self._connect_timeout = connect_timeout

    def apply(self, *, new: SecretValue, using: Credentials) -> bool:
        """Make the role accept ``new``; False when it already does.

        Raises:
            AuthenticationFailed: the value used to make the change (current or admin) is refused.
            TransientError, TargetError: as the Protocol says.
        """
        if self._logs_in(self.role, new):
            logger.info(
                "role %s on %s already accepts the new value; nothing to change", self.role, self.provider
            )
            return False
        login, password, source = self._changer(using)
        try:
            with self._session(login, password, hidden=(new,)) as conn:
                self._set_password(conn, new, as_login=login, hidden=(password,))
        except AuthenticationFailed as exc:
            # A duplicate run of this step may have changed the password between our two
            # logins, making the current value stale: then the work is done.
            if self.spec.admin.mode == "self" and self._logs_in(self.role, new):
                return False
            raise AuthenticationFailed(f"{source} is refused: {exc.detail}") from None
        return True

    def verify(self, *, value: SecretValue) -> None:
        """Log in afresh as the role with ``value`` and run ``SELECT 1``.

        Raises:
            VerificationFailed: the server refuses ``value`` for the role.
        """
        try:
            with self._session(self.role, value) as conn:
                conn.cursor().execute("SELECT 1").fetchone()
        except AuthenticationFailed:
            raise VerificationFailed(f"role {self.role!r} on {self.provider} refuses the value") from None
        logger.info("role %s on %s logs in with the value", self.role, self.provider)

    def revert(self, *, previous: SecretValue, new: SecretValue | None, using: Credentials) -> bool:
        """Make the role accept ``previous`` again; False when it already does.

        Raises:
            UndoImpossible: neither the role's values at hand nor the admin can log in.
        """
        if self._logs_in(self.role, previous):
            logger.info(
                "role %s on %s already accepts the previous value; nothing to undo", self.role, self.provider
            )
            return False
        if self.spec.admin.mode == "self":
            candidates = [v for v in (new, using.current) if v is not None and v != previous]
            # De-duplicate by value: new and current are often the same after apply.
            unique = list({v.reveal(): v for v in candidates}.values())
            for value in unique:
                try:
                    with self._session(self.role, value, hidden=(previous,)) as conn:
                        self._set_password(conn, previous, as_login=self.role, hidden=(value,))
                    return True
                except AuthenticationFailed:
                    continue
            if self._logs_in(self.role, previous):  # a duplicate run restored it meanwhile
                return False
            raise UndoImpossible(
                f"role {self.role!r} on {self.provider} accepts neither its previous nor its new value; "
                "the password must be reset by an administrator"
            )
        try:
            login, password, _ = self._changer(using)
            with self._session(login, password, hidden=(previous,)) as conn:
                self._set_password(conn, previous, as_login=login, hidden=(password,))
        except AuthenticationFailed as exc:
            raise UndoImpossible(
                f"role {self.role!r} on {self.provider} cannot be restored: {exc.detail}"
            ) from None
        return True

    # -- helpers -------------------------------------------------------------------------------

    def _changer(self, using: Credentials) -> tuple[str, SecretValue, str]:
        """The login and value that make the change, as ``rotation-admin`` says, and what to
        call that value in an error."""
        if self.spec.admin.mode == "self":
            if using.current is None:
                raise AuthenticationFailed(
                    f"role {self.role!r} has no current value to change its password with"
                )
            return self.role, using.current, f"the current value of role {self.role!r}"
        secret_name = self.spec.admin.secret_name
        if using.admin is None:
            raise AuthenticationFailed(f"the admin secret {secret_name!r} gave no value")
        if not using.admin_login:
            raise InvalidRequest(
                f"the admin secret {secret_name!r} has no rotation-credential tag naming its PostgreSQL role"
            )
        check_role_name(using.admin_login, tag=f"rotation-credential of {secret_name!r}")
        return using.admin_login, using.admin, f"the admin secret {secret_name!r}"

    def _logs_in(self, login: str, value: SecretValue) -> bool:
        """Whether ``login`` logs in with ``value``. Raises TransientError, TargetError."""
        try:
            with self._session(login, value) as conn:
                conn.cursor().execute("SELECT 1").fetchone()
        except AuthenticationFailed:
            return False
        return True

    @contextlib.contextmanager
    def _session(
        self, login: str, value: SecretValue, *, hidden: tuple[SecretValue, ...] = ()
    ) -> Iterator[pyodbc.Connection]:
        hide = (value, *hidden)
        try:
            conn = pyodbc.connect(
                self._connection_string(login, value), autocommit=True, timeout=self._connect_timeout
            )
        except pyodbc.Error as exc:
            # "from None": the driver's exception is replaced by one whose text has been scrubbed.
            raise _connect_error(exc, login, self.provider, hide) from None
        try:
            yield conn
        except pyodbc.Error as exc:
            raise _statement_error(exc, login, self.role, self.provider, hide) from None
        finally:
            with contextlib.suppress(pyodbc.Error):
                conn.close()

    def _connection_string(self, login: str, value: SecretValue) -> str:
        # statement_timeout bounds every statement on the server's side: psqlODBC does not
        # support ODBC's query timeout attribute.
        libpq = {
            "user": login,
            "dbname": self.provider.database,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT}",
        }
        pqopt = " ".join(f"{key}={_libpq_quote(val)}" for key, val in libpq.items())
        return (
            f"DRIVER={_odbc_brace(self._driver)};SERVER={self.provider.host};PORT={self.provider.port};"
            f"SSLMode={self._sslmode};PWD={_odbc_brace(value.reveal())};pqopt={_odbc_brace(pqopt)};"
        )

    def _set_password(
        self, conn: pyodbc.Connection, value: SecretValue, *, as_login: str, hidden: tuple[SecretValue, ...]
    ) -> None:
        cur = conn.cursor()
        # PostgreSQL 16+ makes the iteration count a setting; before, it is fixed at 4096.
        row = cur.execute("SELECT current_setting('scram_iterations', true)").fetchone()
        iterations = int(row[0]) if row and row[0] else scram.DEFAULT_ITERATIONS
        verifier = scram.verifier(value.reveal(), iterations=iterations)
        # ALTER ROLE takes no bind parameters: the server builds the statement, quoting the
        # name (%I) and the verifier (%L); nothing is pasted into SQL text here.
        row = cur.execute(
            "SELECT format('ALTER ROLE %I WITH PASSWORD %L', ?::text, ?::text)", self.role, verifier
        ).fetchone()
        if row is None:
            raise TargetError("the server returned no ALTER ROLE statement")
        try:
            cur.execute(row[0])
        except pyodbc.Error as exc:
            hide = (value, SecretValue(verifier), *hidden)
            raise _statement_error(exc, as_login, self.role, self.provider, hide) from None
        logger.info("role %s on %s: password changed (as %s)", self.role, self.provider, as_login)


def _odbc_brace(value: str) -> str:
    return "{" + value.replace("}", "}}") + "}"


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- errors -------------------------------------------------------------------------------------

# psqlODBC reports every failed connection as SQLSTATE 08001 and passes libpq's text on, so the
# cause is told apart by that text (the server's messages are English unless lc_messages says
# otherwise; Azure's are).
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
# intervention (57: shutdown, cancel, statement timeout), serialization (40); HYT: ODBC timeouts.
_TRANSIENT_STATES = ("08", "53", "57", "40", "HYT")


def _driver_text(exc: pyodbc.Error, hide: tuple[SecretValue, ...]) -> tuple[str, str]:
    state = str(exc.args[0]) if exc.args else ""
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    # The driver has no reason to echo a password, but nothing it says is trusted to be clean.
    for value in hide:
        if value.reveal():
            text = text.replace(value.reveal(), "<hidden>")
    # Drop the driver's decorations: a leading "[08001]" (the state, reported apart) and a
    # trailing "(101) (SQLDriverConnect)".
    text = re.sub(r"^\[\w+\]\s*", "", text.strip())
    text = re.sub(r"\s*\(\d+\) \(SQL\w+\)\s*$", "", text)
    return state, " ".join(text.split())


def _connect_error(
    exc: pyodbc.Error, login: str, provider: Provider, hide: tuple[SecretValue, ...]
) -> RotationError:
    state, text = _driver_text(exc, hide)
    lowered = text.lower()
    where = f"logging in as {login!r} to {provider}"
    if any(marker in lowered for marker in _AUTH_REFUSED):
        return AuthenticationFailed(f"{where} was refused: {text}")
    if any(marker in lowered for marker in _TRANSIENT_TEXT) or state.startswith(("53", "57", "HYT")):
        return TransientError(f"{where} failed: {text}")
    return TargetError(f"{where} failed [{state}]: {text}")


def _statement_error(
    exc: pyodbc.Error, login: str, role: str, provider: Provider, hide: tuple[SecretValue, ...]
) -> RotationError:
    state, text = _driver_text(exc, hide)
    where = f"changing the password of role {role!r} on {provider} as {login!r}"
    # "tuple concurrently updated": two sessions altered the role at once (a duplicate run of
    # the step); the retry finds the new value in force.
    if state.startswith(_TRANSIENT_STATES) or "concurrently updated" in text:
        return TransientError(f"{where} failed [{state}]: {text}")
    if state == "42501":
        return TargetError(f"{where} is not permitted (the login needs CREATEROLE) [{state}]: {text}")
    return TargetError(f"{where} failed [{state}]: {text}")


def build(spec: TargetSpec, settings: Settings) -> PostgresLogin:
    """Raises InvalidRequest when the spec's tags are malformed."""
    return PostgresLogin(spec, settings)


TARGET_TYPE = TargetType(name=KIND, build=build, password_policy=PASSWORD_POLICY, validate=validate)
