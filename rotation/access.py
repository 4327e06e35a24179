"""What the hub's identity may do on an Azure resource, asked of ARM without trying it.

A preflight must not change anything, so it cannot prove write access by writing. ARM's
permissions API (``GET {resource id}/providers/Microsoft.Authorization/permissions``) lists the
caller's own effective permissions at a scope: one entry per role it holds there, each with
``actions``/``notActions`` (control plane) and ``dataActions``/``notDataActions`` (data plane,
such as Key Vault's secrets). An action is permitted when one entry's actions match it and the
same entry's not-actions do not; ``*`` stands for any run of characters, case is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rotation import clients
from rotation.azure_errors import translated
from rotation.errors import InvalidRequest
from rotation.settings import Settings

ARM = "Azure Resource Manager"
GET_SECRET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"  # noqa: S105 (an RBAC action)
SET_SECRET = "Microsoft.KeyVault/vaults/secrets/setSecret/action"  # noqa: S105 (an RBAC action)
RESTART_SITE = "Microsoft.Web/sites/restart/action"

_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<namespace>[^/]+)"
    r"/(?P<type>[^/]+)/(?P<name>[^/]+)/?$",
    re.IGNORECASE,
)


def _pattern(action: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in action.split("*")), re.IGNORECASE)


def _any_match(patterns: Sequence[str], action: str) -> bool:
    return any(_pattern(p).fullmatch(action) for p in patterns)


@dataclass(frozen=True)
class Grant:
    """One entry of the permissions API's answer (one role the caller holds at the scope)."""

    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()

    def allows(self, action: str, *, data: bool) -> bool:
        allowed, denied = (
            (self.data_actions, self.not_data_actions) if data else (self.actions, self.not_actions)
        )
        return _any_match(allowed, action) and not _any_match(denied, action)


@dataclass(frozen=True)
class Permissions:
    """The caller's effective permissions at one scope."""

    scope: str
    grants: tuple[Grant, ...]

    def allows(self, action: str, *, data: bool = False) -> bool:
        return any(grant.allows(action, data=data) for grant in self.grants)

    def missing(self, actions: Iterable[str], *, data: bool = False) -> list[str]:
        """The actions of ``actions`` the caller may not perform here."""
        return [action for action in actions if not self.allows(action, data=data)]


def permissions_on(resource_id: str, settings: Settings) -> Permissions:
    """The hub identity's permissions on a top-level resource (a vault, a site), from ARM.

    Raises:
        InvalidRequest: ``resource_id`` is not a top-level resource's ARM id.
        AuthenticationFailed: ARM refuses the hub's identity.
        NotFound: the subscription or resource group does not exist.
        TransientError: ARM cannot be reached or throttles.
    """
    found = _RESOURCE_ID.match(resource_id.strip())
    if not found:
        raise InvalidRequest(f"{resource_id!r} is not the ARM id of a top-level resource")
    client = clients.authorization_client(found["sub"].lower(), settings)
    with translated(f"the hub's permissions on {found['type']} {found['name']!r}", service=ARM):
        listed = client.permissions.list_for_resource(
            resource_group_name=found["rg"],
            resource_provider_namespace=found["namespace"],
            # A top-level resource has no parent; the client sends "//", which ARM accepts.
            parent_resource_path="",
            resource_type=found["type"],
            resource_name=found["name"],
        )
        grants = tuple(
            Grant(
                actions=tuple(p.actions or ()),
                not_actions=tuple(p.not_actions or ()),
                data_actions=tuple(p.data_actions or ()),
                not_data_actions=tuple(p.not_data_actions or ()),
            )
            for p in listed
        )
    return Permissions(scope=resource_id, grants=grants)
