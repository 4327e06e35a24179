"""The one Protocol every target system implements, and the value type it handles.

A target is the system that checks the credential a secret holds: a database login, an Entra
application secret, a storage account key. The orchestrator changes it in three moves, each
safe to run twice:

- ``apply``: make the target accept ``new``; if ``new`` already works, do nothing.
- ``verify``: prove ``value`` works with a fresh login; raise ``VerificationFailed`` if not.
- ``revert``: make the target accept ``previous`` again; if it already does, do nothing.

Targets never log or put a value into an exception message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SecretValue:
    """A secret's plaintext. Its repr and str never show it; ``reveal()`` is the only way out."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "<secret value>"

    def __repr__(self) -> str:
        return "SecretValue(<hidden>)"


@dataclass(frozen=True)
class AdminSpec:
    """How the hub authenticates to the target (tag ``rotation-admin``).

    ``mode`` is ``self`` (the current credential changes itself), ``managed-identity`` or
    ``secret`` (then ``secret_name`` names another secret in the same vault).
    """

    mode: str
    secret_name: str | None = None


@dataclass(frozen=True)
class TargetSpec:
    """Where and which credential, as the secret's tags say (already validated)."""

    kind: str
    provider: str
    credential: str
    admin: AdminSpec


#: Returns the hub identity's access token for a scope (``https://database.windows.net/.default``).
TokenSource = Callable[[str], SecretValue]


@dataclass(frozen=True)
class Credentials:
    """What a target move may use. ``admin`` is set only when ``spec.admin.mode == "secret"``,
    ``access_token`` only when it is ``managed-identity``.

    ``admin_login`` is the login the admin secret's value belongs to: the ``rotation-credential``
    tag of the admin secret itself (so an admin secret is tagged like any rotated secret, and
    can be rotated by the hub in turn). Targets whose admin secret names its login in the value
    ignore it.
    """

    current: SecretValue | None
    admin: SecretValue | None = None
    admin_login: str | None = None
    access_token: TokenSource | None = field(default=None, repr=False)


class Target(Protocol):
    """A target system bound to one ``TargetSpec``.

    Raises (every method): ``TransientError`` when the target cannot be reached for now,
    ``AuthenticationFailed`` when the credential used to make the change is refused,
    ``TargetError`` when the change is refused for good.
    """

    def apply(self, *, new: SecretValue, using: Credentials) -> bool:
        """Make the target accept ``new``. Returns False when it already did (nothing changed)."""
        ...

    def verify(self, *, value: SecretValue) -> None:
        """Log in afresh with ``value``. Raises ``VerificationFailed`` when it is refused."""
        ...

    def revert(self, *, previous: SecretValue, new: SecretValue | None, using: Credentials) -> bool:
        """Make the target accept ``previous`` again. Returns False when it already did.

        ``new`` is the value that may be in force now (a ``self`` admin logs in with it).
        Raises ``UndoImpossible`` when no credential at hand can make the change.
        """
        ...
