"""Orchestrator replay in worker processes, as the real host's FUNCTIONS_WORKER_PROCESS_COUNT does.

The real Functions host starts that many Python worker processes and sends each orchestration
trigger call to one of them. Replay is CPU-bound (the SDK parses every history timestamp), so
threads would share one GIL; processes let episodes of *different* instances replay in parallel.

Only the orchestrator call moves: the host process keeps the store (the single writer), selects
the inbox events, builds the trigger JSON and commits the result. A worker receives the function
name and that JSON and answers with the SDK's state, nothing else. Each worker imports the app
itself (a fresh interpreter that inherits the environment with local.settings.json already
applied, but no threads or sockets of the host). A worker exits on its own when the host process disappears
(SIGKILL included), so no orphan outlives a killed host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from local.host.app_config import ConfigError
from local.host.function_index import load_app
from local.host.orchestrator_call import OrchestratorAnswer, call_orchestrator
from local.host.timestamp_memo import memoize_history_timestamps

logger = logging.getLogger(__name__)

# Azure accepts FUNCTIONS_WORKER_PROCESS_COUNT from 1 to 10; 1 is its default.
WORKER_COUNT_SETTING = "FUNCTIONS_WORKER_PROCESS_COUNT"
MAX_WORKER_PROCESSES = 10
PARENT_CHECK_SECONDS = 0.5
# How long a call waits for the worker that replayed its instance before an idle one takes it.
STEAL_AFTER_SECONDS = 0.002
STARTUP_TIMEOUT_SECONDS = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_process_count(environ: dict[str, str] | os._Environ[str], override: int | None = None) -> int:
    """The number of worker processes: the option if given, else the setting, else 1."""
    if override is not None:
        value: object = override
    else:
        raw = environ.get(WORKER_COUNT_SETTING, "").strip()
        if not raw:
            return 1
        try:
            value = int(raw)
        except ValueError as exc:
            raise ConfigError(f"{WORKER_COUNT_SETTING} must be an integer from 1 to 10, got {raw!r}") from exc
    if not isinstance(value, int) or not 1 <= value <= MAX_WORKER_PROCESSES:
        raise ConfigError(f"{WORKER_COUNT_SETTING} must be an integer from 1 to 10, got {value!r}")
    return value


def _exit_with_parent(parent_pid: int) -> None:
    # A SIGKILLed host cannot stop its workers; a worker notices it was re-parented and leaves.
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _worker_main(connection: Connection, script_root: str, parent_pid: int, log_level: str) -> None:
    """A worker process: import the app, say ready, then answer one orchestrator call at a time."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [worker]: %(message)s")
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    # The SDK re-parses every earlier timestamp each episode; see timestamp_memo.py.
    memoize_history_timestamps()
    try:
        index = load_app(Path(script_root))
    except Exception as exc:
        connection.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", os.getpid()))
    while True:
        try:
            name, context_json = connection.recv()
        except (EOFError, OSError):
            return  # the host closed the pipe: it is stopping
        connection.send(call_orchestrator(index.orchestrators[name], context_json))


class WorkerDied(Exception):
    """A worker process ended while replaying; the episode is not committed and runs again."""


@dataclass
class _Call:
    """One orchestrator call: waiting for a worker, then in flight in ``worker``."""

    affinity: str
    name: str
    context_json: str
    answer: asyncio.Future[OrchestratorAnswer]
    worker: _Worker | None = None


class _Worker:
    """One worker process and the host's end of its pipe (one call in flight at a time)."""

    def __init__(self, process: subprocess.Popen[bytes], connection: Connection) -> None:
        self.process = process
        self.connection = connection
        self.call: _Call | None = None


