"""The throwaway PostgreSQL cluster the tests, the demo and the benchmarks run against."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from local_server_helpers import another_server, assert_stops_on, foreground_server

from local.databases.postgresql import PostgresCluster, find_bindir


def test_configured_like_an_audited_server(postgres: PostgresCluster) -> None:
    out = postgres.psql(
        "SHOW listen_addresses; SHOW password_encryption; SHOW log_statement;"
        " SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();"
    )
    assert out.split() == ["127.0.0.1", "scram-sha-256", "ddl", "t"]
    assert postgres.provider("appdb") == f"127.0.0.1:{postgres.port}/appdb"


def test_logins_need_the_right_password(postgres: PostgresCluster) -> None:
    postgres.create_role("local_pg_check", "right-one")
    assert postgres.can_login("local_pg_check", "right-one")
    assert not postgres.can_login("local_pg_check", "wrong-one")
    # The helper sent a verifier: the password itself is not in the server log.
    assert "right-one" not in postgres.server_log()
    assert (postgres.stored_verifier("local_pg_check") or "").startswith("SCRAM-SHA-256$4096:")


def test_a_second_cluster_is_independent_and_leaves_nothing_behind(postgres: PostgresCluster) -> None:
    with another_server(PostgresCluster, postgres) as other:
        assert (other.stored_verifier("only_here") or "").startswith("SCRAM-SHA-256$")


def test_foreground_mode_prints_how_to_connect_but_no_password() -> None:
    with foreground_server("local.databases.postgresql") as (proc, output):
        found = re.search(r"on 127\.0\.0\.1:(\d+).*PGPASSFILE=(\S+)", output, re.DOTALL)
        assert found, output
        port, passfile = found[1], Path(found[2])
        password = passfile.read_text().strip().rsplit(":", 1)[1]
        assert password not in output
        psql = subprocess.run(
            [
                str(find_bindir() / "psql"),
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-U",
                "hub_admin",
                "-c",
                "SELECT 42",
                "postgres",
            ],
            env={**os.environ, "PGPASSFILE": str(passfile), "PGSSLMODE": "require"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert psql.stdout.strip() == "42", psql.stderr
        assert_stops_on(proc, signal.SIGINT, passfile.parent)  # Ctrl-C


def test_the_admin_password_file_is_private(postgres: PostgresCluster) -> None:
    assert postgres.passfile.stat().st_mode & 0o077 == 0
    assert postgres.admin_user in postgres.passfile.read_text()


def test_many_logins_are_created_at_once_without_their_passwords_in_the_log(
    postgres: PostgresCluster,
) -> None:
    logins = {f"local_pg_bulk_{i}": f"bulk-password-{i}" for i in range(3)}
    postgres.create_logins(logins)
    for login, password in logins.items():
        assert postgres.can_login(login, password)
        assert not postgres.can_login(login, password + "x")
        assert password not in postgres.server_log()
