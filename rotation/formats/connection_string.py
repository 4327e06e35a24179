"""``rotation-format: connection-string``: the value is a connection string in the engine's own
syntax, ready to hand to its client. Every value in it is quoted or encoded by that syntax's
rules, so any login, password or database name comes back exactly as it went in.

**PostgreSQL**, libpq keyword/value (PostgreSQL documentation, "Connection Strings", 34.1.1.1
Keyword/Value Connection Strings; ``conninfo_parse`` in libpq's ``fe-connect.c``)::

    host='db.example.com' port=5432 dbname='orders' user='app' password='...' sslmode=require

Every text value is in single quotes, with ``\\`` and ``'`` preceded by a backslash: inside
quotes libpq takes the character after a backslash literally and ends the value at the first
unescaped ``'``. Read back by the same rules (unquoted values end at whitespace, a backslash
escapes the next character anywhere, the last of a repeated keyword wins). A ``postgresql://``
URI is not read: give keyword/value pairs.

**MySQL**, the URI-like string of MySQL Shell and the X DevAPI connectors (MySQL Reference
Manual, "Connecting to the Server Using URI-Like Strings or Key-Value Pairs")::

    mysql://app:...@db.example.com:3306/orders?ssl-mode=REQUIRED

User, password and database are percent-encoded (UTF-8) except for RFC 3986's unreserved
characters ``A-Z a-z 0-9 - . _ ~``, so ``@ : / ? # % [ ]`` and the rest are data; an IPv6 host is
in brackets. Read back: the authority ends at the first ``/``, ``?`` or ``#``, the user
information at its last ``@``, the user at the first ``:``; a ``%`` not followed by two hex
digits, or bytes that are not UTF-8, are refused.

**SQL Server**, an ADO.NET connection string (Microsoft, "Connection Strings in ADO.NET",
connection string syntax; ``DbConnectionStringBuilder.AppendKeyValuePair`` and
``DbConnectionOptions.GetKeyValuePair`` in .NET's ``System.Data.Common``)::

    Server=tcp:db.example.com,1433;Database=orders;User ID=app;Password=...;Encrypt=True;TrustServerCertificate=False;

A value is written bare when it holds none of ``" ' = ;``, whitespace or control characters
(.NET's own test); else in single quotes when it holds ``"`` but no ``'``; else in double quotes
with each ``"`` doubled. ``Server=tcp:<host>,<port>``: SqlClient takes the protocol up to the
first colon and the port after the comma, so an IPv6 address goes in bare. Read back as .NET
does: keywords are case-insensitive, ``==`` in a keyword is ``=``, unquoted values are trimmed,
quoted ones kept whole, the last of a repeated keyword wins; ``User ID``, ``UID`` and ``User``
name the login, ``Password`` and ``PWD`` the password.

NUL characters are refused in every part: each of these syntaxes ends up in C strings or
refuses them.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Callable

from rotation.formats import Endpoint, LoginValue, check_login_value, format_error
from rotation.targets.base import SecretValue

NAME = "connection-string"


class ConnectionStringFormat:
    name = NAME

    def build(self, value: LoginValue, endpoint: Endpoint) -> SecretValue:
        check_login_value(self.name, value, endpoint, allow_nul=False)
        return SecretValue(_BUILDERS[endpoint.engine](value.login, value.password.reveal(), endpoint))

    def parse(self, text: SecretValue, endpoint: Endpoint, *, login: str | None) -> LoginValue:
        found_login, found_password = _PARSERS[endpoint.engine](text.reveal())
        return LoginValue(login=found_login, password=SecretValue(found_password))


FORMAT = ConnectionStringFormat()


def _error(syntax: str, what: str) -> Exception:
    return format_error(NAME, f"{what} ({syntax})")


def _found(
    syntax: str, login: str | None, password: str | None, login_key: str, password_key: str
) -> tuple[str, str]:
    if login is None:
        raise _error(syntax, f"the value names no login (keyword {login_key})")
    if not login:
        raise _error(syntax, f"the login is empty (keyword {login_key})")
    if password is None:
        raise _error(syntax, f"the value holds no password (keyword {password_key})")
    if not password:
        raise _error(syntax, f"the password is empty (keyword {password_key})")
    return login, password


# -- PostgreSQL: libpq keyword/value ---------------------------------------------------------------

LIBPQ = "PostgreSQL libpq keyword/value"
# libpq tests with isspace() on bytes; in the C locale these are the white space characters.
_LIBPQ_SPACE = frozenset(" \t\n\v\f\r")


def libpq_quote(text: str) -> str:
    """``text`` as a libpq keyword/value value: in single quotes, ``\\`` and ``'`` escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _libpq_build(login: str, password: str, endpoint: Endpoint) -> str:
    parts = [f"host={libpq_quote(endpoint.host)}", f"port={endpoint.port}"]
    if endpoint.database:
        parts.append(f"dbname={libpq_quote(endpoint.database)}")
    parts += [f"user={libpq_quote(login)}", f"password={libpq_quote(password)}", "sslmode=require"]
    return " ".join(parts)