class ReplayWorkers:
    """``count`` worker processes running orchestrator calls, driven from the host's event loop.

    Pipes are read with ``loop.add_reader``: no helper threads in the host process, whose GIL is
    already busy with the store and the activities. A worker that answers is handed its next call
    in the same callback, so it does not wait for the host's next loop iteration.

    Episodes of one instance go to the same worker when they can: each worker keeps its own memo
    of parsed timestamps (timestamp_memo.py), so the worker that replayed an instance's earlier
    episodes has already parsed most of its history (without affinity each worker ended up parsing
    most timestamps of every instance: one episode elsewhere costs a re-parse of the history so
    far). A worker that becomes free takes the oldest call that prefers it; a call whose worker is
    busy while another one idles waits at most STEAL_AFTER_SECONDS (a replay takes about a
    millisecond) before the idle one takes it, so no worker stays idle while calls wait."""

    def __init__(self, script_root: Path, count: int) -> None:
        self.script_root = script_root
        self.count = count
        self._idle: list[_Worker] = []
        self._waiting: list[_Call] = []  # oldest first
        self._workers: list[_Worker] = []
        self._respawns: set[asyncio.Task[_Worker]] = set()

    async def start(self) -> None:
        """Spawn every worker and wait until each has imported the app (ConfigError if one cannot)."""
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.count)))
        logger.info("%d worker processes ready (pids %s)", self.count, [w.process.pid for w in workers])

    async def _spawn(self) -> _Worker:
        # A plain subprocess (not multiprocessing's spawn, which re-runs the parent's __main__) with
        # one end of a socket pair; multiprocessing's Connection frames the messages on it.
        host_socket, worker_socket = socket.socketpair()
        environ = dict(os.environ)
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")]))
        command = [
            sys.executable, "-m", "local.host.replay_workers",
            str(worker_socket.fileno()), str(self.script_root), str(os.getpid()),
            logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        ]  # fmt: skip
        process = subprocess.Popen(command, pass_fds=[worker_socket.fileno()], env=environ)
        worker_socket.close()
        host_end = Connection(host_socket.detach())
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, _first_message, host_end)
        if ready is None or ready[0] != "ready":
            process.kill()
            process.wait()
            host_end.close()
            reason = "it exited" if ready is None else ready[1]
            raise ConfigError(f"a worker process could not load the app: {reason}")
        worker = _Worker(process, host_end)
        loop.add_reader(host_end.fileno(), self._on_readable, worker)
        self._workers.append(worker)
        self._release(worker)
        return worker

    def pids(self) -> list[int]:
        """The live worker processes (for measurements)."""
        return [worker.process.pid for worker in self._workers]

    async def replay(self, name: str, context_json: str, *, affinity: str = "") -> OrchestratorAnswer:
        """One orchestrator call, preferably in the worker that ``affinity`` (the instance id) maps
        to; raises WorkerDied if the worker dies during the call."""
        loop = asyncio.get_running_loop()
        call = _Call(affinity, name, context_json, loop.create_future())
        preferred = self._preferred(affinity)
        if preferred is not None and preferred in self._idle:
            self._idle.remove(preferred)
            self._send(preferred, call)
        else:
            self._waiting.append(call)
            if self._idle:
                loop.call_later(STEAL_AFTER_SECONDS, self._hand_waiting_to_idle)
        try:
            return await call.answer
        except asyncio.CancelledError:
            if call in self._waiting:
                self._waiting.remove(call)
            worker = call.worker
            if worker is not None and worker.call is call and worker in self._workers:
                # Cancelled mid-call (shutdown): the worker is busy and is not reused.
                self._retire(worker)
                worker.process.kill()
                worker.process.wait()
            raise

    def _preferred(self, affinity: str) -> _Worker | None:
        if not self._workers:
            return None
        return self._workers[hash(affinity) % len(self._workers)]

    def _send(self, worker: _Worker, call: _Call) -> None:
        call.worker, worker.call = worker, call
        # If the process is gone, its reader sees the end of the pipe, fails the call and replaces it.
        with contextlib.suppress(OSError):
            worker.connection.send((call.name, call.context_json))

    def _release(self, worker: _Worker) -> None:
        """``worker`` is free: give it the oldest call that prefers it, else keep it idle (and let it
        take the oldest call if that call's own worker is still busy after STEAL_AFTER_SECONDS)."""
        chosen = next((call for call in self._waiting if self._preferred(call.affinity) is worker), None)
        if chosen is not None:
            self._waiting.remove(chosen)
            self._send(worker, chosen)
            return
        self._idle.append(worker)
        if self._waiting:
            asyncio.get_running_loop().call_later(STEAL_AFTER_SECONDS, self._hand_waiting_to_idle)

    def _hand_waiting_to_idle(self) -> None:
        while self._idle and self._waiting:
            self._send(self._idle.pop(0), self._waiting.pop(0))

    def _on_readable(self, worker: _Worker) -> None:
        call, worker.call = worker.call, None
        try:
            answer = worker.connection.recv()
        except (EOFError, OSError):
            self._retire(worker)
            if call is not None and not call.answer.done():
                call.answer.set_exception(WorkerDied(f"worker process {worker.process.pid} ended"))
            logger.error("worker process %s ended; starting another", worker.process.pid)
            task = asyncio.get_running_loop().create_task(self._spawn())
            self._respawns.add(task)
            task.add_done_callback(self._respawns.discard)
            return
        if call is not None and not call.answer.done():
            call.answer.set_result(answer)
        self._release(worker)

    def _retire(self, worker: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(worker.connection.fileno())
        worker.connection.close()
        if worker in self._workers:
            self._workers.remove(worker)
        if worker in self._idle:
            self._idle.remove(worker)

    def stop(self) -> None:
        """Close the pipes (an idle worker exits on EOF) and wait a little for the processes."""
        processes = [worker.process for worker in self._workers]
        for worker in list(self._workers):
            self._retire(worker)
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _first_message(connection: Connection) -> tuple[str, object] | None:
    """The worker's first message (ready or failed); None if it exited without one."""
    if not connection.poll(STARTUP_TIMEOUT_SECONDS):
        return None
    try:
        message: tuple[str, object] = connection.recv()
    except (EOFError, OSError):
        return None
    return message


if __name__ == "__main__":
    # python -m local.host.replay_workers FD SCRIPT_ROOT PARENT_PID LOG_LEVEL (started by ReplayWorkers)
    _fd, _root, _parent, _level = sys.argv[1:5]
    _worker_main(Connection(int(_fd)), _root, int(_parent), _level)
