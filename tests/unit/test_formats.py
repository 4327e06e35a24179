"""The secret value formats (tag ``rotation-format``), without a server or a client library.

What is real: every format module, its build and its parse. Round trips run over hand-picked
hostile values and a few thousand random ones (fixed seed) drawn from an alphabet of the
characters each syntax treats specially. What the real clients make of these texts is
tests/integration/test_formats_clients.py's part.
"""

from __future__ import annotations

import random
import re

import pytest

from rotation.errors import InvalidRequest
from rotation.formats import (
    DEFAULT_FORMAT,
    ENGINES,
    FORMATS,
    Endpoint,
    LoginValue,
    ValueFormat,
    value_format,
)
from rotation.formats.connection_string import adonet_pairs, libpq_pairs
from rotation.targets.base import SecretValue

ENDPOINTS = {
    "postgresql": Endpoint("postgresql", "db.example.com", 5432, "orders"),
    "mysql": Endpoint("mysql", "db.example.com", 3306, "orders"),
    "sqlserver": Endpoint("sqlserver", "db.example.com", 1433, "orders"),
}

HOSTILE = [
    "'",
    "''",
    '"',
    '""',
    "\\",
    "\\\\",
    "\\'",
    "'\\",
    "'start and end'",
    '"start and end"',
    " leading and trailing ",
    "semi;colon=equals",
    "a=b=c",
    "==",
    "{braces}}{",
    "user@host:port/path?query#fragment",
    "%",
    "%41%zz%",
    "%2F%40",
    "+plus+",
    "&amp;",
    "tab\there",
    "new\nline\r\n",
    "ünïcødé ✓ €",
    "emoji 😀 astral 𝔘",
    "nbsp\xa0nel\x85line\u2028sep",
    "combining e\u0301 and rtl \u05d0\u05d1",
    "ends with quote'",
    "'",
    "x'; DROP ROLE victim; --",
    'Password="x";User ID=other',
    "password='x' user=other",
    "u:p@evil.example.com",
    "all '\" \\ ; = { } @ : / ? # % ` & + ~ together",
]

# Each syntax's special characters, white space, a few non-ASCII ones.
ALPHABET = "ab \t\n'\"\\;={}@:/?#%&+~`[],.-_()<>!$*éü✓😀\xa0\x85\u2028"


def random_values(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24))) for _ in range(count)]


def round_trip(
    name: str, engine: str, login: str, password: str, *, endpoint: Endpoint | None = None
) -> None:
    fmt = value_format(name)
    where = endpoint or ENDPOINTS[engine]
    text = fmt.build(LoginValue(login, SecretValue(password)), where)
    back = fmt.parse(text, where, login=login if name == "password" else None)
    assert back.login == login
    assert back.password.reveal() == password


SELF_DESCRIBING = [(name, engine) for name in ("json", "connection-string") for engine in ENGINES]


# -- the registry -------------------------------------------------------------------------------------


def test_every_listed_format_is_registered_under_its_name() -> None:
    assert FORMATS == ("password", "json", "connection-string")
    assert DEFAULT_FORMAT == "password"
    for name in FORMATS:
        fmt: ValueFormat = value_format(name)
        assert fmt.name == name


@pytest.mark.parametrize("name", ["yaml", "", "JSON", "connection_string", "Password"])
def test_an_unknown_format_is_refused_naming_the_tag(name: str) -> None:
    with pytest.raises(InvalidRequest, match="rotation-format") as caught:
        value_format(name)
    assert repr(name) in str(caught.value)
    assert "password, json, connection-string" in str(caught.value)


# -- exact texts, so a reader sees each syntax -----------------------------------------------------


def build(name: str, engine: str, login: str = "app", password: str = "s3cret", **endpoint: object) -> str:
    where = ENDPOINTS[engine]
    if endpoint:
        where = Endpoint(
            engine,
            str(endpoint.get("host", where.host)),
            int(str(endpoint.get("port", where.port))),
            str(endpoint.get("database", where.database)),
        )
    return value_format(name).build(LoginValue(login, SecretValue(password)), where).reveal()


