"""Benchmark of the local cloud's Key Vault: ``python -m benchmarks.cloud_keyvault``.

Measures, with the real SDK through the HTTPS proxy and TLS verification on:
  * secrets set and got per second with one SecretClient, and with 8 concurrent clients (threads);
  * the latency the proxy adds, against a direct TLS connection to the same listener, both for a
    request on an open connection and for a new connection (TCP + TLS handshake + request).
It starts its own local cloud in a temporary directory and prints a table; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

SEEDER_CLIENT_ID = "91191788-ccc7-40df-82bb-5d1867e04a6c"  # default topology: Secrets Officer on spoke1
VAULT = "https://spoke1-kv.vault.azure.net"
HOST = "spoke1-kv.vault.azure.net"


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def sdk_throughput(operations: int, clients: int) -> tuple[float, float]:
    """(sets per second, gets per second) with ``clients`` SecretClients in as many threads."""
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    per_client = max(1, operations // clients)
    made = [
        SecretClient(VAULT, ManagedIdentityCredential(client_id=SEEDER_CLIENT_ID)) for _ in range(clients)
    ]
    for index, client in enumerate(made):
        client.set_secret(f"bench-warm-{index}", "x")  # challenge and token outside the timing

    def run(work: Callable[[int, object], None]) -> float:
        barrier = threading.Barrier(clients + 1)

        def worker(index: int) -> None:
            barrier.wait()
            work(index, made[index])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    def sets(index: int, client: object) -> None:
        for n in range(per_client):
            client.set_secret(f"bench-{index}-{n % 50}", f"value-{n}")  # type: ignore[attr-defined]

    def gets(index: int, client: object) -> None:
        for n in range(per_client):
            client.get_secret(f"bench-{index}-{n % 50}")  # type: ignore[attr-defined]

    set_seconds = run(sets)
    get_seconds = run(gets)
    total = per_client * clients
    return _rate(total, set_seconds), _rate(total, get_seconds)


def _token() -> str:
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential(client_id=SEEDER_CLIENT_ID)
    token: str = credential.get_token("https://vault.azure.net/.default").token
    return token


def _connect(ports: dict[str, int], ca_file: str, via_proxy: bool) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca_file)
    if via_proxy:
        raw = socket.create_connection(("127.0.0.1", ports["proxy"]))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += raw.recv(1024)
    else:
        raw = socket.create_connection(("127.0.0.1", ports["tls"]))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(raw, server_hostname=HOST)


def _request(tls: ssl.SSLSocket, token: str) -> None:
    tls.sendall(
        f"GET /secrets/bench-0-0/?api-version=2026-04-01 HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += tls.recv(65536)


def proxy_latency(ports: dict[str, int], ca_file: str, samples: int) -> dict[str, tuple[float, float]]:
    """Median and p95 in milliseconds, keyed by "direct/proxy, open/new connection"."""
    token = _token()
    result: dict[str, tuple[float, float]] = {}
    for via_proxy in (False, True):
        path = "proxy" if via_proxy else "direct"
        tls = _connect(ports, ca_file, via_proxy)
        _request(tls, token)
        open_times = []
        for _ in range(samples):
            started = time.perf_counter()
            _request(tls, token)
            open_times.append((time.perf_counter() - started) * 1000)
        tls.close()
        new_times = []
        for _ in range(max(10, samples // 5)):
            started = time.perf_counter()
            with _connect(ports, ca_file, via_proxy) as fresh:
                _request(fresh, token)
            new_times.append((time.perf_counter() - started) * 1000)
        for label, times in (("open connection", open_times), ("new connection", new_times)):
            ordered = sorted(times)
            result[f"{path}, {label}"] = (statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--operations", type=int, default=800, help="sets (and gets) per throughput run")
    parser.add_argument("--samples", type=int, default=300, help="requests per latency measurement")
    args = parser.parse_args(argv)

    from local.cloud.process import LocalCloud

    with tempfile.TemporaryDirectory(prefix="cloud-bench-") as tmp:
        cloud = LocalCloud(data_dir=Path(tmp) / "data", env={"HUB_URL": "http://127.0.0.1:9"})
        with cloud:
            os.environ.update(cloud.client_env)  # before any aiohttp import, as a client process would
            one = sdk_throughput(args.operations, 1)
            eight = sdk_throughput(args.operations, 8)
            latency = proxy_latency(cloud.info["ports"], cloud.client_env["SSL_CERT_FILE"], args.samples)

    print(f"Local cloud Key Vault benchmark ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    print()
    print("| SDK through the proxy (SecretClient, sync) | set / s | get / s |")
    print("| --- | ---: | ---: |")
    print(f"| 1 client | {one[0]:.0f} | {one[1]:.0f} |")
    print(f"| 8 concurrent clients (threads) | {eight[0]:.0f} | {eight[1]:.0f} |")
    print()
    print("| GET one secret, raw TLS | median ms | p95 ms |")
    print("| --- | ---: | ---: |")
    for label, (median, p95) in latency.items():
        print(f"| {label} | {median:.2f} | {p95:.2f} |")
    for label in ("open connection", "new connection"):
        added = latency[f"proxy, {label}"][0] - latency[f"direct, {label}"][0]
        print(f"| proxy adds ({label}) | {added:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
