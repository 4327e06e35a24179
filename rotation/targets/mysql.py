"""Target ``mysql-login``: the password of a MySQL or MariaDB account, changed through PyMySQL.

PyMySQL is pure Python, so this target needs no operating-system driver: it runs on Azure's
Functions images as deployed. Built for Azure Database for MySQL flexible server (MySQL 8);
tested here against MariaDB from Debian's packages (see the README for where they differ).

Tags (validated here, without connecting):

- ``rotation-provider``: ``<host>[:<port>]/<database>``, port 3306 by default, e.g.
  ``myserver.mysql.database.azure.com/appdb``: the database every login of this target uses.
- ``rotation-credential``: the account, ``<user>`` or ``<user>@<host>`` (the account's host
  part, ``%`` when left out), exactly as ``mysql.user`` holds it.
- ``rotation-admin``: ``self`` (the account logs in with its current value and changes its own
  password) or ``secret:<name>`` (another secret in the same vault whose value is the password
  of an admin account that holds ``CREATE USER``, and whose own ``rotation-credential`` tag
  names that account). ``managed-identity`` is refused (not built for MySQL).

How the password is set:

- MariaDB: only the ``mysql_native_password`` hash reaches the server, in a statement the server
  builds itself (``QUOTE()`` quotes the account and the hash): ``SET PASSWORD = '*<hash>'`` for
  a self-change, ``ALTER USER 'u'@'h' IDENTIFIED BY PASSWORD '*<hash>'`` for an admin. No log
  can hold the plaintext.
- MySQL 8 (Azure): ``caching_sha2_password`` has no form a client can compute and trust, so the
  value travels inside ``ALTER USER ... IDENTIFIED BY`` as a parameter (the account part quoted
  by the server), over TLS; that is the one statement MySQL itself rewrites in its general, slow
  and binary logs (``IDENTIFIED BY <secret>``). A self-change adds ``REPLACE <current>``.

The session's ``sql_mode`` is set without ``NO_BACKSLASH_ESCAPES``, so quoting means what it says.

Every session requires TLS; the server certificate is verified against the system's CAs (or
``ROTATION_MYSQL_SSL_CA``) as ``ROTATION_MYSQL_SSLMODE`` says.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pymysql
from pymysql.constants import CR, ER

from rotation.errors import (
    AuthenticationFailed,
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

KIND = "mysql-login"
DEFAULT_PORT = 3306
# PyMySQL reads the server's greeting, the TLS handshake and the authentication under its read
# timeout, not its connect timeout: one bound for every read keeps a server that accepts TCP and
# never answers from holding a session for longer (and bounds a statement stuck on a lock).
TIMEOUT_SECONDS = 15
SSL_MODES = ("require", "verify-ca", "verify-full")
# MariaDB allows 80 characters in a user name (MySQL 8: 32, and it refuses longer ones); host
# parts and database names are bounded by the server too.
MAX_USER_CHARS = 80
MAX_HOST_CHARS = 255
MAX_DATABASE_CHARS = 64
# The session's SQL mode: strict, and without NO_BACKSLASH_ESCAPES, the one mode under which
# QUOTE()'s backslash escapes would not mean what they say.
SQL_MODE = "TRADITIONAL"
PASSWORD_POLICY = DATABASE_POLICY


@dataclass(frozen=True)
class Account:
    user: str
    host: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}"


# -- validation (no connection) ---------------------------------------------------------------


PROVIDER = ProviderFormat(
    default_port=DEFAULT_PORT,
    example="myserver.mysql.database.azure.com:3306/appdb",
    database=NameRule("MySQL", max_chars=MAX_DATABASE_CHARS),
)
parse_provider = PROVIDER.parse


def parse_account(value: str, *, tag: str = "rotation-credential") -> Account:
    """``user`` or ``user@host`` (the host part after the last ``@``; ``%`` when left out).

    Raises:
        InvalidRequest: naming ``tag``.
    """
    user, at, host = value.rpartition("@")
    if not at:
        user, host = value, "%"
    NameRule("MySQL", max_chars=MAX_USER_CHARS).check(user, what="user name", tag=tag)
    NameRule("MySQL", max_chars=MAX_HOST_CHARS).check(host, what="host part", tag=tag)
    return Account(user=user, host=host)


def validate(spec: TargetSpec) -> None:
    """Check the provider, credential and admin tags of a ``mysql-login`` secret.

    Raises:
        InvalidRequest: a tag is malformed or asks for something unsupported; names the tag.
    """
    parse_provider(spec.provider)
    parse_account(spec.credential)
    check_admin(spec, modes=("self", "secret"))


def native_password_hash(password: str) -> str:
    """MySQL's ``mysql_native_password`` hash of ``password``'s UTF-8 bytes: ``*`` and the
    upper-case hex of SHA1(SHA1(password)), what ``SET PASSWORD ... = '<hash>'`` stores."""
    inner = hashlib.sha1(password.encode("utf-8")).digest()  # noqa: S324 (the server's own scheme)
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


# -- the engine ---------------------------------------------------------------------------------


class _Session:
    def __init__(self, conn: pymysql.connections.Connection, engine: MySQLEngine, as_login: str):
        self._conn = conn
        self._engine = engine
        self._as_login = as_login

    def check(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    def set_password(self, new: SecretValue, *, current: SecretValue | None) -> None:
        account = self._engine.account
        own = current is not None
        if own:
            self._check_logged_in_as(account)
        # The hash stands for the password: it is hidden like the value itself.
        value = native_password_hash(new.reveal())
        hide = (new, SecretValue(value), *((current,) if current else ()))
        try:
            if "mariadb" in self._conn.get_server_info().lower():
                self._set_native_hash(account, value, own=own)
            else:
                self._alter_user(account, new, current)
        except pymysql.Error as exc:
            raise _statement_error(exc, self._as_login, self._engine, hide, self._warnings()) from None

    def _warnings(self) -> tuple[tuple[int, str], ...]:
        """The failed statement's diagnostics (code, message): a refused ALTER USER says only
        "failed" (1396) and leaves the reason, such as the password policy, among them."""
        try:
            with self._conn.cursor() as cur:
                cur.execute("SHOW WARNINGS")
                return tuple((int(row[1]), str(row[2])) for row in cur.fetchall())
        except (pymysql.Error, ValueError, IndexError, TypeError):
            return ()

    def _set_native_hash(self, account: Account, value: str, *, own: bool) -> None:
        """MariaDB: only the hash reaches the server, so no log can hold the plaintext. SET
        PASSWORD without FOR changes the account the session logged in as (no privilege needed);
        an admin uses ALTER USER, which needs CREATE USER (SET PASSWORD FOR would need UPDATE on
        the mysql schema)."""
        with self._conn.cursor() as cur:
            if own:
                cur.execute("SELECT CONCAT('SET PASSWORD = ', QUOTE(%s))", (value,))
            else:
                cur.execute(
                    "SELECT CONCAT('ALTER USER ', QUOTE(%s), '@', QUOTE(%s), ' IDENTIFIED BY PASSWORD ', QUOTE(%s))",
                    (account.user, account.host, value),
                )
            # args=None: PyMySQL sends the server's statement as it is, with no % formatting.
            cur.execute(_statement(cur.fetchone()))

    def _alter_user(self, account: Account, new: SecretValue, current: SecretValue | None) -> None:
        """MySQL 8: the value must travel in ALTER USER itself, the one statement MySQL rewrites
        in its logs; so the server quotes only the account, and the value is a parameter."""
        with self._conn.cursor() as cur:
            if current is not None:
                # REPLACE proves the current password, which MySQL 8 may demand of a self-change.
                cur.execute(
                    "ALTER USER CURRENT_USER() IDENTIFIED BY %s REPLACE %s", (new.reveal(), current.reveal())
                )
                return
            cur.execute(
                "SELECT CONCAT('ALTER USER ', QUOTE(%s), '@', QUOTE(%s))", (account.user, account.host)
            )
            # The account part may hold '%' (any host): escaped, as it goes through % formatting.
            prefix = _statement(cur.fetchone()).replace("%", "%%")
            cur.execute(prefix + " IDENTIFIED BY %s", (new.reveal(),))

    def compare_logins(self, first: str, second: str) -> list[str]:
        grants = {login: self._grants(parse_account(login)) for login in (first, second)}
        a, b = grants[first], grants[second]
        differences: list[str] = []
        if a.roles != b.roles:
            differences.append(
                f"{first!r} is granted {sorted(a.roles) or 'no role'}, {second!r} "
                f"{sorted(b.roles) or 'no role'}: grant both the same roles (GRANT <role> TO <account>), "
                "which hold the privileges"
            )
        for login, held in grants.items():
            if held.roles and held.default_role != "all" and not (held.roles & held.default_roles):
                differences.append(
                    f"{login!r} has no default role, so its roles are not active when it logs in "
                    "(SET DEFAULT ROLE <role> FOR <account>)"
                )
            if held.direct:
                differences.append(
                    f"{login!r} holds privileges of its own ({'; '.join(held.direct[:3])}): grant them to "
                    "the role instead and revoke them from the account"
                )
        return differences

    def _grants(self, account: Account) -> _Grants:
        """SHOW GRANTS for ``account`` (the statement built by the server, as the others); MySQL 8
        keeps default roles apart, in mysql.default_roles."""
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT CONCAT('SHOW GRANTS FOR ', QUOTE(%s), '@', QUOTE(%s))", (account.user, account.host)
            )
            cur.execute(_statement(cur.fetchone()))
            grants = _Grants.of([str(row[0]) for row in cur.fetchall()])
            if "mariadb" in self._conn.get_server_info().lower():
                return grants
            cur.execute(
                "SELECT DEFAULT_ROLE_USER FROM mysql.default_roles WHERE USER = %s AND HOST = %s",
                (account.user, account.host),
            )
            defaults = frozenset(str(row[0]) for row in cur.fetchall())
        return replace(grants, default_roles=defaults, default_role="named" if defaults else "")

    def _check_logged_in_as(self, account: Account) -> None:
        """A self-change alters the account the server matched the login to, which is not the
        tagged one when a more specific host part exists ('app'@'10.%' before 'app'@'%')."""
        with self._conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            row = cur.fetchone()
        matched = str(row[0]) if row else ""
        if matched != str(account):
            raise TargetError(
                f"logging in as {account.user!r} matches account {matched!r}, not the tagged "
                f"{str(account)!r}; fix rotation-credential or use an admin secret"
            )


# SHOW GRANTS lines, as MySQL 8 and MariaDB write them (the account's quoting aside).
_ROLE_GRANT = re.compile(
    r"^GRANT (?P<roles>`[^`]*`(?:@`[^`]*`)?(?:, *`[^`]*`(?:@`[^`]*`)?)*) TO ", re.IGNORECASE
)
_PRIVILEGE_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<object>.+?) TO ", re.IGNORECASE)
_DEFAULT_ROLE = re.compile(r"^SET DEFAULT ROLE (?P<role>`[^`]*`|ALL|NONE)", re.IGNORECASE)
_ROLE_NAME = re.compile(r"`([^`]*)`(?:@`[^`]*`)?")


@dataclass(frozen=True)
class _Grants:
    roles: frozenset[str]
    default_roles: frozenset[str]
    default_role: str
    direct: tuple[str, ...]

    @classmethod
    def of(cls, lines: list[str]) -> _Grants:
        """What SHOW GRANTS says, without anything after IDENTIFIED (MariaDB shows the password
        hash there, which must not reach a message)."""
        roles: set[str] = set()
        defaults: set[str] = set()
        default_role = ""
        direct: list[str] = []
        for line in lines:
            line = re.split(r" IDENTIFIED ", line, maxsplit=1, flags=re.IGNORECASE)[0]
            if (found := _DEFAULT_ROLE.match(line)) is not None:
                role = found["role"]
                default_role = role.lower() if role.upper() in ("ALL", "NONE") else "named"
                defaults.update(_ROLE_NAME.findall(role))
            elif (found := _PRIVILEGE_GRANT.match(line)) is not None:
                privileges = found["privileges"].strip()
                if privileges.upper() != "USAGE":
                    direct.append(f"{privileges} ON {found['object']}")
            elif (found := _ROLE_GRANT.match(line)) is not None:
                roles.update(_ROLE_NAME.findall(found["roles"]))
        return cls(frozenset(roles), frozenset(defaults), default_role, tuple(direct))


def _statement(row: tuple[object, ...] | None) -> str:
    if not row or not row[0]:
        raise TargetError("the server returned no statement to change the password")
    return str(row[0])


class MySQLEngine:
    """One account on one server (see ``rotation.targets.logins.Engine``)."""

    def __init__(
        self, spec: TargetSpec, settings: Settings, *, connect_timeout: int = TIMEOUT_SECONDS
    ) -> None:
        validate(spec)
        self.provider = parse_provider(spec.provider)
        self.account = parse_account(spec.credential)
        self.login = self.account.user
        self.what = f"account {str(self.account)!r} on {self.provider}"
        self.settle_seconds = 0.0
        self._tls = tls_context(settings)
        self._timeout = connect_timeout

    @contextlib.contextmanager
    def session(
        self, principal: Principal, *, purpose: Purpose, hide: tuple[SecretValue, ...]
    ) -> Iterator[_Session]:
        hide = (principal.secret, *hide)
        try:
            conn = pymysql.connect(
                host=self.provider.host,
                port=self.provider.port,
                user=principal.login,
                # Bytes, as the server hashes them: PyMySQL would encode a str as Latin-1.
                password=principal.secret.reveal().encode("utf-8"),
                database=self.provider.database,
                ssl=self._tls,
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
                write_timeout=self._timeout,
                charset="utf8mb4",
                sql_mode=SQL_MODE,
                autocommit=True,
                program_name="keyvault-rotation-hub",
            )
        except pymysql.Error as exc:
            raise _connect_error(exc, principal.login, self.provider, hide) from None
        try:
            yield _Session(conn, self, principal.login)
        except pymysql.Error as exc:
            raise _statement_error(exc, principal.login, self, hide) from None
        finally:
            with contextlib.suppress(pymysql.Error, OSError):
                conn.close()

    def identity_principal(self, token: TokenSource) -> Principal:
        raise TargetError(f"rotation-admin 'managed-identity' is not supported for {KIND}")

    def check_admin_login(self, name: str, *, tag: str) -> None:
        parse_account(name, tag=tag)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS every session requires, verifying as ``ROTATION_MYSQL_SSLMODE`` says.

    Built once per process for each mode and CA file, and shared by every engine (PyMySQL only
    wraps sockets with it): loading the CA certificates is most of a context's cost, about 20 ms of
    CPU for the system's store here, which each activity's engine used to pay again.

    Raises:
        TargetError: the settings name an unknown mode or a CA file that cannot be read.
    """
    return _tls_context(settings.mysql_sslmode, settings.mysql_ssl_ca)