def libpq_pairs(text: str) -> list[tuple[str, str]]:
    """The keyword/value pairs of ``text``, by the rules of libpq's ``conninfo_parse``.

    Raises:
        InvalidRequest: ``text`` is not keyword/value pairs; the message shows none of it.
    """
    if re.match(r"\s*postgres(?:ql)?://", text, re.IGNORECASE):
        raise _error(LIBPQ, "the value is a PostgreSQL URI; write it as keyword/value pairs")
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in _LIBPQ_SPACE:
            i += 1
            continue
        start = i
        while i < n and text[i] != "=" and text[i] not in _LIBPQ_SPACE:
            i += 1
        keyword = text[start:i]
        while i < n and text[i] in _LIBPQ_SPACE:
            i += 1
        if i >= n or text[i] != "=":
            raise _error(LIBPQ, 'a keyword is not followed by "="')
        if not keyword:
            raise _error(LIBPQ, 'an "=" has no keyword before it')
        i += 1
        while i < n and text[i] in _LIBPQ_SPACE:
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise _error(LIBPQ, "a quoted value is not closed")
                if text[i] == "\\":
                    i += 1
                    if i < n:
                        value.append(text[i])
                        i += 1
                    continue
                if text[i] == "'":
                    i += 1
                    break
                value.append(text[i])
                i += 1
        else:
            while i < n:
                if text[i] in _LIBPQ_SPACE:
                    i += 1
                    break
                if text[i] == "\\":
                    i += 1
                    if i < n:
                        value.append(text[i])
                        i += 1
                    continue
                value.append(text[i])
                i += 1
        pairs.append((keyword, "".join(value)))
    return pairs


def _libpq_parse(text: str) -> tuple[str, str]:
    found = dict(libpq_pairs(text))  # the last of a repeated keyword wins, as in libpq
    return _found(LIBPQ, found.get("user"), found.get("password"), "user", "password")


# -- MySQL: URI-like string --------------------------------------------------------------------------

MYSQL_URI = "MySQL URI mysql://user:password@host:port/database"
_SCHEME = "mysql://"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def uri_quote(text: str) -> str:
    """``text`` percent-encoded as UTF-8, all but RFC 3986's unreserved characters."""
    return urllib.parse.quote(text, safe="")


def _mysql_build(login: str, password: str, endpoint: Endpoint) -> str:
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    path = f"/{uri_quote(endpoint.database)}" if endpoint.database else ""
    return f"{_SCHEME}{uri_quote(login)}:{uri_quote(password)}@{host}:{endpoint.port}{path}?ssl-mode=REQUIRED"


def _uri_unquote(text: str) -> str | None:
    """Strict percent-decoding: None for a stray ``%`` or bytes that are not UTF-8."""
    if _BAD_PERCENT.search(text):
        return None
    raw = urllib.parse.unquote_to_bytes(text)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None  # the error is raised by the caller, outside this block: its text shows bytes


