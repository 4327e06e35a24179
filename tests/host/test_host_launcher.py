"""The launcher other test suites use: start, readiness, stop, kill, restart, failures."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from host_helpers import DURABLE_APP, NEVER, Api

from local.host.process import HostProcess, HostStartError
from local.ports import free_port


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_free_port_is_never_one_an_outgoing_connection_can_take() -> None:
    # A server restarted on its port (the host mid-test) failed to bind when a client
    # connection had meanwhile been given that port as its source port.
    low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(20)}
    assert not [port for port in ports if low <= port <= high]


def test_context_manager_stop_and_restart_on_the_same_port(tmp_path: Path) -> None:
    host = HostProcess(DURABLE_APP, tmp_path / "data", env={"SAMPLE_SWEEP_SCHEDULE": NEVER})
    try:
        with host:
            assert host.running
            assert host.base_url == f"http://127.0.0.1:{host.port}"
            status = Api(host.base_url).call("GET", "/admin/host/status").json()
            assert status["state"] == "Running"
            assert status["taskHubName"] == "LocalTestHub"
        assert not host.running
        assert "host stopped" in host.log_tail()
        host.start()
        pid = host.pid
        host.kill()
        assert not host.running
        with pytest.raises(ProcessLookupError):
            os.kill(pid or 0, 0)
        host.start()  # the port is free again after a SIGKILL
        assert Api(host.base_url).alive()
    finally:
        host.kill()


def test_sigint_and_sigterm_exit_cleanly(tmp_path: Path) -> None:
    host = HostProcess(DURABLE_APP, tmp_path / "data", env={"SAMPLE_SWEEP_SCHEDULE": NEVER})
    try:
        assert host.start().stop() == 0
        host.start()
        assert host._process is not None
        host._process.send_signal(signal.SIGINT)
        assert host._process.wait(15) == 0
    finally:
        host.kill()


def test_a_script_root_without_an_app_fails_fast(tmp_path: Path) -> None:
    host = HostProcess(tmp_path / "empty", tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HostStartError, match=r"function_app\.py does not exist"):
        host.start()
    assert not host.running


def test_an_app_that_fails_to_import_fails_fast(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    (root / "function_app.py").write_text("import not_a_module_anywhere\n")
    host = HostProcess(root, tmp_path / "data")
    with pytest.raises(HostStartError, match="ModuleNotFoundError"):
        host.start()
    assert not host.running


def test_a_taken_port_is_reported_or_replaced(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        explicit = HostProcess(DURABLE_APP, tmp_path / "a", port=taken, env={"SAMPLE_SWEEP_SCHEDULE": NEVER})
        with pytest.raises(HostStartError, match="already in use"):
            explicit.start()
        automatic = HostProcess(DURABLE_APP, tmp_path / "b", env={"SAMPLE_SWEEP_SCHEDULE": NEVER})
        automatic.port = taken  # as if another worker took the port between the pick and the bind
        automatic._port_chosen_here = True
        try:
            automatic.start()
            assert automatic.port != taken
            assert Api(automatic.base_url).alive()
        finally:
            automatic.kill()
