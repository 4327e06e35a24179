"""The webhook poster against a real HTTP server on 127.0.0.1: what it retries, what it gives up on,
and that the URL (a secret) is in no outcome it reports."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from local.ports import free_port
from rotation import webhooks
from rotation.targets.base import SecretValue
from rotation.webhooks import post_json


class Scripted(ThreadingHTTPServer):
    """Answers each POST with the next scripted (status, headers), then 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self.bodies: list[Any] = []
        self.silent_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook/s3cr3t-t0ken"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a silent answer leaves a broken pipe behind: expected here


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.bodies.append(json.loads(self.rfile.read(length)))
        if self.server.silent_seconds:
            time.sleep(self.server.silent_seconds)
        status, headers = self.server.script.popleft() if self.server.script else (200, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scripted]:
    monkeypatch.setattr(webhooks, "BACKOFF_FACTOR_SECONDS", 0.01)  # keep the back-off short here
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    running = Scripted()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


BODY = {"text": "hello"}


def test_a_2xx_answer_is_delivered_at_once(server: Scripted) -> None:
    server.script.append((202, {}))
    result = post_json(SecretValue(server.url), BODY)
    assert (result.delivered, result.outcome) == (True, "HTTP 202")
    assert server.bodies == [BODY]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(server: Scripted, status: int) -> None:
    server.script.extend([(status, {}), (status, {})])
    result = post_json(SecretValue(server.url), BODY)
    assert result.delivered
    assert server.bodies == [BODY] * 3


def test_retry_after_is_honoured(server: Scripted) -> None:
    server.script.append((429, {"Retry-After": "1"}))
    started = time.monotonic()
    assert post_json(SecretValue(server.url), BODY).delivered
    assert time.monotonic() - started >= 1.0
    assert len(server.bodies) == 2


def test_attempts_are_bounded(server: Scripted) -> None:
    server.script.extend([(500, {})] * 10)
    result = post_json(SecretValue(server.url), BODY)
    assert (result.delivered, result.outcome) == (False, "HTTP 500")
    assert len(server.bodies) == webhooks.ATTEMPTS


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_a_4xx_answer_is_not_retried(server: Scripted, status: int) -> None:
    server.script.append((status, {}))
    result = post_json(SecretValue(server.url), BODY)
    assert (result.delivered, result.outcome) == (False, f"HTTP {status}")
    assert len(server.bodies) == 1


def test_a_closed_port_is_reported_by_the_error_class_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "BACKOFF_FACTOR_SECONDS", 0.01)
    url = f"http://127.0.0.1:{free_port()}/hook/s3cr3t-t0ken"
    result = post_json(SecretValue(url), BODY)
    assert (result.delivered, result.outcome) == (False, "ServiceRequestError")
    assert "s3cr3t" not in repr(result)


def test_a_silent_webhook_times_out(server: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "READ_TIMEOUT_SECONDS", 0.3)
    server.silent_seconds = 1.0
    result = post_json(SecretValue(server.url), BODY, attempts=2)
    assert (result.delivered, result.outcome) == (False, "ServiceResponseTimeoutError")
    assert len(server.bodies) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "ftp://127.0.0.1/x",
        "not a url",
        "https://",
        "http://127.0.0.1.evil.com/x",
    ],
)
def test_only_https_or_loopback_http_urls_are_used(url: str) -> None:
    result = post_json(SecretValue(url), BODY)
    assert (result.delivered, result.outcome) == (False, "not an https URL")


def test_no_log_line_at_any_level_names_the_url(server: Scripted, caplog: pytest.LogCaptureFixture) -> None:
    server.script.extend([(503, {}), (200, {})])
    with caplog.at_level(logging.DEBUG):
        assert post_json(SecretValue(server.url), BODY).delivered
    assert "s3cr3t-t0ken" not in caplog.text
    # urllib3's request lines are there, with the path hidden.
    assert caplog.text.count("<notification webhook path>") == 2
    # Once the POST is over, other requests' paths are logged as usual.
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("urllib3.connectionpool").debug('"%s %s" %s', "GET", "/hook/s3cr3t-t0ken", 200)
    assert "s3cr3t-t0ken" in caplog.text
