"""stage_pending and its undo discard_pending: the pending value in the companion secret."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df

from activities._adapter import run_step, vault_of
from rotation import steps
from rotation.model import StageInput, StepInput
from rotation.settings import current_settings

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload")
def stage_pending(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "stage_pending",
        StageInput,
        payload,
        lambda inp: steps.stage_pending(
            inp, vault_of(inp.step.secret), current_settings(), now=datetime.now(UTC)
        ),
    )


@bp.activity_trigger(input_name="payload")
def discard_pending(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "discard_pending",
        StepInput,
        payload,
        lambda step: steps.discard_pending(step, vault_of(step.secret)),
    )
