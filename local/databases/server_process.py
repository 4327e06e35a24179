"""The process mechanics every throwaway database server here shares.

A ``ServerProcess`` lives in one temporary directory, removed on ``stop()`` (and at exit, if
nobody stopped it). It listens on 127.0.0.1 only, on a free port: when another process takes the
port between choosing and binding it, the server is started again on another one. It serves TLS
with a certificate for ``127.0.0.1`` and ``localhost`` from a CA of its own (``ca_file``; the CA's
key is thrown away).

Database servers refuse to run as root, and CI runs as root: then the server runs as the OS user
of the Debian package (``os_user``), and the temporary directory and the files the server reads
are handed to it. The processes are started directly as that user (``subprocess`` ``user=``),
not through ``runuser``, so the server is our own child: we signal and reap it ourselves, with no
wrapper process in between.

A subclass sets the class attributes below and says what is its server's own: how to create the
data directory (``_create``), the server's command line (``_server_command``), where it reports
that it is ready (``_startup_log``) and what to do once it is (``_started``).
"""

from __future__ import annotations

import abc
import atexit
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypeVar

from local.certificates import (
    CertificateAuthority,
    certificates_pem,
    private_key_pem,
    write_private,
    write_public,
)
from local.databases.base import DatabaseError
from local.ports import free_port

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
PORT_ATTEMPTS = 3
CERTIFICATE_DAYS = 30


