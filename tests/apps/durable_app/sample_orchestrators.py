"""Orchestrators exercising every durable feature the rotation app uses, and the failure modes."""

import json
from datetime import timedelta

import azure.durable_functions as df

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)


def _marker(error: Exception) -> str:
    text = str(error)
    if "[transient]" in text:
        return "transient"
    if "[permanent]" in text:
        return "permanent"
    return "unknown"


def _count(value: object, key: str, default: int) -> int:
    """Accept {"<key>": n} (any client) or a bare n (the Python client encodes it as JSON text)."""
    if isinstance(value, dict):
        return int(value.get(key, default))
    return int(value or default)


def _decision(value: object) -> object:
    # The Python client's raise_event double-encodes its data, so the orchestrator receives JSON text.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


@bp.orchestration_trigger(context_name="context")
def approval_flow(context: df.DurableOrchestrationContext):
    """The rotation protocol's shape: steps, a retried step, an approval raced against a timeout."""
    request = context.get_input() or {}
    context.set_custom_status({"stage": "generate"})
    ref = yield context.call_activity("generate", request.get("name", "secret"))
    staged = yield context.call_activity_with_retry(
        "flaky_stage", RETRY, {"ref": ref, "fail_times": request.get("fail_times", 1)}
    )
    decision = None
    if request.get("approval"):
        context.set_custom_status({"stage": "awaiting_approval", "ref": ref})
        deadline = context.current_utc_datetime + timedelta(hours=request.get("timeout_hours", 72))
        timeout = context.create_timer(deadline)
        approval = context.wait_for_external_event("Approval")
        winner = yield context.task_any([approval, timeout])
        if winner == approval:
            timeout.cancel()
            decision = _decision(approval.result)
        else:
            context.set_custom_status({"stage": "rejected", "ref": ref})
            return {
                "outcome": "rejected",
                "reason": "approval timed out",
                "at": context.current_utc_datetime.isoformat(),
            }
    context.set_custom_status({"stage": "promote", "ref": ref})
    promoted = yield context.call_activity("promote", staged)
    failure = None
    if request.get("fail_mode"):
        try:
            yield context.call_activity("may_fail", request["fail_mode"])
        except Exception as error:
            failure = {"kind": _marker(error), "text": str(error)[:300]}
    context.set_custom_status({"stage": "done", "ref": ref})
    return {
        "outcome": "promoted",
        "ref": ref,
        "staged": staged,
        "promoted": promoted,
        "decision": decision,
        "failure": failure,
    }


@bp.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    """n sequential activity calls (the 100-step scenario)."""
    total = 0
    for _ in range(_count(context.get_input(), "steps", 1)):
        total = yield context.call_activity("add_one", total)
    return total


@bp.orchestration_trigger(context_name="context")
def slow_chain(context: df.DurableOrchestrationContext):
    """Sequential slow steps, each recording its executions (for the SIGKILL scenario)."""
    request = context.get_input()
    results = []
    for step in range(request["steps"]):
        results.append(
            (
                yield context.call_activity(
                    "slow_step", {"key": f"{context.instance_id}:{step}", "seconds": request["seconds"]}
                )
            )
        )
    return results


@bp.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = _count(context.get_input(), "count", 2)
    results = yield context.task_all([context.call_activity("echo", index) for index in range(count)])
    return sum(results)


@bp.orchestration_trigger(context_name="context")
def sleepers(context: df.DurableOrchestrationContext):
    """count activities that sleep in parallel; returns when each one ran."""
    request = context.get_input()
    tasks = [
        context.call_activity("timed_sleep", {"seconds": request["seconds"]}) for _ in range(request["count"])
    ]
    return (yield context.task_all(tasks))


@bp.orchestration_trigger(context_name="context")
def noop_six(context: df.DurableOrchestrationContext):
    """Six no-op activities in sequence (the benchmark's orchestration)."""
    for step in range(6):
        yield context.call_activity("noop", step)
    return 6


