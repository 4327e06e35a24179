"""The contract every local database server follows, so a scenario runs against each of them.

The tests, the demo and the benchmarks create logins, check logins and cause faults only through
these methods. Every check goes through the server's own command-line client (psql, mariadb),
never through the hub's driver, so a bug in a target module cannot confirm itself.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, Self


class DatabaseError(RuntimeError):
    """The server could not be created, started or used; the message says which step."""


class LocalDatabase(Protocol):
    #: The ``rotation-target`` tag value of the logins this server holds, e.g. ``postgresql-login``.
    kind: str
    #: A short name for output and ids: ``postgresql``, ``mariadb``.
    name: str
    host: str
    port: int
    #: A database every login may connect to.
    default_database: str

    def start(self) -> Self:
        """Create and start the server; returns once it accepts connections. Raises DatabaseError."""
        ...

    def stop(self) -> None:
        """Stop the server and remove its directory. Safe to call twice."""
        ...

    def provider(self, database: str | None = None) -> str:
        """The ``rotation-provider`` tag value pointing at ``database`` (default: ``default_database``)."""
        ...

    def app_settings(self) -> dict[str, str]:
        """What the hub's app settings need to reach this server (for example its CA file)."""
        ...

    def create_login(
        self, name: str, password: str | None, *, admin: bool = False, database: str | None = None
    ) -> None:
        """Create login ``name`` (no password: it cannot log in).

        ``admin``: it may change other logins' passwords (the ``rotation-admin: secret:<name>``
        role). ``database``: also create that database, with the login as its owner.
        The password reaches the server only as a verifier or hash, never in a statement log.
        """
        ...

    def create_database(self, name: str, *, owner: str | None = None) -> None: ...

    def create_group(self, name: str) -> None:
        """A group role that holds what its members may do (at least use ``default_database``)."""
        ...

    def join_group(self, login: str, group: str) -> None:
        """Make ``login`` a member of ``group``, active when it logs in, holding no privileges of
        its own any more: the pattern two alternating logins follow."""
        ...

    def grant_own_privilege(self, login: str) -> None:
        """Give ``login`` a privilege of its own (what alternating logins must not have)."""
        ...

    def can_login(self, login: str, password: str, database: str | None = None) -> bool:
        """Whether ``login`` logs in with ``password``, through the server's own client.

        Raises DatabaseError when the attempt failed for another reason than the credentials.
        """
        ...

    def server_log(self) -> str:
        """The server's log, holding every statement that changed a login."""
        ...

    def login_attempts(self) -> int:
        """How many logins (accepted or refused) the server has seen so far, from its log."""
        ...

    def refused_logins(self, login: str) -> int:
        """How many logins as ``login`` the server has refused for their password so far, from
        its log (what an auditor counts, and what a lockout policy would)."""
        ...

    # -- faults, as a database administrator would cause them ------------------------------------

    def expire_password(self, login: str, *, expired: bool = True) -> None:
        """Make ``login``'s password expired, or valid again. With it expired, a login is refused
        (or, on a server that lets such logins in, its first statement is)."""
        ...

    def set_admin(self, login: str, *, allowed: bool) -> None:
        """Give ``login`` the right to change other logins' passwords, or take it away."""
        ...

    def set_login_allowed(self, login: str, *, allowed: bool) -> None:
        """Lock ``login`` out (its password stays, its logins are refused), or let it in again."""
        ...

    def hold_password_changes(self, login: str) -> AbstractContextManager[None]:
        """While inside, a password change of ``login`` by anyone else waits on a lock (it may hold
        other logins' changes too); on exit it goes through."""
        ...

    def password_change_waiting(self, login: str) -> bool:
        """Whether a password change of ``login`` waits on the lock of ``hold_password_changes`` now."""
        ...
