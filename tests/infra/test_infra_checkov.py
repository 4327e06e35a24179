"""checkov's Bicep checks pass on infra/, and every suppression says why and is still needed.

checkov runs from its own venv (scripts/bootstrap.sh; its pins clash with .venv's). It starts
slowly, so one run covers four folders: a copy of infra/; the same copy with every suppression
removed (so each suppression is shown to hide a real finding); a deliberately insecure and a
broken template, which show that the checks and checkov's own parser fail where they should; and
the files that declare a Bicep extension, without that line (see _EXTENSION).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from bicep_templates import INFRA, REPO, bicep_files, parse

CHECKOV = REPO / ".venv" / "tools" / "checkov" / "bin" / "checkov"
PINS = INFRA / "requirements-checkov.txt"
_SKIP = re.compile(r"//\s*checkov:skip=(CKV2?_[A-Z]+_\d+)(?::(.*))?$")

INSECURE = """\
resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stinsecure'
  location: 'westeurope'
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    supportsHttpsTrafficOnly: false
    minimumTlsVersion: 'TLS1_0'
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-insecure'
  location: 'westeurope'
  kind: 'functionapp,linux'
  properties: {
    httpsOnly: false
    siteConfig: {
      minTlsVersion: '1.0'
      ftpsState: 'AllAllowed'
    }
  }
}
"""
BROKEN = "resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'st'\n"

# checkov 3.3.30 pins pycep-parser 0.5.1, whose grammar predates Bicep's `extension` statement, so
# checkov cannot read a file that declares one: the Microsoft Graph modules. That is accepted
# because those files hold Microsoft.Graph resources only, for which checkov has no checks
# (test_extension_files_hold_only_graph_resources), and because checkov reads everything else in
# them once the `extension` line is removed (the "extensionless" folder).
_EXTENSION = re.compile(r"^extension\s+\w+.*\n", re.MULTILINE)


def _extension_files() -> list[Path]:
    return [p for p in bicep_files() if _EXTENSION.search(p.read_text())]


def _pinned_version() -> str:
    match = re.search(r"^checkov==(\S+)$", PINS.read_text(), re.MULTILINE)
    assert match, f"{PINS} pins no checkov version"
    return match.group(1)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run scripts/bootstrap.sh (make setup)"
    work = tmp_path_factory.mktemp("checkov")
    shutil.copytree(INFRA, work / "infra")
    shutil.copytree(INFRA, work / "unsuppressed")
    for path in (work / "unsuppressed").rglob("*.bicep"):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if not _SKIP.search(line.strip())))
    (work / "negative").mkdir()
    (work / "negative" / "insecure.bicep").write_text(INSECURE)
    (work / "negative" / "broken.bicep").write_text(BROKEN)
    for path in _extension_files():
        copy = work / "extensionless" / path.relative_to(INFRA)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(_EXTENSION.sub("", path.read_text()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_", "CKV_"))}
    env["LOG_LEVEL"] = "WARNING"
    # --soft-fail: the insecure template fails on purpose; --skip-download: no network here.
    command = [str(CHECKOV), "--directory", str(work), "--framework", "bicep"]
    command += ["--output", "json", "--soft-fail", "--skip-download"]
    run = subprocess.run(
        command,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads(run.stdout)
    assert result["check_type"] == "bicep"
    return result


def _in(results: list[dict[str, Any]], folder: str) -> list[dict[str, Any]]:
    return [r for r in results if r["file_path"].startswith(f"/{folder}/")]


def test_checkov_is_the_pinned_version(report: dict[str, Any]) -> None:
    # make setup reruns the bootstrap only when requirements*.txt or the script change.
    installed = report["summary"]["checkov_version"]
    assert installed == _pinned_version(), "run scripts/bootstrap.sh to install the pinned checkov"


def test_checkov_parses_every_template_but_those_with_an_extension(report: dict[str, Any]) -> None:
    # <tmp>/checkovN/<folder>/<path>: keep <folder>/<path>.
    errors = {re.sub(r"^.*/checkov\d+/", "", e) for e in report["results"]["parsing_errors"]}
    extension_files = {str(p.relative_to(INFRA)) for p in _extension_files()}
    assert extension_files, "expected the Microsoft Graph modules"
    expected = {"negative/broken.bicep"}
    expected |= {f"{folder}/{name}" for folder in ("infra", "unsuppressed") for name in extension_files}
    assert errors == expected


def test_extension_files_hold_only_graph_resources() -> None:
    for path in _extension_files():
        tpl = parse(path)
        assert set(tpl["extensions"]) == {"microsoftGraphV1"}, path.name
        types = {res["type"] for res in tpl.get("resources", {}).values()}
        assert types, path.name
        assert all(t.startswith("Microsoft.Graph/") for t in types), f"{path.name}: {sorted(types)}"
        # Modules they call are extension files too, so no Azure resource escapes checkov.
        for module in tpl.get("modules", {}).values():
            assert (path.parent / module["detail"]["path"]).resolve() in _extension_files()


def test_checkov_reads_the_extension_files_without_the_extension_line(report: dict[str, Any]) -> None:
    results = report["results"]
    assert not [e for e in results["parsing_errors"] if "/extensionless/" in e]
    assert not _in(results["failed_checks"], "extensionless")
    # checkov has no check for Microsoft.Graph types: nothing to pass, nothing to skip.
    assert not _in(results["passed_checks"], "extensionless")


def test_no_check_fails_on_infra(report: dict[str, Any]) -> None:
    failed = _in(report["results"]["failed_checks"], "infra")
    assert not failed, [(f["check_id"], f["resource"], f["file_path"], f["check_name"]) for f in failed]
    # The checks really ran on the hub's resources.
    passed = _in(report["results"]["passed_checks"], "infra")
    assert {"CKV_AZURE_3", "CKV_AZURE_44", "CKV_AZURE_70", "CKV_AZURE_78", "CKV_AZURE_145"} <= {
        p["check_id"] for p in passed
    }


def test_checks_fail_on_an_insecure_template(report: dict[str, Any]) -> None:
    failed = {f["check_id"] for f in _in(report["results"]["failed_checks"], "negative")}
    # HTTPS-only and TLS on storage; HTTPS-only, TLS and FTP on the app.
    assert {"CKV_AZURE_3", "CKV_AZURE_44", "CKV_AZURE_70", "CKV_AZURE_145", "CKV_AZURE_78"} <= failed


def _suppressions() -> list[tuple[str, str, str]]:
    found = []
    for path in bicep_files():
        for line in path.read_text().splitlines():
            match = _SKIP.search(line.strip())
            if match:
                found.append((path.name, match.group(1), (match.group(2) or "").strip()))
    return found


def test_every_suppression_says_why() -> None:
    for file_name, check, reason in _suppressions():
        assert len(reason) >= 30, f"{file_name}: {check} needs a reason after the colon"


def test_every_suppression_hides_a_real_finding_and_only_that(report: dict[str, Any]) -> None:
    in_files = {(file_name, check) for file_name, check, _ in _suppressions()}
    assert in_files, "expected the documented suppressions"
    skipped = {
        (Path(s["file_path"]).name, s["check_id"]) for s in _in(report["results"]["skipped_checks"], "infra")
    }
    assert in_files == skipped
    # Without the comments, exactly the suppressed checks fail.
    findings = {
        (Path(f["file_path"]).name, f["check_id"])
        for f in _in(report["results"]["failed_checks"], "unsuppressed")
    }
    assert findings == in_files, (
        f"not needed: {sorted(in_files - findings)}; unexpected: {sorted(findings - in_files)}"
    )
