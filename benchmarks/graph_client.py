"""What the official Microsoft Graph SDK would cost the Function App, against a thin client on azure-core.

A Graph target needs three Microsoft Graph v1.0 operations: GET an application by appId, POST
addPassword, POST removePassword. Two ways to call them are measured:
  * ``msgraph-sdk`` (the official SDK: Kiota request builders and models, httpx);
  * a thin client on azure-core's pipeline (``PipelineClient`` with ``RetryPolicy`` and
    ``BearerTokenCredentialPolicy``), which the app already ships through azure-identity and
    azure-keyvault-secrets.

It builds two deployment packages as Azure's remote build does (``tests/deploy/deploy_package.py``:
pip for CPython 3.11 on manylinux x86_64, wheels only, into ``.python_packages/lib/site-packages``,
plus the app's files minus ``.funcignore``): ``requirements.txt`` alone, and the same plus the latest
``msgraph-sdk``. It reports each one's files, size and zipped size, then the cold import in a
fresh bare interpreter (``python -I -S -B`` with only the package and the standard library on
sys.path, as ``tests/deploy/import_probe.py`` runs): the imports and the building of a client,
then the first use (the three requests built with their bodies serialized, and the responses of
GET application and addPassword parsed; no network), each alone and after ``import function_app``
(what a cold start of this app already pays). Nothing goes into .venv; the temporary directories
are removed. It needs PyPI (or pip's cache); it asserts nothing.

    python -m benchmarks.graph_client [--runs 7] [--top 8] [--graph msgraph-sdk]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.table import print_grid
from tests.deploy.deploy_package import SITE_PACKAGES, app_files, pip_command

REPO = Path(__file__).resolve().parents[1]
# The interpreter the venv was made from: no venv, and with -S no site-packages of this machine.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
MIB = 1024 * 1024

# Runs in the bare interpreter: argv = package root, "msgraph" or "thin", "alone" or "app".
# Prints one JSON line: each stage's end (perf_counter seconds, modules loaded) and the peak RSS.
PROBE = r"""
import json
import os
import resource
import sys
import time

root = os.path.realpath(sys.argv[1])
site_packages = os.path.join(root, ".python_packages", "lib", "site-packages")
sys.path[:] = [root, site_packages, *[p for p in sys.path if p]]
client_kind, context = sys.argv[2], sys.argv[3]
marks = [("start", time.perf_counter(), len(sys.modules))]


def mark(stage):
    marks.append((stage, time.perf_counter(), len(sys.modules)))


CLIENT_ID = "00000000-0000-0000-0000-000000000001"  # a user-assigned identity; nothing is asked of it
APP_ID = "11111111-1111-1111-1111-111111111111"
OBJECT_ID = "22222222-2222-2222-2222-222222222222"
KEY_ID = "33333333-3333-3333-3333-333333333333"
SCOPE = "https://graph.microsoft.com/.default"
APPLICATION = (
    '{"id": "%s", "appId": "%s", "displayName": "payments", "passwordCredentials": [{"keyId": "%s", '
    '"displayName": "rotation", "endDateTime": "2027-01-01T00:00:00Z", "hint": "abc"}]}'
    % (OBJECT_ID, APP_ID, KEY_ID)
).encode()
PASSWORD = (
    '{"keyId": "%s", "displayName": "rotation", "endDateTime": "2027-01-01T00:00:00Z", '
    '"hint": "abc", "secretText": "abc-not-a-secret"}' % KEY_ID
).encode()

if context == "app":
    import function_app  # noqa: F401

    mark("app")

