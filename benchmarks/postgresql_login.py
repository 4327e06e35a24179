"""What a PostgreSQL login costs the hub, by the CA file libpq verifies the server against:
``python -m benchmarks.postgresql_login``.

libpq reads its ``sslrootcert`` file on every connection, so ``ROTATION_POSTGRESQL_SSL_CA``'s size
is paid per login. A local PostgreSQL server (certificate from the project's own CA) is logged
into through the hub's own ``postgresql-login`` target (``verify``: one TLS + SCRAM login and
nothing else), with three files that each also hold the local CA, so that every login succeeds:

- the local CA alone (one root: what a server with a private CA is given);
- ``azure``'s file (the two roots ``ROTATION_POSTGRESQL_SSL_CA=azure`` writes) with the local CA;
- certifi's bundle with the local CA (the default's size: what the hub loads in Azure when the
  setting is empty).

Reported: this process's CPU time per login (what the hub's worker spends), and wall time, over
rounds that alternate the files (the machine's speed drifts). It asserts nothing.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

import certifi

from benchmarks.table import print_table
from local.databases.postgresql import PostgresCluster
from rotation.settings import Settings
from rotation.targets import value_target_type
from rotation.targets.azure_database_roots import azure_roots_file
from rotation.targets.base import AdminSpec, SecretValue, TargetSpec


def _with_local_ca(directory: Path, name: str, roots: Path | None, local_ca: Path) -> Path:
    path = directory / name
    path.write_bytes((roots.read_bytes() + b"\n" if roots else b"") + local_ca.read_bytes())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=200, help="logins per file per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the files alternating in each")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-pglogin-") as tmp, PostgresCluster() as server:
        password = secrets.token_urlsafe(18)
        server.create_logins({"bench_login": password})
        files = {
            "local CA only (1 root)": _with_local_ca(Path(tmp), "one.pem", None, server.ca_file),
            "azure (2 roots) + local CA": _with_local_ca(
                Path(tmp), "azure.pem", Path(azure_roots_file()), server.ca_file
            ),
            "certifi's bundle + local CA (the default's size)": _with_local_ca(
                Path(tmp), "certifi.pem", Path(certifi.where()), server.ca_file
            ),
        }
        spec = TargetSpec(
            kind="postgresql-login",
            provider=server.provider(),
            credential="bench_login",
            admin=AdminSpec("self"),
        )
        targets = {
            label: value_target_type(spec.kind).build(
                spec, Settings.from_environ({"ROTATION_POSTGRESQL_SSL_CA": str(path)})
            )
            for label, path in files.items()
        }
        value = SecretValue(password)
        cpu: dict[str, list[float]] = {label: [] for label in files}
        wall: dict[str, list[float]] = {label: [] for label in files}
        for target in targets.values():
            target.verify(value=value)  # warm: imports, the first connection
        for _ in range(args.rounds):
            for label, target in targets.items():
                started_cpu, started_wall = time.process_time(), time.perf_counter()
                for _ in range(args.logins):
                    target.verify(value=value)
                cpu[label].append(1000 * (time.process_time() - started_cpu) / args.logins)
                wall[label].append(1000 * (time.perf_counter() - started_wall) / args.logins)

    print(
        f"PostgreSQL logins through the hub's target, {args.logins} per file in each of {args.rounds} rounds"
    )
    print_table(
        [
            (
                f"{label}: CPU per login (wall)",
                f"{min(cpu[label]):.2f}-{max(cpu[label]):.2f} ms ({min(wall[label]):.1f}-{max(wall[label]):.1f} ms)",
            )
            for label in files
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
