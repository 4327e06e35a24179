"""App Service Key Vault references: which settings the hub refreshes (rotation/consumers.py) and
how the local cloud resolves and caches them (local/cloud/kv_references.py)."""

from __future__ import annotations

import pytest

from local.cloud.kv_references import REFERENCE_CACHE_SECONDS, Reference, ReferenceCache, parse_reference
from rotation.consumers import reference_to
from rotation.model import SecretRef

SECRET = SecretRef("11111111-2222-3333-4444-555555555555", "spoke1-kv", "app-db-password")
VERSION = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "@Microsoft.KeyVault(SecretUri=https://spoke1-kv.vault.azure.net/secrets/app-db-password/)",
            "latest",
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://SPOKE1-KV.vault.azure.net/secrets/App-Db-Password)",
            "latest",
        ),
        (
            f"@Microsoft.KeyVault(SecretUri=https://spoke1-kv.vault.azure.net/secrets/app-db-password/{VERSION})",
            "pinned",
        ),
        ("@Microsoft.KeyVault(VaultName=spoke1-kv;SecretName=app-db-password)", "latest"),
        (
            f"@Microsoft.KeyVault(VaultName=spoke1-kv;SecretName=app-db-password;SecretVersion={VERSION})",
            "pinned",
        ),
        ("@Microsoft.KeyVault(VaultName=spoke2-kv;SecretName=app-db-password)", None),
        ("@Microsoft.KeyVault(SecretUri=https://spoke1-kv.vault.azure.net/secrets/other/)", None),
        ("https://spoke1-kv.vault.azure.net/secrets/app-db-password/", None),
        ("plain value", None),
    ],
)
def test_the_hub_knows_which_settings_reference_the_rotated_secret(value: str, expected: str | None) -> None:
    assert reference_to(value, SECRET) == expected


def test_the_local_cloud_reads_both_forms_and_ignores_others() -> None:
    assert parse_reference(
        "@Microsoft.KeyVault(SecretUri=https://spoke1-kv.vault.azure.net/secrets/db/)"
    ) == Reference("spoke1-kv", "db")
    assert parse_reference(
        f"@Microsoft.KeyVault(VaultName=Spoke1-KV;SecretName=db;SecretVersion={VERSION})"
    ) == (Reference("spoke1-kv", "db", VERSION))
    assert parse_reference("@Microsoft.KeyVault(Nonsense)") is None
    assert parse_reference("value") is None


def test_resolved_values_are_cached_for_a_day_and_unresolved_ones_pass_as_the_reference_text() -> None:
    reads: list[Reference] = []
    values = {"db": "first"}

    def read(reference: Reference, identities: tuple[str, ...]) -> str | None:
        reads.append(reference)
        assert identities == ("app-identity",)
        return values.get(reference.secret)

    ref = "@Microsoft.KeyVault(VaultName=spoke1-kv;SecretName=db)"
    missing = "@Microsoft.KeyVault(VaultName=spoke1-kv;SecretName=gone)"
    settings = {"PASSWORD": ref, "OTHER": missing, "PLAIN": "x"}
    cache = ReferenceCache()
    assert cache.resolve(settings, ("app-identity",), read, now=0.0) == {
        "PASSWORD": "first",
        "OTHER": missing,
        "PLAIN": "x",
    }
    values["db"] = "second"
    # A restart within the day: the cached value, not the new one.
    assert (
        cache.resolve(settings, ("app-identity",), read, now=REFERENCE_CACHE_SECONDS - 1)["PASSWORD"]
        == "first"
    )
    # After a day, or once the configuration changed (the cache is cleared): fetched again.
    assert (
        cache.resolve(settings, ("app-identity",), read, now=REFERENCE_CACHE_SECONDS)["PASSWORD"] == "second"
    )
    values["db"] = "third"
    cache.clear()
    assert (
        cache.resolve(settings, ("app-identity",), read, now=REFERENCE_CACHE_SECONDS + 1)["PASSWORD"]
        == "third"
    )
