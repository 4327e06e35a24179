"""The local cloud as a process: restart keeps state, the env file, the proxy's refusals, the logs."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from local.cloud.process import REPO_ROOT, LocalCloud
from local.cloud.topology import TopologyError, load
from tests.cloud.support import TOPOLOGY, credential, secret_client
from tests.cloud.webhook import Webhook, wait_for


@pytest.fixture
def hook() -> Iterator[Webhook]:
    started = Webhook().start()
    yield started
    started.stop()


@pytest.fixture
def fresh_cloud(tmp_path: Path, hook: Webhook, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCloud]:
    env = {
        "WEBHOOK_URL": hook.url,
        "PYTHON": sys.executable,
        "PROBE_MARKER": "m",
        "PROBE_UNHEALTHY_FILE": str(tmp_path / "unhealthy"),
    }
    cloud = LocalCloud(data_dir=tmp_path / "data", topology=TOPOLOGY, env=env).start()
    for name, value in cloud.client_env.items():
        monkeypatch.setenv(name, value)
    try:
        yield cloud
    finally:
        cloud.stop()


@pytest.mark.slow
def test_a_restart_keeps_vaults_ca_tokens_and_sent_expiry_flags(fresh_cloud: LocalCloud) -> None:
    officer = credential("officer")
    client = secret_client()
    client.set_secret("kept", "v1")
    v2 = client.set_secret("kept", "v2", tags={"t": "1"}).properties.version
    client.set_secret("gone", "x")
    client.begin_delete_secret("gone").wait(timeout=10)
    client.set_secret("expiring", "x", expires_on=_in(600))
    assert [e["subject"] for e in fresh_cloud.admin.scan_now()] == ["expiring"]
    ca_before = (fresh_cloud.data_dir / "tls" / "ca-cert.pem").read_bytes()
    token_before = officer.get_token("https://vault.azure.net/.default").token
    env_before = dict(fresh_cloud.client_env)

    fresh_cloud.restart()

    assert fresh_cloud.client_env == env_before  # same ports and header: clients keep working
    assert (fresh_cloud.data_dir / "tls" / "ca-cert.pem").read_bytes() == ca_before
    assert officer.get_token("https://vault.azure.net/.default").token == token_before  # cached, still valid
    same_client = secret_client()
    assert same_client.get_secret("kept").value == "v2"
    assert same_client.get_secret("kept").properties.version == v2
    assert same_client.get_secret("kept").properties.tags == {"t": "1"}
    assert len(list(same_client.list_properties_of_secret_versions("kept"))) == 2
    assert same_client.get_deleted_secret("gone").name == "gone"
    assert fresh_cloud.admin.scan_now() == []  # NearExpiry is not sent twice for the same version


@pytest.mark.slow
def test_a_killed_cloud_takes_its_sites_along_and_restarts_with_its_state(fresh_cloud: LocalCloud) -> None:
    secret_client().set_secret("survives-kill", "yes")
    site_pid = fresh_cloud.admin.sites()["probe-app"]["pid"]
    assert site_pid
    fresh_cloud.kill()
    wait_for(lambda: not _alive(site_pid), timeout=10)
    fresh_cloud.restart()  # same data dir and ports
    assert secret_client().get_secret("survives-kill").value == "yes"


def test_env_file_is_sourceable_and_complete(fresh_cloud: LocalCloud) -> None:
    script = f". {fresh_cloud.data_dir / 'env'} && env"
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env={}).stdout
    exported = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    for name in (
        "HTTPS_PROXY",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "AZURE_CLIENT_ID",
    ):
        assert exported[name] == fresh_cloud.client_env[name]
    assert exported["NO_PROXY"] == "localhost,127.0.0.1"
    assert exported["REQUESTS_CA_BUNDLE"] == exported["SSL_CERT_FILE"]


def test_server_certificate_names_the_azure_hosts_and_chains_to_the_ca(fresh_cloud: LocalCloud) -> None:
    context = ssl.create_default_context(cafile=fresh_cloud.client_env["SSL_CERT_FILE"])
    for host in (
        "test1-kv.vault.azure.net",
        "management.azure.com",
        "graph.microsoft.com",
        "login.microsoftonline.com",
        "teststore01.blob.core.windows.net",  # Azurite, with the same certificate
        "test-events.westeurope-1.eventgrid.azure.net",
        "probe-app.azurewebsites.net",  # the sites' front end
    ):
        with _tunnel(fresh_cloud, host) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            names = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
            assert set(names.value.get_values_for_type(x509.DNSName)) == {
                "*.vault.azure.net",
                "management.azure.com",
                "graph.microsoft.com",
                "login.microsoftonline.com",
                "*.blob.core.windows.net",
                "*.azurewebsites.net",
                # one wildcard per region of the topology's Event Grid topics
                "*.westeurope-1.eventgrid.azure.net",
                "*.northeurope-1.eventgrid.azure.net",
            }


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        ("CONNECT example.com:443", b"403"),
        ("CONNECT login.microsoft.com:443", b"403"),
        ("CONNECT graph.windows.net:443", b"403"),
        ("CONNECT login.microsoftonline.com:80", b"403"),
        ("CONNECT test1-kv.vault.azure.net:80", b"403"),
        ("CONNECT unknown-vault.vault.azure.net:443", b"502"),
        ("CONNECT nosuchstore01.blob.core.windows.net:443", b"502"),
        ("CONNECT nosuchtopic.westeurope-1.eventgrid.azure.net:443", b"502"),
        ("CONNECT test-events.westeurope-1.eventgrid.azure.net:80", b"403"),
        ("CONNECT teststore01.queue.core.windows.net:443", b"403"),
        ("CONNECT teststore01.blob.core.windows.net:80", b"403"),
        ("GET http://example.com/", b"403"),
    ],
)
def test_proxy_refuses_everything_else(fresh_cloud: LocalCloud, request_line: str, status: bytes) -> None:
    with socket.create_connection(("127.0.0.1", fresh_cloud.info["ports"]["proxy"]), timeout=5) as sock:
        sock.sendall(f"{request_line} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(200).split(b" ")[1] == status


def test_logs_name_requests_but_never_values_or_tokens(fresh_cloud: LocalCloud) -> None:
    client = secret_client()
    client.set_secret("logged-name", "s3cr3t-value-never-logged")
    client.get_secret("logged-name")
    token = credential("officer").get_token("https://vault.azure.net/.default").token
    log = fresh_cloud.log_file.read_text()
    assert "PUT test1-kv.vault.azure.net /secrets/logged-name 200 identity=officer" in log
    assert "GET test1-kv.vault.azure.net /secrets/logged-name/ 200 identity=officer" in log
    assert "s3cr3t-value-never-logged" not in log
    assert token not in log
    assert token.split(".")[2] not in log


def test_cli_refuses_an_invalid_topology(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"tenant_id": "not-a-guid", "subscriptions": [], "identities": []}')
    done = subprocess.run(
        [sys.executable, "-m", "local.cloud", "--topology", str(bad), "--data", str(tmp_path / "d")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid topology: tenant_id" in done.stderr
    assert not (tmp_path / "d" / "env").exists()


def test_the_default_topology_is_valid_and_documented_ids_match() -> None:
    default = REPO_ROOT / "local" / "cloud" / "topologies" / "default.json"
    topology = load(
        default, {"HUB_URL": "http://127.0.0.1:7071", "PYTHON": sys.executable, "PG_PORT": "5432"}
    )
    assert sorted(topology.vaults) == ["hub-kv", "spoke1-kv", "spoke2-kv"]
    assert sorted(topology.topics) == ["ops-alerts", "rotation-hub-events"]
    assert topology.identities[topology.client_identity].name == "hub-rotation-identity"
    readme = (REPO_ROOT / "local" / "cloud" / "README.md").read_text()
    for identity in topology.identities.values():
        assert identity.client_id in readme, identity.name
    for app in topology.applications.values():
        for value in (app.app_id, app.object_id, app.service_principal_id):
            assert value in readme, app.name
    orders = topology.applications["orders-api-client"]
    hub = topology.identities["hub-rotation-identity"]
    assert orders.owners == (hub.principal_id,)
    assert topology.graph_roles_of(hub.principal_id) == ("Application.ReadWrite.OwnedBy",)
    assert topology.sites["sp-consumer-app"].env["SP_CONSUMER_APP_ID"] == orders.app_id
    assert all(
        s.endpoint.startswith("http://127.0.0.1:7071/runtime/webhooks/eventgrid")
        for s in topology.event_subscriptions
    )
    with pytest.raises(TopologyError, match="HUB_URL"):
        load(default, {"PYTHON": sys.executable, "PG_PORT": "5432"})


def _tunnel(cloud: LocalCloud, host: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", cloud.info["ports"]["proxy"]), timeout=5)
    sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1024)
    assert answer.startswith(b"HTTP/1.1 200")
    return sock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state letter in /proc says it is dead.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


def _in(seconds: int):  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.fromtimestamp(int(time.time()) + seconds, dt.UTC)
