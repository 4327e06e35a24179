"""``rotation-format: password`` (the default): the value is the password, nothing else.

The login is not in the value, so reading one back needs the login the tags name.
"""

from __future__ import annotations

from rotation.errors import InvalidRequest
from rotation.formats import TAG, Endpoint, LoginValue
from rotation.targets.base import SecretValue


class PasswordFormat:
    name = "password"

    def build(self, value: LoginValue, endpoint: Endpoint) -> SecretValue:
        return value.password

    def parse(self, text: SecretValue, endpoint: Endpoint, *, login: str | None) -> LoginValue:
        if login is None:
            raise InvalidRequest(
                f"{TAG} {self.name!r} does not say which login the value belongs to, and no login "
                f"was given; name it in the tags (rotation-credential), or use {TAG} 'json' or "
                "'connection-string', whose values name their login"
            )
        return LoginValue(login=login, password=text)


FORMAT = PasswordFormat()
