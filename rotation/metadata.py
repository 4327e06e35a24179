"""The tag contract with spoke owners (DESIGN.md section 4), parsed and validated in one place.

A secret opts in with ``rotation-target``; every other tag is checked here, and every error
names the tag at fault so the spoke owner knows what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from rotation import windows
from rotation.errors import InvalidRequest
from rotation.model import MAX_ROTATED_NAME, check_secret_name, is_companion_name
from rotation.targets import IssuingTargetType, TargetType, target_type
from rotation.targets.base import AdminSpec, TargetSpec

TARGET = "rotation-target"
PROVIDER = "rotation-provider"
CREDENTIAL = "rotation-credential"
ADMIN = "rotation-admin"
VALIDITY_DAYS = "rotation-validity-days"
APPROVAL = "rotation-approval"
CONSUMERS = "rotation-consumers"
OVERLAP_HOURS = "rotation-overlap-hours"
STRATEGY = "rotation-strategy"
FORMAT = "rotation-format"
WINDOW = "rotation-window"
# Written by the hub itself on the versions it creates.
ROTATION_ID = "rotation-id"
PREVIOUS_VERSION = "rotation-previous-version"
PENDING_OF = "rotation-of"
# Which credential a version holds, for targets that issue them (an Entra keyId): the next
# rotation removes exactly that one when its overlap is over.
CREDENTIAL_ID = "rotation-credential-id"

DEFAULT_VALIDITY_DAYS = 60.0
MAX_VALIDITY_DAYS = 3650.0
MAX_OVERLAP_HOURS = 24.0 * 90
STRATEGIES = ("single", "alternating")
# What a secret's value holds (rotation/formats): the password alone, or the login with it.
FORMATS = ("password", "json", "connection-string")
# Key Vault allows 15 tags per secret; promotion adds up to three of its own.
MAX_TAGS = 15
HUB_TAGS_ON_PROMOTE = (ROTATION_ID, PREVIOUS_VERSION, CREDENTIAL_ID)

_SITE_ID = re.compile(
    r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w.()]{1,90}/providers/Microsoft\.Web/sites/[a-zA-Z0-9-]{2,60}$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RotationMetadata:
    target: TargetSpec
    approval_required: bool
    validity_days: float
    consumers: tuple[str, ...]
    #: Set for targets that issue their credentials: how long the previous one stays valid.
    overlap_hours: float | None = None
    #: ``single``: one login, its password changed in place; ``alternating``: two logins, each
    #: rotation changes the one the current version does not hold.
    strategy: str = "single"
    #: What the value holds (rotation/formats).
    value_format: str = "password"
    #: The logins ``rotation-credential`` names: one, or two when alternating.
    logins: tuple[str, ...] = ()
    #: When the rotation may change things (rotation/windows.py); None: at any time.
    window: windows.Window | None = None


def _clean(tags: Mapping[str, str] | None) -> dict[str, str]:
    # Tags are typed by hand in portals and pipelines: tolerate stray whitespace and case in names.
    return {str(k).strip().lower(): str(v).strip() for k, v in (tags or {}).items()}


def is_opted_in(tags: Mapping[str, str] | None) -> bool:
    return bool(_clean(tags).get(TARGET))


def credential_of(tags: Mapping[str, str] | None) -> str | None:
    """The ``rotation-credential`` tag (an admin secret names its own login this way)."""
    return _clean(tags).get(CREDENTIAL) or None


def provider_of(tags: Mapping[str, str] | None) -> str | None:
    """The ``rotation-provider`` tag (an admin secret names the server it belongs to this way)."""
    return _clean(tags).get(PROVIDER) or None


def parse_admin(value: str) -> AdminSpec:
    """Raises InvalidRequest for anything but ``self``, ``managed-identity`` or ``secret:<name>``."""
    value = value.strip()
    if value in ("self", "managed-identity"):
        return AdminSpec(mode=value)
    if value.startswith("secret:"):
        name = value.removeprefix("secret:").strip()
        try:
            check_secret_name(name)
        except InvalidRequest:
            raise InvalidRequest(f"{ADMIN} names {name!r}, which is not a valid secret name") from None
        return AdminSpec(mode="secret", secret_name=name)
    raise InvalidRequest(f"{ADMIN} must be 'self', 'managed-identity' or 'secret:<name>', got {value!r}")


def _number(tag: str, raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"{tag} must be {what}, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidRequest(f"{tag} must be {what}, got {raw!r}")
    return value


def credential_id_of(tags: Mapping[str, str] | None) -> str | None:
    """The ``rotation-credential-id`` tag: which issued credential a version holds."""
    return _clean(tags).get(CREDENTIAL_ID) or None


def _strategy_and_format(
    t: Mapping[str, str], spec: TargetSpec, found: TargetType | IssuingTargetType
) -> tuple[str, str, tuple[str, ...]]:
    """``rotation-strategy``, ``rotation-format`` and the logins they imply, checked together."""
    strategy = t.get(STRATEGY) or "single"
    if strategy not in STRATEGIES:
        raise InvalidRequest(f"{STRATEGY} must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    value_format = t.get(FORMAT) or "password"
    if isinstance(found, IssuingTargetType):
        value_format = t.get(FORMAT) or found.formats[0]
        if strategy != "single":
            raise InvalidRequest(
                f"{spec.kind} holds the credential its target issues: {STRATEGY} does not apply"
            )
        if value_format not in found.formats:
            raise InvalidRequest(
                f"{FORMAT} of {spec.kind} must be one of {', '.join(found.formats)}, got {value_format!r}"
            )
        return strategy, value_format, (spec.credential,)
    if value_format not in FORMATS:
        raise InvalidRequest(f"{FORMAT} must be one of {', '.join(FORMATS)}, got {value_format!r}")
    if strategy == "single":
        return strategy, value_format, (spec.credential,)
    if not found.alternating:
        raise InvalidRequest(f"{STRATEGY} 'alternating' is not supported for {spec.kind}")
    logins = tuple(login.strip() for login in spec.credential.split(","))
    if len(logins) != 2 or not all(logins):
        raise InvalidRequest(
            f"{CREDENTIAL} must name two logins, 'login_a,login_b', when {STRATEGY} is 'alternating'; "
            f"it names {len([login for login in logins if login])}"
        )
    if logins[0] == logins[1]:
        raise InvalidRequest(f"{CREDENTIAL} names the same login twice; alternating needs two")
    if value_format == "password":
        raise InvalidRequest(
            f"{FORMAT} 'password' cannot say which of the two logins a value is for; "
            f"use 'json' or 'connection-string' with {STRATEGY} 'alternating'"
        )
    if spec.admin.mode == "self":
        raise InvalidRequest(
            f"{ADMIN} 'self' cannot change the other login (its password is not at hand): "
            f"use 'secret:<name>' or 'managed-identity' with {STRATEGY} 'alternating'"
        )
    return strategy, value_format, logins


def parse_tags(secret_name: str, tags: Mapping[str, str] | None) -> RotationMetadata:
    """Validate the rotation tags of ``secret_name``.

    Raises:
        InvalidRequest: the secret is not opted in, or a tag is missing or malformed (the
            message names the tag).
    """
    t = _clean(tags)
    kind = t.get(TARGET, "")
    if not kind:
        raise InvalidRequest(f"secret {secret_name!r} has no {TARGET} tag; it is not rotated by the hub")
    if is_companion_name(secret_name):
        raise InvalidRequest(
            f"secret {secret_name!r} ends with '-pending', a suffix reserved for pending values"
        )
    if len(secret_name) > MAX_ROTATED_NAME:
        raise InvalidRequest(
            f"secret name {secret_name!r} is longer than {MAX_ROTATED_NAME} characters, "
            "leaving no room for its '-pending' companion"
        )
    found = target_type(kind)
    provider_needed = not isinstance(found, IssuingTargetType) or found.requires_provider
    needed = (PROVIDER, CREDENTIAL) if provider_needed else (CREDENTIAL,)
    missing = [name for name in needed if not t.get(name)]
    if missing:
        raise InvalidRequest(f"secret {secret_name!r} is tagged {TARGET} but lacks {', '.join(missing)}")
    spec = TargetSpec(
        kind=kind,
        provider=t.get(PROVIDER, ""),
        credential=t[CREDENTIAL],
        admin=parse_admin(t.get(ADMIN, "self")),
    )
    if (
        spec.admin.mode == "secret"
        and spec.admin.secret_name
        and spec.admin.secret_name.lower() == secret_name.lower()
    ):
        raise InvalidRequest(f"{ADMIN} of {secret_name!r} names the secret itself; use 'self' instead")
    strategy, value_format, logins = _strategy_and_format(t, spec, found)
    for login in logins:
        found.validate(replace(spec, credential=login))

    validity_raw = t.get(VALIDITY_DAYS, "")
    validity = DEFAULT_VALIDITY_DAYS
    if validity_raw:
        validity = _number(VALIDITY_DAYS, validity_raw, "a number of days")
        if not 0 < validity <= MAX_VALIDITY_DAYS:
            raise InvalidRequest(
                f"{VALIDITY_DAYS} must be between 0 and {MAX_VALIDITY_DAYS:g}, got {validity_raw!r}"
            )

    approval = t.get(APPROVAL, "")
    if approval not in ("", "required"):
        raise InvalidRequest(f"{APPROVAL} must be 'required' or absent, got {approval!r}")

    consumers = tuple(c.strip() for c in t.get(CONSUMERS, "").split(",") if c.strip())
    for consumer in consumers:
        if not _SITE_ID.match(consumer):
            raise InvalidRequest(
                f"{CONSUMERS} holds {consumer!r}, which is not an App Service ARM id "
                "(/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.Web/sites/<name>)"
            )

    overlap_raw = t.get(OVERLAP_HOURS, "")
    overlap: float | None = None
    if isinstance(found, IssuingTargetType):
        overlap = found.default_overlap_hours
        if overlap_raw and found.keeps_previous:
            raise InvalidRequest(f"{OVERLAP_HOURS} does not apply to {kind}: {found.keeps_previous}")
        if overlap_raw:
            overlap = _number(OVERLAP_HOURS, overlap_raw, "a number of hours")
            if not 0 <= overlap <= MAX_OVERLAP_HOURS:
                raise InvalidRequest(
                    f"{OVERLAP_HOURS} must be between 0 and {MAX_OVERLAP_HOURS:g}, got {overlap_raw!r}"
                )
    elif overlap_raw:
        raise InvalidRequest(
            f"{OVERLAP_HOURS} applies to targets that issue their credentials, not to {kind}"
        )

    window = parse_window_tag(t.get(WINDOW, ""))

    own = set(t) - set(HUB_TAGS_ON_PROMOTE)
    if len(own) + len(HUB_TAGS_ON_PROMOTE) > MAX_TAGS:
        raise InvalidRequest(
            f"secret {secret_name!r} has {len(own)} tags; promotion adds {len(HUB_TAGS_ON_PROMOTE)} "
            f"and Key Vault allows {MAX_TAGS}"
        )
    return RotationMetadata(
        target=spec,
        approval_required=approval == "required",
        validity_days=validity,
        consumers=consumers,
        overlap_hours=overlap,
        strategy=strategy,
        value_format=value_format,
        logins=logins,
        window=window,
    )


def parse_window_tag(raw: str) -> windows.Window | None:
    """The ``rotation-window`` tag; empty or absent: no window (any time).

    Raises:
        InvalidRequest: the window does not parse (the message names the tag and what is wrong).
    """
    if not raw.strip():
        return None
    try:
        return windows.parse_window(raw)
    except windows.InvalidWindow as exc:
        raise InvalidRequest(f"{WINDOW} {raw.strip()!r} is not a valid window: {exc}") from None


def check_validity_outlasts_window(secret_name: str, meta: RotationMetadata, near_expiry_days: float) -> None:
    """A new version must expire after the near-expiry window, or it is "near expiry" the moment
    it is written: Key Vault's SecretNearExpiry event and every sweep would rotate it again.

    Raises:
        InvalidRequest: ``rotation-validity-days`` is not more than the window (names both).
    """
    if meta.validity_days <= near_expiry_days:
        raise InvalidRequest(
            f"{VALIDITY_DAYS} of {secret_name!r} is {meta.validity_days:g}, not more than "
            f"ROTATION_NEAR_EXPIRY_DAYS ({near_expiry_days:g}): each new version would be near expiry "
            f"at once and be rotated again; set {VALIDITY_DAYS} above {near_expiry_days:g}"
        )
