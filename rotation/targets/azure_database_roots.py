"""The roots Azure Database for PostgreSQL's server certificates chain to, as one small PEM file
for libpq: ``ROTATION_POSTGRESQL_SSL_CA=azure``.

libpq reads its ``sslrootcert`` file again on every connection, so the file's size is paid per
login: certifi's whole bundle (over a hundred roots, the default) costs the hub about 4 ms of CPU
per login more than a file of two (``benchmarks/database_logins.py``), and a rotation logs in
twice or three times. It also trusts only the two roots Microsoft names for its servers instead of
every public CA. The certificates are certifi's own (Mozilla's trust store, pinned in
requirements.txt), chosen by subject, never copied into this project.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import tempfile
import warnings
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from rotation.errors import TargetError

# Microsoft's list for Azure Database for PostgreSQL (its TLS article); the older DigiCert
# Global Root CA it also names for China's regions is no longer in Mozilla's store.
AZURE_POSTGRESQL_ROOTS = ("DigiCert Global Root G2", "Microsoft RSA Root Certificate Authority 2017")
AZURE = "azure"


def _common_name(certificate: x509.Certificate) -> str | None:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def azure_roots(bundle: Path | None = None) -> list[x509.Certificate]:
    """The self-signed roots of ``AZURE_POSTGRESQL_ROOTS`` from ``bundle`` (certifi's by default).

    Raises:
        TargetError: the bundle lacks one of them (a certifi release that dropped it).
    """
    data = (bundle or Path(certifi.where())).read_bytes()
    with warnings.catch_warnings():
        # One old root in Mozilla's store has a negative serial number; it is not one of these.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        certificates = x509.load_pem_x509_certificates(data)
    found = {
        name: certificate
        for certificate in certificates
        if (name := _common_name(certificate)) in AZURE_POSTGRESQL_ROOTS
        and certificate.subject == certificate.issuer
    }
    missing = [name for name in AZURE_POSTGRESQL_ROOTS if name not in found]
    if missing:
        raise TargetError(
            f"ROTATION_POSTGRESQL_SSL_CA=azure: certifi's bundle has no root named {', '.join(map(repr, missing))}; "
            "name a CA file (PEM) with your servers' roots instead"
        )
    return [found[name] for name in AZURE_POSTGRESQL_ROOTS]


@functools.cache
def azure_roots_file() -> str:
    """A PEM file holding ``azure_roots()``, written once per process and removed at its exit."""
    pem = b"".join(root.public_bytes(serialization.Encoding.PEM) for root in azure_roots())
    try:
        descriptor, path = tempfile.mkstemp(prefix="kvrotate-azure-postgresql-roots-", suffix=".pem")
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
    except OSError as exc:
        raise TargetError(
            f"ROTATION_POSTGRESQL_SSL_CA=azure: the roots could not be written to a temporary file ({exc}); "
            "name a CA file (PEM) instead"
        ) from None
    atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
