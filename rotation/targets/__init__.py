"""Target systems, registered by their ``rotation-target`` tag value.

Adding a target is one module implementing ``base.Target`` (the hub chooses the value) or
``base.IssuingTarget`` (the target issues it), one line in ``_registry`` and its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rotation.errors import InvalidRequest
from rotation.settings import Settings
from rotation.targets.base import IssuingTarget, Target, TargetSpec

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from rotation.formats import Endpoint

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
    # Where a login of the spec connects, for values that carry it (rotation/formats).
    endpoint: Callable[[TargetSpec], Endpoint]
    #: Whether rotation-strategy 'alternating' (two logins) is supported.
    alternating: bool = False
    #: The name a client logs in with, for a ``rotation-credential`` login (MySQL: the user
    #: part of ``user@host``).
    client_login: Callable[[str], str] = lambda credential: credential


@dataclass(frozen=True)
class IssuingTargetType:
    """A kind of target that issues its credentials itself; the hub reaches it as its identity."""

    name: str
    build: Callable[[TargetSpec, Settings, TokenCredential, str], IssuingTarget]
    validate: Callable[[TargetSpec], None]
    #: How long the previous credential stays valid after promotion when the tag does not say.
    default_overlap_hours: float
    #: The rotation-format values the target writes (the first is the default).
    formats: tuple[str, ...] = ("password",)
    #: Whether rotation-provider must be given (a storage account's id says everything).
    requires_provider: bool = True
    #: None when an issued credential can be withdrawn again (the undo of stage). Otherwise why
    #: not, for the status: such a target issues only after an approval, and nothing undoes it.
    irreversible: str | None = None
    #: None when the previous credential is removed after the overlap. Otherwise why it stays
    #: (rotation-overlap-hours is then refused: there is no overlap to set).
    keeps_previous: str | None = None


AnyTargetType = TargetType | IssuingTargetType


def _registry() -> dict[str, AnyTargetType]:
    from rotation.targets import entra, mysql, postgresql, sqlserver, storage

    types: tuple[AnyTargetType, ...] = (
        postgresql.TARGET_TYPE,
        mysql.TARGET_TYPE,
        *sqlserver.TARGET_TYPES,
        entra.TARGET_TYPE,
        storage.TARGET_TYPE,
    )
    return {t.name: t for t in types}


def target_type(kind: str) -> AnyTargetType:
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


def value_target_type(kind: str) -> TargetType:
    """The type of a target whose new value the hub chooses.

    Raises:
        InvalidRequest: no such target, or one that issues its credentials itself.
    """
    found = target_type(kind)
    if not isinstance(found, TargetType):
        raise InvalidRequest(f"rotation-target {kind!r} issues its credentials itself; the hub chooses none")
    return found
