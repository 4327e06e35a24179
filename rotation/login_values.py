"""A database secret's value as a login and its password, and which login a rotation changes.

``rotation-format`` says what the value holds (rotation/formats: the password alone, JSON, a
connection string); ``rotation-strategy`` says which login a rotation changes: ``single``, the
one login; ``alternating``, of the two logins ``rotation-credential`` names, the one the current
version does *not* hold, so the login consumers use keeps its password until the next rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

from rotation.errors import InvalidRequest
from rotation.formats import Endpoint, LoginValue, ValueFormat, value_format
from rotation.metadata import CREDENTIAL, RotationMetadata
from rotation.targets import TargetType, value_target_type
from rotation.targets.base import SecretValue


@dataclass(frozen=True)
class Held:
    """What one value holds: the login as ``rotation-credential`` names it, and its password."""

    credential: str
    password: SecretValue


@dataclass(frozen=True)
class LoginShape:
    """How one secret's values map to its logins (from its tags, already validated)."""

    meta: RotationMetadata
    kind: TargetType
    endpoint: Endpoint
    value_format: ValueFormat

    @classmethod
    def of(cls, meta: RotationMetadata) -> LoginShape:
        """Raises InvalidRequest when the target is not one whose value the hub chooses."""
        kind = value_target_type(meta.target.kind)
        return cls(meta, kind, kind.endpoint(meta.target), value_format(meta.value_format))

    @property
    def alternating(self) -> bool:
        return self.meta.strategy == "alternating"

    def read(self, value: SecretValue) -> Held:
        """The login and password ``value`` holds.

        Raises:
            InvalidRequest: the value is not of the tagged format, or holds a login the tags do
                not name (the message never holds the value).
        """
        tagged = None if self.alternating else self.kind.client_login(self.meta.logins[0])
        parsed = self.value_format.parse(value, self.endpoint, login=tagged)
        for credential in self.meta.logins:
            if self.kind.client_login(credential) == parsed.login:
                return Held(credential, parsed.password)
        raise InvalidRequest(
            f"the value holds login {parsed.login!r}, which {CREDENTIAL} "
            f"({', '.join(self.meta.logins)}) does not name"
        )

    def write(self, credential: str, password: SecretValue) -> SecretValue:
        """The value for ``credential`` (a login the tags name) with ``password``."""
        return self.value_format.build(
            LoginValue(self.kind.client_login(credential), password), self.endpoint
        )

    def next_credential(self, current: Held) -> str:
        """The login a rotation changes: the one login, or the other of the two."""
        if not self.alternating:
            return self.meta.logins[0]
        return next(login for login in self.meta.logins if login != current.credential)