def test_password_is_the_password_alone() -> None:
    for engine in ENGINES:
        assert build("password", engine) == "s3cret"


def test_json_is_aws_secrets_managers_shape() -> None:
    assert build("json", "postgresql") == (
        '{"engine": "postgres", "host": "db.example.com", "port": 5432, '
        '"username": "app", "password": "s3cret", "dbname": "orders", "database": "orders"}'
    )
    assert build("json", "mysql").startswith('{"engine": "mysql", ')
    assert build("json", "sqlserver").startswith('{"engine": "sqlserver", ')
    # Non-ASCII characters stay readable; JSON's own escapes for quotes, backslashes, controls.
    assert '"password": "it\'s \\"é\\" \\\\ \\n"' in build("json", "mysql", password='it\'s "é" \\ \n')


def test_postgresql_connection_string_is_libpq_keyword_value() -> None:
    assert build("connection-string", "postgresql") == (
        "host='db.example.com' port=5432 dbname='orders' user='app' password='s3cret' sslmode=require"
    )
    assert build("connection-string", "postgresql", password="it's a \\ test") == (
        "host='db.example.com' port=5432 dbname='orders' user='app' password='it\\'s a \\\\ test' sslmode=require"
    )
    assert build("connection-string", "postgresql", host="2001:db8::1", database="") == (
        "host='2001:db8::1' port=5432 user='app' password='s3cret' sslmode=require"
    )


def test_mysql_connection_string_is_a_percent_encoded_uri() -> None:
    assert (
        build("connection-string", "mysql")
        == "mysql://app:s3cret@db.example.com:3306/orders?ssl-mode=REQUIRED"
    )
    assert build("connection-string", "mysql", login="a@b", password="p:w/d?#% é", database="my db/x") == (
        "mysql://a%40b:p%3Aw%2Fd%3F%23%25%20%C3%A9@db.example.com:3306/my%20db%2Fx?ssl-mode=REQUIRED"
    )
    assert build("connection-string", "mysql", host="2001:db8::1", port=3307, database="") == (
        "mysql://app:s3cret@[2001:db8::1]:3307?ssl-mode=REQUIRED"
    )
    # Unreserved characters stay as they are.
    assert "mysql://a-b.c_d~e:" in build("connection-string", "mysql", login="a-b.c_d~e")


def test_sqlserver_connection_string_is_adonet() -> None:
    assert build("connection-string", "sqlserver") == (
        "Server=tcp:db.example.com,1433;Database=orders;User ID=app;Password=s3cret;"
        "Encrypt=True;TrustServerCertificate=False;"
    )
    # Bare unless it must be quoted; single quotes around a value with " only; else double
    # quotes with " doubled.
    cases = {
        "plain{}@:/?#%": "plain{}@:/?#%",
        "semi;colon": '"semi;colon"',
        "a=b": '"a=b"',
        " spaced ": '" spaced "',
        "it's": '"it\'s"',
        'say "hi"': "'say \"hi\"'",
        'it\'s "both"': '"it\'s ""both"""',
        "tab\tnew\nline": '"tab\tnew\nline"',
    }
    for password, quoted in cases.items():
        assert f";Password={quoted};" in build("connection-string", "sqlserver", password=password)
    assert build("connection-string", "sqlserver", host="2001:db8::1", database="").startswith(
        "Server=tcp:2001:db8::1,1433;User ID=app;"
    )


# -- round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "engine"), SELF_DESCRIBING)
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_logins_and_passwords_round_trip(name: str, engine: str, value: str) -> None:
    round_trip(name, engine, "app", value)
    round_trip(name, engine, value, "s3cret")
    round_trip(name, engine, value, value[::-1])
    round_trip(name, engine, value, value, endpoint=Endpoint(engine, "2001:db8::1", 1, value))


