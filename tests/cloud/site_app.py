"""A tiny App Service site for the local cloud's tests (run as a process by the cloud).

GET /health answers 200 (500 while the file named by PROBE_UNHEALTHY_FILE exists, 503 for the first
PROBE_WARMUP_SECONDS after start, as an app still warming up); PROBE_START_DELAY_SECONDS delays its
listening (a slow start); PROBE_EXIT_AT_START makes it exit at once with status 3 (an app that fails
to start);
GET /probe reports what the site sees: its pid, identity client id, marker, and whether its
own managed identity can read PROBE_SECRET from PROBE_VAULT_URL through the real SDK.
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


def _read_secret(name: str) -> dict[str, str]:
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    try:
        client = SecretClient(os.environ["PROBE_VAULT_URL"], ManagedIdentityCredential())
        return {"value": client.get_secret(name).value or ""}
    except Exception as exc:  # the test reads the error class and message
        return {"error": type(exc).__name__, "message": str(exc)[:300]}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/health":
            unhealthy = os.environ.get("PROBE_UNHEALTHY_FILE")
            warming = time.monotonic() - STARTED < float(os.environ.get("PROBE_WARMUP_SECONDS") or 0)
            if warming:
                self._answer(503, {"ok": False, "warming": True})
            else:
                self._answer(500 if unhealthy and Path(unhealthy).exists() else 200, {"ok": True})
        elif url.path == "/probe":
            report: dict[str, object] = {
                "pid": os.getpid(),
                "client_id": os.environ.get("AZURE_CLIENT_ID"),
                "marker": os.environ.get("PROBE_MARKER"),
                "site_name": os.environ.get("WEBSITE_SITE_NAME"),
            }
            secret = parse_qs(url.query).get("secret", [""])[0]
            if secret:
                report["secret"] = _read_secret(secret)
            self._answer(200, report)
        else:
            self._answer(404, {})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


STARTED = time.monotonic()

if __name__ == "__main__":
    if os.environ.get("PROBE_EXIT_AT_START"):
        sys.exit(3)
    time.sleep(float(os.environ.get("PROBE_START_DELAY_SECONDS") or 0))
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
