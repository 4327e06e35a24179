"""The rotation's steps and undos, each safe to run twice: check the state, then act.

These are the domain-core functions the activities call (one each) and the benchmark calls in
sequence. They read values from Key Vault themselves and return references only.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from rotation import clients, metadata
from rotation.errors import InvalidRequest, RotationError, TargetError, UndoImpossible, VerificationFailed
from rotation.login_values import Held, LoginShape
from rotation.model import (
    Changed,
    Promoted,
    PromoteInput,
    Retired,
    RotationPlan,
    Staged,
    StageInput,
    StepInput,
)
from rotation.passwords import generate
from rotation.settings import Settings
from rotation.targets import IssuingTargetType, target_type
from rotation.targets.base import Credentials, IssuingTarget, SecretValue, TokenSource
from rotation.targets.logins import PasswordLogin
from rotation.vault import Vault, VersionInfo

logger = logging.getLogger(__name__)

PENDING_CONTENT_TYPE = "application/vnd.rotation-hub.pending"
ISSUED_LABEL_PREFIX = "keyvault-rotation-hub "


def plan(step: StepInput, vault: Vault, settings: Settings) -> RotationPlan:
    """Read the secret's tags once; skip when someone else replaced the version to rotate.

    For alternating logins, also check before anything changes that the current value holds one
    of the two logins, and that the two may stand in for each other (same group roles, no
    privileges of their own: rotation/targets/logins.py ``compare_logins``). A target that
    issues its credentials checks what it can ahead (``IssuingTarget.check``).

    Raises:
        InvalidRequest: the secret is missing, disabled, or its tags, its value or its logins
            do not allow a rotation (the message says what to fix).
    """
    name = step.secret.secret_name
    current = vault.current(name)
    promoted_here = current.tags.get(metadata.ROTATION_ID) == step.rotation_id
    if current.version != step.version and not promoted_here:
        reason = f"version {step.version} is no longer current (the current version is {current.version})"
        return RotationPlan(target_kind="", approval_required=False, validity_days=0.0, skip_reason=reason)
    meta = metadata.parse_tags(name, current.tags)
    metadata.check_validity_outlasts_window(name, meta, settings.near_expiry_days)
    kind = target_type(meta.target.kind)
    login = None
    if not promoted_here:
        check_ahead(step, vault, settings, meta)
        if not isinstance(kind, IssuingTargetType):
            # The read above fetched the value too (the vault remembers it): which login it
            # holds decides which one changes, and a value not of its tagged format stops the
            # rotation here, before anything changes.
            shape = LoginShape.of(meta)
            _, value = vault.get(name, step.version)
            login = shape.next_credential(shape.read(value))
    return RotationPlan(
        target_kind=meta.target.kind,
        approval_required=meta.approval_required,
        validity_days=meta.validity_days,
        consumers=meta.consumers,
        promoted_version=current.version if promoted_here else None,
        promoted_on=_iso(current.created_on) if promoted_here else None,
        issues_credentials=meta.overlap_hours is not None,
        overlap_hours=meta.overlap_hours or 0.0,
        issue_after_approval=isinstance(kind, IssuingTargetType) and kind.irreversible is not None,
        window=str(meta.window) if meta.window else None,
        tags=dict(current.tags),
        login=login,
    )


def check_ahead(
    step: StepInput, vault: Vault, settings: Settings, meta: metadata.RotationMetadata
) -> str | None:
    """What plan checks of the target before anything changes (the preflight too): alternating
    logins may stand in for each other; an admin secret belongs to the target's server
    (``_Bound.check_admin``); a target that issues its credentials can issue one from
    the current value (``IssuingTarget.check``). Returns what the target check found, if any.

    Raises:
        InvalidRequest, TargetError: the rotation cannot be done (the message says why).
        AuthenticationFailed: the admin or the hub's identity is refused.
        TransientError: the target cannot be reached for now.
    """
    if meta.strategy == "alternating":
        _check_alternates(step, vault, settings)  # as the admin: its secret is checked there
    elif meta.target.admin.mode == "secret":
        _Bound(step, vault, settings).check_admin()
    if isinstance(target_type(meta.target.kind), IssuingTargetType):
        _, value = vault.get(step.secret.secret_name, step.version)
        return _issuer(step, vault, settings).check(current=value)
    return None


def check_target(step: StepInput, vault: Vault, settings: Settings) -> str:
    """Everything a rotation of ``step``'s version needs of its target, changing nothing (the
    preflight): what plan checks ahead (``check_ahead``) and, for a login, that whoever makes
    the change logs in, as the change would (the current value for ``rotation-admin: self``).
    Values are read here and never leave. Returns what was proved, for a report.

    Raises:
        as ``check_ahead``.
    """
    name = step.secret.secret_name
    meta = metadata.parse_tags(name, vault.current(name).tags)
    found = check_ahead(step, vault, settings, meta)
    if isinstance(target_type(meta.target.kind), IssuingTargetType):
        return found or "the target's checks pass"
    bound = _Bound(step, vault, settings)
    login = bound.shape.next_credential(bound.previous)
    changer = bound.target_for(login).check_changer(using=bound.using(login))
    what = f"{changer} logs in to change {login!r}"
    if meta.strategy == "alternating":
        what += f"; logins {meta.logins[0]!r} and {meta.logins[1]!r} may alternate"
    return what


def _check_alternates(step: StepInput, vault: Vault, settings: Settings) -> None:
    bound = _Bound(step, vault, settings)
    logins = bound.meta.logins
    differences = bound.target_for(logins[0]).compare_alternates(
        (logins[0], logins[1]), using=bound.using(logins[0])
    )
    if differences:
        raise InvalidRequest(
            f"logins {logins[0]!r} and {logins[1]!r} of {step.secret.secret_name!r} cannot alternate: "
            + "; ".join(differences)
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def issued_label(rotation_id: str) -> str:
    """How a credential a target issues for a rotation is labelled (an Entra displayName)."""
    return f"{ISSUED_LABEL_PREFIX}{rotation_id}"


def _ours(versions: list[VersionInfo], rotation_id: str) -> list[VersionInfo]:
    return [v for v in versions if v.enabled and v.tags.get(metadata.ROTATION_ID) == rotation_id]


def _tags_of(step: StepInput, vault: Vault) -> dict[str, str]:
    """The tags of the version rotated: as plan read them, or read now (before plan ran, or a
    rotation started before plan passed them on)."""
    if step.tags is not None:
        return step.tags
    info, _ = vault.get(step.secret.secret_name, step.version)
    return dict(info.tags)


def _check_companion(step: StepInput, versions: list[VersionInfo]) -> None:
    """The companion name must hold only values this hub staged for this secret (tagged
    ``rotation-of``): another secret by that name is someone else's, and is never touched.

    Raises:
        InvalidRequest: the name is taken by another secret (nothing was changed).
    """
    foreign = [v.version for v in versions if v.tags.get(metadata.PENDING_OF) != step.secret.secret_name]
    if foreign:
        raise InvalidRequest(
            f"secret {step.secret.pending_name!r} exists and is not this hub's pending companion of "
            f"{step.secret.secret_name!r} ({len(foreign)} version(s) without the tag {metadata.PENDING_OF}="
            f"{step.secret.secret_name}): rename one of them; nothing was changed"
        )


def stage_pending(inp: StageInput, vault: Vault, settings: Settings, *, now: datetime) -> Staged:
    """Write a new value into the companion ``<name>-pending``, or reuse this rotation's.

    Enabled pending values of other rotations are leftovers (no two rotations of a secret run at
    once), so they are disabled first: at most one enabled pending value exists. A value this
    rotation staged and its undo disabled is enabled again, not replaced (a rerun). For a target
    that issues its credentials, the target issues the value here (``_stage_issued``).
    """
    step = inp.step
    companion = step.secret.pending_name
    versions = vault.versions(companion)
    _check_companion(step, versions)
    mine = _ours(versions, step.rotation_id)
    if mine:
        return Staged(
            pending_version=mine[0].version,
            reused=True,
            credential_id=metadata.credential_id_of(mine[0].tags),
        )
    for leftover in (v for v in versions if v.enabled):
        logger.warning(
            "disabling leftover pending version %s of %s (rotation %s)",
            leftover.version,
            companion,
            leftover.tags.get(metadata.ROTATION_ID, "unknown"),
        )
        vault.disable(companion, leftover.version)
    expires_on = now + timedelta(hours=inp.pending_ttl_hours)
    kind = target_type(inp.target_kind)
    if isinstance(kind, IssuingTargetType):
        return _stage_issued(inp, vault, _issuer(step, vault, settings), now=now, expires_on=expires_on)
    # A rerun of this rotation: its undos disabled the value it staged before, but when the
    # revert could not be done the target may accept only that value now. Carrying on with
    # it keeps the target reachable; a new value would lock a self-changing login out.
    earlier = [v for v in versions if v.tags.get(metadata.ROTATION_ID) == step.rotation_id]
    if earlier:
        vault.enable(companion, earlier[0].version, expires_on=expires_on)
        return Staged(pending_version=earlier[0].version, reused=True)
    # The login this rotation changes (the other one, when alternating) and the value for it.
    shape = LoginShape.of(metadata.parse_tags(step.secret.secret_name, _tags_of(step, vault)))
    login = inp.login
    if login is None:
        _, current = vault.get(step.secret.secret_name, step.version)
        login = shape.next_credential(shape.read(current))
    value = shape.write(login, generate(kind.password_policy))
    written = vault.write(
        companion,
        value,
        tags={
            metadata.ROTATION_ID: step.rotation_id,
            metadata.PENDING_OF: step.secret.secret_name,
            metadata.PREVIOUS_VERSION: step.version,
        },
        # Policy demands an expiry on every secret; this one only has to outlive the rotation.
        expires_on=expires_on,
        content_type=PENDING_CONTENT_TYPE,
    )
    return Staged(pending_version=written.version, reused=False)


def _stage_issued(
    inp: StageInput, vault: Vault, target: IssuingTarget, *, now: datetime, expires_on: datetime
) -> Staged:
    """Have the target issue a credential and write it to the companion, in one activity: the
    value never leaves it. A credential labelled with this rotation but in no pending version
    was issued by an attempt that died before the write (its value is lost for good): it goes
    first, so exactly one new credential remains. An earlier value of this rotation that an undo
    disabled is not enabled again: the undo withdrew its credential too."""
    step = inp.step
    label = issued_label(step.rotation_id)
    for orphan in target.issued(label=label):
        logger.warning(
            "removing credential %s that an interrupted stage of %s left", orphan, step.rotation_id
        )
        target.withdraw(credential_id=orphan)
    _, current = vault.get(step.secret.secret_name, step.version)
    issued = target.issue(
        label=label,
        expires_on=now + timedelta(days=inp.validity_days, hours=inp.overlap_hours),
        current=current,
    )
    written = vault.write(
        step.secret.pending_name,
        issued.value,
        tags={
            metadata.ROTATION_ID: step.rotation_id,
            metadata.PENDING_OF: step.secret.secret_name,
            metadata.PREVIOUS_VERSION: step.version,
            metadata.CREDENTIAL_ID: issued.credential_id,
        },
        expires_on=expires_on,
        content_type=PENDING_CONTENT_TYPE,
    )
    logger.info(
        "staged credential %s of %s as %s", issued.credential_id, step.secret.secret_name, written.version
    )
    return Staged(pending_version=written.version, reused=False, credential_id=issued.credential_id)


def discard_pending(step: StepInput, vault: Vault) -> Changed:
    """Disable this rotation's pending value(s); the name stays (soft delete would block it)."""
    companion = step.secret.pending_name
    mine = _ours(vault.versions(companion), step.rotation_id)
    for version in mine:
        vault.disable(companion, version.version)
    if not mine:
        return Changed(changed=False, detail="no pending value left")
    return Changed(changed=True, detail=f"disabled {len(mine)} pending version(s)")