@pytest.mark.parametrize("value", HOSTILE)
def test_the_password_format_round_trips_with_the_tagged_login(value: str) -> None:
    for engine in ENGINES:
        round_trip("password", engine, "app", value)


@pytest.mark.parametrize(("name", "engine"), SELF_DESCRIBING)
def test_random_values_round_trip(name: str, engine: str) -> None:
    logins = random_values(2000, seed=1)
    passwords = random_values(2000, seed=2)
    databases = random_values(2000, seed=3)
    for login, password, database in zip(logins, passwords, databases, strict=True):
        round_trip(name, engine, login, password, endpoint=Endpoint(engine, "db.example.com", 1, database))


def test_parse_returns_the_login_the_value_names_not_the_tagged_one() -> None:
    for name, engine in SELF_DESCRIBING:
        fmt = value_format(name)
        text = fmt.build(LoginValue("blue", SecretValue("pw")), ENDPOINTS[engine])
        assert fmt.parse(text, ENDPOINTS[engine], login="green").login == "blue"


def test_the_password_stays_hidden_in_reprs() -> None:
    value = LoginValue("app", SecretValue("s3cret-Zq9X"))
    assert "s3cret" not in repr(value)
    for name, engine in SELF_DESCRIBING:
        assert "s3cret" not in repr(
            value_format(name).parse(
                value_format(name).build(value, ENDPOINTS[engine]), ENDPOINTS[engine], login=None
            )
        )


# -- reading values written by others --------------------------------------------------------------------


def parse(name: str, engine: str, text: str, login: str | None = None) -> tuple[str, str]:
    back = value_format(name).parse(SecretValue(text), ENDPOINTS[engine], login=login)
    return back.login, back.password.reveal()


def test_json_written_by_others() -> None:
    assert parse(
        "json", "mysql", ' {"password": "p", "username": "u", "port": "3306", "masterarn": "arn:x"}\n'
    ) == ("u", "p")
    assert parse("json", "mysql", '{"username": "\\u00fc", "password": "\\ud83d\\ude00"}') == ("ü", "😀")


def test_libpq_written_by_others() -> None:
    assert parse("connection-string", "postgresql", "user=u password=p") == ("u", "p")
    # Unquoted values with backslash escapes, spaces around "=", no space after a quoted value,
    # the last of a repeated keyword.
    assert parse("connection-string", "postgresql", "user = a\\ b  password=c\\'d") == ("a b", "c'd")
    assert parse("connection-string", "postgresql", "user='u'password='p' sslmode=require") == ("u", "p")
    assert parse("connection-string", "postgresql", "user=x user=u password=y password=p") == ("u", "p")
    assert libpq_pairs("a= b=c") == [("a", "b=c")]  # as libpq: the value after "= " is "b=c"


def test_mysql_uri_written_by_others() -> None:
    assert parse("connection-string", "mysql", "MySQL://u:p@h") == ("u", "p")
    assert parse("connection-string", "mysql", "mysql://u%2a:%C3%BC%2f@[::1]:3306/db?x=1#f") == ("u*", "ü/")
    # The user information ends at the last "@", the user at the first ":".
    assert parse("connection-string", "mysql", "mysql://u:p@q:r@h/db") == ("u", "p@q:r")


def test_adonet_written_by_others() -> None:
    assert parse("connection-string", "sqlserver", "uid=u;PWD=p") == ("u", "p")
    assert parse("connection-string", "sqlserver", "  USER = u ; Password = ' p ' ; ") == ("u", " p ")
    # The last of a keyword and its synonyms wins; "==" in a keyword is "=".
    assert parse("connection-string", "sqlserver", "User ID=a;User=u;Password=x;pwd=p;a==b=c") == ("u", "p")
    assert ("a=b", "c") in adonet_pairs("a==b=c")
    assert parse("connection-string", "sqlserver", "User Id=\"u\"\"v\";Password='p''q'") == ('u"v', "p'q")
    # Unquoted values may hold quotes and "=" inside; they are trimmed.
    assert parse("connection-string", "sqlserver", "User ID= no 'escaping' here ;Password=a=b=c") == (
        "no 'escaping' here",
        "a=b=c",
    )
    # But not end with a quote: .NET's parser refuses that (Microsoft's page shows such an
    # example, Keyword=no "escaping" 'required'; which .NET itself refuses).
    with pytest.raises(InvalidRequest, match="rotation-format"):
        adonet_pairs("User ID=u;Password=no 'escaping'")


