"""The values of ``rotation-format`` consumed the way consumers consume them: by the real client
libraries, against the project's real throwaway servers.

What is real: the format modules; PostgreSQL (``PostgresCluster``, TLS on, SCRAM) and MariaDB
(``MariaDBServer``, TLS required); libpq inside psycopg (``psycopg.connect(conninfo)`` and its
conninfo parser ``PQconninfoParse``), the ``psql`` client given the string as its ``-d``;
``urllib.parse`` as a consumer's own URI parser, PyMySQL and the ``mariadb`` client given the
parts it found; ``json`` and both drivers for the JSON values. Each login has a hostile name and
a hostile password, and logs in to a database with a hostile name; a value with the password
changed by one character is refused, so a login that works says something.

What stands in: SQL Server. No SQL Server runs here and no ADO.NET runtime either, so ADO.NET
strings are read by ``dotnet_rules_parse`` below: an independent implementation of the rules
written in this file from Microsoft's documentation ("Connection Strings in ADO.NET",
connection string syntax) and from the regular expression .NET keeps beside its parser as the
grammar the parser must agree with (``ConnectionStringPattern`` in
``System.Data.Common.DbConnectionOptions``). The module's own reader is a port of .NET's
character-by-character parser instead, and the two are checked against each other on random
strings, as .NET's debug builds check theirs.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import unicodedata
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest
from psycopg.conninfo import conninfo_to_dict

from local.databases.mariadb import MariaDBServer
from local.databases.postgresql import PostgresCluster
from rotation.errors import InvalidRequest
from rotation.formats import Endpoint, LoginValue, value_format
from rotation.formats.connection_string import adonet_pairs, libpq_pairs
from rotation.targets.base import SecretValue

PASSWORDS = [
    "'quote at both ends'",
    "\\ back\\slash \\' and quote ' \\",
    "p\"';={}@:/?#%&+ é✓😀 ",
    " leading and trailing spaces ",
    "%41%zz%%2F@[::1]",
    "semi;colon=equals;User ID=other;password='x' user=other",
]


def hostile_name(prefix: str) -> str:
    """A name with the characters each syntax treats specially, unique per run."""
    return f"{prefix}{uuid.uuid4().hex[:6]} o'b\"r\\;= {{x}}@:/?#%+ é✓"


def changed(password: str) -> str:
    return password[:-1] + ("x" if password[-1] != "x" else "y")


def build(name: str, endpoint: Endpoint, login: str, password: str) -> str:
    return value_format(name).build(LoginValue(login, SecretValue(password)), endpoint).reveal()


# -- PostgreSQL ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_login(postgres: PostgresCluster) -> tuple[str, str]:
    """A role with a hostile name owning a database with a hostile name; (role, database)."""
    login, database = hostile_name("fmt "), hostile_name("db ")
    assert len(login.encode()) <= 63
    assert len(database.encode()) <= 63
    postgres.create_login(login, None, database=database)
    return login, database


def set_pg_password(postgres: PostgresCluster, login: str, password: str) -> None:
    from rotation.targets import scram

    postgres.psql(
        "ALTER ROLE :\"role\" PASSWORD :'v';\n", variables={"role": login, "v": scram.verifier(password)}
    )


def psql_as(postgres: PostgresCluster, conninfo: str) -> subprocess.CompletedProcess[str]:
    """``psql -d <conninfo>``: psql hands the string to libpq as it is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "10"
    return subprocess.run(
        [
            str(postgres.bindir / "psql"),
            "-X",
            "-At",
            "-d",
            conninfo,
            "-c",
            "SELECT current_user, current_database()",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("password", PASSWORDS)
def test_libpq_reads_the_postgresql_connection_string(
    postgres: PostgresCluster, pg_login: tuple[str, str], password: str
) -> None:
    login, database = pg_login
    set_pg_password(postgres, login, password)
    endpoint = Endpoint("postgresql", postgres.host, postgres.port, database)
    conninfo = build("connection-string", endpoint, login, password)

    # libpq's own parser finds exactly the parts ...
    assert conninfo_to_dict(conninfo) == {
        "host": postgres.host,
        "port": str(postgres.port),
        "dbname": database,
        "user": login,
        "password": password,
        "sslmode": "require",
    }
    # ... psycopg logs in with the string as it is ...
    with psycopg.connect(conninfo, connect_timeout=10) as connection:
        row = connection.execute(
            "SELECT current_user, current_database(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert row == (login, database, True)
    # ... and so does psql.
    result = psql_as(postgres, conninfo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{login}|{database}\n"

    wrong = build("connection-string", endpoint, login, changed(password))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=10)
    assert psql_as(postgres, wrong).returncode != 0


@pytest.mark.parametrize("password", PASSWORDS[:3])
def test_the_json_fields_log_in_to_postgresql(
    postgres: PostgresCluster, pg_login: tuple[str, str], password: str
) -> None:
    login, database = pg_login
    set_pg_password(postgres, login, password)
    endpoint = Endpoint("postgresql", postgres.host, postgres.port, database)
    document = json.loads(build("json", endpoint, login, password))
    assert document["engine"] == "postgres"

    with psycopg.connect(
        host=document["host"],
        port=document["port"],
        user=document["username"],
        password=document["password"],
        dbname=document["dbname"],
        sslmode="require",
        connect_timeout=10,
    ) as connection:
        assert connection.execute("SELECT current_user, current_database()").fetchone() == (login, database)
    # psql too. (Not into the hostile database: PostgresCluster.can_login hands the name to
    # psql's -d, which reads a name holding "=" as a connection string.)
    assert postgres.can_login(document["username"], document["password"])
    assert not postgres.can_login(document["username"], changed(document["password"]))


LIBPQ_KEYWORDS = {"user", "password", "dbname", "host"}
LIBPQ_TOKENS = [
    "user",
    "password",
    "dbname",
    "host",
    "=",
    "=",
    " ",
    "  ",
    "\t",
    "\n",
    "'",
    "'",
    "\\",
    "\\",
    "a",
    "b",
    "é",
    "✓",
    ";",
    '"',
]


def test_the_module_reads_keyword_value_strings_as_libpq_does() -> None:
    """Differential: on random strings over libpq's syntax characters, the module's reader and
    libpq's PQconninfoParse agree on failure, or on every keyword's (last) value."""
    rng = random.Random(7)
    agreed = refused = unknown = 0
    for _ in range(20_000):
        text = "".join(rng.choice(LIBPQ_TOKENS) for _ in range(rng.randint(0, 14)))
        try:
            expected: dict[str, Any] | None = conninfo_to_dict(text)
        except psycopg.ProgrammingError:
            expected = None
        try:
            ours: dict[str, str] | None = dict(libpq_pairs(text))
        except InvalidRequest:
            ours = None
        if ours is not None and not set(ours) <= LIBPQ_KEYWORDS:
            # The module reads past keywords libpq does not know; libpq refuses them.
            assert expected is None, repr(text)
            unknown += 1
            continue
        assert ours == expected, repr(text)
        agreed += expected is not None
        refused += expected is None
    # Every side of the grammar was exercised.
    assert agreed > 1000
    assert refused > 1000
    assert unknown > 1000


# -- MySQL (MariaDB) ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb_server() -> Iterator[MariaDBServer]:
    with MariaDBServer(disconnect_on_expired_password=True) as server:
        yield server


@pytest.fixture(scope="module")
def my_login(mariadb_server: MariaDBServer) -> tuple[str, str]:
    login, database = hostile_name("fmt "), hostile_name("db ")
    mariadb_server.create_login(login, None, database=database)
    return login, database


def set_my_password(server: MariaDBServer, login: str, password: str) -> None:
    from local.databases.mariadb import ACCOUNT_HOST, native_password_hash

    server.execute(
        "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s", (login, ACCOUNT_HOST, native_password_hash(password))
    )


def pymysql_login(
    server: MariaDBServer, *, host: str, port: int, user: str, password: str, database: str
) -> Any:
    """A PyMySQL login over TLS, verifying the certificate; (CURRENT_USER(), DATABASE())."""
    connection = pymysql.connect(
        host=host,
        port=port,
        user=user,
        password=password.encode(),  # the server hashed the UTF-8 bytes; PyMySQL would send Latin-1
        database=database,
        ssl_ca=str(server.ca_file),
        ssl_verify_identity=True,
        connect_timeout=10,
    )
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER(), DATABASE()")
        return cursor.fetchone()


def consumer_parse_uri(uri: str) -> dict[str, Any]:
    """What a consumer does with a ``mysql://`` URI: the standard library's parser, then
    percent-decoding of each part. Not the module's reader."""
    parts = urllib.parse.urlsplit(uri)
    assert parts.scheme == "mysql"
    assert parts.username is not None
    assert parts.password is not None
    return {
        "user": urllib.parse.unquote(parts.username, errors="strict"),
        "password": urllib.parse.unquote(parts.password, errors="strict"),
        "host": parts.hostname,
        "port": parts.port,
        "database": urllib.parse.unquote(parts.path.removeprefix("/"), errors="strict"),
        "query": urllib.parse.parse_qs(parts.query, strict_parsing=True),
    }


@pytest.mark.parametrize("password", PASSWORDS)
def test_clients_read_the_mysql_uri(
    mariadb_server: MariaDBServer, my_login: tuple[str, str], password: str
) -> None:
    login, database = my_login
    set_my_password(mariadb_server, login, password)
    endpoint = Endpoint("mysql", mariadb_server.host, mariadb_server.port, database)
    uri = build("connection-string", endpoint, login, password)

    parts = consumer_parse_uri(uri)
    assert parts == {
        "user": login,
        "password": password,
        "host": mariadb_server.host,
        "port": mariadb_server.port,
        "database": database,
        "query": {"ssl-mode": ["REQUIRED"]},
    }
    connect = {k: parts[k] for k in ("host", "port", "user", "password", "database")}
    assert pymysql_login(mariadb_server, **connect) == (f"{login}@%", database)
    assert mariadb_server.can_login(parts["user"], parts["password"], parts["database"])  # the mariadb client

    wrong = consumer_parse_uri(build("connection-string", endpoint, login, changed(password)))
    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql_login(
            mariadb_server, **{k: wrong[k] for k in ("host", "port", "user", "password", "database")}
        )
    assert refused.value.args[0] == 1045
    assert not mariadb_server.can_login(wrong["user"], wrong["password"], wrong["database"])


@pytest.mark.parametrize("password", PASSWORDS[:3])
def test_the_json_fields_log_in_to_mariadb(
    mariadb_server: MariaDBServer, my_login: tuple[str, str], password: str
) -> None:
    login, database = my_login
    set_my_password(mariadb_server, login, password)
    endpoint = Endpoint("mysql", mariadb_server.host, mariadb_server.port, database)
    document = json.loads(build("json", endpoint, login, password))
    assert document["engine"] == "mysql"
    assert pymysql_login(
        mariadb_server,
        host=document["host"],
        port=document["port"],
        user=document["username"],
        password=document["password"],
        database=document["dbname"],
    ) == (f"{login}@%", database)
    assert mariadb_server.can_login(document["username"], document["password"], document["dbname"])


def test_a_consumer_reads_an_ipv6_mysql_uri() -> None:
    login, password, database = hostile_name("u "), PASSWORDS[2], hostile_name("d ")
    uri = build("connection-string", Endpoint("mysql", "2001:db8::1", 3307, database), login, password)
    parts = consumer_parse_uri(uri)
    assert (parts["host"], parts["port"]) == ("2001:db8::1", 3307)
    assert (parts["user"], parts["password"], parts["database"]) == (login, password, database)


# -- SQL Server: ADO.NET, read by an independent implementation of the rules ---------------------------

# .NET's \s: [\f\n\r\t\v\x85\p{Z}]; \p{Cc}: the C0 and C1 controls and DEL.
_Z = "".join(
    ch for ch in map(chr, range(sys.maxunicode + 1)) if unicodedata.category(ch) in ("Zs", "Zl", "Zp")
)
WS = re.escape("\f\n\r\t\v\x85" + _Z)
CC = "\\x00-\\x1f\\x7f-\\x9f"
# One key=value pair, as .NET's ConnectionStringPattern writes it.
_PAIR = re.compile(
    rf"[{WS};]*"
    rf"(?![{WS};])"
    rf"(?P<key>(?:[^={WS}{CC}]|[{WS}]+[^={WS}{CC}]|[{WS}]+==|==)+)"
    rf"[{WS}]*=(?!=)[{WS}]*"
    r"(?P<value>"
    r'"(?:[^"\x00]|"")*"'
    r"|'(?:[^'\x00]|'')*'"
    rf"|(?![\"'{WS}])(?:[^;{WS}{CC}]|[{WS}]+[^;{WS}{CC}])*(?<![\"'])"
    r")"
    rf"[{WS}]*(?:;|[\x00{WS}]*\Z)"
)
_END = re.compile(rf"[{WS};]*[\x00{WS}]*\Z")


def dotnet_rules_parse(text: str) -> dict[str, str | None] | None:
    """Keyword (lower case, ``==`` as ``=``) to value (quotes removed, doubled quotes single,
    empty as None), the last of a repeated keyword winning; None if ``text`` is not a
    connection string. Written from the documented rules, not from the module."""
    found: dict[str, str | None] = {}
    position = 0
    while not _END.match(text, position):
        match = _PAIR.match(text, position)
        if match is None or match.end() == position:
            return None
        value = match["value"]
        if value[:1] in ('"', "'"):
            value = value[1:-1].replace(value[0] * 2, value[0])
        found[match["key"].replace("==", "=").lower()] = value or None
        position = match.end()
    return found


@pytest.mark.parametrize(
    "password", [*PASSWORDS, 'only "double" quotes', "tab\tnew\nline", "ünï\xa0cødé\u2028"]
)
def test_adonet_strings_read_back_by_the_documented_rules(password: str) -> None:
    login, database = hostile_name("u "), hostile_name("d ")
    for host in ("db.example.com", "2001:db8::1"):
        text = build("connection-string", Endpoint("sqlserver", host, 1433, database), login, password)
        assert dotnet_rules_parse(text) == {
            "server": f"tcp:{host},1433",
            "database": database,
            "user id": login,
            "password": password,
            "encrypt": "True",
            "trustservercertificate": "False",
        }


ADONET_TOKENS = ["a", "b", "=", "=", ";", ";", " ", "\t", "'", "'", '"', '"', "é", "\x00", "\x01", "\xa0"]


def test_the_modules_adonet_reader_agrees_with_the_documented_grammar() -> None:
    """Differential: the module's port of .NET's state machine and the grammar above agree on
    failure or on every pair, over random strings of ADO.NET's syntax characters."""
    rng = random.Random(11)
    agreed = refused = 0
    for _ in range(30_000):
        text = "".join(rng.choice(ADONET_TOKENS) for _ in range(rng.randint(0, 12)))
        expected = dotnet_rules_parse(text)
        try:
            ours: dict[str, str | None] | None = dict(adonet_pairs(text))
        except InvalidRequest:
            ours = None
        assert ours == expected, repr(text)
        agreed += expected is not None
        refused += expected is None
    assert agreed > 1000
    assert refused > 1000
