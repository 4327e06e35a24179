"""The two Protocols target systems implement, and the value type they handle.

A target is the system that checks the credential a secret holds: a database login, an Entra
application secret, a storage account key. Targets come in two families:

- ``Target``: the hub chooses the new value and makes the target accept it (database logins).
  Three moves, each safe to run twice: ``apply`` (if ``new`` already works, do nothing),
  ``verify`` (a fresh login; ``VerificationFailed`` if refused) and ``revert`` (the undo).
- ``IssuingTarget``: the target issues the new credential itself and keeps the previous one
  valid beside it until the hub retires it (Entra application secrets; storage account keys
  fit too). ``issue`` creates a credential labelled with the rotation, ``issued`` finds this
  rotation's credentials again (a crash may have lost one), ``withdraw`` removes one, and
  ``credentials`` lists them for the operator; ``verify`` as above.

Targets never log or put a value into an exception message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
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


@dataclass(frozen=True)
class IssuedCredential:
    """A credential a target has just issued: its value (shown once) and the target's name for it."""

    value: SecretValue = field(repr=False)
    credential_id: str
    expires_on: datetime | None = None


@dataclass(frozen=True)
class CredentialInfo:
    """A credential the target holds, without its value: for finding and naming, never using."""

    credential_id: str
    label: str
    expires_on: datetime | None = None
    #: The first characters of the value, where the target shows them (Entra: 3): enough to tell
    #: whether a value is this credential's, never to use it.
    hint: str | None = None


class IssuingTarget(Protocol):
    """A target that issues credentials itself, bound to one ``TargetSpec``.

    Raises (every method): ``TransientError`` when the target cannot be reached for now,
    ``AuthenticationFailed`` when the hub's own identity is refused, ``TargetError`` when the
    target refuses for good, ``InvalidRequest`` when the tags do not describe it.
    """

    def check(self, *, current: SecretValue) -> str:
        """Refuse, before anything changes, a rotation the target cannot do from ``current`` (the
        value the secret holds now): raises ``InvalidRequest`` or ``TargetError`` saying why
        (``AuthenticationFailed`` when the hub's identity lacks a permission). Changes nothing;
        returns what it found, for a preflight's report."""
        ...

    def issue(self, *, label: str, expires_on: datetime, current: SecretValue | None) -> IssuedCredential:
        """Issue a new credential labelled ``label`` (it names the rotation), valid until
        ``expires_on``; the previous one stays valid. ``current`` is the value the secret holds
        now, for targets that must know which credential that is."""
        ...

    def issued(self, *, label: str) -> list[str]:
        """The ids of the credentials labelled ``label`` (what an interrupted issue left)."""
        ...

    def withdraw(self, *, credential_id: str) -> bool:
        """Remove a credential; False when it was already gone."""
        ...

    def credentials(self) -> list[CredentialInfo]:
        """Every credential the target holds now."""
        ...

    def verify(self, *, value: SecretValue) -> None:
        """Authenticate afresh with ``value``, waiting as long as the target needs to accept a
        new credential. Raises ``VerificationFailed`` when it is still refused."""
        ...
