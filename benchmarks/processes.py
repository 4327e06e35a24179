"""What the processes of a local stack cost: peak memory and CPU time, read from /proc (Linux).

CPU time of a process tree counts every live process in it (user + system) and what the reaped
ones spent (``cutime``/``cstime`` of whoever reaped them): PostgreSQL's backends end with their
connections and the postmaster reaps them, so the postmaster's tree holds every session's CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB; NaN once it has gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return float("nan")
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (of all its threads)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, depth first."""
    below: list[int] = []
    for child in children(pid):
        below += [child, *descendants(child)]
    return below


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` and of its reaped children; 0 once it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The fields after the command name (which may hold spaces), from field 3 (state) on.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICKS


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def cpu_sample(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of processes."""
    return {name: tree_cpu_seconds(pids) for name, pids in groups.items()}
