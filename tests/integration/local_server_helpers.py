"""What the tests of the throwaway servers (``local.databases``) check the same way for each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from local.databases.mariadb import MariaDBServer
from local.databases.postgresql import PostgresCluster

REPOSITORY = Path(__file__).resolve().parents[2]
FOREGROUND_TIMEOUT_SECONDS = 60

Server = TypeVar("Server", PostgresCluster, MariaDBServer)


@contextmanager
def foreground_server(module: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m <module>`` in the repository, run until it has printed how to reach it (up to
    its "Ctrl-C" line): yields the process and that output.

    The process is killed on the way out if it still runs, and after a minute in any case, so a
    server that does not start never hangs the suite.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPOSITORY,
    )
    timer = threading.Timer(FOREGROUND_TIMEOUT_SECONDS, proc.kill)
    timer.start()
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        yield proc, "".join(lines)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_stops_on(proc: subprocess.Popen[str], signum: signal.Signals, directory: Path) -> None:
    """The foreground server stops on ``signum``, exits with 0 and has removed its directory."""
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == 0
    assert not directory.exists(), f"{signum.name} removed the server's directory"


@contextmanager
def another_server(start: Callable[[], Server], first: Server) -> Iterator[Server]:
    """A second server beside ``first``, checked to be independent of it: another port, run by
    the server's OS user when we are root, logins of its own. Once the block is left, its
    process has stopped, its directory is gone, and a second ``stop()`` is harmless."""
    with start() as other:
        root = other.root
        assert other.port != first.port
        if os.geteuid() == 0:  # servers refuse root: it runs as its OS user (postgres, mysql)
            assert other.data_dir.stat().st_uid != 0
        other.create_login("only_here", "pw-one")
        assert other.can_login("only_here", "pw-one")
        assert not first.can_login("only_here", "pw-one")
        yield other
        process = other._process
        assert process is not None
    assert process.poll() is not None, "the server stopped"
    assert not root.exists(), "its directory is gone"
    other.stop()
