"""A throwaway PostgreSQL cluster for the tests, the demo and the benchmarks.

It lives in one temporary directory (data, unix socket, TLS files, server log), listens on
127.0.0.1 only, on a free port, and is removed on ``stop()`` (see ``server_process``). It is
configured like an audited production server, so what the tests prove holds there too:

- ``-A scram-sha-256`` and ``password_encryption = scram-sha-256``: every login needs a password;
- ``log_statement = ddl``: every ``ALTER ROLE`` lands in the server log, where the tests look
  for plaintext passwords (there must be none);
- ``ssl = on`` with a certificate for ``localhost`` and 127.0.0.1 from its own CA (``ca_file``),
  which ``app_settings()`` hands the hub: its default ``sslmode=verify-full`` works as in Azure.

``initdb`` and ``postgres`` refuse to run as root, and CI runs as root: then the server runs as
the ``postgres`` OS user (the temporary directory is handed to it).

Start one by hand with ``python -m local.databases.postgresql``.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from local.databases.base import DatabaseError
from local.databases.server_process import HOST, ServerProcess, read_log, serve_in_foreground
from rotation.formats.connection_string import libpq_quote
from rotation.targets import scram

DEFAULT_ADMIN = "hub_admin"
STOP_TIMEOUT_SECONDS = 10.0
# Roles per psql run in create_logins (each adds two -v arguments of about 150 bytes).
BULK_ROLES = 250


class PostgresError(DatabaseError):
    """The cluster could not be created, started or used; the message says which step."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``postgres``.

    Raises:
        PostgresError: no PostgreSQL server is installed (``make setup`` installs Debian's).
    """
    candidates = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(path).parent.name
        if version.isdigit() and (Path(path) / "initdb").exists() and (Path(path) / "postgres").exists():
            candidates.append((int(version), Path(path)))
    if not candidates:
        raise PostgresError("no PostgreSQL server under /usr/lib/postgresql/*/bin; run `make setup`")
    return max(candidates)[1]


class PostgresCluster(ServerProcess):
    """One throwaway cluster. Use as a context manager, or call ``start()`` and ``stop()``.

    ``admin_user`` is the bootstrap superuser; ``admin_password`` its password (a local,
    throwaway value: it is never printed or logged).
    """

    kind = "postgresql-login"
    name = "postgresql"
    default_database = "postgres"

    title = "PostgreSQL"
    error = PostgresError
    os_user, os_user_package = "postgres", "postgresql"
    temp_prefix = "rotation-pg-"
    ready_message = "database system is ready to accept connections"
    port_taken = re.compile(r"could not bind|Address already in use", re.IGNORECASE)
    # SIGINT is PostgreSQL's "fast" shutdown: sessions are cut, no checkpoint wait.
    stop_signal = signal.SIGINT
    stop_timeout = STOP_TIMEOUT_SECONDS

    def __init__(self, *, admin_user: str = DEFAULT_ADMIN, base_dir: str | None = None) -> None:
        self.bindir = find_bindir()
        super().__init__(admin_user=admin_user, base_dir=base_dir)
        self.version = self.bindir.parent.name

    # -- where things are ------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def passfile(self) -> Path:
        """A libpq password file for the admin role (``PGPASSFILE=... psql``)."""
        return self.root / "pgpass"

    def app_settings(self) -> dict[str, str]:
        """The hub verifies the server's certificate against this CA (``verify-full``)."""
        return {"ROTATION_POSTGRESQL_SSL_CA": str(self.ca_file)}

    # -- creating it -----------------------------------------------------------------------

    def _create(self) -> None:
        self._initdb()
        self._write_tls_files()
        self._configure()

    def _initdb(self) -> None:
        pwfile = self.root / "admin.pw"
        pwfile.write_text(self.admin_password + "\n")
        self._chown(pwfile)
        try:
            self._run_as_owner(
                [
                    str(self.bindir / "initdb"),
                    f"--pgdata={self.data_dir}",
                    f"--username={self.admin_user}",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                step="initdb",
            )
        finally:
            pwfile.unlink()

    def _configure(self) -> None:
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.root),
            "password_encryption": "scram-sha-256",
            "log_statement": "ddl",
            "log_connections": "on",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "ssl": "on",
            "ssl_cert_file": str(self.server_cert_file),
            "ssl_key_file": str(self.server_key_file),
            # Throwaway data: durability buys nothing and costs start-up and test time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
        }
        lines = [f"{name} = '{value}'" for name, value in settings.items()]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# local.databases.postgresql\n" + "\n".join(lines) + "\n")

    def _server_command(self) -> list[str]:
        return [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]

    @property
    def _startup_log(self) -> Path:
        return self.log_path

    def _started(self) -> None:
        self._write_passfile()

    def _write_passfile(self) -> None:
        def esc(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.host}:{self.port}:*:{esc(self.admin_user)}:{esc(self.admin_password)}\n")

    # -- using it --------------------------------------------------------------------------

    def psql(
        self,
        script: str,
        *,
        user: str | None = None,
        password: str | None = None,
        database: str = "postgres",
        variables: dict[str, str] | None = None,
    ) -> str:
        """Run ``script`` with psql over TLS (as the admin unless ``user`` is given); its output.

        Values go in as psql ``variables`` and are quoted by psql (``:'name'`` for a literal,
        ``:"name"`` for an identifier), never pasted into the script.

        Raises:
            PostgresError: psql failed; the message carries its error output.
        """
        result = self._psql(script, user=user, password=password, database=database, variables=variables)
        if result.returncode != 0:
            raise PostgresError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def can_login(self, role: str, password: str, database: str | None = None) -> bool:
        """Whether ``role`` logs in with ``password``, checked with psql (not the app's driver).

        Raises:
            PostgresError: the attempt failed for another reason than the credentials (a wrong
                or expired password, a role without LOGIN).
        """
        result = self._psql(
            "SELECT 1",
            user=role,
            password=password,
            database=database or self.default_database,
            variables=None,
        )
        if result.returncode == 0:
            return True
        if any(
            refused in result.stderr
            for refused in ("password authentication failed", "not permitted to log in")
        ):
            return False
        raise PostgresError(
            f"psql could not log in for another reason than the password: {result.stderr.strip()}"
        )

    def create_role(
        self,
        name: str,
        password: str | None = None,
        *,
        login: bool = True,
        createrole: bool = False,
        database: str | None = None,
    ) -> None:
        """Create role ``name``; with ``database``, also a database it owns.

        The password is sent as a SCRAM verifier, so the server log never holds it.
        """
        options = ("LOGIN" if login else "NOLOGIN") + (" CREATEROLE" if createrole else "")
        variables = {"role": name}
        script = f'CREATE ROLE :"role" {options}'
        if password is not None:
            variables["verifier"] = scram.verifier(password)
            script += " PASSWORD :'verifier'"
        self.psql(script + ";\n", variables=variables)
        if database is not None:
            self.create_database(database, owner=name)

    def create_login(
        self, name: str, password: str | None, *, admin: bool = False, database: str | None = None
    ) -> None:
        """A login role (``admin``: with CREATEROLE); see ``base.LocalDatabase``."""
        self.create_role(name, password, createrole=admin, database=database)

    def create_logins(self, logins: Mapping[str, str]) -> None:
        """Create many login roles (name -> password) with one psql per ``BULK_ROLES`` of them:
        what ``create_login`` does for each, without a psql process and a TLS login per role
        (measured while a benchmark ran beside it: 65 ms per login one by one, 10 ms in bulk).

        Raises:
            PostgresError: psql failed (the roles of a failed batch are not created).
        """
        items = list(logins.items())
        for start in range(0, len(items), BULK_ROLES):
            variables: dict[str, str] = {}
            script = ["BEGIN;"]
            for index, (name, password) in enumerate(items[start : start + BULK_ROLES]):
                variables |= {f"r{index}": name, f"v{index}": scram.verifier(password)}
                script.append(f"CREATE ROLE :\"r{index}\" LOGIN PASSWORD :'v{index}';")
            script.append("COMMIT;")
            self.psql("\n".join(script) + "\n", variables=variables)

    def create_group(self, name: str) -> None:
        """A NOLOGIN role (every role may connect to the default database already)."""
        self.create_role(name, None, login=False)

    def join_group(self, login: str, group: str) -> None:
        self.psql('GRANT :"group" TO :"login";\n', variables={"group": group, "login": login})

    def grant_own_privilege(self, login: str) -> None:
        """A privilege on the default database, held by the login itself (pg_shdepend lists it)."""
        self.psql(
            'GRANT CREATE ON DATABASE :"db" TO :"login";\n',
            variables={"db": self.default_database, "login": login},
        )

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        script = 'CREATE DATABASE :"db"' + (' OWNER :"owner"' if owner else "") + ";\n"
        self.psql(script, variables={"db": name, "owner": owner or ""})

    def stored_verifier(self, role: str) -> str | None:
        """What the server stores as ``role``'s password (``pg_authid.rolpassword``)."""
        out = self.psql(
            "SELECT rolpassword FROM pg_authid WHERE rolname = :'role';\n", variables={"role": role}
        )
        return out.strip() or None

    # -- faults, as the server's administrator would cause them -------------------------------

    def expire_password(self, login: str, *, expired: bool = True) -> None:
        self._alter_role(login, "VALID UNTIL '2000-01-01'" if expired else "VALID UNTIL 'infinity'")

    def set_admin(self, login: str, *, allowed: bool) -> None:
        self._alter_role(login, "CREATEROLE" if allowed else "NOCREATEROLE")

    def set_login_allowed(self, login: str, *, allowed: bool) -> None:
        self._alter_role(login, "LOGIN" if allowed else "NOLOGIN")

    @contextmanager
    def hold_password_changes(self, login: str) -> Iterator[None]:
        """An admin session keeps ``login``'s row of pg_authid locked (an ALTER ROLE in an open
        transaction), so another ALTER ROLE of it waits; leaving cancels that session, which
        rolls back and lets the waiting change through."""
        marker = f"hold-{secrets.token_hex(8)}"
        script = (
            "BEGIN;\nALTER ROLE :\"role\" CONNECTION LIMIT -1;\nSELECT pg_sleep(300), :'v'::text;\nCOMMIT;\n"
        )

        def hold() -> None:
            with suppress(PostgresError):
                self.psql(script, variables={"role": login, "v": marker})

        holder = threading.Thread(target=hold, name=f"hold-{login}", daemon=True)
        holder.start()
        try:
            deadline = time.monotonic() + 30
            while self._sessions_running(marker) != 1:
                if time.monotonic() > deadline:
                    raise PostgresError(f"the session holding {login!r} did not start")
                time.sleep(0.05)
            yield
        finally:
            self.psql(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE '%' || :'v' || '%' AND pid <> pg_backend_pid();\n",
                variables={"v": marker},
            )
            holder.join(30)

    def password_change_waiting(self, login: str) -> bool:
        """A session of ``login`` (changing its own password), or one whose ALTER ROLE names it
        (an admin changing it), waits on a lock."""
        out = self.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND (usename = :'v' "
            "OR query LIKE 'ALTER ROLE ' || quote_ident(:'v') || ' %');\n",
            variables={"v": login},
        )
        return int(out) >= 1

    def _sessions_running(self, marker: str) -> int:
        out = self.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || :'v' || '%' "
            "AND pid <> pg_backend_pid();\n",
            variables={"v": marker},
        )
        return int(out)

    def _alter_role(self, login: str, clause: str) -> None:
        self.psql(f'ALTER ROLE :"role" {clause};\n', variables={"role": login})

    def authenticate_with(self, role: str, method: str) -> None:
        """Make the server ask ``role`` for ``method`` (``password``: the cleartext, ``md5``) when
        it logs in over TCP, as a misconfigured or hostile server would: a line ahead of the
        others in pg_hba.conf (the first match wins), then a reload."""
        if not re.fullmatch(r"[a-z0-9_]+", role) or method not in ("password", "md5", "scram-sha-256"):
            raise ValueError(f"unexpected role {role!r} or method {method!r}")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(f"host all {role} {HOST}/32 {method}\n" + hba.read_text())
        loaded = self.psql("SELECT pg_conf_load_time();\n")
        self.psql("SELECT pg_reload_conf();\n")
        deadline = time.monotonic() + 10
        while self.psql("SELECT pg_conf_load_time();\n") == loaded:  # the reload is asynchronous
            if time.monotonic() > deadline:
                raise PostgresError("the server did not reload pg_hba.conf within 10 s")
            time.sleep(0.05)

    def login_attempts(self) -> int:
        # log_connections writes this line for every attempt, before authentication.
        return self.server_log().count("connection received:")

    def refused_logins(self, login: str) -> int:
        return self.server_log().count(f'password authentication failed for user "{login}"')

    def server_log(self) -> str:
        return read_log(self.log_path)

    # -- helpers ---------------------------------------------------------------------------

    def _psql(
        self,
        script: str,
        *,
        user: str | None,
        password: str | None,
        database: str,
        variables: dict[str, str] | None,
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGPASSWORD=self.admin_password if user is None else (password or ""),
            PGSSLMODE="require",
            PGCONNECT_TIMEOUT="10",
            PGAPPNAME="local.databases.postgresql",
        )
        args = [str(self.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
        for name, value in (variables or {}).items():
            args += ["-v", f"{name}={value}"]
        # psql reads a -d value holding "=" as a connection string: always give it one.
        dbname = f"dbname={libpq_quote(database)}"
        args += ["-h", self.host, "-p", str(self.port), "-U", user or self.admin_user, "-d", dbname]
        return subprocess.run(
            args, input=script, capture_output=True, text=True, env=env, timeout=60, check=False
        )


def _how_to_reach(cluster: PostgresCluster, start_seconds: float) -> list[str]:
    return [
        f"PostgreSQL {cluster.version} on {cluster.host}:{cluster.port} (TLS on)",
        f"  admin role   {cluster.admin_user} (password in {cluster.passfile})",
        f"  provider tag {cluster.provider()}",
        f"  server log   {cluster.log_path}",
        f"  psql         PGPASSFILE={cluster.passfile} psql -h {cluster.host} -p {cluster.port} "
        f"-U {cluster.admin_user} postgres",
    ]


def main() -> int:
    """Start a cluster in the foreground until Ctrl-C, printing how to reach it."""
    return serve_in_foreground(PostgresCluster, _how_to_reach)


if __name__ == "__main__":
    sys.exit(main())
