"""Orchestration versioning, as the Durable extension does it (host.json ``extensions.durableTask``).

``defaultVersion`` stamps every instance the host creates without an explicit version (client
starts and sub-orchestrations alike) into its ExecutionStarted event, where the SDK reads it as
``context.version``. Before each episode the host compares the instance's version with its own
``defaultVersion`` (DTFx's TaskOrchestrationDispatcher, with the VersioningSettings the extension
always builds from these three settings):

- ``versionMatchStrategy``: ``None`` (no check), ``Strict`` (the same version only; DTFx compares
  the strings exactly) or ``CurrentOrOlder`` (the default: the host's version or older);
- ``versionFailureStrategy`` on a mismatch: ``Reject`` (the default: the work item is abandoned,
  its events stay queued for a host that may run it) or ``Fail`` (the instance ends Failed with
  DTFx's ``VersionMismatch`` failure).

An empty version is the same as none: "unversioned", older than any version. Two versions that
both parse as .NET ``System.Version`` (2 to 4 numeric parts) compare numerically, others
case-insensitively as strings (TaskOrchestrationVersioningUtils.CompareVersions).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

# DTFx's FailureDetails for a version mismatch under the Fail strategy.
MISMATCH_ERROR_TYPE = "VersionMismatch"
MISMATCH_MESSAGE = "Orchestration version did not comply with Worker Versioning"


class VersionMatchStrategy(Enum):
    NONE = "None"
    STRICT = "Strict"
    CURRENT_OR_OLDER = "CurrentOrOlder"


class VersionFailureStrategy(Enum):
    REJECT = "Reject"
    FAIL = "Fail"


# The extension's defaults (DurableTaskOptions): safe for rolling upgrades.
DEFAULT_MATCH = VersionMatchStrategy.CURRENT_OR_OLDER
DEFAULT_FAILURE = VersionFailureStrategy.REJECT


class Verdict(Enum):
    RUN = "run"
    REJECT = "reject"
    FAIL = "fail"


class VersioningConfigError(ValueError):
    """A versioning setting in host.json has a value the extension would not bind."""


def normalize(version: str | None) -> str | None:
    """None for an unversioned instance (no version, or an empty one), else the version as given."""
    return version if version and version.strip() else None


def _dotnet_version(text: str) -> tuple[int, ...] | None:
    """System.Version.TryParse: 2 to 4 non-negative integer parts; missing parts compare as -1."""
    parts = text.strip().split(".")
    if not 2 <= len(parts) <= 4 or not all(part.strip().isdigit() for part in parts):
        return None
    numbers = [int(part) for part in parts]
    if any(number > 2**31 - 1 for number in numbers):
        return None
    return tuple(numbers + [-1] * (4 - len(numbers)))


def compare_versions(version: str | None, other: str | None) -> int:
    """Negative, zero or positive as ``version`` is older than, equal to or newer than ``other``."""
    version, other = normalize(version), normalize(other)
    if version is None or other is None:
        return (version is not None) - (other is not None)
    parsed, parsed_other = _dotnet_version(version), _dotnet_version(other)
    if parsed is not None and parsed_other is not None:
        return (parsed > parsed_other) - (parsed < parsed_other)
    # string.Compare(..., StringComparison.OrdinalIgnoreCase) compares the upper-cased strings.
    left, right = version.upper(), other.upper()
    return (left > right) - (left < right)


def _enum_setting(
    value: Any, enum: type[VersionMatchStrategy] | type[VersionFailureStrategy], name: str
) -> Any:
    # .NET's configuration binder parses enums case-insensitively.
    if isinstance(value, str):
        for member in enum:
            if member.value.lower() == value.strip().lower():
                return member
    choices = ", ".join(member.value for member in enum)
    raise VersioningConfigError(f"extensions.durableTask.{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class VersioningSettings:
    default_version: str | None = None
    match: VersionMatchStrategy = DEFAULT_MATCH
    failure: VersionFailureStrategy = DEFAULT_FAILURE

    @classmethod
    def from_durable_task(cls, durable: dict[str, Any]) -> VersioningSettings:
        """Read ``extensions.durableTask``; raises VersioningConfigError for a value of the wrong kind."""
        default = durable.get("defaultVersion")
        if default is not None and not isinstance(default, str):
            raise VersioningConfigError(
                f"extensions.durableTask.defaultVersion must be a string or null, got {default!r}"
            )
        match = durable.get("versionMatchStrategy")
        failure = durable.get("versionFailureStrategy")
        return cls(
            default_version=normalize(default),
            match=DEFAULT_MATCH
            if match is None
            else _enum_setting(match, VersionMatchStrategy, "versionMatchStrategy"),
            failure=DEFAULT_FAILURE
            if failure is None
            else _enum_setting(failure, VersionFailureStrategy, "versionFailureStrategy"),
        )

    def version_for(self, explicit: str | None) -> str | None:
        """The version a new instance gets: the explicit one when given, else ``defaultVersion``."""
        return normalize(explicit) if explicit is not None else self.default_version

    def verdict(self, instance_version: str | None) -> Verdict:
        """Whether this host may run an episode of an instance of ``instance_version``."""
        if self.match is VersionMatchStrategy.NONE:
            return Verdict.RUN
        if self.match is VersionMatchStrategy.STRICT:
            matches = normalize(instance_version) == self.default_version
        else:
            matches = compare_versions(instance_version, self.default_version) <= 0
        if matches:
            return Verdict.RUN
        return Verdict.FAIL if self.failure is VersionFailureStrategy.FAIL else Verdict.REJECT

    def describe(self) -> str:
        return (
            f"defaultVersion {self.default_version or '(none)'}, {self.match.value}, "
            f"{self.failure.value} on mismatch"
        )
