"""The local certificate authority and the server certificate for the Azure host names.

The CA is made once and kept in the data dir, so a client's CA bundle stays valid across
restarts; the server certificate is re-issued at every start (it is cheap) and names
``*.vault.azure.net``, ``management.azure.com``, ``graph.microsoft.com``,
``login.microsoftonline.com``, ``*.blob.core.windows.net``, ``*.azurewebsites.net`` (the sites'
default host names, as App Service's own wildcard certificate) and ``*.<region>-1.eventgrid.azure.net``
for the regions of the topology's Event Grid topics, the hosts the proxy tunnels to us (the blob
hosts to Azurite, which serves TLS with the same certificate and key).
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from local.certificates import (
    CertificateAuthority,
    certificates_pem,
    private_key_pem,
    write_private,
    write_public,
)

SERVER_NAMES = (
    "*.vault.azure.net",
    "management.azure.com",
    "graph.microsoft.com",
    "login.microsoftonline.com",
    "*.blob.core.windows.net",
    "*.azurewebsites.net",
)
CA_NAME = "Key Vault Rotation Hub local cloud CA"
CA_DAYS = 3650
SERVER_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path  # also the CA bundle clients get as REQUESTS_CA_BUNDLE / SSL_CERT_FILE
    server_cert: Path  # leaf first, then the CA, so clients can build the chain
    server_key: Path


def _load_or_make_ca(directory: Path) -> CertificateAuthority:
    cert_path, key_path = directory / "ca-cert.pem", directory / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > dt.datetime.now(dt.UTC):
            return CertificateAuthority(cert, key)
    ca = CertificateAuthority.create(CA_NAME, days=CA_DAYS)
    write_private(key_path, private_key_pem(ca.key))
    write_public(cert_path, certificates_pem(ca.certificate))
    return ca


def ensure_tls_files(data_dir: Path, extra_names: tuple[str, ...] = ()) -> TlsFiles:
    """Create the CA on first use and issue a fresh server certificate signed by it, naming
    ``SERVER_NAMES`` and ``extra_names`` (a wildcard covers one label only, so each Event Grid
    region needs its own ``*.<region>-1.eventgrid.azure.net``)."""
    directory = data_dir / "tls"
    directory.mkdir(parents=True, exist_ok=True)
    ca = _load_or_make_ca(directory)
    leaf, key = ca.issue_server_certificate((*SERVER_NAMES, *extra_names), days=SERVER_DAYS)
    files = TlsFiles(
        ca_cert=directory / "ca-cert.pem",
        server_cert=directory / "server-cert.pem",
        server_key=directory / "server-key.pem",
    )
    write_public(files.server_cert, certificates_pem(leaf, ca.certificate))
    write_private(files.server_key, private_key_pem(key))
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.server_cert, files.server_key)
    return context
