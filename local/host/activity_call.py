"""One call of an activity function, as the Python worker makes it, wherever it runs.

The same steps run in the host process (no worker processes) and in a worker process: decode the
input with the SDK's ActivityTriggerConverter (JSON, else the raw text), call the function, encode
its return value with the same converter, or turn what it raised into the TaskFailed reason and
details the real host writes (``failures.activity_failure``). The outcome is plain data, so a
worker can send it through its pipe and the host builds the same history event from it either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from local.host.failures import activity_failure
from local.host.function_index import FunctionEntry


@dataclass(frozen=True)
class ActivityOutcome:
    """What one call produced: the encoded result, or the failure's reason and details."""

    result: Any = None
    failure: tuple[str, str] | None = None
    # The exception's type name, for the host's log line (never the message: it may name values).
    error_type: str | None = None

    @property
    def summary(self) -> str:
        return "succeeded" if self.failure is None else f"failed with {self.error_type}"


def decode_input(input_text: str | None) -> Any:
    """The activity's argument from the TaskScheduled input text, as the worker decodes it."""
    if input_text is None:
        return None
    return ActivityTriggerConverter.decode(meta.Datum(value=input_text, type="string"), trigger_metadata={})


def completed(value: Any) -> ActivityOutcome:
    """The outcome of a function that returned ``value``; raises if the converter refuses it."""
    return ActivityOutcome(result=ActivityTriggerConverter.encode(value, expected_type=None).value)


def failed(activity_name: str, exc: BaseException) -> ActivityOutcome:
    return ActivityOutcome(failure=activity_failure(activity_name, exc), error_type=type(exc).__name__)


def function_call(entry: FunctionEntry, bindings: dict[str, Any]) -> Callable[[Any], Any]:
    """Calls ``entry`` with its trigger argument and the other bindings (a coroutine if it is async)."""
    return lambda argument: entry.user_function(**{entry.trigger_param: argument, **bindings})


def call_activity(name: str, input_text: str | None, call: Callable[[Any], Any]) -> ActivityOutcome:
    """Run a synchronous activity in the calling thread; whatever it raises becomes the failure."""
    try:
        return completed(call(decode_input(input_text)))
    except Exception as exc:
        return failed(name, exc)


async def call_async_activity(
    name: str, input_text: str | None, call: Callable[[Any], Awaitable[Any]]
) -> ActivityOutcome:
    """Await an activity on the running loop (an async function, or a sync one handed to a pool)."""
    try:
        return completed(await call(decode_input(input_text)))
    except Exception as exc:
        return failed(name, exc)
