"""A throwaway PostgreSQL cluster for the tests, the demo and the benchmarks.

It lives in one temporary directory (data, unix socket, TLS key and certificate, server log),
listens on 127.0.0.1 only, on a free port, and is removed on ``stop()``. It is configured like
an audited production server, so what the tests prove holds there too:

- ``-A scram-sha-256`` and ``password_encryption = scram-sha-256``: every login needs a password;
- ``log_statement = ddl``: every ``ALTER ROLE`` lands in the server log, where the tests look
  for plaintext passwords (there must be none);
- ``ssl = on`` with a self-signed certificate: the app's default ``sslmode=require`` works as is.

``initdb`` and ``postgres`` refuse to run as root, and CI runs as root: then the server runs as
the ``postgres`` OS user (the temporary directory is handed to it). The processes are started
directly as that user (``subprocess`` ``user=``), not through ``runuser``, so the server is our
own child: we signal and reap it ourselves, with no wrapper process in between.

Start one by hand with ``python -m local.databases.postgresql``.
"""

from __future__ import annotations

import atexit
import datetime
import glob
import ipaddress
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from local.databases.base import DatabaseError
from local.ports import free_port
from rotation.targets import scram

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_ADMIN = "hub_admin"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
_READY = "database system is ready to accept connections"
_PORT_TAKEN = re.compile(r"could not bind|Address already in use", re.IGNORECASE)


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


class PostgresCluster:
    """One throwaway cluster. Use as a context manager, or call ``start()`` and ``stop()``.

    ``admin_user`` is the bootstrap superuser; ``admin_password`` its password (a local,
    throwaway value: it is never printed or logged).
    """

    kind = "postgresql-login"
    name = "postgresql"
    default_database = "postgres"

    def __init__(self, *, admin_user: str = DEFAULT_ADMIN, base_dir: str | None = None) -> None:
        self.host = HOST
        self.port = 0
        self.admin_user = admin_user
        self.admin_password = secrets.token_urlsafe(24)
        self.bindir = find_bindir()
        self._base_dir = base_dir
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = _server_owner()

    # -- where things are ------------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._root is None:
            raise PostgresError("the cluster is not started")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def passfile(self) -> Path:
        """A libpq password file for the admin role (``PGPASSFILE=... psql``)."""
        return self.root / "pgpass"

    def provider(self, database: str | None = None) -> str:
        """The ``rotation-provider`` tag value that points at ``database`` on this cluster."""
        return f"{self.host}:{self.port}/{database or self.default_database}"

    def app_settings(self) -> dict[str, str]:
        """Nothing to add: the hub's default ``sslmode=require`` takes the self-signed certificate."""
        return {}

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> PostgresCluster:
        """Create the cluster and start the server; returns once it accepts connections.

        Raises:
            PostgresError: initdb or the server failed (the message carries the server log's tail).
        """
        if self._process is not None:
            return self
        self._root = Path(tempfile.mkdtemp(prefix="rotation-pg-", dir=self._base_dir))
        atexit.register(self.stop)
        try:
            self._chown(self._root)
            self._initdb()
            self._write_tls_files()
            self._configure()
            for attempt in range(3):
                self.port = free_port()
                if self._launch():
                    break
                logger.info(
                    "port %s was taken before the server bound it; attempt %s", self.port, attempt + 2
                )
            else:
                raise PostgresError("could not find a free port for the server after 3 attempts")
            self._write_passfile()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "PostgreSQL %s started on %s:%s in %s", self.bindir.parent.name, self.host, self.port, self.root
        )
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory. Safe to call twice."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: sessions are cut, no checkpoint wait.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

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

    def _write_tls_files(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        cert_path, key_path = self.root / "server.crt", self.root / "server.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        # The server refuses a key file that others can read.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        self._chown(cert_path)
        self._chown(key_path)

    def _configure(self) -> None:
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.root),
            "password_encryption": "scram-sha-256",
            "log_statement": "ddl",
            "log_connections": "on",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "ssl": "on",
            "ssl_cert_file": str(self.root / "server.crt"),
            "ssl_key_file": str(self.root / "server.key"),
            # Throwaway data: durability buys nothing and costs start-up and test time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
        }
        lines = [f"{name} = '{value}'" for name, value in settings.items()]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# local.databases.postgresql\n" + "\n".join(lines) + "\n")

    def _launch(self) -> bool:
        """Start the server on ``self.port``. False when the port was taken meanwhile."""
        user, group, extra_groups = self._ids()
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._server_env(),
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            text = self.server_log()
            if _READY in text:
                return True
            if self._process.poll() is not None:
                self._process = None
                if _PORT_TAKEN.search(text):
                    return False
                raise PostgresError(f"the server exited while starting; log tail:\n{_tail(text)}")
            time.sleep(0.05)
        raise PostgresError(
            f"the server did not start within {START_TIMEOUT_SECONDS:g}s; log tail:\n{_tail(text)}"
        )

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
        out = self.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = :'v' AND wait_event_type = 'Lock';\n",
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

    def login_attempts(self) -> int:
        # log_connections writes this line for every attempt, before authentication.
        return self.server_log().count("connection received:")

    def server_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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
        args += ["-h", self.host, "-p", str(self.port), "-U", user or self.admin_user, "-d", database]
        return subprocess.run(
            args, input=script, capture_output=True, text=True, env=env, timeout=60, check=False
        )

    def _ids(self) -> tuple[int | None, int | None, list[int] | None]:
        """user, group and extra_groups for subprocess: the server owner's, or ours (None)."""
        if self._owner is None:
            return None, None, None
        return self._owner.pw_uid, self._owner.pw_gid, []

    def _run_as_owner(self, args: list[str], *, step: str) -> None:
        user, group, extra_groups = self._ids()
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self._server_env(),
            timeout=120,
            check=False,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
        if result.returncode != 0:
            raise PostgresError(
                f"{step} failed ({result.returncode}): {_tail(result.stdout + result.stderr)}"
            )

    def _server_env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self._owner is not None:
            env["HOME"] = self._owner.pw_dir
        return env

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)


def _server_owner() -> pwd.struct_passwd | None:
    """The OS user the server runs as: ourselves, unless we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresError(
            "running as root needs the 'postgres' OS user (Debian's postgresql package)"
        ) from None


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main() -> int:
    """Start a cluster in the foreground until Ctrl-C, printing how to reach it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with PostgresCluster() as cluster:
        print(f"PostgreSQL {cluster.bindir.parent.name} on {cluster.host}:{cluster.port} (TLS on)")
        print(f"  admin role   {cluster.admin_user} (password in {cluster.passfile})")
        print(f"  provider tag {cluster.provider()}")
        print(f"  server log   {cluster.log_path}")
        print(
            f"  psql         PGPASSFILE={cluster.passfile} psql -h {cluster.host} -p {cluster.port} "
            f"-U {cluster.admin_user} postgres"
        )
        print("Ctrl-C stops it and removes its directory.", flush=True)
        while not stop and cluster._process is not None and cluster._process.poll() is None:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
