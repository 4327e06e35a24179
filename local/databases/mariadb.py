"""A throwaway MariaDB server for the tests, the demo and the benchmarks.

It lives in one temporary directory (data, unix socket, TLS files, logs), listens on 127.0.0.1
only, on a free port, and is removed on ``stop()``. It is configured like an audited production
server, so what the tests prove holds there too:

- ``require_secure_transport = ON`` with a certificate from its own CA (``ca_file``, SAN
  ``127.0.0.1`` and ``localhost``): a TCP client must use TLS, and can verify the server with host
  name checking on. (MariaDB answers a plain-text TCP login with "access denied", error 1045.)
- the general query log is on (``server_log()``): every ``CREATE USER``, ``ALTER USER`` and
  ``SET PASSWORD`` lands there, where the tests look for plaintext passwords (there must be none:
  every password reaches the server as its ``mysql_native_password`` hash, see
  ``native_password_hash``);
- the only account is the admin ``hub_admin`` (all privileges, ``WITH GRANT OPTION``); it is
  written into the grant tables while the data directory is created, so the server never runs
  with a passwordless account. The admin helpers connect as it over the unix socket.
- ``disconnect_on_expired_password`` is MariaDB's default, ``OFF``: a client that logs in with an
  expired password is let in, in "sandbox mode", and its first statement fails with error 1820;
  with ``MariaDBServer(disconnect_on_expired_password=True)`` the login itself is refused with
  error 1862 (unless the client declares it handles expired passwords).

Logins are accounts ``'<name>'@'%'``. Every login may use ``default_database`` (``hub_check``,
``SELECT`` on it), so ``can_login`` needs no other grant.

``mariadbd`` refuses to run as root without ``--user``, and CI runs as root: then the server
runs as the ``mysql`` OS user (the temporary directory is handed to it; see ``server_process``).

Start one by hand with ``python -m local.databases.mariadb``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pymysql
from pymysql.converters import escape_string

from local.databases.base import DatabaseError
from local.databases.server_process import HOST, ServerProcess, read_log, serve_in_foreground

DEFAULT_ADMIN = "hub_admin"
DEFAULT_DATABASE = "hub_check"
#: The host part of every account this server creates: logins may come from anywhere.
ACCOUNT_HOST = "%"
STOP_TIMEOUT_SECONDS = 15.0
CLIENT_TIMEOUT_SECONDS = 30.0
#: The client's error codes that mean "these credentials do not log in".
_LOGIN_REFUSED = {
    1045,  # ER_ACCESS_DENIED_ERROR: unknown login, wrong password (or no TLS)
    4151,  # ER_ACCOUNT_LOCKED: the right password of a locked account
    1862,  # ER_MUST_CHANGE_PASSWORD_LOGIN: expired, and the server disconnects such clients
    1820,  # ER_MUST_CHANGE_PASSWORD: expired, let in to sandbox mode, where SELECT 1 fails
}
_CLIENT_ERROR = re.compile(r"^ERROR (\d+) ", re.MULTILINE)
#: The processlist states of a statement that waits on the lock of ``hold_password_changes``
#: (``LOCK TABLES ... READ`` on an Aria table; a metadata lock if someone locks it otherwise).
_LOCK_WAIT_STATES = ("Waiting for table level lock", "Waiting for table metadata lock")
_ACCOUNT_CHANGE = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*(SET\s+PASSWORD|ALTER\s+USER)\b", re.IGNORECASE | re.DOTALL
)
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes


def native_password_hash(password: str) -> str:
    """The ``mysql_native_password`` hash of ``password`` (UTF-8), as ``IDENTIFIED BY PASSWORD``
    takes it: ``*`` and the upper-case hex of SHA1(SHA1(password)).

    The ``mariadb`` client sends a password's UTF-8 bytes; PyMySQL encodes a ``str`` password as
    Latin-1, so give it ``password.encode()`` for a password that is not ASCII.
    """
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()  # noqa: S324 - the protocol's hash


def quote_identifier(name: str) -> str:
    """``name`` as a MariaDB identifier: in backticks, a backtick doubled."""
    return "`" + name.replace("`", "``") + "`"


def quote_grant_database(name: str) -> str:
    """``name`` as the database of ``GRANT ... ON <db>.*``: there ``_`` and ``%`` are wildcards
    and ``\\`` escapes them, so all three are escaped; then quoted as an identifier."""
    return quote_identifier(name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%"))


def find_binaries() -> dict[str, Path]:
    """The paths of ``mariadbd``, ``mariadb-install-db`` and ``mariadb``.

    Raises:
        DatabaseError: one is missing (Debian's ``mariadb-server`` and ``mariadb-client``).
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    found: dict[str, Path] = {}
    for program in ("mariadbd", "mariadb-install-db", "mariadb"):
        path = shutil.which(program, path=search)
        if path is None:
            raise DatabaseError(
                f"{program} not found; install the Debian packages mariadb-server and mariadb-client"
            )
        found[program] = Path(path)
    return found


class MariaDBServer(ServerProcess):
    """One throwaway MariaDB server. Use as a context manager, or call ``start()`` and ``stop()``.

    ``admin_user`` is the bootstrap administrator; ``admin_password`` its password (a local,
    throwaway value: it is never printed or logged, and reaches the server only as a hash).
    """

    kind = "mysql-login"
    name = "mariadb"

    title = "MariaDB"
    os_user, os_user_package = "mysql", "mariadb-server"
    temp_prefix = "rotation-mariadb-"
    ready_message = "ready for connections"
    port_taken = re.compile(r"Bind on TCP/IP port|Address already in use", re.IGNORECASE)
    stop_signal = signal.SIGTERM  # a normal shutdown
    stop_timeout = STOP_TIMEOUT_SECONDS

    def __init__(
        self,
        *,
        admin_user: str = DEFAULT_ADMIN,
        default_database: str = DEFAULT_DATABASE,
        base_dir: str | None = None,
        disconnect_on_expired_password: bool = False,
    ) -> None:
        self.binaries = find_binaries()
        super().__init__(admin_user=admin_user, base_dir=base_dir)
        self.default_database = default_database
        self.disconnect_on_expired_password = disconnect_on_expired_password
        self.version = ""

    # -- where things are ------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.root / "mysqld.sock"

    @property
    def log_path(self) -> Path:
        """The general query log: every statement the server received."""
        return self.root / "general.log"

    @property
    def error_log_path(self) -> Path:
        """The server's own messages (start-up, shutdown, warnings)."""
        return self.root / "error.log"

    @property
    def option_file(self) -> Path:
        """A client option file for the admin over TCP and TLS (``mariadb --defaults-file=...``)."""
        return self.root / "admin.cnf"

    def app_settings(self) -> dict[str, str]:
        """The hub verifies the server's certificate against this CA."""
        return {"ROTATION_MYSQL_SSL_CA": str(self.ca_file)}

    # -- creating it -----------------------------------------------------------------------

    def _create(self) -> None:
        if len(str(self.socket_path).encode()) > _SOCKET_PATH_MAX:
            raise DatabaseError(f"the socket path {self.socket_path} is too long; use a shorter base_dir")
        self._write_tls_files()
        self._install_db()

    def _install_db(self) -> None:
        """``mariadb-install-db``, with an extra script that leaves the admin as the only account.

        The grant tables are not loaded while it runs (no CREATE USER), so the admin is written
        the way the installer writes root; the script holds its password hash only and is
        removed afterwards.
        """
        script = self.root / "bootstrap.sql"
        # Every privilege bit, GRANT OPTION included, as the installer writes root. A bootstrap
        # script takes no parameters: every value is quoted by _literal or quote_identifier.
        admin = (
            f"{_literal(ACCOUNT_HOST)}, {_literal(self.admin_user)}, JSON_OBJECT("
            "'access', 18446744073709551615, 'plugin', 'mysql_native_password', "
            f"'authentication_string', {_literal(native_password_hash(self.admin_password))}, "
            "'password_last_changed', UNIX_TIMESTAMP())"
        )
        statements = [
            "DELETE FROM mysql.global_priv WHERE User <> 'mariadb.sys'",
            "DELETE FROM mysql.proxies_priv",
            f"INSERT INTO mysql.global_priv (Host, User, Priv) VALUES ({admin})",  # noqa: S608
            f"CREATE DATABASE {quote_identifier(self.default_database)}",
        ]
        sql = "".join(statement + ";\n" for statement in statements)
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(sql)
        self._chown(script)
        self.data_dir.mkdir(mode=0o700)
        self._chown(self.data_dir)
        try:
            self._run_as_owner(
                [
                    str(self.binaries["mariadb-install-db"]),
                    "--no-defaults",
                    f"--datadir={self.data_dir}",
                    "--skip-test-db",
                    "--auth-root-authentication-method=normal",  # root is deleted by the script
                    "--skip-name-resolve",
                    f"--extra-file={script}",
                    *self._storage_options(),
                ],
                step="mariadb-install-db",
            )
        finally:
            script.unlink()

    def _storage_options(self) -> list[str]:
        # Throwaway data: durability buys nothing and costs start-up and test time.
        return [
            f"--tmpdir={self.root}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-flush-method=nosync",
            "--skip-innodb-doublewrite",
            "--innodb-use-native-aio=0",  # io_uring and libaio are often forbidden in containers
        ]

    def _server_command(self) -> list[str]:
        return [
            str(self.binaries["mariadbd"]),
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.root / 'mysqld.pid'}",
            f"--bind-address={HOST}",
            f"--port={self.port}",
            "--skip-name-resolve",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--general-log=1",
            f"--general-log-file={self.log_path}",
            "--log-output=FILE",
            f"--ssl-ca={self.ca_file}",
            f"--ssl-cert={self.server_cert_file}",
            f"--ssl-key={self.server_key_file}",
            "--require-secure-transport=ON",
            f"--disconnect-on-expired-password={'ON' if self.disconnect_on_expired_password else 'OFF'}",
            "--skip-performance-schema",
            "--innodb-buffer-pool-load-at-startup=0",
            "--innodb-buffer-pool-dump-at-shutdown=0",
            "--max-connections=100",
            *self._storage_options(),
        ]

    @property
    def _startup_log(self) -> Path:
        return self.error_log_path

    def _started(self) -> None:
        self.version = str(self._query("SELECT VERSION()")[0][0])
        self._write_option_file()

    def _write_option_file(self) -> None:
        # token_urlsafe needs no quoting in an option file.
        lines = [
            "[client]",
            f"user={self.admin_user}",
            f"password={self.admin_password}",
            "protocol=TCP",
            f"host={self.host}",
            f"port={self.port}",
            "ssl",
            f"ssl-ca={self.ca_file}",
            "ssl-verify-server-cert",
            "default-character-set=utf8mb4",
        ]
        fd = os.open(self.option_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")

    # -- using it --------------------------------------------------------------------------

    def connect(self, *, database: str | None = None) -> pymysql.connections.Connection[Any]:
        """A PyMySQL connection as the admin over the unix socket (autocommit on)."""
        try:
            return pymysql.connect(
                unix_socket=str(self.socket_path),
                user=self.admin_user,
                password=self.admin_password,
                database=database,
                charset="utf8mb4",
                autocommit=True,
                connect_timeout=10,
            )
        except pymysql.MySQLError as e:
            raise DatabaseError(f"could not connect to MariaDB as {self.admin_user}: {e}") from e

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one statement as the admin; its rows.

        Values go in as ``%s`` parameters, quoted by PyMySQL (a literal ``%`` in ``sql`` is ``%%``,
        also in a quoted identifier). An account is ``%s@%s`` with user and host as parameters.

        Raises:
            DatabaseError: the statement failed; the message carries the server's error.
        """
        return self._query(sql, args)

    def create_login(
        self, name: str, password: str | None, *, admin: bool = False, database: str | None = None
    ) -> None:
        """Create account ``'name'@'%'``; it may use ``default_database``.

        ``password`` is sent as its ``mysql_native_password`` hash. Without a password the account
        gets the stored value ``invalid``, which no password matches (an account with an empty
        password would let anyone in); setting a password later makes it a normal login.
        ``admin``: ``CREATE USER`` on ``*.*``, which ``ALTER USER`` of other accounts needs.
        ``database``: also create that database, with ``ALL`` on it for the login.
        """
        account = (name, ACCOUNT_HOST)
        if password is None:
            self._query(
                "CREATE USER %s@%s IDENTIFIED VIA mysql_native_password USING %s", (*account, "invalid")
            )
        else:
            self._query(
                "CREATE USER %s@%s IDENTIFIED BY PASSWORD %s", (*account, native_password_hash(password))
            )
        self._query(
            f"GRANT SELECT ON {_pct(quote_grant_database(self.default_database))}.* TO %s@%s", account
        )
        if admin:
            self.set_admin(name, allowed=True)
        if database is not None:
            self.create_database(database, owner=name)

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        """Create database ``name``; with ``owner``, that login gets ``ALL`` on it (no ``GRANT OPTION``)."""
        self._query(f"CREATE DATABASE {_pct(quote_identifier(name))}")
        if owner is not None:
            self._query(
                f"GRANT ALL PRIVILEGES ON {_pct(quote_grant_database(name))}.* TO %s@%s",
                (owner, ACCOUNT_HOST),
            )

    def stored_hash(self, login: str) -> str | None:
        """What the server stores as ``login``'s password (``mysql.user.authentication_string``)."""
        rows = self._query(
            "SELECT authentication_string FROM mysql.user WHERE User = %s AND Host = %s",
            (login, ACCOUNT_HOST),
        )
        return str(rows[0][0]) if rows else None

    def can_login(self, login: str, password: str, database: str | None = None) -> bool:
        """Whether ``login`` logs in with ``password`` and runs ``SELECT 1``, checked with the
        ``mariadb`` client over TCP with TLS, verifying the certificate and host name against
        ``ca_file`` (not the app's driver).

        The password goes to the client in ``MYSQL_PWD``, never in its arguments. False when the
        server refuses the credentials: access denied (1045), account locked (4151), password
        expired (1862 at login, or 1820 for the first statement in sandbox mode).

        Raises:
            DatabaseError: the attempt failed for another reason (the client's error output).
        """
        result = self._client(login, password, database or self.default_database, "SELECT 1")
        if result.returncode == 0 and result.stdout.strip() == "1":
            return True
        codes = {int(code) for code in _CLIENT_ERROR.findall(result.stderr)}
        if codes and codes <= _LOGIN_REFUSED:
            return False
        raise DatabaseError(
            "the mariadb client could not log in for another reason than the credentials: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )

    def login_attempts(self) -> int:
        # The general log has one "Connect user@host on db" line per attempt; a refused one gets
        # a second "Connect Access denied ..." line, which is not counted.
        return len(re.findall(r"\d Connect\t(?!Access denied)", self.server_log()))

    def refused_logins(self, login: str) -> int:
        return self.server_log().count(f"Access denied for user '{login}'@")

    def server_log(self) -> str:
        """The general query log: every statement, including each that changed a login."""
        return read_log(self.log_path)

    # -- faults, as a database administrator would cause them ------------------------------------

    def expire_password(self, login: str, *, expired: bool = True) -> None:
        """``ALTER USER ... PASSWORD EXPIRE``, or valid again.

        MariaDB clears a manual expiry only when the password is set: ``PASSWORD EXPIRE NEVER``
        changes the lifetime, not the flag. So "valid again" sets the stored hash once more.
        """
        account = (login, ACCOUNT_HOST)
        if expired:
            self._query("ALTER USER %s@%s PASSWORD EXPIRE", account)
            return
        rows = self._query(
            "SELECT JSON_VALUE(Priv, '$.plugin'), JSON_VALUE(Priv, '$.authentication_string')"
            " FROM mysql.global_priv WHERE User = %s AND Host = %s",
            account,
        )
        if not rows:
            raise DatabaseError(f"no account {login!r}@{ACCOUNT_HOST!r}")
        plugin, stored = rows[0]
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(plugin or "")):
            raise DatabaseError(f"unexpected authentication plugin {plugin!r} of {login!r}")
        self._query(f"ALTER USER %s@%s IDENTIFIED VIA {plugin} USING %s", (*account, stored or ""))

    def set_admin(self, login: str, *, allowed: bool) -> None:
        """Grant or revoke ``CREATE USER`` on ``*.*`` (and ``SELECT`` on the ``mysql`` schema).

        With it, ``ALTER USER 'other'@'%' IDENTIFIED BY PASSWORD ...`` works; ``SET PASSWORD FOR
        'other'@'%'`` needs ``UPDATE`` on the ``mysql`` database instead, which is not given.
        ``SELECT`` on ``mysql`` is what ``SHOW GRANTS FOR 'other'@'%'`` needs (the check of two
        alternating logins); Azure's MySQL admin has both.
        """
        if allowed:
            self._query("GRANT CREATE USER ON *.* TO %s@%s", (login, ACCOUNT_HOST))
            self._query("GRANT SELECT ON `mysql`.* TO %s@%s", (login, ACCOUNT_HOST))
        else:
            self._query("REVOKE CREATE USER ON *.* FROM %s@%s", (login, ACCOUNT_HOST))

    def create_group(self, name: str) -> None:
        """A role that may use ``default_database``."""
        role = _pct(quote_identifier(name))
        self._query(f"CREATE ROLE {role}")
        self._query(f"GRANT SELECT ON {_pct(quote_grant_database(self.default_database))}.* TO {role}")

    def join_group(self, login: str, group: str) -> None:
        """Grant the role, make it the default role (MariaDB activates no role otherwise), and
        take back the login's own grant on ``default_database``."""
        role = _pct(quote_identifier(group))
        account = (login, ACCOUNT_HOST)
        self._query(f"GRANT {role} TO %s@%s", account)
        self._query(f"SET DEFAULT ROLE {role} FOR %s@%s", account)
        with suppress(DatabaseError):  # 1141: no such grant (already the role's only)
            self._query(
                f"REVOKE SELECT ON {_pct(quote_grant_database(self.default_database))}.* FROM %s@%s",  # noqa: S608 (quoted above)
                account,
            )

    def grant_own_privilege(self, login: str) -> None:
        self._query(
            f"GRANT SELECT ON {_pct(quote_grant_database(self.default_database))}.* TO %s@%s",
            (login, ACCOUNT_HOST),
        )

    def set_login_allowed(self, login: str, *, allowed: bool) -> None:
        """``ALTER USER ... ACCOUNT LOCK`` (the right password then gets error 4151) or ``UNLOCK``."""
        self._query("ALTER USER %s@%s ACCOUNT " + ("UNLOCK" if allowed else "LOCK"), (login, ACCOUNT_HOST))

    @contextmanager
    def hold_password_changes(self, login: str) -> Iterator[None]:
        """While inside, a password change waits: an admin session holds
        ``LOCK TABLES mysql.global_priv READ``.

        ``ALTER USER``, ``SET PASSWORD FOR`` and a login's own ``SET PASSWORD`` all write that
        (Aria) table, so they wait ("Waiting for table level lock") until the block is left;
        logins, ``SELECT`` from ``mysql.user`` and other tables go on. The lock is on the table,
        so changes of every account wait, not only ``login``'s; so do the helpers here that
        create or change accounts (do not call them inside).
        """
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLES mysql.global_priv READ")
            yield
            with connection.cursor() as cursor:
                cursor.execute("UNLOCK TABLES")
        finally:
            connection.close()  # the lock ends with the session, also when the block raised

    def password_change_waiting(self, login: str) -> bool:
        """Whether a password change of ``login`` waits on a table lock now: a session of ``login``
        itself, or one whose ``SET PASSWORD`` / ``ALTER USER`` names ``login``."""
        rows = self._query(
            "SELECT USER, INFO FROM information_schema.PROCESSLIST"
            " WHERE ID <> CONNECTION_ID() AND COMMAND = 'Query' AND STATE IN %s",
            (_LOCK_WAIT_STATES,),
        )
        for user, info in rows:
            statement = str(info or "")
            if not _ACCOUNT_CHANGE.match(statement):
                continue
            if user == login or _names_account(statement, login):
                return True
        return False

    # -- helpers ---------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                # Always with args, so that "%%" means "%" whether there are parameters or not.
                cursor.execute(sql, tuple(args))
                return list(cursor.fetchall())
        except pymysql.MySQLError as e:
            raise DatabaseError(f"MariaDB statement failed: {e}") from e
        finally:
            connection.close()

    def _client(
        self, login: str, password: str, database: str, statement: str
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}
        env.update(MYSQL_PWD=password, LC_ALL="C.UTF-8")
        args = [
            str(self.binaries["mariadb"]),
            "--no-defaults",
            "--protocol=TCP",
            f"--host={self.host}",
            f"--port={self.port}",
            f"--user={login}",
            f"--database={database}",
            "--ssl",
            f"--ssl-ca={self.ca_file}",
            "--ssl-verify-server-cert",
            "--default-character-set=utf8mb4",
            "--connect-timeout=10",
            "--batch",
            "--skip-column-names",
            f"--execute={statement}",
        ]
        try:
            return subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                timeout=CLIENT_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise DatabaseError(f"the mariadb client did not finish within {e.timeout:g}s") from e


def _literal(value: str) -> str:
    """A string literal for the bootstrap script (no parameters there)."""
    return "'" + str(escape_string(value)) + "'"


def _pct(sql: str) -> str:
    """``sql`` text with ``%`` doubled, for a statement that PyMySQL formats with parameters."""
    return sql.replace("%", "%%")


def _names_account(statement: str, login: str) -> bool:
    """Whether ``statement`` names the account ``login``, quoted in one of the ways SQL allows."""
    quoted = login.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0").replace("\x1a", "\\Z")
    forms = [
        "'" + quoted + "'",  # QUOTE(), as the hub builds its statements
        "'" + escape_string(login) + "'",  # PyMySQL's parameters
        "'" + login.replace("'", "''") + "'",
        quote_identifier(login),
        '"' + escape_string(login) + '"',
        '"' + login.replace('"', '""') + '"',
    ]
    if any(form in statement for form in forms):
        return True
    # An unquoted account name: ALTER USER alice IDENTIFIED ...
    return bool(re.fullmatch(r"[A-Za-z0-9_$]+", login)) and bool(
        re.search(rf"(?<![\w$]){re.escape(login)}(?![\w$])", statement)
    )


def _how_to_reach(server: MariaDBServer, start_seconds: float) -> list[str]:
    return [
        f"MariaDB {server.version} on {server.host}:{server.port} (TLS required), "
        f"started in {start_seconds:.1f}s",
        f"  admin        {server.admin_user} (password in {server.option_file})",
        f"  provider tag {server.provider()}",
        f"  CA file      {server.ca_file}",
        f"  query log    {server.log_path}",
        f"  mariadb      mariadb --defaults-file={server.option_file}",
    ]


def main() -> int:
    """Start a server in the foreground until Ctrl-C or SIGTERM, printing how to reach it."""
    return serve_in_foreground(MariaDBServer, _how_to_reach)


if __name__ == "__main__":
    sys.exit(main())
