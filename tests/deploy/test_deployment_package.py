"""The deployment package installs from wheels alone and runs on Azure's Functions Python image.

The package is built as Azure's remote build does (deploy_package.py: pip for CPython 3.11 on
manylinux x86_64 up to glibc 2.36, wheels only, plus the app's files minus `.funcignore`), then:
a bare interpreter that sees only the package and the standard library, with no ODBC driver
registered, imports the app and every target's driver; and every native library of the package
loads with only the package's own libraries and those Azure's image provides.

Needs PyPI (or pip's cache) for the build, `git` for the file list, `ldd`, and unixODBC's
libodbc on this machine (scripts/bootstrap.sh installs it; Azure's image has it too).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_package import (
    AZURE_PLATFORMS,
    Build,
    build,
    dependency_problem,
    funcignore_spec,
    ldd,
    native_libraries,
    wheel_tags,
)

from local.databases.base import LocalDatabase
from local.databases.mariadb import MariaDBServer
from local.databases.postgresql import PostgresCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PROBE = Path(__file__).with_name("import_probe.py")
LOGIN_PROBE = Path(__file__).with_name("login_probe.py")
# The interpreter the venv was made from: no venv, and with -S no site-packages of this machine.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
DRIVERS = ("psycopg", "pymysql", "pyodbc")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Build:
    built = build(tmp_path_factory.mktemp("deployment") / "wwwroot")
    print(f"\npip ({built.pip_seconds:.1f} s): {' '.join(built.command)}")
    for distribution, tags in wheel_tags(built.site_packages).items():
        print(f"  {distribution}: {', '.join(tags)}")
    return built


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a probe: no ODBC driver of this machine is registered."""
    odbc = tmp_path_factory.mktemp("odbc-empty")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(odbc),  # no ~/.odbc.ini or ~/.odbcinst.ini of this machine
        "ODBCSYSINI": str(odbc),  # an empty odbcinst.ini directory: no driver is registered
        "ODBCINI": str(odbc / "odbc.ini"),
    }


