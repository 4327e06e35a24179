"""The postgresql-login tags, checked without connecting, and the SCRAM verifier's form."""

from __future__ import annotations

import base64

import pytest

from rotation.errors import InvalidRequest, TargetError
from rotation.settings import Settings
from rotation.targets import target_type
from rotation.targets.base import AdminSpec, TargetSpec
from rotation.targets.logins import PasswordLogin
from rotation.targets.postgresql import TARGET_TYPE, Provider, check_role_name, parse_provider
from rotation.targets.scram import saslprep, verifier


def spec(
    provider: str = "db.example.com/app", credential: str = "app", admin: AdminSpec | None = None
) -> TargetSpec:
    return TargetSpec("postgresql-login", provider, credential, admin or AdminSpec("self"))


def test_registered_under_its_tag_value() -> None:
    assert target_type("postgresql-login") is TARGET_TYPE
    assert TARGET_TYPE.password_policy.length == 32


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("db.example.com/app", Provider("db.example.com", 5432, "app")),
        (
            "myserver.postgres.database.azure.com:6432/appdb",
            Provider("myserver.postgres.database.azure.com", 6432, "appdb"),
        ),
        ("127.0.0.1:5433/postgres", Provider("127.0.0.1", 5433, "postgres")),
        ("[::1]:5433/app", Provider("::1", 5433, "app")),
        ("[2001:db8::1]/app", Provider("2001:db8::1", 5432, "app")),
        ("localhost/my db;with {odd} 'chars'", Provider("localhost", 5432, "my db;with {odd} 'chars'")),
        ("host/a/b", Provider("host", 5432, "a/b")),
    ],
)
def test_valid_providers(value: str, expected: Provider) -> None:
    assert parse_provider(value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("db.example.com", "names no database"),
        ("db.example.com:5432", "names no database"),
        ("db.example.com/", "database is empty"),
        ("/app", "is not a host name"),
        ("postgresql://db.example.com/app", "is a URL"),
        ("Server=db;Database=app", "is not a host name"),
        (
            "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/x",
            "is not a host name",
        ),
        ("db_example.com/app", "is not a host name"),
        ("-db.example.com/app", "is not a host name"),
        ("db.example.com:0/app", "port '0'"),
        ("db.example.com:65536/app", "port '65536'"),
        ("db.example.com:abc/app", "port 'abc'"),
        ("db.example.com:/app", "port ''"),
        ("[not-ipv6]/app", "is not an IPv6 address"),
        # A scope id is free text that would reach the driver's connection parameters.
        ("[fe80::1%eth0]/app", "scope ids"),
        ("[::ffff:127.0.0.1%1;sslmode=disable]:5432/app", "scope ids"),
        ("db.example.com/" + "d" * 64, "64 bytes long"),
        ("db.example.com/ app", "leading or trailing whitespace"),
        ("db.example.com/a\nb", "control characters"),
    ],
)
def test_invalid_providers_name_the_tag(value: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_provider(value)
    assert "rotation-provider" in str(err.value)
    assert why in str(err.value)


@pytest.mark.parametrize(
    "role",
    ["app", "App", "it's", 'say "hi"', "a; DROP ROLE x; --", "brace}{", "ünï cødé", "x" * 63, "é" * 31],
)
def test_valid_role_names(role: str) -> None:
    check_role_name(role)


@pytest.mark.parametrize(
    ("role", "why"),
    [
        ("", "empty"),
        ("x" * 64, "64 bytes long"),
        ("é" * 32, "64 bytes long"),  # 32 characters, but PostgreSQL counts bytes
        ("pg_monitor", "reserved"),
        ("public", "reserved"),
        ("none", "reserved"),
        (" app", "whitespace"),
        ("app\t", "whitespace"),
        ("a\x00b", "control characters"),
    ],
)
def test_invalid_role_names_name_the_tag(role: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_role_name(role)
    assert "rotation-credential" in str(err.value)
    assert why in str(err.value)


def test_admin_modes() -> None:
    TARGET_TYPE.validate(spec(admin=AdminSpec("self")))
    TARGET_TYPE.validate(spec(admin=AdminSpec("secret", "pg-admin")))
    TARGET_TYPE.validate(spec(admin=AdminSpec("managed-identity")))
    with pytest.raises(InvalidRequest, match="names no secret"):
        TARGET_TYPE.validate(spec(admin=AdminSpec("secret")))
    with pytest.raises(InvalidRequest, match="'kerberos' is not supported"):
        TARGET_TYPE.validate(spec(admin=AdminSpec("kerberos")))


def test_build_validates_too() -> None:
    settings = Settings.from_environ({})
    assert isinstance(TARGET_TYPE.build(spec(), settings), PasswordLogin)
    with pytest.raises(InvalidRequest, match="rotation-provider"):
        TARGET_TYPE.build(spec(provider="nowhere"), settings)
    with pytest.raises(TargetError, match="ROTATION_POSTGRESQL_SSLMODE"):
        TARGET_TYPE.build(spec(), Settings.from_environ({"ROTATION_POSTGRESQL_SSLMODE": "require;Driver=x"}))


def test_the_managed_identity_needs_its_role_setting() -> None:
    identity = spec(admin=AdminSpec("managed-identity"))
    with pytest.raises(TargetError, match="ROTATION_POSTGRESQL_ENTRA_ROLE"):
        TARGET_TYPE.build(identity, Settings.from_environ({}))
    with pytest.raises(InvalidRequest, match="ROTATION_POSTGRESQL_ENTRA_ROLE"):
        TARGET_TYPE.build(identity, Settings.from_environ({"ROTATION_POSTGRESQL_ENTRA_ROLE": "pg_x"}))
    assert isinstance(
        TARGET_TYPE.build(
            identity, Settings.from_environ({"ROTATION_POSTGRESQL_ENTRA_ROLE": "hub-identity"})
        ),
        PasswordLogin,
    )


def test_verifier_form() -> None:
    salt = bytes(range(16))
    value = verifier("pencil", salt=salt)
    prefix, rest = value.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt_b64 = iterations_salt.split(":")
    stored_key, server_key = keys.split(":")
    assert (prefix, iterations, base64.b64decode(salt_b64)) == ("SCRAM-SHA-256", "4096", salt)
    assert len(base64.b64decode(stored_key)) == len(base64.b64decode(server_key)) == 32
    assert value == verifier("pencil", salt=salt), "deterministic for a given salt"
    assert verifier("pencil") != verifier("pencil"), "a fresh salt each time"
    assert "pencil" not in value
    with pytest.raises(ValueError, match="empty"):
        verifier("")


@pytest.mark.parametrize(
    ("raw", "prepared"),
    [
        ("plain ascii \x07 kept as is", "plain ascii \x07 kept as is"),  # pure ASCII is never touched
        ("no\u00a0break", "no break"),  # non-ASCII space -> space
        ("soft\u00adhyphen", "softhyphen"),  # mapped to nothing
        ("\ufb01ne", "fine"),  # NFKC
        ("caf\u0065\u0301", "caf\u00e9"),  # NFKC composes
        ("\u00e9\u0007", "\u00e9\u0007"),  # prohibited control character: raw password used
        ("\u0627\u0628c", "\u0627\u0628c"),  # right-to-left mixed with left-to-right: raw
        ("\u0627\u0628", "\u0627\u0628"),  # pure right-to-left is fine
        ("\u00ad", "\u00ad"),  # maps to nothing at all: raw
    ],
)
def test_saslprep_follows_postgresql(raw: str, prepared: str) -> None:
    assert saslprep(raw) == prepared
