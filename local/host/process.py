"""Start the local host as a subprocess, for tests, demos and benchmarks.

    from local.host.process import HostProcess

    with HostProcess(script_root="/work/main", data_dir=tmp_path / "host", env={"X": "1"}) as host:
        requests_go_to(host.base_url)          # http://127.0.0.1:<free port>
        host.kill()                            # SIGKILL, to test recovery
        host.start()                           # same data dir: instances continue

The process runs ``python -m local.host`` from the repository root with the given environment
(added to the current one), logs to ``<data_dir>/host.log`` (never a pipe, so a chatty host can
never block), and ``start()`` returns once ``GET /admin/host/status`` answers 200.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from local.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class HostStartError(RuntimeError):
    """The host exited or did not become ready in time; the message ends with its log's tail."""


class _PortTaken(Exception):
    """The host could not bind its port."""


class HostProcess:
    """One ``python -m local.host`` subprocess; restartable on the same port and data dir."""

    def __init__(
        self,
        script_root: str | Path,
        data_dir: str | Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        auth_keys: bool = False,
        time_scale: float | None = None,
        max_activities: int | None = None,
        workers: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        easy_auth: str | Path | None = None,
        easy_auth_token_key: str | Path | None = None,
    ) -> None:
        self.script_root = Path(script_root)
        self.data_dir = Path(data_dir)
        self._port_chosen_here = port is None
        self.port = port or free_port()
        self.env = dict(env or {})
        self.auth_keys = auth_keys
        self.time_scale = time_scale
        self.max_activities = max_activities
        self.workers = workers
        self.extra_args = list(extra_args)
        self.easy_auth = Path(easy_auth) if easy_auth is not None else None
        self.easy_auth_token_key = Path(easy_auth_token_key) if easy_auth_token_key is not None else None
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "host.log"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "local.host",
            "--script-root", str(self.script_root),
            "--data", str(self.data_dir),
            "--port", str(self.port),
        ]  # fmt: skip
        if self.auth_keys:
            command += ["--auth", "keys"]
        if self.time_scale is not None:
            command += ["--time-scale", str(self.time_scale)]
        if self.max_activities is not None:
            command += ["--max-activities", str(self.max_activities)]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        if self.easy_auth is not None:
            command += ["--easy-auth", str(self.easy_auth)]
        if self.easy_auth_token_key is not None:
            command += ["--easy-auth-token-key", str(self.easy_auth_token_key)]
        return command + self.extra_args

    def start(self) -> HostProcess:
        """Start the host and wait until it is ready; raises HostStartError (and leaves nothing running).

        A port this launcher picked can be taken by another process between the pick and the bind
        (parallel test workers); then it picks another one, up to three times.
        """
        for attempt in range(3):
            try:
                return self._start_once()
            except _PortTaken:
                if not self._port_chosen_here or attempt == 2:
                    raise HostStartError(f"port {self.port} is already in use:\n{self.log_tail()}") from None
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> HostProcess:
        if self.running:
            raise HostStartError("the host is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                if "address already in use" in self.log_tail(5).lower():
                    raise _PortTaken
                raise HostStartError(f"the host exited with code {code} while starting:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.kill()
        raise HostStartError(f"the host was not ready after {self.startup_timeout} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/admin/host/status", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200 and json.load(response).get("state") == "Running")
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code, None if it was not running."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        return process.returncode

    def kill(self) -> None:
        """SIGKILL and reap: the host gets no chance to clean up (what recovery is tested against)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None

    def keys(self) -> dict[str, object]:
        """The generated host-keys.json (only with ``auth_keys=True``, after the first start)."""
        return dict(json.loads((self.data_dir / "host-keys.json").read_text(encoding="utf-8")))

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def __enter__(self) -> HostProcess:
        return self.start() if not self.running else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
