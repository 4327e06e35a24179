"""The ``rotation-provider`` tag of database targets: ``<host>[:<port>]/<database>``.

One parser for every database engine, so a host is checked the same way everywhere: a DNS name,
an IPv4 address or a bracketed IPv6 address without a scope id. Anything else is refused before a
driver sees it: the drivers build connection strings from these parts, and a scope id
(``%eth0``) is free text that could carry separators into them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from rotation.errors import InvalidRequest

_PROVIDER = re.compile(
    r"(?P<host>\[[^\]]*\]|[^:/\[\]]*)(?::(?P<port>[^/]*))?(?:/(?P<database>.*))?", re.DOTALL
)
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class Provider:
    host: str
    port: int
    database: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.database}"


def parse_provider(
    value: str,
    *,
    default_port: int,
    example: str,
    check_database: Callable[[str, str], None],
    default_database: str | None = None,
    tag: str = "rotation-provider",
) -> Provider:
    """Parse ``<host>[:<port>]/<database>``; the database may be left out when
    ``default_database`` is given.

    ``check_database(name, tag)`` applies the engine's own rules for database names.

    Raises:
        InvalidRequest: naming ``tag``, when ``value`` is not of that form.
    """
    form = f"<host>[:<port>]/<database>, e.g. {example}"
    if "://" in value:
        raise InvalidRequest(f"{tag} {value!r} is a URL; give {form}")
    match = _PROVIDER.fullmatch(value)
    if not match:
        raise InvalidRequest(f"{tag} {value!r} is not {form}")
    host, port_text, database = match["host"], match["port"], match["database"]
    if host.startswith("["):
        host = _ipv6(host[1:-1], value=value, tag=tag)
    elif not _is_host_name(host):
        raise InvalidRequest(f"{tag} {value!r}: {host!r} is not a host name or IP address ({form})")
    port = default_port
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise InvalidRequest(f"{tag} {value!r}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    if database is None:
        if default_database is None:
            raise InvalidRequest(f"{tag} {value!r} names no database ({form})")
        database = default_database
    check_database(database, tag)
    return Provider(host=host, port=port, database=database)


def _ipv6(text: str, *, value: str, tag: str) -> str:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise InvalidRequest(f"{tag} {value!r}: {text!r} is not an IPv6 address") from None
    if address.scope_id is not None:
        raise InvalidRequest(f"{tag} {value!r}: IPv6 scope ids ('%...') are not accepted")
    return str(address)


def _is_host_name(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(host)
        return True
    return all(_DNS_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))


def check_name(
    value: str,
    *,
    what: str,
    tag: str,
    engine: str,
    max_bytes: int | None = None,
    max_chars: int | None = None,
    max_utf16_units: int | None = None,
) -> None:
    """Checks shared by every engine's identifiers (logins, databases).

    Any character but control characters is accepted: the servers quote names themselves, so
    quotes, spaces and semicolons are harmless. What is refused is what a server would silently
    alter (a name over its limit may be truncated to another one's) or what no one types.

    Raises:
        InvalidRequest: naming ``tag``.
    """
    if not value:
        raise InvalidRequest(f"{tag}: the {what} is empty")
    if value != value.strip():
        raise InvalidRequest(f"{tag} {value!r}: the {what} has leading or trailing whitespace")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidRequest(f"{tag} {value!r}: the {what} contains control characters")
    size = len(value.encode("utf-8"))
    if max_bytes is not None and size > max_bytes:
        raise InvalidRequest(f"{tag} {value!r}: the {what} is {size} bytes long; {engine} allows {max_bytes}")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidRequest(
            f"{tag} {value!r}: the {what} is {len(value)} characters long; {engine} allows {max_chars}"
        )
    units = len(value.encode("utf-16-le")) // 2  # a character outside the BMP counts two
    if max_utf16_units is not None and units > max_utf16_units:
        raise InvalidRequest(
            f"{tag} {value!r}: the {what} is {units} UTF-16 code units long; {engine} allows {max_utf16_units}"
        )


@dataclass(frozen=True)
class NameRule:
    """How long an engine's names may be, in the unit the engine counts (see ``check_name``)."""

    engine: str
    max_bytes: int | None = None
    max_chars: int | None = None
    max_utf16_units: int | None = None

    def check(self, value: str, *, what: str, tag: str) -> None:
        """Raises InvalidRequest naming ``tag`` when ``value`` cannot be such a name."""
        check_name(
            value,
            what=what,
            tag=tag,
            engine=self.engine,
            max_bytes=self.max_bytes,
            max_chars=self.max_chars,
            max_utf16_units=self.max_utf16_units,
        )


@dataclass(frozen=True)
class ProviderFormat:
    """One engine's ``rotation-provider``: its default port, an example, its database names."""

    default_port: int
    example: str
    database: NameRule

    def parse(self, value: str, *, tag: str = "rotation-provider") -> Provider:
        """Raises InvalidRequest naming ``tag`` when ``value`` is not ``host[:port]/database``."""
        return parse_provider(
            value,
            default_port=self.default_port,
            example=self.example,
            check_database=lambda name, tag: self.database.check(name, what="database", tag=tag),
            tag=tag,
        )
