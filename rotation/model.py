"""The records that cross the durable boundary: one frozen dataclass in and one out per activity.

They carry references (vault, secret, versions, rotation id), never a secret value: everything
here ends up in the task hub's history in plain text. ``to_dict``/``from_dict`` convert at the
adapter edge; ``from_dict`` checks types so a malformed payload fails with a clear error.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from rotation.errors import InvalidRequest

T = TypeVar("T")

# Key Vault's own rules: 3-24 characters, letters, digits and dashes, starting with a letter,
# no two dashes in a row, not ending with a dash.
_VAULT_NAME = re.compile(r"^(?=.{3,24}$)[a-zA-Z](?!.*--)[a-zA-Z0-9-]*[a-zA-Z0-9]$")
# Secret names: 1-127 letters, digits and dashes.
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_VERSION = re.compile(r"^[0-9a-f]{32}$")
_SUBSCRIPTION_ID = re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$")
_VAULT_ARM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.KeyVault/vaults/(?P<vault>[^/]+)/?$",
    re.IGNORECASE,
)

PENDING_SUFFIX = "-pending"
# The companion's name must fit Key Vault's 127 characters too.
MAX_ROTATED_NAME = 127 - len(PENDING_SUFFIX)


def check_vault_name(name: str) -> str:
    """Raises InvalidRequest unless ``name`` follows Key Vault's naming rules."""
    if not isinstance(name, str) or not _VAULT_NAME.match(name):
        raise InvalidRequest(f"{name!r} is not a valid Key Vault name")
    return name.lower()


def check_secret_name(name: str) -> str:
    """Raises InvalidRequest unless ``name`` follows Key Vault's secret naming rules."""
    if not isinstance(name, str) or not _SECRET_NAME.match(name):
        raise InvalidRequest(f"{name!r} is not a valid secret name (1-127 letters, digits and dashes)")
    return name


def check_version(version: str) -> str:
    """Raises InvalidRequest unless ``version`` is a Key Vault version id (32 hex characters)."""
    if not isinstance(version, str) or not _VERSION.match(version.lower()):
        raise InvalidRequest(f"{version!r} is not a Key Vault secret version")
    return version.lower()


def check_subscription_id(subscription_id: str) -> str:
    if not isinstance(subscription_id, str) or not _SUBSCRIPTION_ID.match(subscription_id.lower()):
        raise InvalidRequest(f"{subscription_id!r} is not a subscription id")
    return subscription_id.lower()


def is_companion_name(name: str) -> bool:
    """Names ending in ``-pending`` are reserved for the companions that hold pending values."""
    return name.lower().endswith(PENDING_SUFFIX)


@dataclass(frozen=True)
class VaultId:
    subscription_id: str
    resource_group: str
    vault_name: str

    @classmethod
    def parse(cls, arm_id: str, *, what: str = "vault id") -> VaultId:
        """Raises InvalidRequest unless ``arm_id`` is a Key Vault ARM id."""
        match = _VAULT_ARM_ID.match(arm_id.strip()) if isinstance(arm_id, str) else None
        if not match:
            raise InvalidRequest(f"{what} {arm_id!r} is not a Key Vault ARM id")
        return cls(check_subscription_id(match["sub"]), match["rg"], check_vault_name(match["vault"]))

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{self.vault_name}"
        )