def discard_staged(step: StepInput, vault: Vault) -> Changed:
    """Disable the pending version this rotation staged, by its id when the step knows it (no
    need to list the companion's versions: stage leaves at most one of this rotation's enabled);
    otherwise as ``discard_pending``. Disabling a disabled version again changes nothing."""
    if not step.pending_version:
        return discard_pending(step, vault)
    vault.disable(step.secret.pending_name, step.pending_version)
    return Changed(changed=True, detail=f"disabled pending version {step.pending_version}")


def _pending_version(step: StepInput) -> str:
    if not step.pending_version:
        raise InvalidRequest(f"rotation {step.rotation_id} has no pending version to use")
    return step.pending_version


class _Bound:
    """A rotation's secret as logins: what its current version holds, the credentials a change
    may use (read from the vault), and the target bound to a login."""

    def __init__(self, step: StepInput, vault: Vault, settings: Settings) -> None:
        self._step = step
        self.meta = metadata.parse_tags(step.secret.secret_name, _tags_of(step, vault))
        self.shape = LoginShape.of(self.meta)
        self._settings = settings
        self._vault = vault
        self.access_token: TokenSource | None = None
        if self.meta.target.admin.mode == "managed-identity":
            self.access_token = functools.partial(clients.access_token, settings=settings)

    @functools.cached_property
    def previous(self) -> Held:
        """What the version rotated holds, read when a step needs it (verify does not)."""
        _, value = self._vault.get(self._step.secret.secret_name, self._step.version)
        return self.shape.read(value)

    @functools.cached_property
    def _admin(self) -> tuple[SecretValue | None, str | None]:
        """The admin's password and login for ``secret:<name>``, read when a change needs them
        (verify does not), once its secret is found to belong to the target's server.

        Raises:
            InvalidRequest: the admin secret names no server, or another one.
        """
        admin = self.meta.target.admin
        if admin.mode != "secret" or not admin.secret_name:
            return None, None
        admin_info, value = self._vault.get(admin.secret_name)
        self._check_admin_server(admin.secret_name, metadata.provider_of(admin_info.tags))
        return value, metadata.credential_of(admin_info.tags)

    def check_admin(self) -> None:
        """For ``rotation-admin: secret:<name>``: its secret belongs to the target's server (reads it)."""
        self._admin  # noqa: B018 (reading it checks it)

    def _check_admin_server(self, secret_name: str, admin_provider: str | None) -> None:
        """An admin password goes only to the server its own secret names (``rotation-provider``,
        host and port): whoever may tag the rotated secret cannot send it to another host."""
        target = self.meta.target
        server = self.shape.kind.endpoint(target)
        if not admin_provider:
            raise InvalidRequest(
                f"the admin secret {secret_name!r} has no rotation-provider tag naming the server it "
                f"belongs to; tag it rotation-provider={target.provider} (its password goes to no other server)"
            )
        try:
            own = self.shape.kind.endpoint(replace(target, provider=admin_provider))
        except InvalidRequest as exc:
            raise InvalidRequest(f"the admin secret {secret_name!r}: {exc.detail}") from None
        if (own.host.lower().rstrip("."), own.port) != (server.host.lower().rstrip("."), server.port):
            raise InvalidRequest(
                f"the admin secret {secret_name!r} belongs to {own.host}:{own.port} (its rotation-provider), "
                f"not to {server.host}:{server.port}, the server of {target.provider!r}: its password is "
                "not sent there"
            )

    def target_for(self, credential: str) -> PasswordLogin:
        """The target bound to one of the secret's logins."""
        target = self.shape.kind.build(replace(self.meta.target, credential=credential), self._settings)
        if not isinstance(target, PasswordLogin):
            raise InvalidRequest(f"rotation-target {self.meta.target.kind!r} does not change login passwords")
        return target

    def using(self, credential: str) -> Credentials:
        """What a change of ``credential`` may use: its current password when the current
        version holds it (a self-change needs it), and the admin's."""
        current = self.previous.password if credential == self.previous.credential else None
        admin, admin_login = self._admin
        return Credentials(
            current=current, admin=admin, admin_login=admin_login, access_token=self.access_token
        )

    def pending(self, vault: Vault, step: StepInput) -> Held:
        _, value = vault.get(step.secret.pending_name, _pending_version(step))
        return self.shape.read(value)


