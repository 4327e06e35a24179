"""Running the real console script, ``.venv/bin/kvrotate``, as an operator would."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
KVROTATE = REPO_ROOT / ".venv" / "bin" / "kvrotate"

# The hub's settings in these tests' stacks. Quick retries, so a fault that lasts fails its
# step in seconds:
FAST_RETRIES = {"ROTATION_RETRY_MAX_ATTEMPTS": "2", "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5"}
# kvrotate sends --approver in the body; once decisions need an authenticated principal, the
# hub accepts that body field only with this setting on (harmless before).
UNVERIFIED_APPROVER = {"ROTATION_ALLOW_UNVERIFIED_APPROVER": "true"}


@dataclass(frozen=True)
class Run:
    """One finished command: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def flat(self) -> str:
        """stdout with each run of blanks as one space (table columns vary with their content)."""
        return "\n".join(" ".join(line.split()) for line in self.out.splitlines())

    @property
    def table_rows(self) -> list[list[str]]:
        """The cells of each body row of a Rich table on stdout (lines drawn with ``│``)."""
        return [
            [cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in self.out.splitlines()
            if line.strip().startswith("│")
        ]

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.out)

    def assert_error(self, code: int, *parts: str) -> str:
        """Failed with ``code`` and one line on stderr, ``error: ...`` naming ``parts``; nothing
        on stdout, no traceback. Returns that line."""
        assert self.code == code, self
        assert self.out == "", self
        lines = self.err.splitlines()
        assert len(lines) == 1, self
        assert lines[0].startswith("error: "), self
        for part in parts:
            assert part in lines[0], self
        return lines[0]


def environment(hub_url: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment (the local cloud's proxy and CA) without KVROTATE_ settings of
    its own, plus the hub's URL and ``extra``."""
    # COLUMNS (pytest-xdist's workers have one) would narrow the tables of a pipe: an operator's
    # shell does not export it.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("KVROTATE_") and k not in ("COLUMNS", "LINES")
    }
    if hub_url is not None:
        env["KVROTATE_HUB_URL"] = hub_url
    env.update(extra or {})
    return env


def command(*args: str) -> list[str]:
    assert KVROTATE.exists(), f"{KVROTATE} is missing: `make setup` installs the console script"
    return [str(KVROTATE), *args]


def kvrotate(
    hub_url: str | None, *args: str, env: Mapping[str, str] | None = None, timeout: float = 180
) -> Run:
    done = subprocess.run(
        command(*args), capture_output=True, text=True, env=environment(hub_url, env), timeout=timeout
    )
    return Run(done.returncode, done.stdout, done.stderr)


def start(hub_url: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """A command left running (``rotate --wait``): its output is read when it ends."""
    return subprocess.Popen(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(hub_url, env),
    )


def finish(process: subprocess.Popen[str], timeout: float = 180) -> Run:
    out, err = process.communicate(timeout=timeout)
    return Run(process.returncode, out, err)


def read_until(process: subprocess.Popen[str], needle: str, timeout: float = 60) -> str:
    """What a running command printed up to and including the first line holding ``needle``."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        # The command prints a line at least every poll while it runs, or ends (EOF: "").
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return "".join(lines)
    raise AssertionError(f"{needle!r} not printed; got:\n{''.join(lines)}")


def in_terminal(hub_url: str, *args: str, timeout: float = 180, columns: int = 120) -> Run:
    """Run a command on a pseudo-terminal of ``columns`` columns, as an operator's shell does;
    its stdout and stderr are both the terminal, so ``out`` holds all it drew."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = environment(hub_url, {"TERM": "xterm-256color"})
    process = subprocess.Popen(command(*args), stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    drawn = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return Run(code, drawn.decode(errors="replace"), "")