class Record:
    """Dict conversion for the frozen dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        plain = _to_plain(self)
        assert isinstance(plain, dict)
        return plain

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """Raises InvalidRequest naming the field that is missing or of the wrong type."""
        record: Self = _from_plain(cls, data, cls.__name__)
        return record


def _to_plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value


@functools.cache
def _type_hints(tp: type) -> dict[str, Any]:
    # Resolving a class's annotations is slow, and orchestrators parse records on every replay.
    return typing.get_type_hints(tp)


def _from_plain(tp: Any, data: object, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if data is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _from_plain(option, data, where)
            except InvalidRequest:
                continue
        raise InvalidRequest(f"{where} has the wrong type")
    if origin is tuple:
        item_type = typing.get_args(tp)[0]
        if not isinstance(data, list | tuple):
            raise InvalidRequest(f"{where} must be a list")
        return tuple(_from_plain(item_type, v, f"{where}[{i}]") for i, v in enumerate(data))
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(data, Mapping):
            raise InvalidRequest(f"{where} must be an object")
        return {
            _from_plain(key_type, k, where): _from_plain(value_type, v, f"{where}[{k!r}]")
            for k, v in data.items()
        }
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, Mapping):
            raise InvalidRequest(f"{where} must be an object")
        hints = _type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _from_plain(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidRequest(f"{where}.{f.name} is missing")
        return tp(**kwargs)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise InvalidRequest(f"{where} must be a number")
        return float(data)
    if tp in (str, int, bool):
        if not isinstance(data, tp) or (tp is int and isinstance(data, bool)):
            raise InvalidRequest(f"{where} must be of type {tp.__name__}")
        return data
    raise TypeError(f"unsupported field type {tp!r} in {where}")  # a programming error, not input


@dataclass(frozen=True)
class SecretRef(Record):
    """One secret in one vault. The vault URL is built from ``vault_name``, never taken from input."""

    subscription_id: str
    vault_name: str
    secret_name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "subscription_id", check_subscription_id(self.subscription_id))
        object.__setattr__(self, "vault_name", check_vault_name(self.vault_name))
        check_secret_name(self.secret_name)

    @property
    def pending_name(self) -> str:
        return self.secret_name + PENDING_SUFFIX

    def rotation_id(self, version: str) -> str:
        """The instance id of the one orchestration that rotates ``version`` of this secret.

        Underscores cannot occur in vault or secret names, so the parts cannot run together.
        """
        return f"rotate_{self.vault_name}_{self.secret_name.lower()}_{check_version(version)}"

    def rotation_id_prefix(self) -> str:
        return f"rotate_{self.vault_name}_{self.secret_name.lower()}_"


@dataclass(frozen=True)
class RotationPolicy(Record):
    """Settings the orchestrator needs, frozen into its input so replays see the same values."""

    retry_max_attempts: int
    retry_first_interval_seconds: float
    approval_timeout_hours: float
    consumer_ready_timeout_seconds: float
    # After a request went unanswered: how long before a step checks again or an undo runs.
    write_settle_seconds: float = 120.0
    # How long promote and the undos keep retrying transient failures (an outage of Key Vault
    # after apply), and the longest wait between two of their attempts. 0 (the default, which
    # the rotations started before these fields existed replay with): retry_max_attempts only.
    outage_retry_hours: float = 0.0
    outage_retry_max_interval_seconds: float = 1800.0


@dataclass(frozen=True)
class RotationRequest(Record):
    """The orchestration's input: which version of which secret, and why."""

    secret: SecretRef
    version: str
    trigger: str
    policy: RotationPolicy
    # Who asked: a principal's name, or what started it ("http api", the event, the sweep).
    requested_by: str | None = None
    # The object id of the principal App Service authentication vouched for, when a person or a
    # service principal started it through the HTTP API: that principal may not approve it.
    requested_by_id: str | None = None
    # Set by an incident that waives approval tags: who waived it and why (recorded in the
    # rotation's status); the rotation then runs without waiting for a decision.
    approval_waived_by: str | None = None
    approval_waiver_reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", check_version(self.version))


@dataclass(frozen=True)
class StepInput(Record):
    """The input of most activities: the rotation, its secret, the version being replaced."""

    rotation_id: str
    secret: SecretRef
    version: str
    pending_version: str | None = None
    # The tags of ``version`` as plan read them (names and settings, never a value): later steps
    # take them from here instead of reading the version again for them. None before plan, and
    # in rotations started before this field existed: the steps then read the version.
    tags: dict[str, str] | None = None


@dataclass(frozen=True)
class RotationPlan(Record):
    """What the secret's tags asked for, read once at the start and then frozen in the history."""

    target_kind: str
    approval_required: bool
    validity_days: float
    consumers: tuple[str, ...] = ()
    skip_reason: str | None = None
    # Set when an earlier run of this same rotation already promoted (a restart after a
    # consumer failed): only the consumers, the clean-up and the retirement are left to do.
    promoted_version: str | None = None
    promoted_on: str | None = None
    # Targets that issue their credentials: no apply step, and the previous credential is
    # retired this many hours after promotion.
    issues_credentials: bool = False
    overlap_hours: float = 0.0
    # Set when nothing can undo what the target issues (a regenerated storage key): the approval,
    # when required, comes before the stage, so a rejection changes nothing.
    issue_after_approval: bool = False
    # The ``rotation-window`` tag in its canonical text (rotation/windows.py), or None: changes
    # may happen at any time. The orchestrator waits on a durable timer until it is open.
    window: str | None = None
    # The tags plan read (they go on in ``StepInput.tags``) and, for a login, the login the
    # rotation changes (the other one when alternating; plan read the current value for it).
    tags: dict[str, str] | None = None
    login: str | None = None


