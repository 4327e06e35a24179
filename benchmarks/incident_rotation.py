"""Rotating everything at once: N PostgreSQL-login secrets across V spoke vaults, whole local stack.

For each size (``--secrets 1000,100``) and each way of starting (``--how``), a fresh stack
(PostgreSQL, local cloud with V spoke vaults, local host) is seeded with N secrets, each the
password of a login of its own, spread evenly over the vaults, and then all are rotated:

- ``incident``: ``POST /api/incidents`` over the V vaults with the settings' bounds
  (``ROTATION_INCIDENT_MAX_PER_VAULT`` / ``_PER_SERVER``; every login is on one server);
- ``incident-raised``: the same with ``maxPerVault`` / ``maxPerServer`` from ``--raised``;
- ``sweep``: the timer function ``sweep`` run once (the secrets are seeded inside its
  near-expiry window; the local Event Grid's expiry scan is held off so that it starts nothing).

Reported per run: rotations per second (from the request to the last rotation's completion),
p50 and p95 of one rotation's time (its instance's created to last-updated time in the host's
instance table: for an incident from the moment the incident started it; for the sweep, all
start at once, so it includes the wait for the host's activity slots), the peak memory (VmHWM)
of the host process and of its worker processes, and the CPU time each process of the stack
spent during the rotations. ``--profile`` adds where the host's time went (activity and episode
times from its log).

    python -m benchmarks.incident_rotation [--secrets 1000,100] [--vaults 10]
        [--how incident,incident-raised,sweep] [--raised 50,50] [--workers 1] [--profile]

Nothing here asserts a time (``make bench`` runs it at 100 secrets; the README has the figures).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.processes import command_line, cpu_sample, descendants, peak_rss_mib
from benchmarks.rotation import hub_vault_requests
from benchmarks.table import print_grid, print_table
from local.databases.postgresql import PostgresCluster
from local.scenario import hub_call
from local.stack import POSTGRESQL, LocalStack

HOW = ("incident", "incident-raised", "sweep")
ROTATION = "rotate_secret"
ENDED = ("Completed", "Failed", "Terminated")
POLL_SECONDS = 0.5
# No rotation ending for this long means something is stuck: stop and say so.
STALL_SECONDS = 180
# Inside the sweep's 30-day near-expiry window, or far outside it (an incident takes any expiry).
DUE_IN = timedelta(days=10)
NOT_DUE_IN = timedelta(days=90)
SEED_THREADS = 8
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Run:
    secrets: int
    vaults: int
    how: str
    max_per_vault: int | None = None
    max_per_server: int | None = None

    @property
    def label(self) -> str:
        if self.how == "sweep":
            return "sweep"
        bounds = "settings' bounds" if self.max_per_vault is None else "raised bounds"
        return f"incident ({bounds})"


@dataclass
class Result:
    run: Run
    seconds: float  # request to the last completion
    first_to_last: float  # first rotation created to the last completion
    durations: list[float]
    failed: int
    seed_seconds: float
    host_peak_mib: float
    worker_peaks_mib: list[float]
    cpu: dict[str, float]
    bounds: str
    # Per rotation: the hub's Key Vault requests (the local cloud's log) and stored history events.
    vault_requests: float = 0.0
    history_events: float = 0.0
    incident: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return len(self.durations) / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.durations)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def vault_of(index: int, vaults: Sequence[str]) -> str:
    return vaults[index % len(vaults)]


def seed(stack: LocalStack, count: int, *, due: bool) -> None:
    """``count`` logins on the PostgreSQL server, each with its password in a secret of its own
    (``bench-<i>``), round robin over the stack's spoke vaults."""
    server = stack.database(POSTGRESQL)
    assert isinstance(server, PostgresCluster)
    logins = {f"bench_{i}": secrets.token_urlsafe(18) for i in range(count)}
    server.create_logins(logins)
    expires_in = DUE_IN if due else NOT_DUE_IN

    def one(index: int) -> None:
        login = f"bench_{index}"
        stack.seed_login_secret(
            vault_of(index, stack.spoke_vaults),
            f"bench-{index}",
            login=login,
            password=logins[login],
            expires_in=expires_in,
        )

    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(one, range(count)))


def instance_rows(stack: LocalStack) -> list[tuple[str, str, str, float, float]]:
    """(instance id, name, status, created, last updated) of every instance, from the host's store."""
    assert stack.host is not None
    path = stack.host.data_dir / "durable.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        return [
            (str(r[0]), str(r[1]), str(r[2]), float(r[3]), float(r[4]))
            for r in db.execute("SELECT instance_id, name, status, created_at, updated_at FROM instances")
        ]


