"""What can go wrong in a rotation, classified once so the orchestrator knows what to retry.

Every error message names things (secret, version, login, step), never a secret value. The
orchestrator sees an activity's failure only as text, so each error's message starts with a
marker, ``[transient]`` or ``[permanent]``, followed by the class name: ``retry_kind_of`` reads
it back on the other side.
"""

from __future__ import annotations

from typing import Literal

RetryKind = Literal["transient", "permanent"]


class RotationError(Exception):
    """Base of every error the domain core raises on purpose. Not retried unless transient."""

    retry_kind: RetryKind = "permanent"

    def __init__(self, message: str) -> None:
        super().__init__(f"[{self.retry_kind}] {type(self).__name__}: {message}")
        self.detail = message


class TransientError(RotationError):
    """Throttling, 5xx, refused connections, timeouts: worth another attempt after a wait."""

    retry_kind: RetryKind = "transient"


class InvalidRequest(RotationError):
    """The event, the request or the secret's tags are not acceptable; nothing was changed."""


class NotFound(InvalidRequest):
    """The secret, version or resource named does not exist."""


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