class ServerProcess(abc.ABC):
    """One throwaway server. Use as a context manager, or call ``start()`` and ``stop()``.

    ``admin_user`` is the bootstrap administrator; ``admin_password`` its password (a local,
    throwaway value: it is never printed or logged).
    """

    #: The server's name in messages: "PostgreSQL", "MariaDB".
    title: ClassVar[str]
    #: What a failed step raises.
    error: ClassVar[type[DatabaseError]] = DatabaseError
    #: The OS user the server runs as when we are root, and the Debian package that creates it.
    os_user: ClassVar[str]
    os_user_package: ClassVar[str]
    #: The prefix of the temporary directory's name.
    temp_prefix: ClassVar[str]
    #: What the server writes to ``_startup_log`` once it accepts connections.
    ready_message: ClassVar[str]
    #: What it writes there when it could not bind its port.
    port_taken: ClassVar[re.Pattern[str]]
    #: How it is told to shut down, and how long that may take before it is killed.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 15.0

    default_database: str
    #: The server's version, for output.
    version: str

    def __init__(self, *, admin_user: str, base_dir: str | None) -> None:
        self.host = HOST
        self.port = 0
        self.admin_user = admin_user
        self.admin_password = secrets.token_urlsafe(24)
        self._base_dir = base_dir
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = self._server_owner()

    # -- where things are ------------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._root is None:
            raise self.error(f"the {self.title} server is not started")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pid(self) -> int | None:
        """The server's main process (PostgreSQL's postmaster), while it runs: for measuring."""
        return self._process.pid if self._process is not None else None

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the server's certificate."""
        return self.root / "ca.pem"

    @property
    def server_cert_file(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key_file(self) -> Path:
        return self.root / "server.key"

    def provider(self, database: str | None = None) -> str:
        """The ``rotation-provider`` tag value that points at ``database`` on this server."""
        return f"{self.host}:{self.port}/{database or self.default_database}"

    # -- what a server adds ----------------------------------------------------------------

    @abc.abstractmethod
    def _create(self) -> None:
        """Create the data directory, TLS files and configuration in ``root``."""

    @abc.abstractmethod
    def _server_command(self) -> list[str]:
        """The command line that runs the server on ``self.port``."""

    @property
    @abc.abstractmethod
    def _startup_log(self) -> Path:
        """Where the server's output goes: its start-up messages are read from there."""

    @abc.abstractmethod
    def _started(self) -> None:
        """What follows once the server accepts connections (client files, its version)."""

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Create the server's directory and start it; returns once it accepts connections.

        Raises:
            DatabaseError: a step failed (the message carries the server log's tail).
        """
        if self._process is not None:
            return self
        self._root = Path(tempfile.mkdtemp(prefix=self.temp_prefix, dir=self._base_dir))
        atexit.register(self.stop)
        try:
            self._chown(self._root)
            self._create()
            self._launch_on_a_free_port()
            self._started()
        except BaseException:
            self.stop()
            raise
        self._logger.info(
            "%s %s started on %s:%s in %s", self.title, self.version, self.host, self.port, self.root
        )
        return self

    def stop(self) -> None:
        """Stop the server (``stop_signal``; SIGKILL after ``stop_timeout``) and remove its
        directory. Safe to call twice."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def _write_tls_files(self) -> None:
        """``ca_file``, and ``server_cert_file`` and ``server_key_file`` signed by that CA."""
        ca = CertificateAuthority.create(f"local {self.title} test CA", days=CERTIFICATE_DAYS)
        cert, key = ca.issue_server_certificate(("localhost", self.host), days=CERTIFICATE_DAYS)
        write_public(self.ca_file, certificates_pem(ca.certificate))
        write_public(self.server_cert_file, certificates_pem(cert))
        write_private(self.server_key_file, private_key_pem(key))
        for path in (self.ca_file, self.server_cert_file, self.server_key_file):
            self._chown(path)

    def _launch_on_a_free_port(self) -> None:
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            if self._launch():
                return
            self._logger.info(
                "port %s was taken before the server bound it; attempt %s", self.port, attempt + 2
            )
        raise self.error(
            f"could not find a free port for the {self.title} server after {PORT_ATTEMPTS} attempts"
        )

    def _launch(self) -> bool:
        """Start the server on ``self.port``. False when the port was taken meanwhile."""
        log_path = self._startup_log
        # Each attempt gets a fresh log, so an old "port taken" or "ready" is never read.
        log_path.unlink(missing_ok=True)
        user, group, extra_groups = self._ids()
        with log_path.open("ab") as log:
            process = self._process = subprocess.Popen(
                self._server_command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._server_env(),
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        text = ""
        while time.monotonic() < deadline:
            text = read_log(log_path)
            if self.ready_message in text:
                return True
            if process.poll() is not None:
                self._process = None
                if self.port_taken.search(text):
                    return False
                raise self.error(f"the {self.title} server exited while starting; log tail:\n{_tail(text)}")
            time.sleep(0.05)
        raise self.error(
            f"the {self.title} server did not start within {START_TIMEOUT_SECONDS:g}s; "
            f"log tail:\n{_tail(text)}"
        )

    # -- running as the server's OS user ---------------------------------------------------

    def _server_owner(self) -> pwd.struct_passwd | None:
        """The OS user the server runs as: ourselves, unless we are root (then ``os_user``)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.os_user)
        except KeyError:
            raise self.error(
                f"running as root needs the '{self.os_user}' OS user "
                f"(Debian's {self.os_user_package} package)"
            ) from None

    def _ids(self) -> tuple[int | None, int | None, list[int] | None]:
        """user, group and extra_groups for subprocess: the server owner's, or ours (None)."""
        if self._owner is None:
            return None, None, None
        return self._owner.pw_uid, self._owner.pw_gid, []

    def _run_as_owner(self, args: list[str], *, step: str) -> None:
        """Run a setup program (``step`` names it in the error) as the server's OS user."""
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
            raise self.error(f"{step} failed ({result.returncode}): {_tail(result.stdout + result.stderr)}")

    def _server_env(self) -> dict[str, str]:
        """The whole environment of the server and its setup programs: nothing of ours leaks in."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "TZ": "UTC",
            "HOME": self._owner.pw_dir if self._owner is not None else str(self.root),
            "TMPDIR": str(self.root),
        }

    def _chown(self, path: Path) -> None:
        """Hand ``path`` to the server's OS user (nothing to do when that is us)."""
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    @property
    def _logger(self) -> logging.Logger:
        return logging.getLogger(type(self).__module__)


def read_log(path: Path) -> str:
    """The text of a log file; empty while the server has not created it."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


S = TypeVar("S", bound=ServerProcess)


def serve_in_foreground(server: Callable[[], S], describe: Callable[[S, float], Iterable[str]]) -> int:
    """The ``python -m`` mode: start a server and keep it until Ctrl-C or SIGTERM.

    ``describe`` gets the started server and the seconds its start took, and returns the lines
    that say how to reach it (never a password).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    with server() as running:
        for line in describe(running, time.monotonic() - started):
            print(line)
        print("Ctrl-C stops it and removes its directory.", flush=True)
        while not stop and running._process is not None and running._process.poll() is None:
            time.sleep(0.2)
    return 0
