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
    assert settings.postgresql_sslmode == "verify-full"


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
        ("ROTATION_OUTAGE_RETRY_HOURS", "-1"),
        ("ROTATION_OUTAGE_RETRY_HOURS", "169"),
        ("ROTATION_OUTAGE_RETRY_HOURS", "nan"),
        ("ROTATION_OUTAGE_RETRY_HOURS", "a day"),
        ("ROTATION_KEYVAULT_CACHE_SECONDS", "-1"),
        ("ROTATION_KEYVAULT_CACHE_SECONDS", "3601"),
        ("ROTATION_KEYVAULT_CACHE_SECONDS", "ten minutes"),
        ("ROTATION_PUBLIC_BASE_URL", "http://func-hub.azurewebsites.net"),
        ("ROTATION_NOTIFY_TOPIC_ENDPOINT", "http://hub-events.westeurope-1.eventgrid.azure.net/api/events"),
        ("ROTATION_NOTIFY_WEBHOOK_SECRET", "hub-kv"),
        ("ROTATION_NOTIFY_WEBHOOK_SECRET", "hub-kv/teams webhook"),
        ("ROTATION_NOTIFY_WEBHOOK_SECRET", "https://hooks.slack.com/services/T/B/x"),
        ("ROTATION_NOTIFY_WEBHOOK_FORMAT", "discord"),
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


def test_notifications_are_off_by_default_and_read_when_set() -> None:
    default = Settings.from_environ({})
    assert (default.notify_topic_endpoint, default.notify_webhook_secret, default.public_base_url) == (
        "",
        None,
        "",
    )
    assert default.notify_webhook_format == "teams"
    configured = Settings.from_environ(
        {
            "ROTATION_PUBLIC_BASE_URL": "https://func-hub.azurewebsites.net/",
            "ROTATION_NOTIFY_TOPIC_ENDPOINT": "https://hub-events.westeurope-1.eventgrid.azure.net/api/events",
            "ROTATION_NOTIFY_WEBHOOK_SECRET": "Hub-KV/teams-webhook",
            "ROTATION_NOTIFY_WEBHOOK_FORMAT": "Slack",
        }
    )
    assert configured.public_base_url == "https://func-hub.azurewebsites.net"
    assert (
        configured.notify_topic_endpoint == "https://hub-events.westeurope-1.eventgrid.azure.net/api/events"
    )
    assert configured.notify_webhook_secret == ("hub-kv", "teams-webhook")
    assert configured.notify_webhook_format == "slack"
    # A hub on this machine (the local stack) links to itself over plain http.
    assert Settings.from_environ({"ROTATION_PUBLIC_BASE_URL": "http://127.0.0.1:7071"}).public_base_url == (
        "http://127.0.0.1:7071"
    )