if client_kind == "msgraph":
    import msgraph  # noqa: F401
    from azure.identity import ManagedIdentityCredential
    from msgraph import GraphServiceClient

    client = GraphServiceClient(credentials=ManagedIdentityCredential(client_id=CLIENT_ID), scopes=[SCOPE])
    mark("client")

    import datetime
    import uuid

    from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
    from msgraph.generated.applications.item.add_password.add_password_post_request_body import (
        AddPasswordPostRequestBody,
    )
    from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (
        RemovePasswordPostRequestBody,
    )
    from msgraph.generated.models.application import Application
    from msgraph.generated.models.password_credential import PasswordCredential

    get = client.applications_with_app_id(app_id=APP_ID).to_get_request_information()
    item = client.applications.by_application_id(OBJECT_ID)
    ends = datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc)
    add = item.add_password.to_post_request_information(
        AddPasswordPostRequestBody(password_credential=PasswordCredential(display_name="rotation", end_date_time=ends))
    )
    remove = item.remove_password.to_post_request_information(
        RemovePasswordPostRequestBody(key_id=uuid.UUID(KEY_ID))
    )
    parser = JsonParseNodeFactory()
    # What the request adapter does with a 200: the model's field deserializers import the model
    # classes they name, and the classes under them.
    application = parser.get_root_parse_node("application/json", APPLICATION).get_object_value(Application)
    password = parser.get_root_parse_node("application/json", PASSWORD).get_object_value(PasswordCredential)
    assert application.app_id == APP_ID and str(password.key_id) == KEY_ID
    assert add.content and b"passwordCredential" in add.content and remove.content and get.url_template
    mark("first_use")
else:
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import (
        BearerTokenCredentialPolicy,
        HeadersPolicy,
        HttpLoggingPolicy,
        RetryPolicy,
        UserAgentPolicy,
    )
    from azure.identity import ManagedIdentityCredential

    client = PipelineClient(
        base_url="https://graph.microsoft.com/v1.0",
        policies=[
            HeadersPolicy(),
            UserAgentPolicy(sdk_moniker="keyvault-rotation-hub"),
            RetryPolicy(),
            BearerTokenCredentialPolicy(ManagedIdentityCredential(client_id=CLIENT_ID), SCOPE),
            HttpLoggingPolicy(),
        ],
    )
    mark("client")

    import json as json_module

    from azure.core.rest import HttpRequest

    get = HttpRequest("GET", client.format_url(f"/applications(appId='{APP_ID}')"))
    add = HttpRequest(
        "POST",
        client.format_url(f"/applications/{OBJECT_ID}/addPassword"),
        json={"passwordCredential": {"displayName": "rotation", "endDateTime": "2027-01-01T00:00:00Z"}},
    )
    remove = HttpRequest("POST", client.format_url(f"/applications/{OBJECT_ID}/removePassword"), json={"keyId": KEY_ID})
    application = json_module.loads(APPLICATION)
    password = json_module.loads(PASSWORD)
    assert application["appId"] == APP_ID and password["keyId"] == KEY_ID
    assert add.content and remove.content and get.url
    mark("first_use")

print(json.dumps({"marks": marks, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

CLIENTS = {"msgraph": "msgraph-sdk", "thin": "thin client (azure-core)"}
CONTEXTS = {"alone": "alone", "app": "after import function_app"}


@dataclass(frozen=True)
class Package:
    label: str
    root: Path
    site_packages: Path
    pip_seconds: float


@dataclass(frozen=True)
class Footprint:
    files: int
    folders: int
    apparent: int  # bytes: the files' lengths (what a zip holds)
    allocated: int  # bytes: the blocks of the files and folders (what du counts)


def install(root: Path, label: str, extra: Sequence[str]) -> Package:
    """The deployment package: pip as Azure's remote build runs it, then the app's files."""
    root.mkdir(parents=True)
    command = [*pip_command(root), *extra]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError(f"pip failed ({result.returncode}) for {label}:\n{' '.join(command)}\n{tail}")
    for relative in app_files():
        destination = root / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, destination)
    return Package(label, root, root / SITE_PACKAGES, seconds)


def footprint(path: Path) -> Footprint:
    files = folders = apparent = allocated = 0
    for folder, subfolders, names in os.walk(path):
        allocated += os.lstat(folder).st_blocks * 512
        folders += len(subfolders)
        for name in names:
            stat = os.lstat(os.path.join(folder, name))
            files += 1
            apparent += stat.st_size
            allocated += stat.st_blocks * 512
    return Footprint(files, folders, apparent, allocated)


def zipped_size(root: Path, destination: Path) -> int:
    """The package zipped with deflate (zlib's default level), as a zip deploy carries it."""
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for folder, _, names in os.walk(root):
            for name in sorted(names):
                path = Path(folder) / name
                archive.write(path, path.relative_to(root).as_posix())
    size = destination.stat().st_size
    destination.unlink()
    return size


def top_level_sizes(site_packages: Path) -> dict[str, int]:
    """Each entry of site-packages (a package, a module, a .dist-info) and its bytes."""
    sizes = {}
    for entry in site_packages.iterdir():
        sizes[entry.name] = footprint(entry).apparent if entry.is_dir() else entry.lstat().st_size
    return sizes


def distribution_version(site_packages: Path, name: str) -> str:
    normalized = re.sub(r"[-_.]+", "_", name).lower()
    for info in site_packages.glob("*.dist-info"):
        project, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        if re.sub(r"[-_.]+", "_", project).lower() == normalized:
            return version
    return "?"


def probe(
    probe_file: Path, root: Path, client: str, context: str, importtime: bool = False
) -> dict[str, Any]:
    command = [BASE_PYTHON, "-I", "-S", "-B"]
    if importtime:
        command += ["-X", "importtime"]
    command += [str(probe_file), str(root), client, context]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "PYTHON"))}
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"probe {client}/{context} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    marks = report["marks"]
    stages: dict[str, tuple[float, int]] = {}
    for (_, previous_time, previous_modules), (stage, at, modules) in itertools.pairwise(marks):
        stages[stage] = (at - previous_time, modules - previous_modules)
    report["stages"] = stages
    report["wall"] = wall
    report["stderr"] = result.stderr
    return report


