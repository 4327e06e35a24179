"""list_incident_secrets: the secrets an incident rotates (names, versions, targets; no values)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from activities._adapter import run_step
from rotation.clients import vault_named
from rotation.incidents import Excluded, IncidentItem, IncidentListing, IncidentScope, select
from rotation.model import VaultId
from rotation.settings import current_settings

bp = df.Blueprint()


def _list(scope: IncidentScope) -> IncidentListing:
    settings = current_settings()
    items: list[IncidentItem] = []
    excluded: list[Excluded] = []
    for arm_id in scope.vaults:
        vault_id = VaultId.parse(arm_id)
        vault = vault_named(vault_id.vault_name, settings)
        found = select(vault_id, vault.list_secrets(), scope, vault.current)
        items += found.items
        excluded += found.excluded
    return IncidentListing(tuple(items), tuple(excluded))


@bp.activity_trigger(input_name="payload")
def list_incident_secrets(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step("list_incident_secrets", IncidentScope, payload, _list)
