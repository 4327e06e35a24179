"""``make bench``: every benchmark in turn, each printing its own table.

Each module also runs alone (``python -m benchmarks.<name> --help`` for its options). Figures
go into the README by hand, with the machine they were measured on: nothing here asserts a
time.
"""

from __future__ import annotations

import importlib
import sys

# (module, its arguments): the incident benchmark at 100 secrets only (1,000 take 15 minutes).
BENCHMARKS: tuple[tuple[str, list[str]], ...] = (
    ("host_engine", []),
    ("cloud_keyvault", []),
    ("rotation", []),
    ("database_logins", []),
    ("incident_rotation", ["--secrets", "100"]),
    ("entra_rotation", []),
    ("storage_rotation", []),
    ("graph_client", []),
)


def main() -> int:
    failed = []
    for name, argv in BENCHMARKS:
        print(f"\n== benchmarks.{name} {' '.join(argv)} ==", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        if module.main(argv) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
