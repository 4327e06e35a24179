"""withdraw_credential (the undo of stage for targets that issue credentials) and
retire_previous (after the overlap, remove the credential the replaced version held)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from activities._adapter import run_step, vault_of
from rotation import steps
from rotation.model import StepInput
from rotation.settings import current_settings

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload")
def withdraw_credential(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "withdraw_credential",
        StepInput,
        payload,
        lambda step: steps.withdraw_issued(step, vault_of(step.secret), current_settings()),
    )


@bp.activity_trigger(input_name="payload")
def retire_previous(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "retire_previous",
        StepInput,
        payload,
        lambda step: steps.retire_previous(step, vault_of(step.secret), current_settings()),
    )
