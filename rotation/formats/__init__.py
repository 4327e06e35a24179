"""Secret value formats (tag ``rotation-format``): what text a rotated secret's value holds.

The hub chooses a password; the format says how the secret's value carries it, and which login
it belongs to:

- ``password`` (the default): the value is the password alone; the login is the one the tags
  name.
- ``json``: AWS Secrets Manager's shape for database credentials, ``{"engine", "host", "port",
  "username", "password", "dbname"}``.
- ``connection-string``: the engine's own syntax, ready for its client: libpq keyword/value
  (PostgreSQL), a ``mysql://`` URI (MySQL), an ADO.NET connection string (SQL Server).

One module per format; each has a ``FORMAT`` implementing ``ValueFormat``. The steps call
``value_format(tag).build(LoginValue(login, password), endpoint)`` to make a new value, and
``value_format(tag).parse(secret_value, endpoint, login=tagged_login)`` to read the login and the
password back out of one. ``build`` then ``parse`` gives back exactly the login and password,
whatever characters they hold.

Every error is ``InvalidRequest`` naming ``rotation-format``; its message never holds the value or
any part of it (nor the text of a parser's exception, which may echo its input), and it is raised
outside any ``except`` block, so no such exception rides along as its context either.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from rotation.errors import InvalidRequest
from rotation.targets.base import SecretValue

TAG = "rotation-format"
FORMATS = ("password", "json", "connection-string")
#: The format of a secret without the tag.
DEFAULT_FORMAT = "password"
ENGINES = ("postgresql", "mysql", "sqlserver")

_HOST_CHARACTERS = re.compile(r"[A-Za-z0-9.:-]+")


@dataclass(frozen=True)
class Endpoint:
    """Where the login connects: the target's ``rotation-provider`` tag, already validated.

    ``engine`` is one of ``ENGINES``; ``host`` a DNS name, an IPv4 address or an IPv6 address
    (without brackets or scope id); ``database`` may be empty (the engine's default then).

    Raises:
        InvalidRequest: a part is not of that form (the provider parser should have refused it).
    """

    engine: str
    host: str
    port: int
    database: str

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidRequest(f"{TAG}: engine {self.engine!r} is not one of {', '.join(ENGINES)}")
        if not _is_host(self.host):
            raise InvalidRequest(
                f"{TAG}: host {self.host!r} is not a DNS name, IPv4 or IPv6 address (no brackets)"
            )
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise InvalidRequest(f"{TAG}: port {self.port!r} is not a number from 1 to 65535")


@dataclass(frozen=True)
class LoginValue:
    """A login and its password: what a formatted value carries."""

    login: str
    password: SecretValue


class ValueFormat(Protocol):
    """One value format. Implementations are stateless."""

    @property
    def name(self) -> str:
        """The ``rotation-format`` tag value."""
        ...

    def build(self, value: LoginValue, endpoint: Endpoint) -> SecretValue:
        """The secret value holding ``value`` for ``endpoint``.

        Raises:
            InvalidRequest: the login or password cannot be written in this format (for example
                a NUL character in a connection string).
        """
        ...

    def parse(self, text: SecretValue, endpoint: Endpoint, *, login: str | None) -> LoginValue:
        """The login and password ``text`` holds.

        ``login`` is the login the tags name; it is used only by formats whose text holds the
        password alone (``password``). Formats whose text names the login return that one: the
        caller compares it with the logins the tags allow. The host, port and database a text
        may hold are not compared with ``endpoint`` (a moved server must not make the current
        value unreadable); ``endpoint.engine`` chooses the syntax.

        Raises:
            InvalidRequest: ``text`` is not of this format, or lacks the login or the password.
        """
        ...


def value_format(name: str) -> ValueFormat:
    """The format a ``rotation-format`` tag value names.

    Raises:
        InvalidRequest: naming the tag, for a name not in ``FORMATS``.
    """
    from rotation.formats import connection_string, json_value, password

    formats: dict[str, ValueFormat] = {
        password.FORMAT.name: password.FORMAT,
        json_value.FORMAT.name: json_value.FORMAT,
        connection_string.FORMAT.name: connection_string.FORMAT,
    }
    found = formats.get(name)
    if found is None:
        raise InvalidRequest(f"{TAG} {name!r} is not one of {', '.join(FORMATS)}")
    return found


# -- shared by the format modules ---------------------------------------------------------------


def format_error(name: str, what: str) -> InvalidRequest:
    """The error of format ``name``: ``what`` must never hold the value or a part of it."""
    return InvalidRequest(f"{TAG} {name!r}: {what}")


def check_login_value(name: str, value: LoginValue, endpoint: Endpoint, *, allow_nul: bool) -> None:
    """Checks before a format writes ``value``: no empty login or password, nothing that is not
    Unicode text (a lone surrogate cannot be encoded), no NUL where C strings will carry it.

    Raises:
        InvalidRequest: naming the part, never showing it.
    """
    parts = (("login", value.login), ("password", value.password.reveal()), ("database", endpoint.database))
    for what, text in parts:
        if not text and what != "database":
            raise format_error(name, f"the {what} is empty")
        if not is_unicode(text):
            raise format_error(name, f"the {what} holds a lone surrogate, which is not Unicode text")
        if not allow_nul and "\x00" in text:
            raise format_error(
                name, f"the {what} holds a NUL character, which no connection string can carry"
            )


def is_unicode(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (no lone surrogates), checked without an exception."""
    return not any(unicodedata.category(ch) == "Cs" for ch in text)


def _is_host(host: object) -> bool:
    if not isinstance(host, str) or not _HOST_CHARACTERS.fullmatch(host):
        return False
    if ":" not in host:
        return not host.startswith((".", "-"))
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True