def apply_target(step: StepInput, vault: Vault, settings: Settings) -> Changed:
    """Make the target accept the pending value (nothing to do when it already does)."""
    bound = _Bound(step, vault, settings)
    pending = bound.pending(vault, step)
    changed = bound.target_for(pending.credential).apply(
        new=pending.password, using=bound.using(pending.credential)
    )
    return Changed(
        changed=changed, detail="target updated" if changed else "target already accepted the new value"
    )


def _issuing_kind(step: StepInput, vault: Vault) -> tuple[IssuingTargetType, metadata.RotationMetadata]:
    """The type of the rotation's target, when it issues its credentials, and the secret's tags."""
    name = step.secret.secret_name
    meta = metadata.parse_tags(name, _tags_of(step, vault))
    kind = target_type(meta.target.kind)
    if not isinstance(kind, IssuingTargetType):
        raise InvalidRequest(
            f"rotation-target {meta.target.kind!r} of {name!r} does not issue its credentials"
        )
    return kind, meta


def _issuer(step: StepInput, vault: Vault, settings: Settings) -> IssuingTarget:
    """The target of one rotation, when it issues its credentials (it acts as the hub)."""
    kind, meta = _issuing_kind(step, vault)
    return kind.build(meta.target, settings, clients.hub_credential(settings), meta.value_format)


