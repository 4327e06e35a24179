"""Starters: HTTP routes (FUNCTION auth by default), an Event Grid trigger and a timer, all with a durable client."""

import json
import logging
import os

import azure.durable_functions as df
import azure.functions as func
from sample_state import record

bp = df.Blueprint()
logger = logging.getLogger(__name__)


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.route(route="orchestrators/{name}/{instance_id?}", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def start_orchestration(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    body = req.get_body()
    payload = json.loads(body) if body else None
    instance_id = await client.start_new(
        req.route_params["name"], req.route_params.get("instance_id"), payload
    )
    return client.create_check_status_response(req, instance_id)


@bp.route(route="status/{instance_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def get_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    status = await client.get_status(
        req.route_params["instance_id"], show_history=True, show_history_output=True
    )
    if not status:
        return _json({"error": "not found"}, 404)
    return _json(
        {
            "runtimeStatus": status.runtime_status.value if status.runtime_status else None,
            "output": status.output,
            "customStatus": status.custom_status,
            "history": getattr(status, "historyEvents", None),
        }
    )


@bp.route(route="approve/{instance_id}", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def approve(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.raise_event(req.route_params["instance_id"], "Approval", req.get_json())
    return func.HttpResponse(status_code=202)


@bp.route(route="binding", methods=["GET"])
@bp.durable_client_input(client_name="client")
async def binding(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The client binding as the SDK parsed it, so tests can build their own DurableOrchestrationClient."""
    parsed = client._orchestration_bindings
    return _json(
        {
            "taskHubName": parsed.task_hub_name,
            "creationUrls": parsed.creation_urls,
            "managementUrls": parsed.management_urls,
            "rpcBaseUrl": parsed.rpc_base_url,
        }
    )


@bp.route(route="echo/{first}/{second:int?}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo_request(req: func.HttpRequest) -> func.HttpResponse:
    """Everything the function saw of the request (a sync function: it runs on the worker thread pool)."""
    return _json(
        {
            "method": req.method,
            "url": req.url,
            "route": dict(req.route_params),
            "query": dict(req.params),
            "header": req.headers.get("x-sample-header"),
            "body": req.get_body().decode("utf-8"),
        },
        status=201,
    )


@bp.route(route="whoami", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    """The App Service authentication headers the function saw, and whether it was told it is on."""
    return _json(
        {
            "headers": {
                name.lower(): value for name, value in req.headers.items() if name.lower().startswith("x-ms-")
            },
            "authEnabled": os.environ.get("WEBSITE_AUTH_ENABLED"),
        }
    )


@bp.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin ok")


@bp.route(route="explode", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def explode(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function failed")


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_secret_event(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """One orchestration per event subject; an event of type Sample.Fail makes the function raise."""
    record("eventgrid", f"{type(event).__name__}:{event.id}")
    event_type = getattr(event, "event_type", None) or getattr(event, "type", None)
    if event_type == "Sample.Fail":
        raise ValueError("this event cannot be handled")
    data = event.get_json()
    instance_id = f"eg-{event.id}"
    existing = await client.get_status(instance_id)
    if existing and existing.runtime_status in (
        df.OrchestrationRuntimeStatus.Running,
        df.OrchestrationRuntimeStatus.Pending,
    ):
        logger.info("an orchestration is already running for this event")
        return
    await client.start_new("fan_out", instance_id, data.get("count", 2) if isinstance(data, dict) else 2)


@bp.timer_trigger(schedule="%SAMPLE_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def sweep(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    runs = record("sweep", "run")
    if timer.past_due:
        record("sweep", "past_due")
    await client.start_new("chain", f"sweep-{runs}", 1)
