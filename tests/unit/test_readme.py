"""The README stays true about what users configure: every setting and every tag is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotation import metadata
from rotation.settings import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", [s.name for s in SETTINGS])
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert f"`{name}`" in README


@pytest.mark.parametrize(
    "tag",
    [
        metadata.TARGET,
        metadata.PROVIDER,
        metadata.CREDENTIAL,
        metadata.ADMIN,
        metadata.VALIDITY_DAYS,
        metadata.APPROVAL,
        metadata.CONSUMERS,
        metadata.OVERLAP_HOURS,
        metadata.STRATEGY,
        metadata.FORMAT,
        metadata.WINDOW,
        metadata.CREDENTIAL_ID,
    ],
)
def test_every_tag_is_in_the_readme(tag: str) -> None:
    assert f"`{tag}`" in README


def test_the_quick_start_has_exactly_the_two_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.startswith("make ")]
    assert commands == ["make demo", "make test"]
