"""The throwaway PostgreSQL cluster the tests, the demo and the benchmarks run against."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

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
    with PostgresCluster() as other:
        root = other.root
        assert other.port != postgres.port
        if os.geteuid() == 0:  # PostgreSQL refuses root: the server runs as the postgres user
            assert other.data_dir.stat().st_uid != 0
        other.create_role("only_here", "pw-one")
        assert other.can_login("only_here", "pw-one")
        process = other._process
        assert process is not None
    assert process.poll() is not None, "the server stopped"
    assert not root.exists(), "its directory is gone"
    other.stop()  # a second stop is harmless


def test_foreground_mode_prints_how_to_connect_but_no_password(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.databases.postgresql"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        output = "".join(lines)
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
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert not passfile.parent.exists(), "Ctrl-C removed the cluster"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_admin_password_file_is_private(postgres: PostgresCluster) -> None:
    assert postgres.passfile.stat().st_mode & 0o077 == 0
    assert postgres.admin_user in postgres.passfile.read_text()
