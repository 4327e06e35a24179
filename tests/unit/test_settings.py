"""Settings: defaults, and a clear error naming any malformed setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rotation.settings import SETTINGS, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_usable() -> None:
    settings = Settings.from_environ({})
    assert settings.keyvault_dns_suffix == "vault.azure.net"
    assert settings.approval_timeout_hours == 72
    assert settings.allowed_subscriptions == frozenset()
    assert settings.postgresql_sslmode == "require"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROTATION_ALLOWED_SUBSCRIPTIONS", "not-a-guid"),
        ("ROTATION_SWEEP_VAULTS", "/subscriptions/x/vaults/y"),
        ("ROTATION_KEYVAULT_DNS_SUFFIX", "bad suffix"),
        ("ROTATION_ARM_ENDPOINT", "http://management.azure.com"),
        ("ROTATION_APPROVAL_TIMEOUT_HOURS", "forever"),
        ("ROTATION_RETRY_MAX_ATTEMPTS", "0"),
        ("ROTATION_RETRY_FIRST_INTERVAL_SECONDS", "-1"),
    ],
)
def test_a_malformed_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_environ({name: value})


def test_the_example_settings_file_names_every_setting() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    named = set(example["Values"]) - {
        "AzureWebJobsStorage",
        "FUNCTIONS_WORKER_RUNTIME",
        "AzureWebJobsFeatureFlags",
    }
    assert named == {s.name for s in SETTINGS}
    for spec in SETTINGS:
        assert example["Values"][spec.name] == spec.default, spec.name
        assert example["Descriptions"][spec.name].startswith(spec.meaning), spec.name
