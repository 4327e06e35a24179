"""Azure SDK errors translated, once, into the domain's errors.

Throttling, 5xx and connection failures become ``TransientError`` (the orchestrator retries
them); a refused identity ``AuthenticationFailed``; anything else the caller's fault
(``InvalidRequest``). Messages say what was being done and the service's error code, never a
value: the SDK's own messages are not carried over, as they may echo request content.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from rotation.errors import (
    AuthenticationFailed,
    Disabled,
    InvalidRequest,
    NotFound,
    RotationError,
    TransientError,
    retry_after_header,
)


def _error_code(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) or {}
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    return str(inner_code or getattr(error, "code", None) or "")


def _retry_after(exc: HttpResponseError) -> float | None:
    response = getattr(exc, "response", None)
    return retry_after_header(getattr(response, "headers", None))


@contextmanager
def translated(what: str, *, service: str = "Key Vault", write: bool = False) -> Iterator[None]:
    """Translate Azure SDK errors raised inside the block into domain errors about ``what``.

    ``write``: the block creates something that a second attempt would create again (a Key Vault
    version); when it got no answer, the error is marked unanswered, so the orchestrator waits
    until it can no longer land before it checks again. A read that got no answer is only retried.
    """
    try:
        yield
    except RotationError:
        raise
    except ResourceNotFoundError as exc:
        raise NotFound(f"{what}: not found ({_error_code(exc) or 'NotFound'})") from exc
    except ClientAuthenticationError as exc:
        status = exc.status_code or 0
        if status == 429 or status >= 500:
            raise TransientError(f"{what}: the identity endpoint answered {status}") from exc
        raise AuthenticationFailed(f"{what}: the hub's identity was refused ({type(exc).__name__})") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        code = _error_code(exc)
        if status == 429 or status >= 500:
            raise TransientError(
                f"{what}: {service} answered {status} {code}".rstrip(), retry_after_seconds=_retry_after(exc)
            ) from exc
        if status == 403 and code == "SecretDisabled":  # Key Vault's 403 for a disabled version
            raise Disabled(f"{what}: the version is disabled ({code})") from exc
        if status in (401, 403):
            raise AuthenticationFailed(
                f"{what}: {service} refused the hub ({status} {code})".rstrip()
            ) from exc
        raise InvalidRequest(f"{what}: {service} answered {status} {code}".rstrip()) from exc
    except ServiceRequestError as exc:  # not sent: nothing can have happened
        raise TransientError(f"{what}: {service} could not be reached ({type(exc).__name__})") from exc
    except ServiceResponseError as exc:  # sent, no answer: a write may still happen
        raise TransientError(
            f"{what}: {service} did not answer ({type(exc).__name__})", unanswered=write
        ) from exc