@functools.lru_cache(maxsize=8)
def _tls_context(mode: str, ca_file: str) -> ssl.SSLContext:
    if mode not in SSL_MODES:
        raise TargetError(f"ROTATION_MYSQL_SSLMODE {mode!r} is not one of {SSL_MODES}")
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise TargetError(f"ROTATION_MYSQL_SSL_CA {ca_file!r} cannot be read: {exc}") from None
    context.check_hostname = mode == "verify-full"
    if mode == "require":
        context.verify_mode = ssl.CERT_NONE
    return context


# -- errors -------------------------------------------------------------------------------------

NOT_VALID_PASSWORD = 1819  # ER_NOT_VALID_PASSWORD: the server's password policy
_REFUSED = frozenset(
    {
        ER.ACCESS_DENIED_ERROR,  # 1045: wrong password or no such account
        ER.MUST_CHANGE_PASSWORD_LOGIN,  # 1862: the password has expired
        ER.MUST_CHANGE_PASSWORD,  # 1820
        3118,  # MySQL: the account is locked
        4151,  # MariaDB: the account is locked
    }
)
_TRANSIENT = frozenset(
    {
        CR.CR_CONNECTION_ERROR,
        CR.CR_CONN_HOST_ERROR,  # 2003: refused, unreachable, timed out
        2005,  # unknown host (DNS may be back)
        CR.CR_SERVER_GONE_ERROR,
        CR.CR_SERVER_LOST,
        CR.CR_SERVER_LOST_EXTENDED,
        ER.CON_COUNT_ERROR,  # 1040: too many connections
        1203,  # the account has too many connections
        1226,  # a resource limit (max_user_connections ...) of the account
        ER.SERVER_SHUTDOWN,
        ER.LOCK_WAIT_TIMEOUT,
        ER.LOCK_DEADLOCK,
        ER.OPTION_PREVENTS_STATEMENT,  # 1290: read-only, as during a failover
        1927,  # MariaDB: the connection was killed
        3024,  # MySQL: max_execution_time exceeded
        4031,  # MySQL: disconnected by the server for being idle
    }
)


