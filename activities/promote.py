"""promote_secret: the pending value becomes the secret's current version, then is disabled.

roll_forward_secret: the same after the target's undo failed, once the pending value logs in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df

from activities._adapter import run_step, vault_of
from rotation import steps
from rotation.model import PromoteInput
from rotation.settings import current_settings

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload")
def promote_secret(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "promote_secret",
        PromoteInput,
        payload,
        lambda inp: steps.promote_and_clean_up(inp, vault_of(inp.step.secret), now=datetime.now(UTC)),
    )


@bp.activity_trigger(input_name="payload")
def roll_forward_secret(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "roll_forward_secret",
        PromoteInput,
        payload,
        lambda inp: steps.roll_forward(
            inp, vault_of(inp.step.secret), current_settings(), now=datetime.now(UTC)
        ),
    )