@pytest.fixture(scope="module")
def probe(
    package: Build, bare_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Imports in a fresh interpreter: the base one, isolated (-I) and without site (-S)."""
    report = tmp_path_factory.mktemp("probe") / "report.json"
    env = bare_env
    result = subprocess.run(
        [BASE_PYTHON, "-I", "-S", str(PROBE), str(package.root), str(report)],
        cwd=package.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    facts: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    print(f"\n{facts['executable']} {facts['version']}\nsys.path: {facts['sys_path']}")
    for name in ("function_app", *DRIVERS):
        print(f"  {name}: {facts['modules'].get(name)} {facts['facts'].get(name)}")
    return facts


def _inside(path: str, directory: Path) -> bool:
    return Path(path).is_relative_to(directory.resolve())


def _in_stdlib(path: str, stdlib: list[Path]) -> bool:
    """In the interpreter's own library, but not in a site-packages of this machine under it."""
    resolved = Path(path).resolve()
    in_site = any(part in {"site-packages", "dist-packages"} for part in resolved.parts)
    return not in_site and any(resolved.is_relative_to(directory) for directory in stdlib)


def test_pip_gets_every_manylinux_tag_up_to_glibc_2_36() -> None:
    expected = {f"manylinux_2_{minor}_x86_64" for minor in range(5, 37)}
    expected |= {"manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"}
    assert set(AZURE_PLATFORMS) == expected
    assert len(AZURE_PLATFORMS) == len(expected)
    assert AZURE_PLATFORMS[0] == "manylinux_2_36_x86_64"  # newest first, as pip prefers natively


def test_funcignore_keeps_the_app_and_drops_the_rest() -> None:
    spec = funcignore_spec()
    for shipped in ("function_app.py", "host.json", "requirements.txt", "rotation/targets/base.py"):
        assert not spec.match_file(shipped), shipped
    for dropped in (
        "local/host/engine.py",
        "tests/deploy/test_deployment_package.py",
        "benchmarks/rotation.py",
        "docs/approval-page.png",
        "infra/bicep/main.bicep",
        "README.md",
        "azure.yaml",
        ".funcignore",
        "rotation/README.md",
        ".gitignore",
        "rotation/__pycache__/model.cpython-311.pyc",
        "local.settings.json",
        "requirements-dev.txt",
        # the operators' command line runs on their machines, never in the Function App
        "kvrotate/main.py",
        "requirements-cli.txt",
        "keyvault_rotation_hub.egg-info/PKG-INFO",
    ):
        assert spec.match_file(dropped), dropped


def test_package_holds_the_app_and_only_wheels_for_azure(package: Build) -> None:
    root = package.root
    for required in ("function_app.py", "host.json", "requirements.txt"):
        assert (root / required).is_file(), required
    for dropped in ("local", "tests", "benchmarks", "docs", "infra", "scripts", "kvrotate", ".venv", ".git"):
        assert not (root / dropped).exists(), f"{dropped}/ is in the package"
    assert not list(root.glob("*.md")), "Markdown files are in the package"
    assert not any(".." in p or p.startswith("/") for p in package.app_files)

    allowed = {f"cp311-{abi}-{platform}" for abi in ("cp311", "abi3") for platform in AZURE_PLATFORMS}
    for distribution, tags in wheel_tags(package.site_packages).items():
        assert tags, f"{distribution} has no wheel tags"
        for tag in tags:
            assert tag.endswith("-none-any") or tag in allowed, f"{distribution}: {tag}"


def test_function_app_imports_in_the_package(probe: dict[str, Any], package: Build) -> None:
    assert "function_app" not in probe["errors"], probe["errors"].get("function_app")
    assert probe["modules"]["function_app"] == [str(package.root.resolve() / "function_app.py")]
    assert probe["facts"]["function_app"]["functions"], "the app registers no functions"


def test_psycopg_uses_the_libpq_of_its_wheel(probe: dict[str, Any], package: Build) -> None:
    assert "psycopg" not in probe["errors"], probe["errors"].get("psycopg")
    assert probe["facts"]["psycopg"]["impl"] == "binary"
    binary = probe["modules"]["psycopg_binary"]
    assert binary, "psycopg_binary (the C implementation) was not imported"
    assert all(_inside(p, package.site_packages) for p in binary), binary


def test_every_target_module_imports(probe: dict[str, Any]) -> None:
    assert "targets" not in probe["errors"], probe["errors"].get("targets")
    assert "storage-account-key" in probe["facts"]["targets"]["kinds"]
    assert probe["modules"]["azure.mgmt.storage"], "azure-mgmt-storage was not imported"
    assert probe["modules"]["azure.storage.blob"], "azure-storage-blob was not imported"


def test_time_zones_come_from_the_tzdata_wheel_in_the_package(probe: dict[str, Any], package: Build) -> None:
    assert "windows" not in probe["errors"], probe["errors"].get("windows")
    facts = probe["facts"]["windows"]
    assert _inside(facts["tzdata"], package.site_packages), facts
    assert facts["zone"] == "Europe/Berlin"
    # Berlin springs forward on 29 March 2026: Monday's 09:00 is 07:00 UTC.
    assert facts["opens"] == "2026-03-30T07:00:00+00:00"


def test_postgresql_verifies_servers_against_roots_shipped_in_the_package(
    probe: dict[str, Any], package: Build
) -> None:
    assert "postgresql_roots" not in probe["errors"], probe["errors"].get("postgresql_roots")
    facts = probe["facts"]["postgresql_roots"]
    assert facts["sslmode"] == "verify-full"
    assert _inside(facts["bundle"], package.site_packages), facts
    assert facts["roots"] == ["DigiCert Global Root G2", "Microsoft RSA Root Certificate Authority 2017"]


def test_the_azure_roots_setting_builds_its_file_from_the_package(
    probe: dict[str, Any], package: Build
) -> None:
    assert "postgresql_azure_roots" not in probe["errors"], probe["errors"].get("postgresql_azure_roots")
    facts = probe["facts"]["postgresql_azure_roots"]
    assert facts["sslmode"] == "verify-full"
    assert _inside(facts["cryptography"], package.site_packages), facts
    assert facts["subjects"] == [
        "CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US",
        "CN=Microsoft RSA Root Certificate Authority 2017,O=Microsoft Corporation,C=US",
    ]


def test_pymysql_imports(probe: dict[str, Any]) -> None:
    assert "pymysql" not in probe["errors"], probe["errors"].get("pymysql")


def test_pyodbc_imports_and_sees_no_driver_of_this_machine(probe: dict[str, Any]) -> None:
    assert "pyodbc" not in probe["errors"], probe["errors"].get("pyodbc")
    assert probe["facts"]["pyodbc"]["drivers"] == []


def test_nothing_is_imported_from_outside_the_package(probe: dict[str, Any], package: Build) -> None:
    stdlib = [Path(p).resolve() for p in probe["stdlib_path"]]
    assert all(p.is_relative_to(Path(sys.base_prefix).resolve()) for p in stdlib), stdlib
    assert not any(part in {"site-packages", "dist-packages"} for p in stdlib for part in p.parts), stdlib
    assert probe["sys_path"] == [
        str(package.root.resolve()),
        str(package.site_packages.resolve()),
        *probe["stdlib_path"],
    ]

    for name in ("function_app", *DRIVERS):
        if name in probe["modules"]:
            assert all(_inside(p, package.root) for p in probe["modules"][name]), (
                name,
                probe["modules"][name],
            )
    leaked = {
        name: paths
        for name, paths in probe["modules"].items()
        if not all(_inside(p, package.root) or _in_stdlib(p, stdlib) for p in paths)
    }
    assert not leaked, f"modules imported from this machine, not the package: {leaked}"


def test_native_libraries_need_only_the_package_and_azures_image(package: Build) -> None:
    libraries = native_libraries(package.root)
    assert libraries, "the package holds no native library (the wheels are expected to have some)"
    problems = []
    for library in libraries:
        dependencies = ldd(library)
        relative = library.relative_to(package.root)
        print(f"\n{relative}:")
        for dependency in dependencies:
            problem = dependency_problem(package.root, dependency)
            where = (
                "package" if dependency.path and _inside(dependency.path, package.root) else dependency.path
            )
            print(f"  {dependency.soname} -> {where}{'  !! ' + problem if problem else ''}")
            if problem:
                problems.append(f"{relative}: {problem}")
    assert not problems, "\n".join(problems)


def test_only_the_sql_server_target_uses_an_odbc_driver(package: Build) -> None:
    """Azure's image has one database driver (ODBC Driver 18 for SQL Server): no other target may
    reach for ODBC."""
    users = sorted(
        str(path.relative_to(package.root))
        for path in (package.root / "rotation").rglob("*.py")
        if "pyodbc" in path.read_text(encoding="utf-8")
    )
    assert users == ["rotation/targets/sqlserver.py"], users


@pytest.fixture(scope="module")
def servers() -> Iterator[list[LocalDatabase]]:
    with PostgresCluster() as postgres, MariaDBServer(disconnect_on_expired_password=True) as mariadb:
        yield [postgres, mariadb]


def test_wheel_only_targets_rotate_a_real_login_from_the_package(
    package: Build, bare_env: dict[str, str], servers: list[LocalDatabase], tmp_path: Path
) -> None:
    """PostgreSQL and MySQL logins are changed, verified and changed back by the package's own
    code in the bare interpreter: their drivers need nothing from this machine."""
    targets = []
    for server in servers:
        login, current, new = f"deploy_{server.name}", secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        server.create_login(login, current)
        targets.append(
            {
                "kind": server.kind,
                "provider": server.provider(),
                "credential": login,
                "current": current,
                "new": new,
                "settings": server.app_settings(),
            }
        )
    job, report = tmp_path / "job.json", tmp_path / "report.json"
    job.write_text(json.dumps({"targets": targets}), encoding="utf-8")
    result = subprocess.run(
        [BASE_PYTHON, "-I", "-S", str(LOGIN_PROBE), str(package.root), str(job), str(report)],
        cwd=package.root,
        env=bare_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = json.loads(report.read_text(encoding="utf-8"))
    for server, target in zip(servers, targets, strict=True):
        outcome = outcomes[server.kind]
        assert "error" not in outcome, outcome.get("error")
        assert outcome == {"apply": True, "verify": "ok", "revert": True, "modules": outcome["modules"]}
        # Changed and changed back: the server's own client sees the original password again.
        assert server.can_login(target["credential"], target["current"])
        assert not server.can_login(target["credential"], target["new"])