# -- errors: they name the tag and never show the value --------------------------------------------------

SECRET = "Zq9Xk7Wv"

MALFORMED = [
    ("json", "postgresql", f"not json {SECRET}"),
    ("json", "postgresql", f'["{SECRET}"]'),
    ("json", "postgresql", f'"{SECRET}"'),
    ("json", "postgresql", f'{{"username": "{SECRET}"}}'),
    ("json", "postgresql", f'{{"password": "{SECRET}"}}'),
    ("json", "postgresql", f'{{"username": "u", "password": ["{SECRET}"]}}'),
    ("json", "postgresql", f'{{"username": "u", "password": "{SECRET}", "password": "{SECRET}2"}}'),
    ("json", "postgresql", f'{{"username": "", "password": "{SECRET}"}}'),
    ("json", "postgresql", f'{{"username": "u", "password": "{SECRET}\\ud800x"}}'),
    ("json", "postgresql", "[" * 100_000 + SECRET),
    ("connection-string", "postgresql", f"user=u password='{SECRET}"),
    ("connection-string", "postgresql", f"user=u {SECRET}"),
    ("connection-string", "postgresql", f"user=u ={SECRET}"),
    ("connection-string", "postgresql", f"user={SECRET}"),
    ("connection-string", "postgresql", f"password={SECRET}"),
    ("connection-string", "postgresql", f"user=u password=''{SECRET}=x"),
    ("connection-string", "postgresql", f"postgresql://u:{SECRET}@h/db"),
    ("connection-string", "mysql", f"http://u:{SECRET}@h"),
    ("connection-string", "mysql", f"mysql://{SECRET}@h"),
    ("connection-string", "mysql", f"mysql://h/{SECRET}"),
    ("connection-string", "mysql", f"mysql://u:{SECRET}%zz@h"),
    ("connection-string", "mysql", f"mysql://u:{SECRET}%ff%fe@h"),
    ("connection-string", "mysql", f"mysql://{SECRET}%c3:p@h"),
    ("connection-string", "mysql", f"mysql://{SECRET}:@h"),
    ("connection-string", "mysql", f"mysql://:{SECRET}@h"),
    ("connection-string", "sqlserver", f"User ID=u;Password='{SECRET}"),
    ("connection-string", "sqlserver", f"User ID=u;Password={SECRET}'"),
    ("connection-string", "sqlserver", f'User ID=u;Password="{SECRET}"x'),
    ("connection-string", "sqlserver", f"User ID=u;{SECRET}"),
    ("connection-string", "sqlserver", f"User ID=u;Password=\x01{SECRET}"),
    ("connection-string", "sqlserver", f"User ID=u;\x01Password={SECRET}"),
    ("connection-string", "sqlserver", f"User ID={SECRET}"),
    ("connection-string", "sqlserver", f"Password={SECRET}"),
    ("connection-string", "sqlserver", f"User ID={SECRET};Password=;"),
    ("connection-string", "sqlserver", f"User ID={SECRET};Password=''"),
]


def assert_hides(error: InvalidRequest, secret: str) -> None:
    message = str(error)
    assert "rotation-format" in message
    for size in range(4, len(secret) + 1):
        for start in range(len(secret) - size + 1):
            assert secret[start : start + size] not in message, message
    # Raised outside any handler: no parser exception (whose text may echo the value) rides along.
    assert error.__cause__ is None
    assert error.__context__ is None


