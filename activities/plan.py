"""plan_rotation: read the secret's tags once and decide whether the rotation still applies."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from activities._adapter import run_step, vault_of
from rotation import steps
from rotation.model import StepInput
from rotation.settings import current_settings

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload")
def plan_rotation(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "plan_rotation",
        StepInput,
        payload,
        lambda step: steps.plan(step, vault_of(step.secret), current_settings()),
    )
