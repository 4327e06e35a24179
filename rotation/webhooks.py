"""POST a JSON message to a chat webhook (a Teams workflow, a Slack incoming webhook).

The URL is a secret (whoever holds it may post to the channel), so it arrives as a SecretValue
and appears in no log line and no error text: failures are reported by status code or by the
error's class, never by the library's message, which names the URL. azure-core's pipeline does
the retries (429 and 5xx, with Retry-After honoured, and connection errors, with exponential
back-off), bounded to a few attempts and a total time, so a dead webhook costs seconds.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.core import PipelineClient
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import HeadersPolicy, RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

from rotation.targets.base import SecretValue

ATTEMPTS = 4
BACKOFF_FACTOR_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 10
TOTAL_TIMEOUT_SECONDS = 60
# https everywhere; plain http only to this machine (a receiver in a test, a local relay).
_ALLOWED = re.compile(r"^(https://[^\s/?#]+|http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?)(/\S*)?$")


class _HideWebhookPaths(logging.Filter):
    """urllib3 writes each request line at DEBUG (``"POST /path HTTP/1.1" 200``) and retries at
    WARNING with the URL; a webhook's path is its secret. While a webhook is posted to, its
    path is replaced in those records, whatever level the application's logging lets through."""

    MASK = "<notification webhook path>"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._paths: dict[str, int] = {}

    @contextmanager
    def hiding(self, path: str) -> Iterator[None]:
        with self._lock:
            self._paths[path] = self._paths.get(path, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._paths[path] -= 1
                if not self._paths[path]:
                    del self._paths[path]

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:  # another thread may be starting or ending a POST
            paths = list(self._paths)
        if paths:
            text = record.getMessage()
            hidden = text
            for path in paths:
                hidden = hidden.replace(path, self.MASK)
            if hidden != text:
                record.msg, record.args = hidden, None
        return True


_hide = _HideWebhookPaths()
for _name in ("urllib3.connectionpool", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_hide)


@dataclass(frozen=True)
class WebhookResult:
    delivered: bool
    # "HTTP <status>" or the class of the error that ended the attempts; never the URL.
    outcome: str


def post_json(url: SecretValue, body: dict[str, Any], *, attempts: int = ATTEMPTS) -> WebhookResult:
    """POST ``body`` to ``url``; 2xx is delivered. Never raises for what the webhook does."""
    target = url.reveal().strip()
    if not _ALLOWED.match(target):
        return WebhookResult(False, "not an https URL")
    retry = RetryPolicy(
        retry_total=attempts - 1,
        retry_connect=attempts - 1,
        retry_read=attempts - 1,
        retry_status=attempts - 1,
        retry_backoff_factor=BACKOFF_FACTOR_SECONDS,
        retry_backoff_max=BACKOFF_MAX_SECONDS,
        timeout=TOTAL_TIMEOUT_SECONDS,
    )
    # No logging policy on purpose: azure-core's would write the URL.
    client: PipelineClient[HttpRequest, Any] = PipelineClient(
        base_url=target,
        policies=[HeadersPolicy({"Accept": "application/json, text/plain"}), retry],
        transport=RequestsTransport(
            connection_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS
        ),
    )
    # Only the path is secret in practice (Slack's /services/T…/B…/<token>, a workflow's sig=
    # query); hide it with its query, and the whole URL in case a library logs that.
    parts = urlsplit(target)
    secret_part = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        with client, _hide.hiding(target), _hide.hiding(secret_part):
            # A chat message is not idempotent, but a duplicate is better than silence: POST is
            # retried like the methods azure-core retries by default.
            response = client.send_request(HttpRequest("POST", target, json=body), retry_on_methods=["POST"])
            status = response.status_code
            response.close()
    except AzureError as exc:
        return WebhookResult(False, type(exc).__name__)
    return WebhookResult(200 <= status < 300, f"HTTP {status}")
