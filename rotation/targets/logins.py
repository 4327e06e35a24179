"""Database logins as targets: one apply / verify / revert protocol for every database engine.

A database login's password is a value the hub chooses. Every engine changes it the same way,
each move checking the state before it acts, so any move can run twice:

- apply: a session is opened as the *changer* (the login itself with its current value, an
  admin login from another secret, or the hub's managed identity, as ``rotation-admin`` says) and
  the password is set; nothing is done when the login already accepts the new value. An admin
  or the identity asks that first (a login with the new value). A login changing itself does
  not: its current value logging in already says the change is not done (every engine here
  holds one password per login), so a first run makes no refused login, and only when the
  current value is refused is the new one tried.
- verify: a fresh login with the value, and a trivial statement.
- revert: when the login accepts the previous value, nothing is done; otherwise the password is
  set back, by the admin, or by the login itself with whichever of its values still works.

What differs per engine (how to connect, how to set a password, how to read its errors) is an
``Engine``; this module holds what is the same, so it is written and tested once.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from rotation.errors import AuthenticationFailed, InvalidRequest, UndoImpossible, VerificationFailed
from rotation.targets.base import Credentials, SecretValue, TargetSpec, TokenSource

logger = logging.getLogger(__name__)

#: ``login``: a session to prove a credential; ``change``: a session that changes a password
#: (some servers want that in another database, such as SQL Server's server logins in master).
Purpose = Literal["login", "change"]
SETTLE_STEP_MAX_SECONDS = 15.0


@dataclass(frozen=True)
class Principal:
    """Who opens a session: a login with its password, or the hub's identity with a token.

    ``description`` is what an error calls it ("the admin secret 'pg-admin'").
    """

    login: str
    secret: SecretValue = field(repr=False)
    description: str
    token: bool = False


class Session(Protocol):
    def check(self) -> None:
        """Run a trivial statement: the login is in and may work."""
        ...

    def set_password(self, new: SecretValue, *, current: SecretValue | None) -> None:
        """Set the rotated login's password to ``new``.

        ``current`` is given when the session's principal is the rotated login itself (some
        servers want the current password then). Raises TargetError, TransientError.
        """
        ...

    def compare_logins(self, first: str, second: str) -> list[str]:
        """What keeps two logins from standing in for each other (rotation-strategy
        'alternating'): each must be a member of the same group roles and hold no privileges of
        its own. Empty when they may alternate; else one line per difference, saying what to fix.
        Raises TargetError where the engine cannot tell."""
        ...


class Engine(Protocol):
    """One database server and one login on it, as an engine module connects to it."""

    #: The rotated login's name, as the server knows it.
    login: str
    #: The login, for messages: "role 'app' on db.example.com:5432/appdb".
    what: str
    #: How long a changed password may take to be accepted everywhere (Azure SQL Database caches
    #: logins in each database for a while); verify keeps trying that long. 0 for most servers.
    settle_seconds: float

    def session(
        self, principal: Principal, *, purpose: Purpose, hide: tuple[SecretValue, ...]
    ) -> AbstractContextManager[Session]:
        """A session as ``principal``; the driver's errors become the domain's, their texts
        scrubbed of every value in ``hide`` and of the principal's secret.

        Raises:
            AuthenticationFailed: the server refuses the principal's credential.
            TransientError: the server cannot be reached for now.
            TargetError: anything else, for good.
        """
        ...

    def identity_principal(self, token: TokenSource) -> Principal:
        """The hub's managed identity as a principal. Raises TargetError when the engine or
        the settings do not allow it."""
        ...

    def check_admin_login(self, name: str, *, tag: str) -> None:
        """Raises InvalidRequest naming ``tag`` when ``name`` cannot be a login of this engine."""
        ...


#: What ``rotation-admin`` may say, as its users write it.
ADMIN_MODES = {"self": "'self'", "secret": "'secret:<name>'", "managed-identity": "'managed-identity'"}


def check_admin(spec: TargetSpec, *, modes: tuple[str, ...] = tuple(ADMIN_MODES)) -> None:
    """Raises InvalidRequest naming ``rotation-admin`` when the spec's admin mode is not one of
    ``modes`` (those the engine supports), or names no secret."""
    if spec.admin.mode == "secret" and not spec.admin.secret_name:
        raise InvalidRequest("rotation-admin 'secret:<name>' names no secret")
    if spec.admin.mode not in modes:
        forms = [ADMIN_MODES[mode] for mode in modes]
        choice = forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"
        raise InvalidRequest(
            f"rotation-admin {spec.admin.mode!r} is not supported for {spec.kind} (use {choice})"
        )


def scrub(text: str, hide: tuple[SecretValue, ...]) -> str:
    """``text`` (a driver's message) with every value in ``hide`` replaced, whitespace folded.

    No driver has a reason to echo a password, but nothing a driver says is trusted to be clean.
    """
    for value in hide:
        if value.reveal():
            text = text.replace(value.reveal(), "<hidden>")
    return " ".join(text.split())


class PasswordLogin:
    """A login whose password the hub sets, as a ``Target`` (see ``rotation.targets.base``)."""

    def __init__(self, spec: TargetSpec, engine: Engine) -> None:
        self.spec = spec
        self.engine = engine

    def apply(self, *, new: SecretValue, using: Credentials) -> bool:
        """Make the login accept ``new``; False when it already does.

        Raises:
            AuthenticationFailed: the value used to make the change (current, admin, token) is refused.
            TransientError, TargetError: as the Protocol says.
        """
        changing_itself = self.spec.admin.mode == "self"
        if not changing_itself and self._logs_in(new):
            logger.info("%s already accepts the new value; nothing to change", self.engine.what)
            return False
        changer = self._changer(using)
        try:
            self._set(changer, new, hide=(new,))
        except AuthenticationFailed as exc:
            # The current value refused: an earlier run of this step (or a duplicate one, between
            # our logins) changed the password already, and then the new value logs in.
            if changing_itself and self._logs_in(new):
                logger.info("%s already accepts the new value; nothing to change", self.engine.what)
                return False
            raise AuthenticationFailed(f"{changer.description} is refused: {exc.detail}") from None
        return True

    def verify(self, *, value: SecretValue) -> None:
        """Log in afresh as the login with ``value`` and run a trivial statement.

        Raises:
            VerificationFailed: the server refuses ``value`` for the login.
        """
        deadline = time.monotonic() + self.engine.settle_seconds
        delay = 1.0
        while not self._logs_in(value):
            if time.monotonic() + delay > deadline:
                raise VerificationFailed(f"{self.engine.what} refuses the value")
            logger.info("%s does not accept the value yet; trying again in %.0fs", self.engine.what, delay)
            time.sleep(delay)
            delay = min(delay * 2, SETTLE_STEP_MAX_SECONDS)
        logger.info("%s logs in with the value", self.engine.what)

    def revert(self, *, previous: SecretValue, new: SecretValue | None, using: Credentials) -> bool:
        """Make the login accept ``previous`` again; False when it already does.

        Raises:
            UndoImpossible: neither the login's values at hand nor the admin can log in.
        """
        if self._logs_in(previous):
            logger.info("%s already accepts the previous value; nothing to undo", self.engine.what)
            return False
        if self.spec.admin.mode == "self":
            candidates = [v for v in (new, using.current) if v is not None and v != previous]
            # De-duplicate by value: new and current are often the same after apply.
            for value in {v.reveal(): v for v in candidates}.values():
                principal = self._as_login(value)
                try:
                    self._set(principal, previous, hide=(previous,))
                    return True
                except AuthenticationFailed:
                    continue
            if self._logs_in(previous):  # a duplicate run restored it meanwhile
                return False
            raise UndoImpossible(
                f"{self.engine.what} accepts neither its previous nor its new value; "
                "the password must be reset by an administrator"
            )
        changer = self._changer(using)
        try:
            self._set(changer, previous, hide=(previous,))
        except AuthenticationFailed as exc:
            raise UndoImpossible(
                f"{self.engine.what} cannot be restored: {changer.description} is refused: {exc.detail}"
            ) from None
        return True

    def check_changer(self, *, using: Credentials) -> str:
        """Log in as whoever ``rotation-admin`` says makes the change (the login itself with its
        current value, the admin secret's login, or the hub's identity), in the session a change
        opens, and run a trivial statement; change nothing. Returns who logged in, for a report.

        Raises:
            AuthenticationFailed: that credential is refused (the message names whose).
            TransientError: the server cannot be reached for now.
            TargetError, InvalidRequest: as the Protocol says, or the admin secret names no login.
        """
        changer = self._changer(using)
        try:
            with self.engine.session(changer, purpose="change", hide=()) as session:
                session.check()
        except AuthenticationFailed as exc:
            raise AuthenticationFailed(f"{changer.description} is refused: {exc.detail}") from None
        return changer.description

    # -- helpers -------------------------------------------------------------------------------

    def compare_alternates(self, logins: tuple[str, str], *, using: Credentials) -> list[str]:
        """Whether ``logins`` may alternate, checked as the admin (see ``Session.compare_logins``)."""
        with self.engine.session(self._changer(using), purpose="login", hide=()) as session:
            return session.compare_logins(*logins)

    def _as_login(self, value: SecretValue) -> Principal:
        return Principal(self.engine.login, value, description=f"the current value of {self.engine.what}")

    def _changer(self, using: Credentials) -> Principal:
        """Who makes the change, as ``rotation-admin`` says."""
        mode = self.spec.admin.mode
        if mode == "self":
            if using.current is None:
                raise AuthenticationFailed(
                    f"{self.engine.what} has no current value to change its password with"
                )
            return self._as_login(using.current)
        if mode == "managed-identity":
            if using.access_token is None:
                raise AuthenticationFailed("the hub's managed identity is not available to this step")
            return self.engine.identity_principal(using.access_token)
        secret_name = self.spec.admin.secret_name
        if using.admin is None:
            raise AuthenticationFailed(f"the admin secret {secret_name!r} gave no value")
        if not using.admin_login:
            raise InvalidRequest(
                f"the admin secret {secret_name!r} has no rotation-credential tag naming its login"
            )
        self.engine.check_admin_login(using.admin_login, tag=f"rotation-credential of {secret_name!r}")
        return Principal(using.admin_login, using.admin, description=f"the admin secret {secret_name!r}")

    def _set(self, changer: Principal, value: SecretValue, *, hide: tuple[SecretValue, ...]) -> None:
        own = changer.login == self.engine.login and not changer.token
        with self.engine.session(changer, purpose="change", hide=hide) as session:
            session.set_password(value, current=changer.secret if own else None)
        as_whom = "the hub's managed identity" if changer.token else repr(changer.login)
        logger.info("%s: password changed (as %s)", self.engine.what, as_whom)

    def _logs_in(self, value: SecretValue) -> bool:
        """Whether the login logs in with ``value``. Raises TransientError, TargetError."""
        try:
            with self.engine.session(self._as_login(value), purpose="login", hide=()) as session:
                session.check()
        except AuthenticationFailed:
            return False
        return True
