"""What a database login costs the hub, by how it verifies the server's certificate:
``python -m benchmarks.database_logins``.

PostgreSQL: libpq reads its ``sslrootcert`` file on every connection, so the size of
``ROTATION_POSTGRESQL_SSL_CA``'s file is paid per login. A local PostgreSQL server (certificate from
the project's own CA) is logged into through the hub's own ``postgresql-login`` target (``verify``:
one TLS + SCRAM login and nothing else), with three files that each also hold the local CA, so
that every login succeeds:

- the local CA alone (one root: what a server with a private CA is given);
- ``azure``'s file (the two roots ``ROTATION_POSTGRESQL_SSL_CA=azure`` writes) with the local CA;
- certifi's bundle with the local CA (the default's size: what the hub loads in Azure when the
  setting is empty).

MySQL: PyMySQL takes a Python ``ssl.SSLContext``, which holds its CA certificates once loaded; the
``mysql-login`` target builds one per process for its settings. Measured: a login through the
target (a local MariaDB server, the local CA), and what building a context costs with the
system's CAs (the default in Azure) and with certifi's bundle: what every activity's engine paid
before the context was shared.

Reported: this process's CPU time per login or per context (what the hub's worker spends), and wall
time, over rounds that alternate the cases (the machine's speed drifts). It asserts nothing.
"""

from __future__ import annotations

import argparse
import secrets
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import certifi

from benchmarks.table import print_table
from local.databases.base import LocalDatabase
from local.databases.mariadb import MariaDBServer
from local.databases.postgresql import PostgresCluster
from rotation.settings import Settings
from rotation.targets import value_target_type
from rotation.targets.azure_database_roots import azure_roots_file
from rotation.targets.base import AdminSpec, SecretValue, TargetSpec

LOGIN = "bench_login"


def _with_local_ca(directory: Path, name: str, roots: Path | None, local_ca: Path) -> Path:
    path = directory / name
    path.write_bytes((roots.read_bytes() + b"\n" if roots else b"") + local_ca.read_bytes())
    return path


def _login(server: LocalDatabase, settings: dict[str, str], password: str) -> Callable[[], object]:
    """One login through the hub's target for ``server``'s kind, with these settings."""
    spec = TargetSpec(kind=server.kind, provider=server.provider(), credential=LOGIN, admin=AdminSpec("self"))
    target = value_target_type(spec.kind).build(spec, Settings.from_environ(settings))
    value = SecretValue(password)
    target.verify(value=value)  # warm: imports, the first connection
    return lambda: target.verify(value=value)


def _measure(cases: dict[str, Callable[[], object]], repeat: int, rounds: int) -> list[tuple[str, str]]:
    """CPU and wall milliseconds per call of each case, ranges over ``rounds`` alternating rounds."""
    cpu: dict[str, list[float]] = {label: [] for label in cases}
    wall: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(rounds):
        for label, call in cases.items():
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            for _ in range(repeat):
                call()
            cpu[label].append(1000 * (time.process_time() - started_cpu) / repeat)
            wall[label].append(1000 * (time.perf_counter() - started_wall) / repeat)
    return [
        (
            f"{label}: CPU (wall)",
            f"{min(cpu[label]):.2f}-{max(cpu[label]):.2f} ms ({min(wall[label]):.1f}-{max(wall[label]):.1f} ms)",
        )
        for label in cases
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=200, help="logins (or contexts) per case per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the cases alternating in each")
    args = parser.parse_args(argv)
    password = secrets.token_urlsafe(18)

    with tempfile.TemporaryDirectory(prefix="bench-logins-") as tmp, PostgresCluster() as postgres:
        postgres.create_logins({LOGIN: password})
        local_ca = postgres.ca_file
        files = {
            "local CA only (1 root)": _with_local_ca(Path(tmp), "one.pem", None, local_ca),
            "azure (2 roots) + local CA": _with_local_ca(
                Path(tmp), "azure.pem", Path(azure_roots_file()), local_ca
            ),
            "certifi's bundle + local CA (the default's size)": _with_local_ca(
                Path(tmp), "certifi.pem", Path(certifi.where()), local_ca
            ),
        }
        postgresql = _measure(
            {
                f"PostgreSQL login, {label}": _login(
                    postgres, {"ROTATION_POSTGRESQL_SSL_CA": str(path)}, password
                )
                for label, path in files.items()
            },
            args.logins,
            args.rounds,
        )

    with MariaDBServer() as mariadb:
        mariadb.create_login(LOGIN, password)
        mysql = _measure(
            {
                "MySQL login, local CA, the process's one context": _login(
                    mariadb, {"ROTATION_MYSQL_SSL_CA": str(mariadb.ca_file)}, password
                ),
                "MySQL context built with the system's CAs (each engine before)": ssl.create_default_context,
                "MySQL context built with certifi's bundle": lambda: ssl.create_default_context(
                    cafile=certifi.where()
                ),
            },
            args.logins,
            args.rounds,
        )

    print(
        f"Database logins through the hub's targets, {args.logins} per case in each of {args.rounds} rounds"
    )
    print_table([*postgresql, *mysql])
    return 0


if __name__ == "__main__":
    sys.exit(main())
