"""A peer app written against the Durable Functions SDK's documented versioning API.

The orchestrator follows the SDK's own versioning sample (samples-v2/orchestration_versioning):
``context.version`` picks the code path, an external event gives a test the moment to redeploy
with another ``defaultVersion``, and sub-orchestrations started afterwards report the version
they were given (the host's default at that moment, or an explicit one). The tests copy this
directory and write the host.json of each "deployment" next to it.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.orchestration_trigger(context_name="context")
def versioned(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    # The legacy path for instances created with version 1.0 (or before versioning: no version).
    if context.version in (None, "", "1.0"):
        greeting = yield context.call_activity("activity_a", "x")
    else:
        greeting = yield context.call_activity("activity_b", "x")
    context.set_custom_status("waiting")
    yield context.wait_for_external_event("Continue")
    context.set_custom_status("continued")
    by_default = yield context.call_sub_orchestrator("report_version")
    explicit = yield context.call_sub_orchestrator("report_version", version="0.9")
    retried = yield context.call_sub_orchestrator_with_retry(
        "report_version", df.RetryOptions(1000, 2), version="0.8"
    )
    return {
        "version": context.version,
        "greeting": greeting,
        "subByDefault": by_default,
        "subExplicit": explicit,
        "subWithRetry": retried,
    }


@app.orchestration_trigger(context_name="context")
def report_version(context: df.DurableOrchestrationContext) -> str | None:
    return context.version


@app.orchestration_trigger(context_name="context")
def wait_then_report(context: df.DurableOrchestrationContext) -> Generator[Any, Any, str | None]:
    yield context.wait_for_external_event("Continue")
    return context.version


@app.orchestration_trigger(context_name="context")
def call_child(context: df.DurableOrchestrationContext) -> Generator[Any, Any, str | None]:
    """Starts report_version with the version given as input (a mismatch fails the child)."""
    result = yield context.call_sub_orchestrator("report_version", version=context.get_input())
    return result


@app.orchestration_trigger(context_name="context")
def continue_once(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    round_ = context.get_input() or 0
    if round_ == 0:
        yield context.call_activity("activity_a", "x")
        context.continue_as_new(1)
        return {}
    return {"round": round_, "version": context.version}


@app.activity_trigger(input_name="payload")
def activity_a(payload: str) -> str:
    return "Hello from A!"


@app.activity_trigger(input_name="payload")
def activity_b(payload: str) -> str:
    return "Hello from B!"


@app.route(route="binding", methods=["GET"])
@app.durable_client_input(client_name="client")
async def binding(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The client binding as the SDK parsed it, so tests can build their own DurableOrchestrationClient."""
    parsed = client._orchestration_bindings
    body = {
        "taskHubName": parsed.task_hub_name,
        "creationUrls": parsed.creation_urls,
        "managementUrls": parsed.management_urls,
        "rpcBaseUrl": parsed.rpc_base_url,
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