def _issues(step: StepInput, vault: Vault) -> bool:
    return metadata.parse_tags(step.secret.secret_name, _tags_of(step, vault)).overlap_hours is not None


def verify_target(step: StepInput, vault: Vault, settings: Settings) -> Changed:
    """Log in afresh with the pending value. Raises VerificationFailed when it is refused."""
    if _issues(step, vault):
        _, value = vault.get(step.secret.pending_name, _pending_version(step))
        _issuer(step, vault, settings).verify(value=value)
    else:
        bound = _Bound(step, vault, settings)
        pending = bound.pending(vault, step)
        bound.target_for(pending.credential).verify(value=pending.password)
    return Changed(changed=False, detail="the new credential logs in")


def withdraw_issued(step: StepInput, vault: Vault, settings: Settings) -> Changed:
    """Undo of stage for a target that issues credentials: remove every credential this rotation
    issued. Once promoted, the new credential is the truth and stays.
    """
    current = vault.current(step.secret.secret_name)
    if current.tags.get(metadata.ROTATION_ID) == step.rotation_id:
        return Changed(changed=False, detail="the new credential is promoted; it stays")
    kind, _ = _issuing_kind(step, vault)
    if kind.irreversible:
        return Changed(changed=False, detail=kind.irreversible)
    target = _issuer(step, vault, settings)
    removed = [
        cid
        for cid in target.issued(label=issued_label(step.rotation_id))
        if target.withdraw(credential_id=cid)
    ]
    if not removed:
        return Changed(changed=False, detail="no credential of this rotation is left")
    return Changed(
        changed=True, detail=f"removed the credential(s) this rotation issued: {', '.join(removed)}"
    )


