"""Builds the Function App's deployment package as Azure's remote build does, and inspects it.

Azure (Flex Consumption: no custom image) installs requirements.txt with pip into
`.python_packages/lib/site-packages` under the app root, on Debian bookworm (glibc 2.36), and
ships the app's own files beside it, minus what `.funcignore` lists. Nothing else is there at
run time but what Azure's Functions Python image carries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pathspec

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements.txt"
FUNCIGNORE = REPO / ".funcignore"
SITE_PACKAGES = Path(".python_packages") / "lib" / "site-packages"
PYTHON_VERSION = "3.11"

# The platform tags a native pip accepts on x86_64 with glibc 2.36 (Debian bookworm, the image's
# base), newest first, as `pip debug --verbose` lists them there: every manylinux_2_N from 2_36
# down to 2_5, each legacy alias right after the glibc version it stands for. pip neither widens
# one --platform to older glibc versions nor maps a PEP 600 tag to its legacy alias, so each is
# passed; the order is pip's preference when a release has several wheels. `linux_x86_64` (last
# natively) is left out: PyPI serves no such wheels.
_LEGACY_ALIASES = {17: "manylinux2014_x86_64", 12: "manylinux2010_x86_64", 5: "manylinux1_x86_64"}
AZURE_PLATFORMS: tuple[str, ...] = tuple(
    tag
    for minor in range(36, 4, -1)
    for tag in (f"manylinux_2_{minor}_x86_64", _LEGACY_ALIASES.get(minor))
    if tag is not None
)

# What a native library of the package may load from outside the package: what Debian bookworm's
# base and Azure's Functions Python image provide, by exact soname (a soname's version is its ABI).
AZURE_IMAGE_LIBRARIES = frozenset(
    {
        # glibc 2.36 (libc6, essential in every Debian image); manylinux wheels may need only these
        # and the next two by definition (PEP 600's allowed system libraries).
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "ld-linux-x86-64.so.2",
        # libgcc-s1 (essential) and libstdc++6: the Functions host is a .NET program and needs both.
        "libgcc_s.so.1",
        "libstdc++.so.6",
        # zlib1g (essential in Debian, and a dependency of the image's Python).
        "libz.so.1",
        # unixODBC's driver manager (libodbc2, libodbcinst2) and libltdl7, which libodbc2 loads
        # drivers with: the image installs unixodbc for ODBC Driver 18 for SQL Server (msodbcsql18).
        "libodbc.so.2",
        "libodbcinst.so.2",
        "libltdl.so.7",
    }
)
# Deliberately absent: libssl.so.3/libcrypto.so.3 (libssl3 is in python:3.11-bookworm, but
# psycopg-binary bundles its own and cryptography links OpenSSL statically, so nothing needs
# them), libpq, libkrb5, libldap, libsasl2 (psycopg-binary bundles them; the image has no libpq).


def pip_command(target: Path) -> list[str]:
    """The remote build's install, for Azure's interpreter and platform rather than this machine's."""
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    # With --target and --platform pip resolves dependencies only from wheels (it cannot run a
    # foreign platform's sdist build); that is also Flex Consumption's rule.
    command += ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in AZURE_PLATFORMS:
        command += ["--platform", platform]
    command += ["--target", str(target / SITE_PACKAGES), "-r", str(REQUIREMENTS)]
    return command


def funcignore_spec() -> pathspec.GitIgnoreSpec:
    """`.funcignore` uses gitignore syntax (Core Tools and azd read it so)."""
    return pathspec.GitIgnoreSpec.from_lines(FUNCIGNORE.read_text(encoding="utf-8").splitlines())


def app_files() -> list[str]:
    """The repository's files (tracked, and untracked ones git does not ignore) minus `.funcignore`.

    A publish zips the working tree, so a new module not yet added to git ships too; tracked
    files deleted from the working tree do not.
    """
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    spec = funcignore_spec()
    paths = sorted({p for p in listed.split("\0") if p})
    return [p for p in paths if not spec.match_file(p) and (REPO / p).is_file()]


@dataclass(frozen=True)
class Build:
    root: Path
    site_packages: Path
    command: list[str]
    pip_seconds: float
    pip_output: str
    app_files: list[str]


def build(root: Path) -> Build:
    root.mkdir(parents=True)
    command = pip_command(root)
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=480)
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"pip failed ({result.returncode}):\n{' '.join(command)}\n{output}")
    files = app_files()
    for relative in files:
        destination = root / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, destination)
    return Build(root, root / SITE_PACKAGES, command, seconds, output, files)


def wheel_tags(site_packages: Path) -> dict[str, list[str]]:
    """Each installed distribution and the tags of the wheel pip chose for it."""
    chosen = {}
    for wheel in sorted(site_packages.glob("*.dist-info/WHEEL")):
        tags = [
            line.removeprefix("Tag:").strip()
            for line in wheel.read_text(encoding="utf-8").splitlines()
            if line.startswith("Tag:")
        ]
        chosen[wheel.parent.name.removesuffix(".dist-info")] = tags
    return chosen


def native_libraries(root: Path) -> list[Path]:
    """Every ELF shared object in the package: extension modules and the wheels' bundled libraries."""
    return sorted(p for p in root.rglob("*.so*") if p.is_file() and re.search(r"\.so(\.\d+)*$", p.name))


@dataclass(frozen=True)
class Dependency:
    soname: str
    path: str | None  # None: ldd found no file for it


_RESOLVED = re.compile(r"^(\S+) => (.+?) \(0x[0-9a-f]+\)$")
_MISSING = re.compile(r"^(\S+) => not found$")
_DIRECT = re.compile(r"^(/\S+) \(0x[0-9a-f]+\)$")  # the dynamic loader, named by path


def ldd(library: Path) -> list[Dependency]:
    """The library's dependencies, transitively, as the dynamic loader resolves them here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    result = subprocess.run(["ldd", str(library)], capture_output=True, text=True, env=env, timeout=60)
    output = result.stdout + result.stderr
    if "statically linked" in output:
        return []
    if result.returncode != 0:
        raise AssertionError(f"ldd {library} failed ({result.returncode}):\n{output}")
    dependencies = []
    for raw in result.stdout.splitlines():
        line = raw.strip()
        if not line or line.startswith("linux-vdso.so"):
            continue  # the kernel's virtual object, never a file
        if match := _RESOLVED.match(line):
            dependencies.append(Dependency(match[1], os.path.realpath(match[2])))
        elif match := _MISSING.match(line):
            dependencies.append(Dependency(match[1], None))
        elif match := _DIRECT.match(line):
            dependencies.append(Dependency(Path(match[1]).name, os.path.realpath(match[1])))
        else:
            raise AssertionError(f"ldd {library}: unexpected line {raw!r}")
    return dependencies


def dependency_problem(root: Path, dependency: Dependency) -> str | None:
    """Why the dependency would not load in Azure, or None if it would."""
    if dependency.path is None:
        return f"{dependency.soname} is not found"
    if Path(dependency.path).is_relative_to(root.resolve()):
        return None  # bundled by a wheel (its *.libs dir, found through the RPATH $ORIGIN)
    if dependency.soname in AZURE_IMAGE_LIBRARIES:
        return None
    return f"{dependency.soname} comes from this machine ({dependency.path}), not from the package or Azure's image"
