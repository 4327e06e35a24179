"""The principals the local host's App Service authentication can sign in (``--easy-auth``), as
the stack, the demo and the tests use them: someone who approves (a member of the approvers'
group), someone who starts rotations, and someone from elsewhere in the tenant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# An Entra group the approvers belong to (ROTATION_APPROVERS may name it).
APPROVERS_GROUP = "6f1d2c3b-4a59-4e8d-9c7b-0a1b2c3d4e5f"
OTHER_GROUP = "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70"

APPROVER = "approver"
SECOND_APPROVER = "second-approver"
REQUESTER = "requester"
OUTSIDER = "outsider"
# A display name full of HTML: whatever shows it must escape it.
ODD_NAME = "odd-name"

PRINCIPALS: dict[str, dict[str, Any]] = {
    APPROVER: {
        "id": "3a7c9e21-5b4d-4f6a-8e2c-1d0b9a8f7e61",
        "name": "approver@contoso.example",
        "groups": [APPROVERS_GROUP],
    },
    SECOND_APPROVER: {
        "id": "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c62",
        "name": "second.approver@contoso.example",
        "groups": [OTHER_GROUP, APPROVERS_GROUP],
    },
    REQUESTER: {
        "id": "c4d5e6f7-a8b9-4c0d-8e1f-2a3b4c5d6e63",
        "name": "requester@contoso.example",
        "groups": [OTHER_GROUP],
    },
    OUTSIDER: {
        "id": "e1f2a3b4-c5d6-4e7f-9a0b-1c2d3e4f5a64",
        "name": "outsider@fabrikam.example",
        "groups": [OTHER_GROUP],
    },
    ODD_NAME: {
        "id": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b65",
        "name": '<b>O\'Brien</b> & "ops" <script>x()</script>',
        "groups": [],
    },
}


def object_id(key: str) -> str:
    return str(PRINCIPALS[key]["id"])


def name(key: str) -> str:
    return str(PRINCIPALS[key]["name"])


def write_principals(path: Path) -> Path:
    """The ``--easy-auth`` file of these principals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"principals": PRINCIPALS}, indent=2), encoding="utf-8")
    return path
