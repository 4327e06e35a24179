"""Runs inside the deployment package, in a bare interpreter (`python -I -S`), as Azure's worker would.

Usage: python -I -S import_probe.py PACKAGE_ROOT REPORT_JSON

Only the standard library (the interpreter's own sys.path under -S) and the package's two
directories are importable. Each import is tried on its own so that one failure hides nothing
else; the report (JSON) says what imported, from where, and what failed.
"""

import json
import os
import sys
import traceback
from importlib import metadata

root = os.path.realpath(sys.argv[1])
report_path = sys.argv[2]
site_packages = os.path.join(root, ".python_packages", "lib", "site-packages")
stdlib_path = [p for p in sys.path if p]
sys.path[:] = [root, site_packages, *stdlib_path]

report = {
    "executable": sys.executable,
    "version": sys.version,
    "sys_path": list(sys.path),
    "stdlib_path": stdlib_path,
    "errors": {},
    "facts": {},
}


def attempt(name, probe):
    try:
        report["facts"][name] = probe()
    except BaseException:
        report["errors"][name] = traceback.format_exc()


def function_app():
    import function_app

    return {"functions": sorted(f.get_function_name() for f in function_app.app.get_functions())}


def psycopg():
    import psycopg

    return {
        "impl": psycopg.pq.__impl__,
        "libpq_version": psycopg.pq.version(),
        "version": psycopg.__version__,
    }


def postgresql_roots():
    # verify-full's default roots (ROTATION_POSTGRESQL_SSL_CA empty): certifi's bundle, which must
    # ship in the package and hold the roots Azure Database for PostgreSQL chains to.
    from rotation.settings import Settings
    from rotation.targets.postgresql import _tls_parameters

    tls = _tls_parameters(Settings.from_environ({}))
    with open(tls["sslrootcert"], encoding="utf-8") as bundle:
        text = bundle.read()
    return {
        "sslmode": tls["sslmode"],
        "bundle": os.path.realpath(tls["sslrootcert"]),
        "roots": [name for name in AZURE_POSTGRESQL_ROOTS if name in text],
    }


AZURE_POSTGRESQL_ROOTS = ("DigiCert Global Root G2", "Microsoft RSA Root Certificate Authority 2017")


def postgresql_azure_roots():
    # ROTATION_POSTGRESQL_SSL_CA=azure: the two roots, picked out of the packaged certifi bundle by
    # the packaged cryptography, written to a file of their own.
    import cryptography
    from cryptography import x509

    from rotation.settings import Settings
    from rotation.targets.postgresql import _tls_parameters

    tls = _tls_parameters(Settings.from_environ({"ROTATION_POSTGRESQL_SSL_CA": "azure"}))
    with open(tls["sslrootcert"], "rb") as roots:
        certificates = x509.load_pem_x509_certificates(roots.read())
    return {
        "sslmode": tls["sslmode"],
        "cryptography": os.path.realpath(cryptography.__file__),
        "subjects": [c.subject.rfc4514_string() for c in certificates],
    }


def pymysql():
    import pymysql

    return {"version": metadata.version("PyMySQL"), "apilevel": pymysql.apilevel}


def pyodbc():
    import pyodbc

    return {"drivers": pyodbc.drivers(), "version": metadata.version("pyodbc")}


def targets():
    # Target modules are imported when a rotation first needs one: import them all here (the
    # storage target brings azure-mgmt-storage and azure-storage-blob).
    from rotation.targets import _registry

    return {"kinds": sorted(_registry())}


def windows():
    # rotation-window reads its zones from the tzdata wheel, never from the image's zone files.
    from datetime import UTC, datetime

    import tzdata

    from rotation.windows import next_opening, parse_window, zone_named

    window = parse_window("Mon-Fri 09:00-17:00 Europe/Berlin")
    opens = next_opening(window, datetime(2026, 3, 27, 17, tzinfo=UTC))
    return {
        "tzdata": os.path.realpath(tzdata.__file__),
        "iana_version": tzdata.IANA_VERSION,
        "zone": zone_named("Europe/Berlin").key,
        "opens": opens.isoformat(),
    }


attempt("function_app", function_app)
attempt("windows", windows)
attempt("targets", targets)
attempt("psycopg", psycopg)
attempt("postgresql_roots", postgresql_roots)
attempt("postgresql_azure_roots", postgresql_azure_roots)
attempt("pymysql", pymysql)
attempt("pyodbc", pyodbc)

modules = {}
for name, module in sorted(sys.modules.items()):
    if name == "__main__":
        continue  # this probe itself
    # A namespace package (azure, azure.mgmt) has no __file__: where it lives is its __path__.
    locations = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
    modules[name] = sorted({os.path.realpath(p) for p in locations if isinstance(p, str)})
report["modules"] = modules

with open(report_path, "w", encoding="utf-8") as file:
    json.dump(report, file, indent=1)
