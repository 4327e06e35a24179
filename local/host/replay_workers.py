"""Worker processes, as the real host's FUNCTIONS_WORKER_PROCESS_COUNT starts them.

The real Functions host starts that many Python worker processes and sends each function
invocation to one of them. Replay is CPU-bound (the SDK parses every history timestamp) and so is
much of an activity (SDK clients, TLS, JSON), so threads would share one GIL; processes let
episodes of *different* instances, and activities, run in parallel.

Two kinds of call move: orchestrator calls (one at a time per worker, in its main thread, as
before) and activity calls (many at a time: a worker runs sync activities on its thread pool of
PYTHON_THREADPOOL_THREAD_COUNT threads, as the Python worker does, and async ones on its event
loop). The host process keeps the store (the single writer), the dispatch and the
maxConcurrentActivityFunctions bound: it selects the inbox events, builds the trigger JSON, sends
an activity's name, input text and bindings, and commits what comes back. A worker answers with
the SDK's state or the activity's outcome (``activity_call.py``), nothing else. Each worker
imports the app itself (a fresh interpreter that inherits the environment with local.settings.json
already applied, so the app settings an activity reads are the host's, but no threads or sockets
of the host). A worker exits on its own when the host process disappears (SIGKILL included), so no
orphan outlives a killed host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from local.host.activity_call import (
    ActivityOutcome,
    call_activity,
    call_async_activity,
    failed,
    function_call,
)
from local.host.app_config import ConfigError
from local.host.function_index import FunctionEntry, FunctionIndex, load_app
from local.host.orchestrator_call import OrchestratorAnswer, call_orchestrator
from local.host.timestamp_memo import memoize_history_timestamps

logger = logging.getLogger(__name__)

# Azure accepts FUNCTIONS_WORKER_PROCESS_COUNT from 1 to 10; 1 is its default.
WORKER_COUNT_SETTING = "FUNCTIONS_WORKER_PROCESS_COUNT"
MAX_WORKER_PROCESSES = 10
# The Python worker's sync thread pool; unset (or invalid, with a warning) means Python's default
# ThreadPoolExecutor size, as the worker does on Python 3.9 and later.
THREAD_COUNT_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"
# What travels through a worker's pipe: the kind of call first.
ORCHESTRATOR = "orchestrator"
ACTIVITY = "activity"
PARENT_CHECK_SECONDS = 0.5
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
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


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this worker the moment the host process ends.

    A worker runs activities: one that outlived a SIGKILLed host would go on writing to Key Vault
    or a database after the host is gone (as if the machine had not crashed), while the restarted
    host already runs that activity again. Azure's workers end with their host."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the polling below is all there is


def _exit_with_parent(parent_pid: int) -> None:
    # A SIGKILLed host cannot stop its workers; a worker notices it was re-parented and leaves
    # (also covers a host that ended before _die_with_parent took effect).
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def activity_thread_count(environ: dict[str, str] | os._Environ[str]) -> int | None:
    """PYTHON_THREADPOOL_THREAD_COUNT as the Python worker reads it; None: Python's default."""
    raw = environ.get(THREAD_COUNT_SETTING, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        logger.warning("%s must be a positive integer, got %r; using the default", THREAD_COUNT_SETTING, raw)
        return None
    return value


class _WorkerSide:
    """A worker's end of the pipe: orchestrator calls in the main thread, activities beside them.

    Answers leave from several threads (the main one, the pool's, the loop's), so one lock keeps
    each message whole on the pipe."""

    def __init__(self, connection: Connection, index: FunctionIndex) -> None:
        self.connection = connection
        self.index = index
        self._send_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=activity_thread_count(os.environ), thread_name_prefix="activity"
        )
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="activity-loop", daemon=True).start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            # The host stopped or died meanwhile: nothing can receive the answer.
            self.connection.send(message)

    def serve(self) -> None:
        """Answer calls until the host closes the pipe, then let running activities finish."""
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                break  # the host closed the pipe: it is stopping
            if message[0] == ORCHESTRATOR:
                _, name, context_json = message
                self.send((ORCHESTRATOR, call_orchestrator(self.index.orchestrators[name], context_json)))
            else:
                _, call_id, name, input_text, bindings = message
                self._start_activity(call_id, self.index.activities[name], name, input_text, bindings)
        # As the host process did with its own pool: a running activity is waited for, its result
        # is not delivered, and its row makes it run again at the next start.
        self._pool.shutdown(wait=True)

    def _start_activity(
        self, call_id: int, entry: FunctionEntry, name: str, input_text: str | None, bindings: dict[str, Any]
    ) -> None:
        call = function_call(entry, bindings)
        if entry.is_async:
            future = asyncio.run_coroutine_threadsafe(call_async_activity(name, input_text, call), self._loop)
            future.add_done_callback(lambda done: self.send((ACTIVITY, call_id, done.result())))
        else:
            self._pool.submit(self._run_sync, call_id, name, input_text, call)

    def _run_sync(self, call_id: int, name: str, input_text: str | None, call: Any) -> None:
        try:
            outcome = call_activity(name, input_text, call)
        except BaseException as exc:
            # SystemExit and the like: still an answer, or the host would hold its slot forever.
            outcome = failed(name, exc)
        self.send((ACTIVITY, call_id, outcome))