def _code_and_text(exc: pymysql.Error, hide: tuple[SecretValue, ...]) -> tuple[int, str]:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    return code, scrub(text, hide)


def _connect_error(
    exc: pymysql.Error, login: str, provider: Provider, hide: tuple[SecretValue, ...]
) -> RotationError:
    code, text = _code_and_text(exc, hide)
    where = f"logging in as {login!r} to {provider}"
    if code in _REFUSED:
        return AuthenticationFailed(f"{where} was refused [{code}]: {text}")
    # PyMySQL reports a failed TLS handshake as "can't connect" (2003), with the ssl module's
    # error kept aside: a certificate that does not verify will not pass by retrying. (Told by
    # the exception, not the text: the server's messages hold names that may say "SSL".)
    tls = isinstance(getattr(exc, "original_exception", None), ssl.SSLError)
    if code == CR.CR_SSL_CONNECTION_ERROR or tls:
        return TargetError(f"{where} failed: TLS could not be set up [{code}]: {text}")
    if code in _TRANSIENT or "timed out" in text.lower():
        return TransientError(f"{where} failed [{code}]: {text}")
    if code == ER.DBACCESS_DENIED_ERROR:
        return TargetError(f"{where}: the login may not use database {provider.database!r} [{code}]: {text}")
    return TargetError(f"{where} failed [{code}]: {text}")


