"""apply_target, verify_target and the undo revert_target: the credential on the target system."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import azure.durable_functions as df

from activities._adapter import run_step, vault_of
from rotation import steps
from rotation.model import Changed, StepInput
from rotation.settings import Settings, current_settings
from rotation.vault import Vault

bp = df.Blueprint()


def _with_vault(action: Callable[[StepInput, Vault, Settings], Changed]) -> Callable[[StepInput], Changed]:
    return lambda step: action(step, vault_of(step.secret), current_settings())


@bp.activity_trigger(input_name="payload")
def apply_target(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step("apply_target", StepInput, payload, _with_vault(steps.apply_target))


@bp.activity_trigger(input_name="payload")
def verify_target(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step("verify_target", StepInput, payload, _with_vault(steps.verify_target))


@bp.activity_trigger(input_name="payload")
def revert_target(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step("revert_target", StepInput, payload, _with_vault(steps.revert_target))