def _worker_main(connection: Connection, script_root: str, parent_pid: int, log_level: str) -> None:
    """A worker process: import the app, say ready, then answer the host's calls."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [worker]: %(message)s")
    _die_with_parent()
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    # The SDK re-parses every earlier timestamp each episode; see timestamp_memo.py.
    memoize_history_timestamps()
    try:
        index = load_app(Path(script_root))
    except Exception as exc:
        connection.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    side = _WorkerSide(connection, index)
    connection.send(("ready", os.getpid()))
    side.serve()


class WorkerDied(Exception):
    """A worker process ended during a call: an episode is not committed and runs again, an
    activity was never completed and runs again (in another worker or the replacement)."""


@dataclass
class _Call:
    """One orchestrator call: waiting for a worker, then in flight in ``worker``."""

    affinity: str
    name: str
    context_json: str
    answer: asyncio.Future[OrchestratorAnswer]
    worker: _Worker | None = None


@dataclass(eq=False)
class _Worker:
    """One worker process and the host's end of its pipe: at most one orchestrator call in flight,
    and the activities it runs by call id."""

    process: subprocess.Popen[bytes]
    connection: Connection
    call: _Call | None = None
    activities: dict[int, asyncio.Future[ActivityOutcome]] = field(default_factory=dict)


class ReplayWorkers:
    """``count`` worker processes running orchestrator and activity calls, driven from the host's
    event loop.

    Pipes are read with ``loop.add_reader``: no helper threads in the host process, whose GIL is
    already busy with the store, the episodes' reads and commits, and HTTP. A worker that answers is handed its next call
    in the same callback, so it does not wait for the host's next loop iteration.

    Episodes of one instance go to the same worker when they can: each worker keeps its own memo
    of parsed timestamps (timestamp_memo.py), so the worker that replayed an instance's earlier
    episodes has already parsed most of its history (without affinity each worker ended up parsing
    most timestamps of every instance: one episode elsewhere costs a re-parse of the history so
    far). A worker that becomes free takes the oldest call that prefers it; a call whose worker is
    busy while another one idles waits at most STEAL_AFTER_SECONDS (a replay takes about a
    millisecond) before the idle one takes it, so no worker stays idle while calls wait.

    Activities are not bound to an instance: each goes to the worker with the fewest activities in
    flight (Azure's host deals invocations out round-robin; with activities of unequal length the
    least busy worker keeps one worker's thread pool from queueing while another's idles). The
    host's maxConcurrentActivityFunctions bound applies before that, over all workers."""

    def __init__(self, script_root: Path, count: int) -> None:
        self.script_root = script_root
        self.count = count
        self._idle: list[_Worker] = []
        self._waiting: list[_Call] = []  # oldest first
        self._workers: list[_Worker] = []
        self._respawns: set[asyncio.Task[_Worker]] = set()
        self._call_ids = itertools.count(1)
        # Set while at least one worker is alive: an activity waits for a replacement otherwise.
        self._alive = asyncio.Event()

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
        self._alive.set()
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

    async def run_activity(
        self, name: str, input_text: str | None, bindings: dict[str, Any]
    ) -> ActivityOutcome:
        """One activity call in the least busy worker; raises WorkerDied if that worker dies first."""
        while not self._workers:
            await self._alive.wait()
        worker = min(self._workers, key=lambda candidate: len(candidate.activities))
        call_id = next(self._call_ids)
        outcome: asyncio.Future[ActivityOutcome] = asyncio.get_running_loop().create_future()
        worker.activities[call_id] = outcome
        # If the process is gone, its reader sees the end of the pipe and fails the call.
        with contextlib.suppress(OSError):
            worker.connection.send((ACTIVITY, call_id, name, input_text, bindings))
        try:
            return await outcome
        finally:
            # Cancelled (shutdown): the worker may still finish it; its answer is then ignored.
            worker.activities.pop(call_id, None)

    def _preferred(self, affinity: str) -> _Worker | None:
        if not self._workers:
            return None
        return self._workers[hash(affinity) % len(self._workers)]

    def _send(self, worker: _Worker, call: _Call) -> None:
        call.worker, worker.call = worker, call
        # If the process is gone, its reader sees the end of the pipe, fails the call and replaces it.
        with contextlib.suppress(OSError):
            worker.connection.send((ORCHESTRATOR, call.name, call.context_json))

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
        try:
            message = worker.connection.recv()
        except (EOFError, OSError):
            self._ended(worker)
            return
        if message[0] == ACTIVITY:
            _, call_id, outcome = message
            waiting = worker.activities.pop(call_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(outcome)
            return
        call, worker.call = worker.call, None
        if call is not None and not call.answer.done():
            call.answer.set_result(message[1])
        self._release(worker)

    def _ended(self, worker: _Worker) -> None:
        """The worker's pipe ended: it died. Fail what it had in flight and start another."""
        self._retire(worker)
        logger.error("worker process %s ended; starting another", worker.process.pid)
        task = asyncio.get_running_loop().create_task(self._spawn())
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    def _retire(self, worker: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(worker.connection.fileno())
        worker.connection.close()
        if worker in self._workers:
            self._workers.remove(worker)
        if not self._workers:
            self._alive.clear()
        if worker in self._idle:
            self._idle.remove(worker)
        died = WorkerDied(f"worker process {worker.process.pid} ended")
        call, worker.call = worker.call, None
        if call is not None and not call.answer.done():
            call.answer.set_exception(died)
        for outcome in worker.activities.values():
            if not outcome.done():
                outcome.set_exception(died)
        worker.activities.clear()

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