def _statement_error(
    exc: pymysql.Error,
    login: str,
    engine: MySQLEngine,
    hide: tuple[SecretValue, ...],
    warnings: tuple[tuple[int, str], ...] = (),
) -> RotationError:
    code, text = _code_and_text(exc, hide)
    if code == ER.MUST_CHANGE_PASSWORD:
        # A server that lets logins with an expired password in, in "sandbox mode", refuses
        # every statement but a password change: for the rotation the login is refused.
        return AuthenticationFailed(
            f"logging in as {login!r} to {engine.provider}: the password has expired [{code}]"
        )
    where = f"changing the password of {engine.what} as {login!r}"
    # The policy: refused outright (1819), or a hash the policy cannot check while
    # strict_password_validation is on (MariaDB: 1290 naming that option, for ALTER USER as a
    # diagnostic behind a bare 1396).
    diagnostics = ((code, text), *warnings)
    if any(
        c == NOT_VALID_PASSWORD or (c == ER.OPTION_PREVENTS_STATEMENT and "password-validation" in m)
        for c, m in diagnostics
    ):
        return TargetError(f"{where} failed: the server's password policy refuses the value [{code}]: {text}")
    if code in _TRANSIENT or isinstance(exc, pymysql.err.InterfaceError):
        return TransientError(f"{where} failed [{code}]: {text}")
    if code == ER.SPECIFIC_ACCESS_DENIED_ERROR:
        return TargetError(f"{where} is not permitted (the login needs CREATE USER) [{code}]: {text}")
    if code in (ER.CANNOT_USER, ER.PASSWORD_NO_MATCH):
        return TargetError(f"{where} failed: the server has no such account [{code}]: {text}")
    return TargetError(f"{where} failed [{code}]: {text}")


def build(spec: TargetSpec, settings: Settings) -> PasswordLogin:
    """Raises InvalidRequest when the spec's tags are malformed, TargetError when the TLS
    settings are."""
    return PasswordLogin(spec, MySQLEngine(spec, settings))


def endpoint(spec: TargetSpec) -> Endpoint:
    """Where a login of ``spec`` connects (for values that carry it: rotation/formats)."""
    where = parse_provider(spec.provider)
    return Endpoint(engine="mysql", host=where.host, port=where.port, database=where.database)


TARGET_TYPE = TargetType(
    name=KIND,
    build=build,
    password_policy=PASSWORD_POLICY,
    validate=validate,
    endpoint=endpoint,
    alternating=True,
    client_login=lambda credential: parse_account(credential).user,
)