_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)$")


def importtime_by_package(stderr: str) -> tuple[dict[str, float], int]:
    """Self time (seconds) summed per top-level package (azure.* per subpackage), and the module count."""
    totals: dict[str, float] = defaultdict(float)
    count = 0
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if not match:
            continue
        count += 1
        parts = match[4].split(".")
        key = ".".join(parts[:2]) if parts[0] in ("azure", "opentelemetry") and len(parts) > 1 else parts[0]
        totals[key] += int(match[1]) / 1e6
    return dict(totals), count


def _mib(size: float) -> str:
    return f"{size / MIB:,.1f} MiB"


def _spread(seconds: Sequence[float]) -> str:
    """Median [min–max] in milliseconds; a tenth of one below 10 ms."""
    median, low, high = (value * 1000 for value in (statistics.median(seconds), min(seconds), max(seconds)))
    digits = 1 if median < 10 else 0
    return f"{median:,.{digits}f} ms [{low:,.{digits}f}–{high:,.{digits}f}]"


def report_packages(today: Package, graph: Package, graph_spec: str, work: Path) -> None:
    version = distribution_version(graph.site_packages, "msgraph-sdk")
    sizes = {}
    for package in (today, graph):
        sizes[package.label] = (footprint(package.root), zipped_size(package.root, work / "package.zip"))
    (a, a_zip), (b, b_zip) = sizes[today.label], sizes[graph.label]
    print(
        f"\nDeployment package (built app, .python_packages included); msgraph-sdk {version} from {graph_spec!r}"
    )
    print_grid(
        ["package", "files", "folders", "on disk (du)", "apparent size", "zipped (deflate)", "pip"],
        [
            [today.label, f"{a.files:,}", f"{a.folders:,}", _mib(a.allocated), _mib(a.apparent), _mib(a_zip),
             f"{today.pip_seconds:.0f} s"],
            [graph.label, f"{b.files:,}", f"{b.folders:,}", _mib(b.allocated), _mib(b.apparent), _mib(b_zip),
             f"{graph.pip_seconds:.0f} s"],
            ["difference", f"{b.files - a.files:+,}", f"{b.folders - a.folders:+,}", _mib(b.allocated - a.allocated),
             _mib(b.apparent - a.apparent), _mib(b_zip - a_zip), ""],
            ["ratio", f"{b.files / a.files:.1f}x", f"{b.folders / a.folders:.1f}x", f"{b.allocated / a.allocated:.1f}x",
             f"{b.apparent / a.apparent:.1f}x", f"{b_zip / a_zip:.1f}x", ""],
        ],
        right=(1, 2, 3, 4, 5, 6),
    )  # fmt: skip
    before, after = top_level_sizes(today.site_packages), top_level_sizes(graph.site_packages)
    added = sorted(((size, name) for name, size in after.items() if name not in before), reverse=True)
    changed = sorted(name for name in before if name not in after)
    shown = ", ".join(f"{name} {_mib(size)}" for size, name in added if not name.endswith(".dist-info"))
    print(f"added to site-packages (apparent size): {shown}")
    if changed:
        print(f"replaced or removed by msgraph-sdk's requirements: {', '.join(changed)}")