def _mysql_parse(text: str) -> tuple[str, str]:
    if text[: len(_SCHEME)].lower() != _SCHEME:
        raise _error(MYSQL_URI, f"the value does not start with {_SCHEME}")
    rest = text[len(_SCHEME) :]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, _host = authority.rpartition("@")
    if not at:
        raise _error(MYSQL_URI, "the value names no login (no user@ before the host)")
    encoded_login, colon, encoded_password = userinfo.partition(":")
    login = _uri_unquote(encoded_login)
    if login is None:
        raise _error(MYSQL_URI, "the login is not valid percent-encoded UTF-8")
    password = _uri_unquote(encoded_password) if colon else None
    if colon and password is None:
        raise _error(MYSQL_URI, "the password is not valid percent-encoded UTF-8")
    return _found(MYSQL_URI, login, password, "user", "password")


# -- SQL Server: ADO.NET -------------------------------------------------------------------------------

ADONET = "SQL Server ADO.NET"
_ADONET_LOGIN_KEYS = ("user id", "uid", "user")
_ADONET_PASSWORD_KEYS = ("password", "pwd")
# .NET's char.IsWhiteSpace: the Unicode separators, TAB to CR, NEL and NBSP.
_DOTNET_SPACE_CHARACTERS = frozenset("\t\n\v\f\r\x85\xa0")


def _dotnet_space(ch: str) -> bool:
    return ch in _DOTNET_SPACE_CHARACTERS or unicodedata.category(ch) in ("Zs", "Zl", "Zp")


def _dotnet_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def adonet_quote(text: str) -> str:
    """``text`` as an ADO.NET value, quoted as .NET's ``DbConnectionStringBuilder`` quotes it."""
    if all(ch not in "\"'=;" and not _dotnet_space(ch) and not _dotnet_control(ch) for ch in text):
        return text
    if '"' in text and "'" not in text:
        return "'" + text + "'"
    return '"' + text.replace('"', '""') + '"'


def _adonet_build(login: str, password: str, endpoint: Endpoint) -> str:
    parts = [f"Server=tcp:{endpoint.host},{endpoint.port}"]
    if endpoint.database:
        parts.append(f"Database={adonet_quote(endpoint.database)}")
    parts += [
        f"User ID={adonet_quote(login)}",
        f"Password={adonet_quote(password)}",
        "Encrypt=True",
        "TrustServerCertificate=False",
    ]
    return "".join(part + ";" for part in parts)


# The states of .NET's GetKeyValuePair.
_NOTHING, _KEY, _KEY_EQUAL, _KEY_END, _UNQUOTED = range(5)
_DOUBLE, _DOUBLE_QUOTE, _SINGLE, _SINGLE_QUOTE, _QUOTED_END, _NUL_END = range(5, 11)


def adonet_pairs(text: str) -> list[tuple[str, str | None]]:
    """The (lower-case keyword, value) pairs of ``text``, parsed as .NET's ``GetKeyValuePair``
    parses a connection string; an empty value is None, as there.

    Raises:
        InvalidRequest: ``text`` is not an ADO.NET connection string; the message shows none of it.
    """
    pairs: list[tuple[str, str | None]] = []
    position = 0
    while position < len(text):
        keyword, value, position = _adonet_pair(text, position)
        if not keyword:
            break
        pairs.append((keyword, value))
    return pairs