def ended_count(stack: LocalStack, incident_id: str | None) -> tuple[int, bool]:
    """(rotations ended, whether the incident, if any, has ended), counted by the store itself:
    the poll must cost the machine next to nothing."""
    assert stack.host is not None
    path = stack.host.data_dir / "durable.sqlite"
    ended = ",".join("?" * len(ENDED))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        (rotations,) = db.execute(
            f"SELECT count(*) FROM instances WHERE name = ? AND status IN ({ended})",  # noqa: S608 (placeholders)
            (ROTATION, *ENDED),
        ).fetchone()
        incident = db.execute(
            f"SELECT count(*) FROM instances WHERE instance_id = ? AND status IN ({ended})",  # noqa: S608
            (incident_id, *ENDED),
        ).fetchone()[0]
    return int(rotations), incident_id is None or incident == 1


def wait_until_ended(stack: LocalStack, expected: int, incident_id: str | None) -> None:
    """Poll the store until ``expected`` rotations (and the incident, if any) have ended.

    Raises:
        TimeoutError: nothing ended for ``STALL_SECONDS``.
    """
    ended_before, last_progress = -1, time.monotonic()
    while True:
        ended, incident_done = ended_count(stack, incident_id)
        if ended >= expected and incident_done:
            return
        if ended != ended_before:
            ended_before, last_progress = ended, time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            raise TimeoutError(f"{ended} of {expected} rotations ended; none more for {STALL_SECONDS}s")
        time.sleep(POLL_SECONDS)


def stored_history_events(stack: LocalStack) -> int:
    """History events the task hub stores for all rotations (not the incident's own)."""
    assert stack.host is not None
    path = stack.host.data_dir / "durable.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM history JOIN instances USING (instance_id) WHERE name = ?", (ROTATION,)
        ).fetchone()
    return int(count)


def process_groups(stack: LocalStack) -> dict[str, list[int]]:
    """The stack's processes by role, for CPU samples (this process: the benchmark's own polling)."""
    assert stack.host is not None
    assert stack.host.pid is not None
    assert stack.cloud is not None
    assert stack.cloud.pid is not None
    server = stack.database(POSTGRESQL)
    assert isinstance(server, PostgresCluster)
    assert server.pid is not None
    return {
        "host": [stack.host.pid],
        "host workers": descendants(stack.host.pid),
        "local cloud": [stack.cloud.pid, *descendants(stack.cloud.pid)],
        "PostgreSQL": [server.pid, *descendants(server.pid)],
        "benchmark": [os.getpid()],
    }


_ACTIVITY = re.compile(r"activity (\S+) \[\S+ task \d+\] (\S+) \(([\d.]+) ms\)")
_EPISODE = re.compile(r"episode (\S+) \[\S+\] .* \(([\d.]+) ms\)")


def host_profile(log: str) -> dict[str, Any]:
    """Activity and episode counts and times per function, from the host's log lines."""
    activities: dict[str, list[float]] = defaultdict(list)
    episodes: dict[str, list[float]] = defaultdict(list)
    for line in log.splitlines():
        if match := _ACTIVITY.search(line):
            activities[match.group(1)].append(float(match.group(3)))
        elif match := _EPISODE.search(line):
            episodes[match.group(1)].append(float(match.group(2)))
    return {"activities": dict(activities), "episodes": dict(episodes)}


class Sampler:
    """py-spy sampling the stack's Python processes (host, its workers, the local cloud) while the
    rotations run, only the stacks that hold the GIL (what bounds a process of Python threads);
    one collapsed-stack file per process in ``directory``, summarised by ``summarise``."""

    def __init__(self, directory: Path | None, label: str) -> None:
        self.directory, self.label = directory, label
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, pids: dict[str, int]) -> None:
        if self.directory is None:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            output = self.directory / f"{self.label}-{name}.txt"
            command = [spy, "record", "--pid", str(pid), "--format", "raw", "--gil", "--nonblocking"]
            command += ["--rate", "50", "--output", str(output)]
            if name == "host":
                command.append("--subprocesses")
            self._running.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def stop(self) -> None:
        for process in self._running:
            process.send_signal(signal.SIGINT)
        for process in self._running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self._running = []


