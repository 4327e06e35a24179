"""A scripted stand-in for list_incident_secrets: same name, same records in and out.

The items of each vault come from ``$SCRIPTED_ROTATION_DIR/listing-<vault name>.json`` (a list
of IncidentItem dicts); a vault without that file is listed empty. Each call is appended to
``listing-calls.jsonl``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import azure.durable_functions as df

from rotation.incidents import IncidentItem, IncidentListing, IncidentScope
from rotation.model import VaultId

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload")
def list_incident_secrets(payload: dict[str, Any]) -> dict[str, Any]:
    scope = IncidentScope.from_dict(payload)
    folder = Path(os.environ["SCRIPTED_ROTATION_DIR"])
    with (folder / "listing-calls.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps(payload) + "\n")
    items: list[IncidentItem] = []
    for arm_id in scope.vaults:
        listing = folder / f"listing-{VaultId.parse(arm_id).vault_name}.json"
        if listing.exists():
            items += [IncidentItem.from_dict(raw) for raw in json.loads(listing.read_text(encoding="utf-8"))]
    return IncidentListing(tuple(items)).to_dict()
