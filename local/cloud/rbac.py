"""Azure RBAC as the local cloud applies it: built-in roles, their actions, and scope inheritance.

An assignment on a subscription or resource group covers every resource below it, as in Azure.
Only the roles the project grants are defined, with the actions Azure gives them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
WEBSITE_CONTRIBUTOR = "de139f84-1756-47ae-9be6-808fbbe84772"
STORAGE_KEY_OPERATOR = "81a9662b-bebf-436f-a333-f67b29880f12"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
# The data action Event Grid checks when a custom topic receives events with an Entra ID token.
EVENTGRID_SEND = "Microsoft.EventGrid/events/send/action"


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    actions: tuple[str, ...]  # control plane (ARM)
    data_actions: tuple[str, ...]  # data plane (Key Vault)


ROLES: dict[str, RoleDefinition] = {
    SECRETS_OFFICER: RoleDefinition(
        "Key Vault Secrets Officer",
        actions=("Microsoft.KeyVault/vaults/*/read", "Microsoft.Resources/subscriptions/resourceGroups/read"),
        data_actions=("Microsoft.KeyVault/vaults/secrets/*",),
    ),
    SECRETS_USER: RoleDefinition(
        "Key Vault Secrets User",
        actions=(),
        data_actions=(
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ),
    ),
    WEBSITE_CONTRIBUTOR: RoleDefinition(
        "Website Contributor",
        actions=(
            "Microsoft.Web/sites/*",
            "Microsoft.Web/serverFarms/join/action",
            "Microsoft.Web/serverFarms/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ),
        data_actions=(),
    ),
    # Only the two key actions: reading the account itself (GET, e.g. allowSharedKeyAccess) needs
    # another role, such as Reader.
    STORAGE_KEY_OPERATOR: RoleDefinition(
        "Storage Account Key Operator Service Role",
        actions=(
            "Microsoft.Storage/storageAccounts/listkeys/action",
            "Microsoft.Storage/storageAccounts/regeneratekey/action",
        ),
        data_actions=(),
    ),
    READER: RoleDefinition("Reader", actions=("*/read",), data_actions=()),
    EVENTGRID_DATA_SENDER: RoleDefinition(
        "EventGrid Data Sender",
        actions=(
            "Microsoft.Authorization/*/read",
            "Microsoft.EventGrid/topics/read",
            "Microsoft.EventGrid/domains/read",
            "Microsoft.EventGrid/partnerNamespaces/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ),
        data_actions=(EVENTGRID_SEND,),
    ),
}


def role_id(name_or_id: str) -> str | None:
    """The role definition id for a role's display name or id; None when unknown."""
    wanted = name_or_id.strip().rsplit("/", 1)[-1].lower()
    for rid, role in ROLES.items():
        if wanted in (rid, role.name.lower()):
            return rid
    return None


def _covers(scope: str, resource: str) -> bool:
    scope_l, resource_l = scope.lower().rstrip("/"), resource.lower().rstrip("/")
    return resource_l == scope_l or resource_l.startswith(scope_l + "/")


def _matches(patterns: Iterable[str], action: str) -> bool:
    # Azure compares actions case-insensitively and lets "*" stand for any run of characters.
    return any(fnmatchcase(action.lower(), p.lower()) for p in patterns)


@dataclass(frozen=True)
class Grant:
    """One role assignment in the form the checker needs."""

    principal: str
    role_id: str
    scope: str


def permissions(grants: Iterable[Grant], principal: str, resource: str) -> list[RoleDefinition]:
    """The roles ``principal`` holds on ``resource`` (assigned on it or on a scope above it), one
    per assignment, as ARM's permissions API lists them (``.../providers/Microsoft.Authorization/
    permissions``: each entry a role's actions and data actions)."""
    return [ROLES[g.role_id] for g in grants if g.principal == principal and _covers(g.scope, resource)]


def is_allowed(grants: Iterable[Grant], principal: str, resource: str, action: str, *, data: bool) -> bool:
    """Whether ``principal`` may perform ``action`` on ``resource`` (an ARM id or a path below one)."""
    for grant in grants:
        if grant.principal != principal or not _covers(grant.scope, resource):
            continue
        role = ROLES[grant.role_id]
        if _matches(role.data_actions if data else role.actions, action):
            return True
    return False