@bp.orchestration_trigger(context_name="context")
def retry_in_fan_out(context: df.DurableOrchestrationContext):
    """Retries inside task_all: the SDK numbers retry timers while replaying, between other tasks."""
    key = context.instance_id
    results = yield context.task_all(
        [
            context.call_activity_with_retry(
                "flaky_stage", RETRY, {"ref": {"name": key, "version": "a"}, "fail_times": 2}
            ),
            context.call_activity("sleepy", 0.05),
            context.call_activity_with_retry(
                "flaky_stage", RETRY, {"ref": {"name": key, "version": "b"}, "fail_times": 1}
            ),
            context.call_activity("echo", "plain"),
        ]
    )
    after = yield context.call_activity("echo", "after")
    return {
        "attempts": [results[0]["attempts"], results[2]["attempts"]],
        "others": [results[1], results[3]],
        "after": after,
    }


@bp.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    request = context.get_input() or {}
    first = yield context.call_sub_orchestrator(
        "child", {"value": request.get("value", 1)}, f"{context.instance_id}-child"
    )
    second = yield context.call_sub_orchestrator("child", {"value": 10})
    retried = None
    if request.get("with_failing_child"):
        try:
            yield context.call_sub_orchestrator_with_retry("failing_child", df.RetryOptions(1000, 2), None)
        except Exception as error:
            retried = str(error)[:200]
    return {"first": first, "second": second, "retried": retried}


@bp.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    request = context.get_input()
    doubled = yield context.call_activity("echo", request["value"] * 2)
    return {"child": context.instance_id, "parent": context.parent_instance_id, "doubled": doubled}


@bp.orchestration_trigger(context_name="context")
def failing_child(context: df.DurableOrchestrationContext):
    yield context.call_activity("echo", 0)
    raise RuntimeError("[permanent] the child gave up")


@bp.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    value = int(context.get_input() or 0)
    yield context.call_activity("echo", value)
    if value < 3:
        context.continue_as_new(value + 1)
        return None
    return value


@bp.orchestration_trigger(context_name="context")
def collect_events(context: df.DurableOrchestrationContext):
    """Continues as new after every "Item" event until it has three.

    Events that arrived while the previous execution ran stay in the inbox for the next one; events
    already delivered to an execution that then continues as new are dropped, as on Azure (the
    Python SDK has no preserveUnprocessedEvents), hence the custom status to pace the sender.
    """
    items = context.get_input() or []
    context.set_custom_status({"count": len(items)})
    item = yield context.wait_for_external_event("Item")
    items = [*items, item]
    if len(items) < 3:
        context.continue_as_new(items)
        return None
    return items


@bp.orchestration_trigger(context_name="context")
def buffered_events(context: df.DurableOrchestrationContext):
    """Waits for an event only after a slow activity, so the event usually arrives first."""
    yield context.call_activity("sleepy", 0.5)
    first = yield context.wait_for_external_event("Go")
    return _decision(first)


@bp.orchestration_trigger(context_name="context")
def wait_forever(context: df.DurableOrchestrationContext):
    context.set_custom_status("waiting")
    value = yield context.wait_for_external_event("Continue")
    after = yield context.call_activity("echo", "resumed")
    # The raw value: JSON text when the Python client raised it, the object when plain HTTP did.
    return {"event": value, "type": type(value).__name__, "after": after}


@bp.orchestration_trigger(context_name="context")
def retry_exhausted(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity_with_retry("always_fails", df.RetryOptions(1000, 3), "x")
    except Exception as error:
        return {"kind": _marker(error), "text": str(error)[:400]}
    return {"kind": None}


@bp.orchestration_trigger(context_name="context")
def needs_fix(context: df.DurableOrchestrationContext):
    before = yield context.call_activity("echo", "before")
    fixed = yield context.call_activity("fail_unless_fixed", "fix-flag")
    return {"before": before, "fixed": fixed}


@bp.orchestration_trigger(context_name="context")
def raises(context: df.DurableOrchestrationContext):
    yield context.call_activity("echo", 1)
    raise ValueError("the orchestrator broke on purpose")


@bp.orchestration_trigger(context_name="context")
def bad_output(context: df.DurableOrchestrationContext):
    yield context.call_activity("echo", 1)
    return {"not json": object()}


@bp.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    # Schedules a different activity when replaying: what the host must refuse.
    name = "add_one" if context.is_replaying else "echo"
    first = yield context.call_activity(name, 1)
    second = yield context.call_activity("echo", 2)
    return [first, second]


@bp.orchestration_trigger(context_name="context")
def unknown_activity(context: df.DurableOrchestrationContext):
    yield context.call_activity("no_such_activity", 1)
    return "unreachable"
