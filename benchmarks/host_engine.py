"""The local host's durable engine: overhead per episode and per activity call, throughput, storage.

Runs the engine in this process (SQLite store, real SDK replay, activities on its thread pool)
with the sample app's ``noop_six`` orchestration: six no-op activities in sequence, so seven
episodes and six activity calls per instance. No HTTP is involved; the figures are the engine's.
With ``--workers N`` (N > 1) the orchestrator calls replay and the activities run in N worker
processes, as the host does with FUNCTIONS_WORKER_PROCESS_COUNT=N.

    python -m benchmarks.host_engine [--sequential 100] [--concurrent 400] [--concurrency 50] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.table import print_table
from local.host.clock import HostClock
from local.host.engine import DurableEngine
from local.host.episode import EpisodeResult
from local.host.function_index import load_app
from local.host.instance_ops import InstanceOperations
from local.host.invoker import Invoker
from local.host.replay_workers import ReplayWorkers
from local.host.store import TERMINAL_STATUSES, ActivityItem, Store

APP = Path(__file__).resolve().parents[1] / "tests" / "apps" / "durable_app"
ACTIVITIES_PER_INSTANCE = 6


class TimedEngine(DurableEngine):
    """Records each episode (prepare to commit) and each activity call, and which instances ended."""

    episode_durations: list[float]
    activity_durations: list[float]
    ended: dict[str, str]
    progress: asyncio.Event

    def _after_episode(self, result: EpisodeResult, elapsed_ms: float) -> None:
        super()._after_episode(result, elapsed_ms)
        if result.ran_orchestrator:
            self.episode_durations.append(elapsed_ms / 1000)
        if result.status in TERMINAL_STATUSES:
            self.ended[result.instance_id] = result.status
            self.progress.set()

    async def _run_activity(self, item: ActivityItem) -> None:
        started = time.perf_counter()
        await super()._run_activity(item)
        self.activity_durations.append(time.perf_counter() - started)


async def _run(instances: int, concurrency: int, data_dir: Path, workers: int) -> dict[str, Any]:
    index = load_app(APP)
    store = Store(data_dir / "durable.sqlite")
    clock = HostClock()
    with ThreadPoolExecutor(max_workers=8) as functions:
        invoker = Invoker(sync_executor=functions, client_binding=lambda hub: "{}")
        # 8 slots: the sample app's host.json maxConcurrentActivityFunctions.
        engine = TimedEngine(
            store,
            index,
            clock,
            invoker=invoker,
            max_activities=8,
            workers=ReplayWorkers(APP, workers) if workers > 1 else None,
        )
        engine.episode_durations, engine.activity_durations, engine.ended = [], [], {}
        engine.progress = asyncio.Event()
        operations = InstanceOperations(store, index, clock, engine)
        await engine.start()
        # CPU from here on: app imports and worker start-up are not per-instance costs.
        host_cpu, workers_cpu = time.process_time(), _workers_cpu(engine.workers)
        ids = [f"bench-{number:05d}" for number in range(instances)]
        pending = list(ids)
        in_flight: set[str] = set()
        started = time.perf_counter()
        while pending or in_flight:
            while pending and len(in_flight) < concurrency:
                instance_id = pending.pop(0)
                operations.start("noop_six", instance_id, None)
                in_flight.add(instance_id)
            # Woken when an instance ends (polling the store would take the engine's CPU).
            await engine.progress.wait()
            engine.progress.clear()
            for instance_id in [item for item in in_flight if item in engine.ended]:
                in_flight.discard(instance_id)
        elapsed = time.perf_counter() - started
        host_cpu = time.process_time() - host_cpu
        workers_cpu = _workers_cpu(engine.workers) - workers_cpu
        await engine.stop()
    failed = {key: value for key, value in engine.ended.items() if value != "Completed"}
    if failed or len(engine.ended) != instances:
        raise RuntimeError(f"{len(engine.ended)} of {instances} instances ended, not completed: {failed}")
    store.checkpoint()
    store.close()
    size = (data_dir / "durable.sqlite").stat().st_size
    return {
        "elapsed": elapsed,
        "per_second": instances / elapsed,
        "episode_ms": statistics.mean(engine.episode_durations) * 1000,
        "activity_ms": statistics.mean(engine.activity_durations) * 1000,
        "episodes": len(engine.episode_durations),
        "activities": len(engine.activity_durations),
        "bytes_per_instance": size / instances,
        "host_cpu_ms": host_cpu * 1000 / instances,
        "workers_cpu_ms": workers_cpu * 1000 / instances,
    }


def _workers_cpu(workers: ReplayWorkers | None) -> float:
    """CPU seconds the live worker processes used so far (user + system, from /proc)."""
    if workers is None:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in workers.pids():
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def measure(instances: int, concurrency: int, workers: int = 1) -> dict[str, Any]:
    """One run; CPU seconds too (host process with its activity threads, and worker processes,
    while the instances ran), which the other jobs of a shared machine distort less than the
    wall-clock rates."""
    with tempfile.TemporaryDirectory(prefix="host-bench-") as folder:
        return asyncio.run(_run(instances, concurrency, Path(folder), workers))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.host_engine", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sequential", type=int, default=100, help="instances run one at a time")
    parser.add_argument(
        "--concurrent", type=int, default=400, help="instances run with --concurrency in flight"
    )
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes replaying orchestrators and running activities (as FUNCTIONS_WORKER_PROCESS_COUNT)",
    )
    args = parser.parse_args(argv)
    for option in ("sequential", "concurrent", "concurrency", "workers"):
        if getattr(args, option) < 1:
            # Averages over no instance would fail only after minutes of measuring.
            parser.error(f"--{option} must be at least 1")
    # The SDK and azure-functions log notices per call; only the table belongs on the screen.
    logging.getLogger("azure").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)

    one = measure(args.sequential, 1, args.workers)
    many = measure(args.concurrent, args.concurrency, args.workers)
    rows = [
        ("engine overhead per episode (replay + commit), 1 in flight", f"{one['episode_ms']:.2f} ms"),
        ("engine overhead per no-op activity call, 1 in flight", f"{one['activity_ms']:.2f} ms"),
        (f"episode, prepare to commit (queueing included), {args.concurrency} in flight", f"{many['episode_ms']:.2f} ms"),
        (f"no-op activity, dispatch to result committed (queueing included), {args.concurrency} in flight",
         f"{many['activity_ms']:.2f} ms"),
        ("instances completed per second, 1 in flight", f"{one['per_second']:.1f}"),
        (f"instances completed per second, {args.concurrency} in flight", f"{many['per_second']:.1f}"),
        (f"host process CPU per instance, {args.concurrency} in flight", f"{many['host_cpu_ms']:.1f} ms"),
        (f"worker processes' CPU per instance (replay, activities; start-up excluded), {args.concurrency} in flight",
         f"{many['workers_cpu_ms']:.1f} ms"),
        ("SQLite file size per completed instance (history kept)", f"{many['bytes_per_instance'] / 1024:.1f} KiB"),
    ]  # fmt: skip
    print(f"orchestration: 6 no-op activities in sequence (7 episodes); cpus: {os.cpu_count()}; "
          f"worker processes: {args.workers}; python {sys.version.split()[0]}")  # fmt: skip
    print_table(rows)
    checks = (
        one["episodes"],
        one["activities"],
        args.sequential * 7,
        args.sequential * ACTIVITIES_PER_INSTANCE,
    )
    print(f"(measured {checks[0]} episodes and {checks[1]} activity calls at 1 in flight; "
          f"expected {checks[2]} and {checks[3]})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