def retire_previous(step: StepInput, vault: Vault, settings: Settings) -> Retired:
    """After the overlap: remove the credential the replaced version held, if this hub issued it
    (its version recorded which). Others are never removed blindly: they are named instead.
    """
    name = step.secret.secret_name
    current = vault.current(name)
    if current.tags.get(metadata.ROTATION_ID) != step.rotation_id:
        return Retired(
            changed=False, detail=f"version {current.version} is not this rotation's; nothing retired"
        )
    new_id = metadata.credential_id_of(current.tags)
    kind, _ = _issuing_kind(step, vault)
    if kind.keeps_previous:
        return Retired(changed=False, detail=kind.keeps_previous)
    previous, previous_value = vault.get(name, step.version)
    old_id = metadata.credential_id_of(previous.tags)
    target = _issuer(step, vault, settings)
    if old_id and old_id != new_id:
        held = {c.credential_id: c for c in target.credentials()}
        info = held.get(old_id)
        # The tag says which credential the replaced version held; where the target shows the
        # first characters of its value, they must agree, or the tag is wrong (set by hand).
        if info is not None and info.hint and not previous_value.reveal().startswith(info.hint):
            logger.warning("%s: credential %s does not hold the replaced value; not removed", name, old_id)
            return Retired(
                changed=False,
                detail=f"credential {old_id} does not hold the replaced version's value (its hint differs); "
                "not removed",
                not_removed=(f"{old_id} ({info.label or 'no name'})",),
            )
        removed = info is not None and target.withdraw(credential_id=old_id)
        detail = (
            f"removed the previous credential {old_id}"
            if removed
            else f"the previous credential {old_id} was already gone"
        )
        return Retired(changed=removed, detail=detail)
    others = tuple(
        f"{c.credential_id} ({c.label or 'no name'})"
        for c in target.credentials()
        if c.credential_id != new_id
    )
    if others:
        logger.warning(
            "%s: the previous credential was not issued by this hub; left for an operator: %s",
            name,
            ", ".join(others),
        )
    return Retired(
        changed=False,
        detail="the previous credential was not issued by this hub, so it is not removed"
        + (f"; the target still holds: {', '.join(others)}" if others else ""),
        not_removed=others,
    )