def _adonet_pair(text: str, position: int) -> tuple[str | None, str | None, int]:
    def syntax() -> Exception:
        return _error(ADONET, "the value is not keyword=value pairs separated by ';' (quotes unbalanced?)")

    state = _NOTHING
    buffer: list[str] = []
    keyword: str | None = None
    value: str | None = None
    ch = "\x00"
    stopped = False
    n = len(text)
    while position < n:
        ch = text[position]
        append = True
        if state == _NOTHING:
            if ch == ";" or _dotnet_space(ch):
                append = False
            elif ch == "\x00":
                state, append = _NUL_END, False
            elif _dotnet_control(ch):
                raise syntax()
            elif ch == "=":
                state, append = _KEY_EQUAL, False
            else:
                state = _KEY
        elif state == _KEY:
            if ch == "=":
                state, append = _KEY_EQUAL, False
            elif not _dotnet_space(ch) and _dotnet_control(ch):
                raise syntax()
        elif state == _KEY_EQUAL and ch == "=":
            state = _KEY  # "==" in a keyword is one "="
        elif state in (_KEY_EQUAL, _KEY_END):
            if state == _KEY_EQUAL:
                keyword = _keyword(buffer)
                if not keyword:
                    raise syntax()
                buffer = []
                state = _KEY_END
            if _dotnet_space(ch):
                append = False
            elif ch == "'":
                state, append = _SINGLE, False
            elif ch == '"':
                state, append = _DOUBLE, False
            elif ch in ";\x00":
                stopped = True
            elif _dotnet_control(ch):
                raise syntax()
            else:
                state = _UNQUOTED
        elif state == _UNQUOTED:
            if not _dotnet_space(ch) and (_dotnet_control(ch) or ch == ";"):
                stopped = True
        elif state in (_DOUBLE, _SINGLE):
            quote = '"' if state == _DOUBLE else "'"
            if ch == quote:
                state, append = (_DOUBLE_QUOTE if state == _DOUBLE else _SINGLE_QUOTE), False
            elif ch == "\x00":
                raise syntax()
        elif state in (_DOUBLE_QUOTE, _SINGLE_QUOTE):
            quote = '"' if state == _DOUBLE_QUOTE else "'"
            if ch == quote:
                state = _DOUBLE if state == _DOUBLE_QUOTE else _SINGLE  # a doubled quote is one
            else:
                value = "".join(buffer)
                state = _QUOTED_END
                append = False
                if ch == ";":
                    stopped = True
                elif ch == "\x00":
                    state = _NUL_END
                elif not _dotnet_space(ch):
                    raise syntax()
        elif state == _QUOTED_END:
            append = False
            if ch == ";":
                stopped = True
            elif ch == "\x00":
                state = _NUL_END
            elif not _dotnet_space(ch):
                raise syntax()
        elif state == _NUL_END:
            append = False
            if ch != "\x00" and not _dotnet_space(ch):
                raise syntax()
        if stopped:
            break
        if append:
            buffer.append(ch)
        position += 1

    if state in (_KEY, _DOUBLE, _SINGLE):
        raise syntax()
    if state == _KEY_EQUAL:
        keyword = _keyword(buffer)
        if not keyword:
            raise syntax()
    elif state == _UNQUOTED:
        value = _dotnet_trim("".join(buffer))
        if value and value[-1] in "'\"":
            raise syntax()  # an unquoted value must not end with a quote
    elif state in (_DOUBLE_QUOTE, _SINGLE_QUOTE, _QUOTED_END):
        value = "".join(buffer)
    if ch == ";" and position < n:
        position += 1
    return keyword, value or None, position


def _keyword(buffer: list[str]) -> str:
    return _dotnet_trim("".join(buffer)).lower()


def _dotnet_trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _dotnet_space(text[start]):
        start += 1
    while end > start and _dotnet_space(text[end - 1]):
        end -= 1
    return text[start:end]


def _adonet_parse(text: str) -> tuple[str, str]:
    login: str | None = None
    password: str | None = None
    # The last one wins, as in .NET; synonyms are one keyword there.
    for keyword, value in adonet_pairs(text):
        if keyword in _ADONET_LOGIN_KEYS:
            login = value or ""
        elif keyword in _ADONET_PASSWORD_KEYS:
            password = value or ""
    return _found(ADONET, login, password, "User ID", "Password")


_BUILDERS: dict[str, Callable[[str, str, Endpoint], str]] = {
    "postgresql": _libpq_build,
    "mysql": _mysql_build,
    "sqlserver": _adonet_build,
}
_PARSERS: dict[str, Callable[[str], tuple[str, str]]] = {
    "postgresql": _libpq_parse,
    "mysql": _mysql_parse,
    "sqlserver": _adonet_parse,
}