@dataclass(frozen=True)
class StageInput(Record):
    step: StepInput
    target_kind: str
    pending_ttl_hours: float
    # For targets that issue the credential: it must outlive the new version and its overlap.
    validity_days: float = 0.0
    overlap_hours: float = 0.0
    # The login to stage a value for, as plan found it (None: stage reads the current value).
    login: str | None = None


@dataclass(frozen=True)
class Staged(Record):
    pending_version: str
    reused: bool
    # The target's name for the credential staged, when the target issued it (an Entra keyId).
    credential_id: str | None = None


@dataclass(frozen=True)
class Changed(Record):
    """The result of a step or an undo that may have found nothing to do."""

    changed: bool
    detail: str = ""


@dataclass(frozen=True)
class PromoteInput(Record):
    step: StepInput
    validity_days: float
    # True: only find out whether an earlier attempt's write landed (after the settle); never
    # write. Raises NotPromoted when it did not.
    only_if_landed: bool = False


@dataclass(frozen=True)
class Promoted(Record):
    new_version: str
    changed: bool
    # When the new version was written (ISO 8601): the previous credential's overlap counts from it.
    promoted_on: str | None = None
    # Whether the same activity disabled the pending value (the cleanup), and what it said.
    pending_disabled: bool = False
    cleanup: str = ""


@dataclass(frozen=True)
class Retired(Record):
    """What retiring the previous credential did, and what it left for an operator to judge."""

    changed: bool
    detail: str
    not_removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsumerInput(Record):
    rotation_id: str
    consumer_id: str
    ready_timeout_seconds: float
    # The secret rotated: app settings that are Key Vault references to it are fetched afresh.
    secret: SecretRef | None = None


@dataclass(frozen=True)
class ConsumerRestarted(Record):
    consumer_id: str
    state: str
    # Names (never values) of the app settings that reference the secret through Key Vault: made
    # to fetch it again by a configuration change instead of a restart; and those pinned to a
    # version, which no refetch moves to the new one.
    refreshed_settings: tuple[str, ...] = ()
    pinned_settings: tuple[str, ...] = ()
    # What showed the app serves again, e.g. "GET https://<app>.azurewebsites.net/health answered 200".
    ready_by: str = ""


@dataclass(frozen=True)
class Decision(Record):
    """An approver's answer, raised to the orchestration as the ``RotationDecision`` event.

    Decisions raised before these fields existed (``approved``, ``approver``, ``reason`` only)
    still parse: they count as unverified, with no id and no time.
    """

    approved: bool
    # The approver's display name (App Service authentication's principal name, or the name a
    # key holder gave when unverified decisions are allowed; "timeout" for the deadline).
    approver: str
    reason: str = ""
    # The principal's object id, when App Service authentication vouched for it.
    approver_id: str | None = None
    # True only when the approver is the principal App Service authentication signed in.
    verified: bool = False
    # When the decision took effect: the orchestrator's deterministic time
    # (context.current_utc_datetime of the episode that received it), ISO 8601.
    decided_at: str | None = None
    # Tells this decision apart from any other raised at the same rotation, so the API knows
    # whether its own decision is the one that took effect.
    decision_id: str | None = None


# RotationOutcome.result: what a rotation that completed did.
ROTATED = "rotated"
ROLLED_FORWARD = "rolled_forward"  # after a failure, the new value was promoted instead
SKIPPED = "skipped"  # the version was no longer current
REJECTED = "rejected"
TIMED_OUT = "timed_out"  # no decision before the approval deadline
# Results that changed nothing for good: a later request for the same version starts it again.
RESTARTABLE_RESULTS = (REJECTED, TIMED_OUT)


@dataclass(frozen=True)
class RotationOutcome(Record):
    """The orchestration's output."""

    result: str
    secret: SecretRef
    previous_version: str
    new_version: str | None = None
    decision: Decision | None = None
    steps: tuple[str, ...] = field(default_factory=tuple)
    detail: str = ""
