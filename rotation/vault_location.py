"""Whether a spoke vault really is where its ARM id says, in a subscription on the allowlist.

An event's topic and an API caller's vault id name a subscription, but the hub talks to the vault
by its name alone (``https://<vault>.vault.azure.net``), and a vault's name is unique across
Azure. So an id that names an allowed subscription with the name of a vault that lives in
another one would pass a check of the id, and the hub would rotate a vault it was never meant to
touch. The allowlist is therefore checked against ARM: ``GET`` of the vault's ARM id (the caller's
subscription, resource group and name) must find the vault, and ARM must report it under that id
and at the URL the hub will use. A vault found is remembered for the life of the process (many
secrets share one vault: one ARM request per vault per process, not per secret); a refusal is
not remembered, so a vault onboarded later is found at once.

The hub needs ``Microsoft.KeyVault/vaults/read`` on each spoke vault: Reader on the vault, which
``infra/bicep/modules/spoke/vault.bicep`` grants beside Key Vault Secrets Officer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from azure.mgmt.keyvault import KeyVaultManagementClient

from rotation import clients
from rotation.azure_errors import translated
from rotation.errors import AuthenticationFailed, NotAllowed, NotFound
from rotation.events import check_allowed
from rotation.model import VaultId
from rotation.settings import Settings

logger = logging.getLogger(__name__)

_confirmed: set[str] = set()
_lock = threading.Lock()


def confirm_vault(
    vault: VaultId,
    settings: Settings,
    *,
    client_for: Callable[[str], KeyVaultManagementClient] | None = None,
) -> None:
    """Return when ``vault`` is in a subscription on the allowlist, as ARM knows it.

    Raises:
        NotAllowed: the id's subscription is not on the allowlist, or ARM does not find the vault
            under that id (it lives elsewhere, or the hub may not read it there).
        AuthenticationFailed: the hub's own identity was refused (not the vault's fault).
        TransientError: ARM or the identity endpoint does not answer now.
    """
    check_allowed(vault.subscription_id, settings)  # the id first: no request for an id refused anyway
    key = vault.arm_id.lower()
    with _lock:
        if key in _confirmed:
            return
    if client_for is None:

        def client_for(subscription: str) -> KeyVaultManagementClient:
            return clients.keyvault_client(subscription, settings)

    where = (
        f"vault {vault.vault_name!r} in resource group {vault.resource_group!r} "
        f"of subscription {vault.subscription_id}"
    )
    client = client_for(vault.subscription_id)
    try:
        with translated(where, service="Azure Resource Manager"):
            found = client.vaults.get(vault.resource_group, vault.vault_name)
    except NotFound as exc:
        raise NotAllowed(
            f"{where} does not exist as named ({exc.detail}); a vault's name is unique across "
            "Azure, so the hub rotates only the vault ARM finds under an allowed subscription"
        ) from exc
    except AuthenticationFailed as exc:
        if getattr(exc.__cause__, "status_code", None) != 403:
            raise  # the hub's token itself was refused (401): a fault of the hub, not of the vault
        raise NotAllowed(
            f"{where} is not confirmed: ARM does not show it to the hub ({exc.detail}). Either no such "
            "vault is there (a vault's name is unique across Azure: one of that name may live in "
            "another subscription), or the hub needs Reader on each spoke vault "
            "(Microsoft.KeyVault/vaults/read)"
        ) from exc
    expected_host = f"{vault.vault_name}.{settings.keyvault_dns_suffix}".lower()
    reported_host = (urlsplit(found.properties.vault_uri or "").hostname or "").lower()
    if (found.id or "").lower() != key or reported_host != expected_host:
        raise NotAllowed(
            f"{where}: ARM reports it as {found.id!r} at {reported_host or '(no URL)'!r}, not at "
            f"{expected_host!r}"
        )
    with _lock:
        _confirmed.add(key)
    logger.info("confirmed %s through ARM", where)


def forget_confirmed() -> None:
    """Forget the vaults confirmed so far (tests: a process whose cloud changed)."""
    with _lock:
        _confirmed.clear()