@pytest.mark.parametrize(("name", "engine", "text"), MALFORMED)
def test_malformed_values_are_refused_without_showing_them(name: str, engine: str, text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(name, engine, text, login="u")
    assert_hides(caught.value, SECRET)
    assert f"'{name}'" in str(caught.value)


def test_errors_say_what_is_wrong() -> None:
    expectations = [
        ("json", "postgresql", "{", "not JSON"),
        ("json", "postgresql", "[]", "JSON array, not an object"),
        ("json", "postgresql", '{"username": "u"}', "'password' is missing"),
        ("json", "postgresql", '{"username": "u", "password": 1}', "'password' is a JSON number"),
        ("json", "postgresql", '{"username": "u", "password": "a", "password": "b"}', "more than once"),
        ("connection-string", "postgresql", "user=u password='x", "quoted value is not closed"),
        ("connection-string", "postgresql", "password=x", "names no login (keyword user)"),
        ("connection-string", "postgresql", "user=u", "holds no password (keyword password)"),
        ("connection-string", "postgresql", "postgresql://u@h", "PostgreSQL URI"),
        ("connection-string", "mysql", "mysql://h", "names no login"),
        ("connection-string", "mysql", "mysql://u@h", "holds no password"),
        ("connection-string", "mysql", "mysqlx://u:p@h", "does not start with mysql://"),
        ("connection-string", "mysql", "mysql://u:%zz@h", "not valid percent-encoded UTF-8"),
        ("connection-string", "sqlserver", "User ID=u;Password='x", "quotes unbalanced"),
        ("connection-string", "sqlserver", "User ID=u", "holds no password (keyword Password)"),
        ("connection-string", "sqlserver", "Password=p", "names no login (keyword User ID)"),
    ]
    for name, engine, text, expected in expectations:
        with pytest.raises(InvalidRequest, match=re.escape(expected)):
            parse(name, engine, text)


def test_the_password_format_needs_the_tagged_login() -> None:
    with pytest.raises(
        InvalidRequest,
        match=r"^\[permanent\] InvalidRequest: rotation-format 'password' does not say which login",
    ) as caught:
        parse("password", "postgresql", SECRET, login=None)
    assert_hides(caught.value, SECRET)


@pytest.mark.parametrize(("name", "engine"), SELF_DESCRIBING)
def test_values_no_format_can_carry_are_refused_without_showing_them(name: str, engine: str) -> None:
    fmt = value_format(name)
    where = ENDPOINTS[engine]
    cases = [
        (LoginValue("", SecretValue(SECRET)), "the login is empty"),
        (LoginValue(SECRET, SecretValue("")), "the password is empty"),
        (LoginValue("app", SecretValue(SECRET + "\ud800")), "lone surrogate"),
        (LoginValue(SECRET + "\udfff", SecretValue("pw")), "lone surrogate"),
    ]
    if name == "connection-string":
        cases.append((LoginValue("app", SecretValue(SECRET + "\x00")), "NUL"))
        cases.append((LoginValue(SECRET + "\x00", SecretValue("pw")), "NUL"))
    for value, expected in cases:
        with pytest.raises(InvalidRequest, match=expected) as caught:
            fmt.build(value, where)
        assert_hides(caught.value, SECRET)
    if name == "json":  # JSON carries NUL characters
        round_trip(name, engine, "a\x00b", "c\x00d")


@pytest.mark.parametrize(
    ("engine", "host", "port", "expected"),
    [
        ("oracle", "h", 1, "engine 'oracle'"),
        ("mysql", "[::1]", 1, "host"),
        ("mysql", "a;b", 1, "host"),
        ("mysql", "fe80::1%eth0", 1, "host"),
        ("mysql", "1:2", 1, "host"),
        ("mysql", "", 1, "host"),
        ("mysql", "h", 0, "port"),
        ("mysql", "h", 65536, "port"),
    ],
)
def test_an_endpoint_holds_only_what_a_provider_tag_allows(
    engine: str, host: str, port: int, expected: str
) -> None:
    with pytest.raises(InvalidRequest, match=expected):
        Endpoint(engine, host, port, "db")
