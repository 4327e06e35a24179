"""Runs inside the deployment package, in a bare interpreter (`python -I -S`), as Azure's worker would:
each wheel-only database target rotates a real login with nothing but the package.

Usage: python -I -S login_probe.py PACKAGE_ROOT JOB_JSON REPORT_JSON

The job lists targets: kind, provider, credential, the current password and a new one. For each,
the probe builds the target from the package's own code and runs apply, verify and revert, the
moves a rotation makes against the database. The report says, per kind, what each move returned
or the error it raised (the domain's errors carry no value).
"""

import json
import os
import sys
import traceback

root = os.path.realpath(sys.argv[1])
job_path, report_path = sys.argv[2], sys.argv[3]
sys.path[:] = [
    root,
    os.path.join(root, ".python_packages", "lib", "site-packages"),
    *[p for p in sys.path if p],
]

from rotation.settings import Settings  # noqa: E402  (sys.path is set up first)
from rotation.targets import target_type  # noqa: E402
from rotation.targets.base import AdminSpec, Credentials, SecretValue, TargetSpec  # noqa: E402

with open(job_path, encoding="utf-8") as file:
    job = json.load(file)

report = {}
for item in job["targets"]:
    outcome = {}
    try:
        settings = Settings.from_environ(item["settings"])
        spec = TargetSpec(item["kind"], item["provider"], item["credential"], AdminSpec("self"))
        target = target_type(item["kind"]).build(spec, settings)
        current, new = SecretValue(item["current"]), SecretValue(item["new"])
        outcome["apply"] = target.apply(new=new, using=Credentials(current=current))
        target.verify(value=new)
        outcome["verify"] = "ok"
        outcome["revert"] = target.revert(previous=current, new=new, using=Credentials(current=current))
        outcome["modules"] = sorted(name for name in ("psycopg", "pymysql", "pyodbc") if name in sys.modules)
    except BaseException:
        outcome["error"] = traceback.format_exc()
    report[item["kind"]] = outcome

with open(report_path, "w", encoding="utf-8") as file:
    json.dump(report, file, indent=1)
