"""The async SecretClient and credentials (azure-core's aiohttp transport) in a client process,
managed identity and an application's client secret (Entra's token endpoint) alike.

They go through HTTPS_PROXY and verify the local CA through SSL_CERT_FILE, with no option set in
code; without SSL_CERT_FILE the same process must refuse the certificate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from local.cloud.process import REPO_ROOT, LocalCloud
from tests.cloud.support import APPS, CLIENT_IDS, TENANT, VAULT1

PROBE = Path(__file__).with_name("async_probe.py")


def _run_probe(env: dict[str, str], *application: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(PROBE), VAULT1, CLIENT_IDS["reader"], *application],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _base_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "HTTPS_PROXY")
    }


def test_async_clients_use_the_proxy_and_the_ca_bundle(cloud: LocalCloud) -> None:
    secret = cloud.admin.initial_secret("owned-app")["secret_text"]
    report = _run_probe({**_base_env(), **cloud.client_env}, TENANT, APPS["owned-app"][0], secret)
    assert "error" not in report, report
    assert report["value"] == "from-aiohttp"
    assert report["versions"] == 2
    assert report["listed"] is True
    assert report["content_type"] == "text/plain"
    assert report["recovery_id"] == f"{VAULT1}/deletedsecrets/async-secret"
    assert report["after_delete"] == "SecretNotFound"
    assert report["recovered"] == "async-secret"
    assert report["reader_set"] == [403, "Forbidden", True]
    assert report["app_listed"] is True  # the async ClientSecretCredential and the app's vault role
    assert report["app_wrong_secret"] is True


def test_async_client_without_the_ca_bundle_refuses_the_certificate(cloud: LocalCloud) -> None:
    env = {**_base_env(), **cloud.client_env}
    env.pop("SSL_CERT_FILE")
    report = _run_probe(env)
    assert report.get("error") == "ServiceRequestError"
    assert "certificate verify failed" in report["message"].lower()
