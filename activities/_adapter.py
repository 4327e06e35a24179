"""The edge between an activity trigger and the domain core: parse, delegate, serialise.

Every activity goes through ``run_step``, so all of them treat errors alike: the domain's own
errors pass through without their causes (their messages name things, never values, and carry
the retry marker the orchestrator reads; a cause's message is a library's and might echo a
value); anything else is a bug or an unmapped library error, logged by type and stack frames
only and replaced by a plain error.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from rotation.clients import vault_named
from rotation.errors import RotationError
from rotation.model import Record, SecretRef
from rotation.settings import current_settings
from rotation.vault import Vault

logger = logging.getLogger(__name__)

In = TypeVar("In", bound=Record)


class UnexpectedError(RotationError):
    """An error the domain core did not expect; details are in the log, not in the history."""


def run_step(
    name: str, input_type: type[In], payload: object, action: Callable[[In], Record]
) -> dict[str, Any]:
    """Run one activity: ``payload`` (a dict from the history) -> ``action`` -> a dict for the history."""
    started = time.monotonic()
    try:
        result = action(input_type.from_dict(payload))
    except RotationError as exc:
        causes = " <- ".join(type(c).__name__ for c in _causes(exc)) or "none"
        logger.warning(
            "activity %s failed after %.2fs: %s (causes: %s)", name, time.monotonic() - started, exc, causes
        )
        # The host writes the failure's stack into the history, causes included; a library's
        # message there might echo what it was sent. Our message names things, so it alone goes.
        exc.__cause__ = None
        exc.__suppress_context__ = True
        raise
    except Exception as exc:
        # Frames show file, line and source text, never the values of variables or the message.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        logger.error("activity %s failed with unexpected %s at:\n%s", name, type(exc).__name__, frames)
        raise UnexpectedError(f"{type(exc).__name__} in activity {name}; the hub's log has where") from None
    logger.info("activity %s done in %.2fs", name, time.monotonic() - started)
    return result.to_dict()


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current = exc.__cause__ or exc.__context__
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def vault_of(secret: SecretRef) -> Vault:
    """The spoke vault holding ``secret``, reached with the hub's identity, for one activity: it
    reads each version once (``Vault.memoizing``)."""
    return vault_named(secret.vault_name, current_settings()).memoizing()
