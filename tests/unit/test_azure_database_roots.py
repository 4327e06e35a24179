"""ROTATION_POSTGRESQL_SSL_CA=azure: the two roots Azure Database for PostgreSQL chains to, picked
out of certifi's bundle into a file of their own (what libpq then reads on every login)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rotation.errors import TargetError
from rotation.settings import Settings
from rotation.targets.azure_database_roots import AZURE_POSTGRESQL_ROOTS, azure_roots, azure_roots_file
from rotation.targets.postgresql import _tls_parameters

SUBJECTS = [
    "CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US",
    "CN=Microsoft RSA Root Certificate Authority 2017,O=Microsoft Corporation,C=US",
]


def test_the_file_holds_exactly_the_two_self_signed_roots_from_certifi() -> None:
    path = Path(azure_roots_file())
    roots = x509.load_pem_x509_certificates(path.read_bytes())
    assert [root.subject.rfc4514_string() for root in roots] == SUBJECTS
    assert all(root.subject == root.issuer for root in roots)
    assert all(root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca for root in roots)
    # The very certificates certifi ships (not copies kept in this project).
    bundle = certifi.contents().encode()
    assert all(root.public_bytes(serialization.Encoding.PEM).strip() in bundle for root in roots)
    assert path.stat().st_size < len(bundle) / 20


def test_the_file_is_written_once_per_process() -> None:
    assert azure_roots_file() == azure_roots_file()


@pytest.mark.parametrize("value", ["azure", " Azure "])
def test_libpq_is_given_the_file_for_the_setting_azure(value: str) -> None:
    tls = _tls_parameters(Settings.from_environ({"ROTATION_POSTGRESQL_SSL_CA": value}))
    assert tls == {"sslmode": "verify-full", "sslrootcert": azure_roots_file()}
    # Empty: certifi's whole bundle, as before.
    assert _tls_parameters(Settings.from_environ({}))["sslrootcert"] == certifi.where()


def test_a_bundle_without_one_of_the_roots_is_refused_naming_it(tmp_path: Path) -> None:
    only_one = tmp_path / "one-root.pem"
    only_one.write_bytes(azure_roots()[0].public_bytes(serialization.Encoding.PEM))
    with pytest.raises(TargetError, match=AZURE_POSTGRESQL_ROOTS[1]) as refused:
        azure_roots(only_one)
    assert "ROTATION_POSTGRESQL_SSL_CA=azure" in str(refused.value)


def test_a_temporary_directory_that_cannot_be_written_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    azure_roots_file.cache_clear()
    try:
        with pytest.raises(TargetError, match="could not be written to a temporary file"):
            azure_roots_file()
    finally:
        azure_roots_file.cache_clear()