def report_imports(today: Package, graph: Package, probe_file: Path, runs: int, top: int) -> None:
    roots = {"msgraph": graph.root, "thin": today.root}
    configurations = [(client, context) for context in CONTEXTS for client in CLIENTS]
    # One unrecorded run each: the page cache warms, every timed interpreter still starts cold.
    for client, context in configurations:
        probe(probe_file, roots[client], client, context)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in configurations}
    for _ in range(runs):  # round robin, so that a noisy moment spreads over every configuration
        for client, context in configurations:
            results[client, context].append(probe(probe_file, roots[client], client, context))

    print(
        f"\nCold import, fresh `python -I -S -B` per run (package + stdlib on sys.path), median [min–max] of {runs}"
    )
    rows = []
    for client, context in configurations:
        reports = results[client, context]
        client_s = [r["stages"]["client"][0] for r in reports]
        first_s = [r["stages"]["first_use"][0] for r in reports]
        total_s = [c + f for c, f in zip(client_s, first_s, strict=True)]
        modules = reports[0]["stages"]["client"][1] + reports[0]["stages"]["first_use"][1]
        rss = statistics.median(r["maxrss_kib"] for r in reports) * 1024
        rows.append([CLIENTS[client], CONTEXTS[context], _spread(client_s), _spread(first_s), _spread(total_s),
                     f"{reports[0]['stages']['client'][1]:,} + {reports[0]['stages']['first_use'][1]:,} = {modules:,}",
                     _mib(rss), _spread([r["wall"] for r in reports])])  # fmt: skip
    print_grid(
        ["client", "context", "imports + client", "first use", "total", "modules (client + first use)",
         "peak RSS", "whole process"],
        rows,
        right=(2, 3, 4, 5, 6, 7),
    )  # fmt: skip
    app_s = [r["stages"]["app"][0] for key in configurations if key[1] == "app" for r in results[key]]
    app_modules = results["thin", "app"][0]["stages"]["app"][1]
    print(f"reference: `import function_app` itself (both packages, {len(app_s)} runs): {_spread(app_s)}, "
          f"{app_modules:,} modules")  # fmt: skip
    print("first use: the 3 requests built (bodies serialized) and the GET application and addPassword "
          "responses parsed, no network")  # fmt: skip

    if top > 0:
        print(f"\n-X importtime, one run each (alone, through first use): self time by package, top {top}")
        for client in CLIENTS:
            report = probe(probe_file, roots[client], client, "alone", importtime=True)
            totals, count = importtime_by_package(report["stderr"])
            ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]
            listed = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in ranked)
            print(
                f"  {CLIENTS[client]} ({count:,} modules, {sum(totals.values()) * 1000:,.0f} ms): {listed} (ms)"
            )


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.graph_client", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each configuration (median)")
    parser.add_argument("--top", type=int, default=8, help="packages listed from -X importtime (0: skip)")
    parser.add_argument(
        "--graph", default="msgraph-sdk", help="pip requirement for the SDK (e.g. a pinned version)"
    )
    args = parser.parse_args(argv)
    print(
        f"python {sys.version.split()[0]}; cpus: {os.cpu_count()}; probe interpreter {BASE_PYTHON}",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="graph-bench-") as folder:
        work = Path(folder)
        try:
            _progress("pip: requirements.txt, then requirements.txt + " + args.graph)
            today = install(work / "today" / "wwwroot", "requirements.txt (today)", [])
            graph = install(work / "graph" / "wwwroot", f"+ {args.graph}", [args.graph])
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            print(error, file=sys.stderr)
            return 1
        _progress("sizes and zips")
        report_packages(today, graph, args.graph, work)
        _progress(f"imports: {args.runs} runs of {len(CLIENTS) * len(CONTEXTS)} configurations")
        probe_file = work / "probe.py"
        probe_file.write_text(PROBE, encoding="utf-8")
        report_imports(today, graph, probe_file, args.runs, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
