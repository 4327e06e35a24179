"""What can go wrong in a rotation, classified once so the orchestrator knows what to retry.

Every error message names things (secret, version, login, step), never a secret value. The
orchestrator sees an activity's failure only as text, so each error's message starts with a
marker, ``[transient]`` or ``[permanent]``, followed by the class name: ``retry_kind_of`` reads
it back on the other side. A throttled call's ``TransientError`` also ends with
``[retry-after=<seconds>s]`` when the service said how long to wait (its ``Retry-After``
header): ``retry_after_of`` reads it back, so the orchestrator's durable back-off waits at
least that long.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

RetryKind = Literal["transient", "permanent"]


class RotationError(Exception):
    """Base of every error the domain core raises on purpose. Not retried unless transient."""

    retry_kind: RetryKind = "permanent"

    def __init__(self, message: str) -> None:
        super().__init__(f"[{self.retry_kind}] {type(self).__name__}: {message}")
        self.detail = message


class TransientError(RotationError):
    """Throttling, 5xx, refused connections, timeouts: worth another attempt after a wait.

    ``retry_after_seconds``: how long the service asked the caller to wait (its Retry-After),
    carried in the message as ``[retry-after=<n>s]`` so the orchestrator can honour it.
    """

    retry_kind: RetryKind = "transient"

    def __init__(
        self, message: str, *, retry_after_seconds: float | None = None, unanswered: bool = False
    ) -> None:
        if retry_after_seconds is not None and retry_after_seconds > 0:
            message = f"{message} [retry-after={retry_after_seconds:g}s]"
        if unanswered:
            message = f"{message} {UNANSWERED_MARK}"
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        self.unanswered = unanswered


class InvalidRequest(RotationError):
    """The event, the request or the secret's tags are not acceptable; nothing was changed."""


class NotAllowed(InvalidRequest):
    """The vault is not in a subscription on the allowlist (the HTTP API answers 403)."""


class NotFound(InvalidRequest):
    """The secret, version or resource named does not exist."""


class Disabled(InvalidRequest):
    """The secret's version is disabled: the state it is in, not the request, stops the rotation."""


class AuthenticationFailed(RotationError):
    """A credential the hub needed (its own, an admin login, the current one) was refused."""


class VerificationFailed(RotationError):
    """The new credential does not work against its target."""


class TargetError(RotationError):
    """The target system refused a change for a reason that will not pass by retrying."""


class UndoImpossible(RotationError):
    """A compensation could not restore the previous state (for example the old value is refused)."""


def retry_kind_of(message: str) -> RetryKind | None:
    """Read the marker back from an error text (as the orchestrator sees it, possibly wrapped).

    Returns None when the text carries no marker (an unexpected error: treated as permanent).
    """
    if "[transient]" in message:
        return "transient"
    if "[permanent]" in message:
        return "permanent"
    return None


# A request was sent but no answer came (a timeout, a connection lost mid-request): what it
# asked for may still happen. The orchestrator waits before it checks again or undoes anything.
UNANSWERED_MARK = "[unanswered]"


def unanswered_of(message: str) -> bool:
    return UNANSWERED_MARK in message


_RETRY_AFTER_MARK = re.compile(r"\[retry-after=(?P<seconds>\d+(?:\.\d+)?)s\]")
# A service asking for more than this is not waited for longer in one go: the step's own
# back-off and attempts still apply, and an hour-long durable timer is a stuck rotation.
MAX_RETRY_AFTER_SECONDS = 3600.0


def retry_after_of(message: str) -> float | None:
    """The ``[retry-after=<n>s]`` a throttled error carried, in seconds, or None."""
    match = _RETRY_AFTER_MARK.search(message)
    return min(float(match["seconds"]), MAX_RETRY_AFTER_SECONDS) if match else None


def retry_after_header(headers: Mapping[str, str] | None, *, now: datetime | None = None) -> float | None:
    """Seconds a response's ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms`` /
    ``x-ms-retry-after-ms`` header asks the caller to wait; None when it says nothing usable."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = lowered.get(name, "")
        try:
            if raw and float(raw) > 0:
                return float(raw) / 1000
        except ValueError:
            pass
    raw = lowered.get("retry-after", "")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return seconds if seconds > 0 else None