def summarise(path: Path, *, top: int = 25) -> list[tuple[str, str]]:
    """The frames most samples of a collapsed-stack file pass through (inclusive), by function."""
    inclusive: dict[str, int] = defaultdict(int)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        # A frame is "function (file:line)"; count each function once per stack.
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}:
            inclusive[frame] += int(count)
    ranked = sorted(inclusive.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [(frame[:110], f"{100 * n / max(total, 1):.0f}%") for frame, n in ranked]


def start(stack: LocalStack, run: Run) -> str | None:
    """Start the rotations as ``run`` says; returns the incident's id (None for the sweep)."""
    if run.how == "sweep":
        code, body = hub_call(stack, "POST", "/admin/functions/sweep", {})
        if code not in (200, 202):
            raise RuntimeError(f"running the sweep answered {code}: {body}")
        return None
    request: dict[str, Any] = {
        "scope": {"vaults": list(stack.spoke_vaults)},
        "reason": f"benchmark: {run.secrets} secrets in {run.vaults} vaults",
    }
    if run.max_per_vault is not None:
        request |= {"maxPerVault": run.max_per_vault, "maxPerServer": run.max_per_server}
    code, body = hub_call(stack, "POST", "/api/incidents", request)
    if code != 202:
        raise RuntimeError(f"POST /api/incidents answered {code}: {body}")
    return str(body["id"])


def measure(run: Run, *, workers: int, profile: bool, spy_dir: Path | None = None) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-incident-") as tmp:
        settings = {"FUNCTIONS_WORKER_PROCESS_COUNT": str(workers)}
        with LocalStack(
            Path(tmp), databases=(POSTGRESQL,), spoke_vaults=run.vaults, app_settings=settings
        ) as stack:
            assert stack.cloud is not None
            assert stack.host is not None
            assert stack.host.pid is not None
            # The local Event Grid's expiry scan would start rotations of due secrets by itself.
            stack.cloud.admin.set_eventgrid(scan_interval_seconds=24 * 3600)
            app = stack.app_settings()
            bounds = (
                f"{app['ROTATION_INCIDENT_MAX_PER_VAULT']}/vault, {app['ROTATION_INCIDENT_MAX_PER_SERVER']}/server"
                if run.max_per_vault is None
                else f"{run.max_per_vault}/vault, {run.max_per_server}/server"
            )
            began = time.perf_counter()
            seed(stack, run.secrets, due=run.how == "sweep")
            seed_seconds = time.perf_counter() - began
            log_file = stack.host.data_dir / "host.log"
            log_start = log_file.stat().st_size
            cloud_log_start = stack.cloud.log_file.stat().st_size
            groups = process_groups(stack)
            cpu_before = cpu_sample(groups)
            sampler = Sampler(spy_dir, f"{run.secrets}-{run.how}-{run.max_per_vault or 'settings'}")
            sampler.start({"host": stack.host.pid, "cloud": groups["local cloud"][0]})
            requested = time.time()
            incident_id = start(stack, run)
            try:
                wait_until_ended(stack, run.secrets, incident_id)
            finally:
                sampler.stop()
            rows = instance_rows(stack)
            groups = process_groups(stack)  # workers replaced meanwhile count too
            cpu = {name: spent - cpu_before.get(name, 0.0) for name, spent in cpu_sample(groups).items()}
            rotations = [row for row in rows if row[1] == ROTATION]
            vault_requests = hub_vault_requests(stack, cloud_log_start)
            history = stored_history_events(stack)
            incident: dict[str, Any] = {}
            if incident_id is not None:
                _, body = hub_call(stack, "GET", f"/api/incidents/{incident_id}")
                incident = dict(body.get("status") or {})
            with log_file.open("rb") as log:
                log.seek(log_start)
                log_text = log.read().decode(errors="replace")
            return Result(
                run=run,
                seconds=max(r[4] for r in rotations) - requested,
                first_to_last=max(r[4] for r in rotations) - min(r[3] for r in rotations),
                durations=[r[4] - r[3] for r in rotations],
                failed=sum(1 for r in rotations if r[2] != "Completed"),
                seed_seconds=seed_seconds,
                host_peak_mib=peak_rss_mib(stack.host.pid),
                worker_peaks_mib=[
                    peak_rss_mib(pid)
                    for pid in descendants(stack.host.pid)
                    if "replay_workers" in command_line(pid)
                ],
                cpu=cpu,
                bounds=bounds,
                vault_requests=vault_requests / len(rotations),
                history_events=history / len(rotations),
                incident=incident,
                profile=host_profile(log_text) if profile else {},
            )


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def report(results: Sequence[Result]) -> None:
    print_grid(
        [
            "N",
            "vaults",
            "started by",
            "bounds",
            "rotations/s",
            "p50",
            "p95",
            "host peak",
            "workers' peak",
            "failed",
        ],
        [
            [
                str(r.run.secrets),
                str(r.run.vaults),
                r.run.label,
                r.bounds if r.run.how != "sweep" else "-",
                f"{r.per_second:.1f}",
                _seconds(r.percentile(0.5)),
                _seconds(r.percentile(0.95)),
                f"{r.host_peak_mib:.0f} MiB",
                ", ".join(f"{p:.0f}" for p in r.worker_peaks_mib) + " MiB" if r.worker_peaks_mib else "-",
                str(r.failed),
            ]
            for r in results
        ],
        right=(0, 1, 4, 5, 6, 7, 9),
    )
    for r in results:
        print(f"\n{r.run.secrets} secrets, {r.run.label}:")
        wall, n = r.seconds, len(r.durations)
        total = sum(spent for name, spent in r.cpu.items() if name != "benchmark")
        rows = [
            ("seeding (logins and secrets)", _seconds(r.seed_seconds)),
            ("request to last completion", _seconds(wall)),
            ("first rotation started to last completion", _seconds(r.first_to_last)),
            ("mean rotation time", _seconds(statistics.fmean(r.durations))),
            (
                "Key Vault requests per rotation (hub identity, the sweep's or incident's listing included)",
                f"{r.vault_requests:.2f}",
            ),
            ("history events stored per rotation", f"{r.history_events:.1f}"),
            *(
                (
                    f"CPU: {name}",
                    f"{spent:.1f} s ({spent / wall:.2f} cores, {1000 * spent / n:.0f} ms per rotation)",
                )
                for name, spent in sorted(r.cpu.items(), key=lambda item: -item[1])
            ),
            (
                "CPU: the whole stack (not the benchmark)",
                f"{total:.1f} s ({total / wall:.2f} cores, {1000 * total / n:.0f} ms per rotation)",
            ),
            # What the CPU alone allows: every core busy with nothing else; one core for the host's
            # process (one interpreter: its activity threads and episodes share one GIL).
            (f"ceiling: {CORES} cores / all CPU per rotation", f"{n * CORES / total:.1f} rotations/s"),
            (
                "ceiling: one core / the host process's CPU per rotation",
                f"{n / r.cpu['host']:.1f} rotations/s",
            ),
        ]
        if r.incident:
            counts = ("total", "done", "failed", "skipped", "excluded", "executions")
            rows.append(("incident summary", ", ".join(f"{k} {r.incident.get(k)}" for k in counts)))
        for kind in ("activities", "episodes"):
            for name, times in sorted(r.profile.get(kind, {}).items()):
                rows.append(
                    (
                        f"{kind[:-1] if kind == 'episodes' else 'activity'} {name}",
                        f"{len(times)} x {statistics.fmean(times):.1f} ms (p95 "
                        f"{sorted(times)[int(0.95 * (len(times) - 1))]:.1f}), {sum(times) / 1000:.1f} s",
                    )
                )
        print_table(rows)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("each size must be at least 1")
    return sizes


def _ways(text: str) -> list[str]:
    ways = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [way for way in ways if way not in HOW]
    if not ways or unknown:
        raise argparse.ArgumentTypeError(f"--how takes {', '.join(HOW)} (comma-separated), not {text!r}")
    return ways


def _bounds(text: str) -> tuple[int, int]:
    parts = _sizes(text)
    if len(parts) != 2 or not all(1 <= p <= 50 for p in parts):
        raise argparse.ArgumentTypeError("--raised takes PER_VAULT,PER_SERVER, each 1-50")
    return parts[0], parts[1]


def plan(argv: Sequence[str] | None = None) -> tuple[list[Run], argparse.Namespace]:
    """The runs the options ask for, largest size first (the issue's 1,000 before its 100)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--secrets", type=_sizes, default=[1000, 100], help="sizes, comma-separated")
    parser.add_argument("--vaults", type=int, default=10, help="spoke vaults the secrets are spread over")
    parser.add_argument("--how", type=_ways, default=list(HOW), help=f"comma-separated: {', '.join(HOW)}")
    parser.add_argument(
        "--raised", type=_bounds, default=(50, 50), help="incident-raised: PER_VAULT,PER_SERVER"
    )
    parser.add_argument("--workers", type=int, default=1, help="FUNCTIONS_WORKER_PROCESS_COUNT of the host")
    parser.add_argument("--profile", action="store_true", help="also show activity and episode times")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="sample the host and the local cloud with py-spy (requirements-dev) into DIR and summarise",
    )
    args = parser.parse_args(argv)
    if args.vaults < 2:
        parser.error("--vaults must be at least 2 (the default topology's spoke vaults)")
    runs = []
    for size in args.secrets:
        for how in args.how:
            raised = args.raised if how == "incident-raised" else (None, None)
            runs.append(Run(size, args.vaults, "sweep" if how == "sweep" else "incident", *raised))
    return runs, args


def main(argv: Sequence[str] | None = None) -> int:
    runs, args = plan(argv)
    results = []
    for run in runs:
        print(f"-- {run.secrets} secrets in {run.vaults} vaults, {run.label} ...", flush=True)
        results.append(measure(run, workers=args.workers, profile=args.profile, spy_dir=args.py_spy))
    report(results)
    for sampled in sorted(args.py_spy.glob("*.txt")) if args.py_spy else []:
        print(f"\nwhere {sampled.stem}'s samples holding the GIL are (inclusive):")
        print_table(summarise(sampled))
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