def revert_target(step: StepInput, vault: Vault, settings: Settings) -> Changed:
    """Undo of apply: the target accepts the previous value again, verified by a fresh login.

    Does nothing when the new value was already promoted (the vault then serves the new value,
    and reverting the target would break it).

    Raises:
        UndoImpossible: no credential at hand can restore the previous value, or it still does
            not log in afterwards.
    """
    name = step.secret.secret_name
    current = vault.current(name)
    if current.tags.get(metadata.ROTATION_ID) == step.rotation_id:
        return Changed(changed=False, detail="the new version is already promoted; the target keeps it")
    bound = _Bound(step, vault, settings)
    pending: Held | None = None
    if step.pending_version:
        try:
            pending = bound.pending(vault, step)
        except InvalidRequest:
            pending = None  # already discarded; a self-admin target then tries the previous value
    if pending is not None and pending.credential != bound.previous.credential:
        # Alternating: the change went to the other login; the current version's was untouched.
        return Changed(
            changed=False,
            detail=f"the current version's login {bound.previous.credential!r} was not changed",
        )
    previous = bound.previous
    target = bound.target_for(previous.credential)
    changed = target.revert(
        previous=previous.password,
        new=pending.password if pending else None,
        using=bound.using(previous.credential),
    )
    try:
        target.verify(value=previous.password)
    except VerificationFailed as exc:
        raise UndoImpossible(
            f"the previous credential of {name!r} still does not log in after the revert"
        ) from exc
    return Changed(
        changed=changed,
        detail="previous credential restored and verified" if changed else "previous credential still works",
    )


def promote(inp: PromoteInput, vault: Vault, *, now: datetime) -> Promoted:
    """Write the pending value as the secret's new current version, once. With
    ``inp.only_if_landed``, only find out whether an earlier attempt's write landed.

    Raises:
        TargetError: someone else wrote a new version of the secret during the rotation, or
            (``only_if_landed``) no write of this rotation landed.
    """
    step = inp.step
    name = step.secret.secret_name
    current = vault.current(name)
    if current.tags.get(metadata.ROTATION_ID) == step.rotation_id:
        return Promoted(new_version=current.version, changed=False, promoted_on=_iso(current.created_on))
    if inp.only_if_landed:
        raise TargetError(f"no write of rotation {step.rotation_id} landed in secret {name!r}")
    if current.version != step.version:
        raise TargetError(
            f"secret {name!r} got version {current.version} from elsewhere during rotation {step.rotation_id}"
        )
    pending_info, pending = vault.get(step.secret.pending_name, _pending_version(step))
    tags = {k: v for k, v in current.tags.items() if k not in metadata.HUB_TAGS_ON_PROMOTE}
    tags[metadata.ROTATION_ID] = step.rotation_id
    tags[metadata.PREVIOUS_VERSION] = step.version
    credential_id = metadata.credential_id_of(pending_info.tags)
    if credential_id:
        tags[metadata.CREDENTIAL_ID] = credential_id
    written = vault.write(
        name,
        pending,
        tags=tags,
        expires_on=now + timedelta(days=inp.validity_days),
        content_type=current.content_type,
    )
    return Promoted(new_version=written.version, changed=True, promoted_on=_iso(written.created_on or now))


def promote_and_clean_up(inp: PromoteInput, vault: Vault, *, now: datetime) -> Promoted:
    """``promote``, then disable the pending value (``discard_staged``): one activity, so one
    checkpoint fewer. Both halves check before they act, so a crash between them is safe: the
    rerun finds the version promoted (no second one) and disables the pending value. A cleanup
    that fails does not fail the promotion (it happened): ``pending_disabled`` is False and the
    orchestrator runs the cleanup as a step of its own.

    Raises:
        as ``promote``.
    """
    promoted = promote(inp, vault, now=now)
    try:
        cleaned = discard_staged(inp.step, vault)
    except RotationError as exc:
        logger.warning(
            "promoted %s, but its pending value is not disabled yet: %s", promoted.new_version, exc
        )
        return replace(promoted, cleanup=f"not done: {exc}")
    return replace(promoted, pending_disabled=True, cleanup=cleaned.detail)


def roll_forward(inp: PromoteInput, vault: Vault, settings: Settings, *, now: datetime) -> Promoted:
    """The target's undo failed after it took the pending value: promote that value instead,
    once it logs in afresh (``verify_target``), so the vault holds what the target accepts.
    Both halves check before they act, so running it twice promotes once.

    Raises:
        VerificationFailed: the pending value does not log in either; nothing is promoted.
        as ``promote``.
    """
    verify_target(inp.step, vault, settings)
    return promote_and_clean_up(inp, vault, now=now)
