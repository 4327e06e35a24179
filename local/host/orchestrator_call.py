"""One call of an orchestrator function, exactly as the real host makes it.

The host sends the orchestration trigger the JSON the extension builds in
``OrchestrationTriggerAttributeBindingProvider.OrchestrationContextToString`` (history, input,
ids, schema versions, timer settings) and reads back the OrchestratorState JSON. When the
orchestrator raises, the SDK raises too, with the state appended after ``$OutOfProcData$:``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from azure.functions import meta
from azure.functions.durable_functions import OrchestrationTriggerConverter

from local.host.function_index import FunctionEntry
from local.host.history import with_is_played

# The extension negotiates V3 (upperSchemaVersionNew) and keeps V2 for older SDKs.
UPPER_SCHEMA_VERSION = 1
UPPER_SCHEMA_VERSION_NEW = 2
# Azure Storage's limits: timers longer than 6 days are split into 3-day chunks by the SDK.
MAXIMUM_SHORT_TIMER_DURATION = "6.00:00:00"
LONG_RUNNING_TIMER_INTERVAL = "3.00:00:00"
OUT_OF_PROC_DATA_LABEL = "\n\n$OutOfProcData$:"


@dataclass(frozen=True)
class OrchestratorAnswer:
    """What one call produced: the state (None only if the SDK itself broke) and the error, if any."""

    state: dict[str, Any] | None
    error: str | None


def build_context_json(
    *,
    instance_id: str,
    parent_instance_id: str | None,
    input_text: str | None,
    past_events: list[str],
    new_events: list[str],
) -> str:
    """The orchestration trigger's JSON; events are stored JSON texts (IsPlayed added here)."""
    history = ",".join(
        [with_is_played(text, True) for text in past_events]
        + [with_is_played(text, False) for text in new_events]
    )
    # RawInput is parsed into a JToken before it is sent, so a JSON string input arrives as a string.
    parsed_input = None if input_text is None else json.loads(input_text)
    rest = json.dumps(
        {
            "input": parsed_input,
            "instanceId": instance_id,
            "isReplaying": bool(past_events),
            "parentInstanceId": parent_instance_id,
            "upperSchemaVersion": UPPER_SCHEMA_VERSION,
            "upperSchemaVersionNew": UPPER_SCHEMA_VERSION_NEW,
            "longRunningTimerIntervalDuration": LONG_RUNNING_TIMER_INTERVAL,
            "maximumShortTimerDuration": MAXIMUM_SHORT_TIMER_DURATION,
            "defaultHttpAsyncRequestSleepTimeMillseconds": 30000,
        }
    )
    return '{"history":[' + history + "]," + rest[1:]


def call_orchestrator(entry: FunctionEntry, context_json: str) -> OrchestratorAnswer:
    """Run one episode of the orchestrator's replay through the SDK's handle."""
    trigger_value = OrchestrationTriggerConverter.decode(
        meta.Datum(value=context_json, type="json"), trigger_metadata={}
    )
    try:
        result = entry.user_function(trigger_value)
    except Exception as exc:
        message = str(exc)
        if OUT_OF_PROC_DATA_LABEL in message:
            friendly, _, state_text = message.partition(OUT_OF_PROC_DATA_LABEL)
            try:
                state = json.loads(state_text)
            except json.JSONDecodeError:
                return OrchestratorAnswer(state=None, error=friendly)
            return OrchestratorAnswer(state=state, error=state.get("error") or friendly)
        # Not the SDK's error protocol: the SDK itself failed (bad history, naive datetimes, ...).
        return OrchestratorAnswer(state=None, error=f"{type(exc).__name__}: {exc}")
    try:
        state = json.loads(result)
    except (TypeError, json.JSONDecodeError):
        return OrchestratorAnswer(
            state=None, error="the orchestrator function did not return the SDK's state JSON"
        )
    if not isinstance(state, dict):
        return OrchestratorAnswer(
            state=None, error="the orchestrator function did not return the SDK's state JSON"
        )
    return OrchestratorAnswer(state=state, error=state.get("error"))
