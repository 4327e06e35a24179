"""Helpers of the end-to-end tests: seeding, and the invariants every scenario ends with."""

from __future__ import annotations

import itertools
import sqlite3

from azure.core.exceptions import ResourceNotFoundError

from local.stack import LocalStack, Seeded

_names = itertools.count()


def unique(prefix: str) -> str:
    """A secret (and login) name no other test of this process uses."""
    return f"{prefix}-{next(_names)}"


def seed(stack: LocalStack, vault: str = "spoke1-kv", *, prefix: str = "db", **kwargs: object) -> Seeded:
    """A PostgreSQL login and its tagged secret near expiry, with names of its own."""
    name = unique(prefix)
    return stack.seed_login_secret(vault, name, login=name.replace("-", "_"), **kwargs)  # type: ignore[arg-type]


def enabled_pending(stack: LocalStack, seeded: Seeded) -> list[str]:
    """Versions of the secret's pending companion that are still enabled (must end up empty)."""
    client = stack.secret_client(seeded.vault)
    names = {p.name for p in client.list_properties_of_secrets()}
    if seeded.name + "-pending" not in names:
        return []
    versions = client.list_properties_of_secret_versions(seeded.name + "-pending")
    return [str(p.version) for p in versions if p.enabled]


def versions_of(stack: LocalStack, seeded: Seeded) -> list[str]:
    return [
        str(p.version)
        for p in stack.secret_client(seeded.vault).list_properties_of_secret_versions(seeded.name)
    ]


def assert_consistent(stack: LocalStack, seeded: Seeded) -> None:
    """The invariants after any rotation: the vault's latest version logs in to the database,
    and no pending value is left enabled."""
    assert stack.current_value_logs_in(seeded.vault, seeded.name), (
        f"{seeded.name}: the latest version does not log in"
    )
    assert enabled_pending(stack, seeded) == [], f"{seeded.name}: a pending value is left enabled"


def durable_store_text(stack: LocalStack) -> str:
    """Everything the host's task hub holds (every table, every column), as one text."""
    assert stack.host is not None
    texts: list[str] = []
    with sqlite3.connect(f"file:{stack.host.data_dir / 'durable.sqlite'}?mode=ro", uri=True) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 (names from sqlite_master)
                texts.append(" ".join(str(cell) for cell in row))
    return "\n".join(texts)


def secret_values(stack: LocalStack, seeded: Seeded) -> list[str]:
    """Every value the secret and its companion ever held (enabled or not)."""
    client = stack.secret_client(seeded.vault)
    values = []
    for name in (seeded.name, seeded.name + "-pending"):
        try:
            versions = list(client.list_properties_of_secret_versions(name))
        except ResourceNotFoundError:  # the companion may not exist
            continue
        for props in versions:
            if props.enabled:
                values.append(client.get_secret(name, props.version).value or "")
            else:
                # A disabled version cannot be read; enable it for a moment to learn its value.
                client.update_secret_properties(name, props.version, enabled=True)
                values.append(client.get_secret(name, props.version).value or "")
                client.update_secret_properties(name, props.version, enabled=False)
    return [v for v in values if v]


def assert_no_value_leaked(stack: LocalStack, seeded: Seeded) -> None:
    """No value the secret ever held appears in the task hub's store or in the host's log."""
    assert stack.host is not None
    store = durable_store_text(stack)
    log = stack.host.log_path.read_text(errors="replace")
    values = secret_values(stack, seeded)
    assert values, "the secret should have values to look for"
    for value in values:
        assert value not in store, f"a value of {seeded.name} is in the durable store"
        assert value not in log, f"a value of {seeded.name} is in the host log"
