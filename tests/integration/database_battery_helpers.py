"""What the database target tests share: test values that are checked for leaks, unique names,
and building a target for a throwaway server (``local.databases``).

Every "can it log in" check goes through ``server.can_login`` (the server's own command-line
client: psql, mariadb), never through the target's driver, so a bug in a target cannot confirm
itself.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from local.databases.base import LocalDatabase
from rotation.errors import RotationError
from rotation.passwords import generate
from rotation.settings import Settings
from rotation.targets import target_type
from rotation.targets.base import AdminSpec, SecretValue, TargetSpec
from rotation.targets.logins import PasswordLogin

#: Values no generated password holds (the policy leaves such characters out), as a value set by
#: hand before the first rotation may. Those that only matter to SCRAM's SASLprep are in
#: test_postgresql_target.py.
AWKWARD_VALUES = [
    "close}brace}}twice",
    "{starts-with-a-brace}",
    "semi;colon=equals",
    "quote'double\"back\\slash",
    "ends-with-a-backslash\\",
    "`back`ticks`",
    "per%cent%s-and-%(name)s",
    " spaces  inside and around ",
    "café-€-ünïcødé-✓",
]


class Values:
    """Hands out test values and remembers them, to prove afterwards that none leaked."""

    def __init__(self, kind: str) -> None:
        self.policy = target_type(kind).password_policy
        self.seen: list[str] = []

    def new(self) -> SecretValue:
        return self.of(generate(self.policy).reveal())

    def of(self, text: str) -> SecretValue:
        self.seen.append(text)
        return SecretValue(text)


@contextmanager
def watched_values(server: LocalDatabase, caplog: pytest.LogCaptureFixture) -> Iterator[Values]:
    """Values for one test; afterwards none of them may be in the captured logs (the hub's) nor in
    what the server logged meanwhile (every statement that changed a login)."""
    caplog.set_level(logging.DEBUG)
    log_start = len(server.server_log())
    values = Values(server.kind)
    yield values
    server_log = server.server_log()[log_start:]
    for text in values.seen:
        assert text not in caplog.text, "a value reached the application log"
        assert text not in server_log, f"a value reached the {server.name} server log"


def unique(prefix: str = "app") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def settings_for(server: LocalDatabase, **extra: str) -> Settings:
    """The hub's settings for ``server``, as the local stack gives them, plus ``extra``."""
    return Settings.from_environ({**server.app_settings(), **extra})


def spec_for(
    server: LocalDatabase,
    login: str,
    admin: AdminSpec,
    *,
    database: str | None = None,
    port: int | None = None,
) -> TargetSpec:
    provider = f"{server.host}:{port or server.port}/{database or server.default_database}"
    return TargetSpec(kind=server.kind, provider=provider, credential=login, admin=admin)


def target_for(
    server: LocalDatabase,
    login: str,
    admin: AdminSpec,
    *,
    database: str | None = None,
    port: int | None = None,
    settings: Settings | None = None,
) -> PasswordLogin:
    """The target as the hub builds it: ``target_type(kind).build(spec, settings)``."""
    spec = spec_for(server, login, admin, database=database, port=port)
    built = target_type(server.kind).build(spec, settings or settings_for(server))
    assert isinstance(built, PasswordLogin)
    return built


def make_login(
    server: LocalDatabase, password: SecretValue | None, name: str | None = None, *, admin: bool = False
) -> str:
    login = name or unique()
    server.create_login(login, password.reveal() if password else None, admin=admin)
    return login


def logs_in(server: LocalDatabase, login: str, value: SecretValue, database: str | None = None) -> bool:
    """Through the server's own client, never the target's driver."""
    return server.can_login(login, value.reveal(), database)


def assert_clean(exc: BaseException, *secret: SecretValue) -> None:
    """The error, and anything its traceback would show (its cause, or its context unless
    suppressed), names no value."""
    seen: BaseException | None = exc
    while seen is not None:
        for value in secret:
            assert value.reveal() not in str(seen)
            assert value.reveal() not in repr(seen)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    assert isinstance(exc, RotationError)
