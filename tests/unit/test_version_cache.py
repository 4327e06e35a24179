"""``rotation.vault.VersionCache``: secret versions a worker process read or wrote, by id, for a
bounded time. What a later step is served, or not served, from it."""

from __future__ import annotations

from rotation.targets.base import SecretValue
from rotation.vault import VersionCache, VersionInfo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def read(name: str, version: str, value: str, *, enabled: bool = True) -> tuple[VersionInfo, SecretValue]:
    info = VersionInfo(name=name, version=version, enabled=enabled, expires_on=None, created_on=None)
    return info, SecretValue(value)


def test_a_version_is_served_until_its_time_is_up() -> None:
    clock = Clock()
    cache = VersionCache(600, clock=clock)
    cache.put("spoke1-kv", read("db", "v1", "old"))

    clock.now += 599
    served = cache.get("spoke1-kv", "db", "v1")
    assert served is not None
    assert served[1].reveal() == "old"
    clock.now += 2
    assert cache.get("spoke1-kv", "db", "v1") is None


def test_versions_are_told_apart_by_vault_name_and_id() -> None:
    cache = VersionCache(600)
    cache.put("spoke1-kv", read("db", "v1", "one"))
    assert cache.get("spoke2-kv", "db", "v1") is None
    assert cache.get("spoke1-kv", "db-pending", "v1") is None
    assert cache.get("spoke1-kv", "db", "v2") is None


def test_a_disabled_version_is_never_kept_and_a_forgotten_one_is_asked_for_again() -> None:
    cache = VersionCache(600)
    cache.put("spoke1-kv", read("db", "v1", "one", enabled=False))
    assert cache.get("spoke1-kv", "db", "v1") is None
    cache.put("spoke1-kv", read("db", "v2", "two"))
    cache.forget("spoke1-kv", "db", "v2")
    assert cache.get("spoke1-kv", "db", "v2") is None


def test_zero_seconds_keeps_nothing() -> None:
    cache = VersionCache(0)
    cache.put("spoke1-kv", read("db", "v1", "one"))
    assert cache.get("spoke1-kv", "db", "v1") is None


def test_the_oldest_versions_go_first_when_it_is_full() -> None:
    clock = Clock()
    cache = VersionCache(600, max_versions=2, clock=clock)
    for version in ("v1", "v2", "v3"):
        cache.put("spoke1-kv", read("db", version, version))
        clock.now += 1
    assert cache.get("spoke1-kv", "db", "v1") is None
    assert cache.get("spoke1-kv", "db", "v3") is not None
