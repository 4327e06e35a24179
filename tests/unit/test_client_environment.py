"""The Key Vault clients take what `requests` would read from the environment on every request
(the proxy, NO_PROXY, the CA bundle) once, when the client is built."""

from __future__ import annotations

import pytest

from rotation.clients import _environment_read_once

VAULT_URL = "https://spoke1-kv.vault.azure.net"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_without_a_proxy_or_bundle_the_client_goes_direct_and_verifies_with_the_default_roots() -> None:
    assert _environment_read_once(VAULT_URL) == {
        "use_env_settings": False,
        "proxies": None,
        "connection_verify": True,
    }


def test_the_proxy_and_the_bundle_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/local-ca.pem")

    taken = _environment_read_once(VAULT_URL)

    assert taken["proxies"]["https"] == "http://127.0.0.1:3128"
    assert taken["connection_verify"] == "/etc/ssl/local-ca.pem"
    assert taken["use_env_settings"] is False  # not read again per request


def test_no_proxy_is_honoured_for_the_vault_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", ".vault.azure.net")
    assert _environment_read_once(VAULT_URL)["proxies"] is None
    assert _environment_read_once("https://management.azure.com")["proxies"] is not None
