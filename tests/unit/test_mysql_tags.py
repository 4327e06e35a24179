"""The mysql-login tags, checked without connecting, the native password hash and the TLS settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest

from rotation.errors import InvalidRequest, TargetError
from rotation.settings import Settings
from rotation.targets import target_type
from rotation.targets.base import AdminSpec, TargetSpec
from rotation.targets.logins import PasswordLogin
from rotation.targets.mysql import (
    TARGET_TYPE,
    Account,
    MySQLEngine,
    native_password_hash,
    parse_account,
    parse_provider,
    tls_context,
)
from rotation.targets.provider import Provider


def spec(
    provider: str = "db.example.com/app", credential: str = "app", admin: AdminSpec | None = None
) -> TargetSpec:
    return TargetSpec("mysql-login", provider, credential, admin or AdminSpec("self"))


def test_registered_under_its_tag_value() -> None:
    assert target_type("mysql-login") is TARGET_TYPE
    assert TARGET_TYPE.name == "mysql-login"
    assert TARGET_TYPE.password_policy.length == 32


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("db.example.com/app", Provider("db.example.com", 3306, "app")),
        (
            "myserver.mysql.database.azure.com:3307/appdb",
            Provider("myserver.mysql.database.azure.com", 3307, "appdb"),
        ),
        ("127.0.0.1:3306/hub_check", Provider("127.0.0.1", 3306, "hub_check")),
        ("[::1]:3307/app", Provider("::1", 3307, "app")),
        ("[2001:db8::1]/app", Provider("2001:db8::1", 3306, "app")),
        (
            "localhost/my db;with {odd} 'chars' `%_\\",
            Provider("localhost", 3306, "my db;with {odd} 'chars' `%_\\"),
        ),
        ("db.example.com/" + "é" * 64, Provider("db.example.com", 3306, "é" * 64)),  # characters, not bytes
    ],
)
def test_valid_providers(value: str, expected: Provider) -> None:
    assert parse_provider(value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("db.example.com", "names no database"),
        ("db.example.com:3306", "names no database"),
        ("db.example.com/", "database is empty"),
        ("/app", "is not a host name"),
        ("mysql://db.example.com/app", "is a URL"),
        ("Server=db;Database=app", "is not a host name"),
        ("db_example.com/app", "is not a host name"),
        ("db.example.com:0/app", "port '0'"),
        ("db.example.com:65536/app", "port '65536'"),
        ("db.example.com:abc/app", "port 'abc'"),
        ("[not-ipv6]/app", "is not an IPv6 address"),
        ("[fe80::1%eth0]/app", "scope ids"),
        ("[::ffff:127.0.0.1%1;ssl=0]:3306/app", "scope ids"),
        ("db.example.com/" + "d" * 65, "65 characters long; MySQL allows 64"),
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
    ("value", "expected"),
    [
        ("app", Account("app", "%")),
        ("app@%", Account("app", "%")),
        ("app@10.0.0.%", Account("app", "10.0.0.%")),
        ("app@db-client.example.com", Account("app", "db-client.example.com")),
        # The host part is after the last @: a user name may hold one.
        ("me@example.com@%", Account("me@example.com", "%")),
        ('it\'s "q"; DROP USER x; -- {}`\\', Account('it\'s "q"; DROP USER x; -- {}`\\', "%")),
        ("x" * 80, Account("x" * 80, "%")),
        ("é" * 80 + "@%", Account("é" * 80, "%")),  # characters, not bytes
        ("app@" + "h" * 255, Account("app", "h" * 255)),
    ],
)
def test_valid_accounts(value: str, expected: Account) -> None:
    assert parse_account(value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "user name is empty"),
        ("user@", "host part is empty"),
        ("@host", "user name is empty"),
        ("@", "user name is empty"),
        ("x" * 81, "81 characters long; MySQL allows 80"),
        ("app@" + "h" * 256, "256 characters long; MySQL allows 255"),
        (" app", "leading or trailing whitespace"),
        ("app @%", "leading or trailing whitespace"),
        ("a\x00b", "control characters"),
        ("a\nb", "control characters"),
        ("app@10.0.0.\t", "whitespace"),
    ],
)
def test_invalid_accounts_name_the_tag(value: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_account(value)
    assert "rotation-credential" in str(err.value)
    assert why in str(err.value)


def test_admin_modes() -> None:
    TARGET_TYPE.validate(spec(admin=AdminSpec("self")))
    TARGET_TYPE.validate(spec(admin=AdminSpec("secret", "mysql-admin")))
    with pytest.raises(InvalidRequest, match="names no secret"):
        TARGET_TYPE.validate(spec(admin=AdminSpec("secret")))
    for mode in ("managed-identity", "kerberos"):
        with pytest.raises(
            InvalidRequest, match=rf"rotation-admin '{mode}' is not supported for mysql-login"
        ):
            TARGET_TYPE.validate(spec(admin=AdminSpec(mode)))


def test_validate_names_the_tag_at_fault() -> None:
    with pytest.raises(InvalidRequest, match="rotation-provider"):
        TARGET_TYPE.validate(spec(provider="db.example.com"))
    with pytest.raises(InvalidRequest, match="rotation-credential"):
        TARGET_TYPE.validate(spec(credential="x" * 81))


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        # MySQL's PASSWORD('password'), the documented value.
        ("password", "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),
        # MariaDB 10.11's PASSWORD() of these strings over a utf8mb4 connection: UTF-8 bytes.
        ("café", "*0C3BF4150682ADDAABE76158909C43597F7DC7CC"),
        ("ünï✓", "*2A0CBA6C65B23346156453139D7373CF1A05A853"),
    ],
)
def test_native_password_hash(password: str, expected: str) -> None:
    assert native_password_hash(password) == expected


def test_build_validates_too() -> None:
    settings = Settings.from_environ({})
    assert isinstance(TARGET_TYPE.build(spec(), settings), PasswordLogin)
    with pytest.raises(InvalidRequest, match="rotation-provider"):
        TARGET_TYPE.build(spec(provider="nowhere"), settings)
    with pytest.raises(InvalidRequest, match="rotation-admin"):
        TARGET_TYPE.build(spec(admin=AdminSpec("managed-identity")), settings)


@pytest.mark.parametrize("mode", ["disable", "prefer", "VERIFY-FULL", "require;x"])
def test_build_refuses_an_unknown_ssl_mode(mode: str) -> None:
    with pytest.raises(TargetError, match="ROTATION_MYSQL_SSLMODE") as err:
        TARGET_TYPE.build(spec(), Settings.from_environ({"ROTATION_MYSQL_SSLMODE": mode}))
    assert "[permanent]" in str(err.value)


def test_build_refuses_a_ca_file_that_cannot_be_read(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    for ca in (tmp_path / "missing.pem", tmp_path, garbage):
        with pytest.raises(TargetError, match="ROTATION_MYSQL_SSL_CA") as err:
            TARGET_TYPE.build(spec(), Settings.from_environ({"ROTATION_MYSQL_SSL_CA": str(ca)}))
        assert str(ca) in str(err.value)


@pytest.mark.parametrize(
    ("mode", "check_hostname", "verify_mode"),
    [
        ("verify-full", True, ssl.CERT_REQUIRED),
        ("verify-ca", False, ssl.CERT_REQUIRED),
        ("require", False, ssl.CERT_NONE),
    ],
)
def test_tls_modes(mode: str, check_hostname: bool, verify_mode: ssl.VerifyMode) -> None:
    context = tls_context(Settings.from_environ({"ROTATION_MYSQL_SSLMODE": mode}))
    assert (context.check_hostname, context.verify_mode) == (check_hostname, verify_mode)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_tls_is_verified_by_default() -> None:
    context = tls_context(Settings.from_environ({}))
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def engine_of(settings: Settings) -> MySQLEngine:
    target = TARGET_TYPE.build(spec(), settings)
    assert isinstance(target, PasswordLogin)
    assert isinstance(target.engine, MySQLEngine)
    return target.engine


def test_engines_share_one_tls_context_per_mode_and_ca_file(tmp_path: Path) -> None:
    """Loading the CA certificates is most of a context's cost (the system's store: about 20 ms of
    CPU), so every activity's engine uses the process's one context for its settings."""
    default = Settings.from_environ({})
    first = engine_of(default)
    assert engine_of(default)._tls is first._tls
    unverified = engine_of(Settings.from_environ({"ROTATION_MYSQL_SSLMODE": "require"}))
    assert unverified._tls is not first._tls
    assert first._tls.verify_mode == ssl.CERT_REQUIRED  # another mode's context is another object

    # A CA file that cannot be read is not remembered: once it is there, it is used.
    ca = tmp_path / "ca.pem"
    later = Settings.from_environ({"ROTATION_MYSQL_SSL_CA": str(ca)})
    with pytest.raises(TargetError, match="ROTATION_MYSQL_SSL_CA"):
        engine_of(later)
    ca.write_bytes(Path(certifi.where()).read_bytes())
    engine = engine_of(later)
    assert engine._tls is not first._tls
    assert engine._tls.cert_store_stats()["x509_ca"] > 100
