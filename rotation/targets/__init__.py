"""Target systems, registered by their ``rotation-target`` tag value.

Adding a target is one module implementing ``base.Target``, one line in ``_REGISTRY`` and its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rotation.errors import InvalidRequest
from rotation.settings import Settings
from rotation.targets.base import Target, TargetSpec

if TYPE_CHECKING:
    # rotation.passwords imports targets.base (SecretValue); a run-time import here would make
    # "import rotation.passwords" fail on the cycle when it is the first module imported.
    from rotation.passwords import PasswordPolicy


@dataclass(frozen=True)
class TargetType:
    """A kind of target: how to bind it to a spec, and what its new values look like."""

    name: str
    build: Callable[[TargetSpec, Settings], Target]
    password_policy: PasswordPolicy
    # Checks the provider and credential tags without connecting; raises InvalidRequest.
    validate: Callable[[TargetSpec], None]


def _registry() -> dict[str, TargetType]:
    from rotation.targets import mysql, postgresql, sqlserver

    return {t.name: t for t in (postgresql.TARGET_TYPE, mysql.TARGET_TYPE, *sqlserver.TARGET_TYPES)}


def target_type(kind: str) -> TargetType:
    """The registered target type for a ``rotation-target`` value.

    Raises:
        InvalidRequest: no target of that kind is registered.
    """
    registry = _registry()
    try:
        return registry[kind]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise InvalidRequest(f"rotation-target {kind!r} is not a known target (known: {known})") from None
