"""The failure texts the real host writes, so the app's error handling sees the same strings.

A Python activity that raises reaches the host as an RpcException whose message is
``"Result: Failure\\nException: {Type}: {message}\\nStack: {trace}"`` (the worker's
``_serialize_exception``). The extension's TaskActivityShim keeps the part between
``\\nException:`` and ``\\nStack:`` (leading space included) and writes TaskFailed with
``Reason = "Activity function '{name}' failed: {that}"`` and ``Details`` = the exception serialised
by Newtonsoft with type names. The SDK then raises ``Exception(f"{Reason} \\n {Details}")`` inside
the orchestrator, so the activity's own message (for example a ``[transient]`` marker) survives.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from types import TracebackType

_MESSAGE_LABEL = "\nException:"
_STACK_LABEL = "\nStack:"
_HOST_DIR = str(Path(__file__).resolve().parent)


def _rpc_exception_message(remote_message: str, stack: str) -> str:
    # Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException's message format.
    return f"Result: Failure\nException: {remote_message}\nStack: {stack}"


def _friendly_message(rpc_message: str) -> str:
    # OutOfProcExceptionHelpers.TryGetFullOutOfProcMessage: between the labels, nothing trimmed.
    start = rpc_message.index(_MESSAGE_LABEL) + len(_MESSAGE_LABEL)
    end = rpc_message.index(_STACK_LABEL)
    return rpc_message[start:end]


def _serialized_exception(message: str, inner_message: str, remote_message: str, stack: str) -> str:
    """A compact rendering of Newtonsoft's TypeNameHandling.Objects output for the exception chain."""
    inner = {
        "$type": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException, Microsoft.Azure.WebJobs.Script",
        "IsUserException": False,
        "RemoteStackTrace": stack,
        "RemoteMessage": remote_message,
        "RemoteTypeName": None,
        "ClassName": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException",
        "Message": inner_message,
        "Data": None,
        "InnerException": None,
        "HResult": -2146233088,
    }
    outer = {
        "$type": "System.Exception, System.Private.CoreLib",
        "ClassName": "System.Exception",
        "Message": message,
        "Data": None,
        "InnerException": inner,
        "HResult": -2146233088,
    }
    return json.dumps(outer)


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip the host's and the thread pool's frames: the worker's trace starts in the user's code."""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if _HOST_DIR not in filename and "concurrent/futures" not in filename:
            break
        tb = tb.tb_next
    return tb


def activity_failure(activity_name: str, exc: BaseException) -> tuple[str, str]:
    """Reason and Details of the TaskFailed event for a Python activity that raised ``exc``."""
    try:
        remote_message = f"{type(exc).__name__}: {exc}"
    except Exception:
        remote_message = "Unhandled exception in function. Could not serialize original exception message."
    stack = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
    rpc_message = _rpc_exception_message(remote_message, stack)
    friendly = _friendly_message(rpc_message)
    reason = f"Activity function '{activity_name}' failed: {friendly}"
    return reason, _serialized_exception(friendly, rpc_message, remote_message, stack)


def missing_activity_failure(activity_name: str) -> tuple[str, str]:
    """TaskNonexistentActivityShim's failure (an activity scheduled before the function disappeared)."""
    message = f"Activity function '{activity_name}' does not exist."
    details = json.dumps(
        {
            "$type": "Microsoft.Azure.WebJobs.Extensions.DurableTask.FunctionFailedException, "
            "Microsoft.Azure.WebJobs.Extensions.DurableTask",
            "ClassName": "Microsoft.Azure.WebJobs.Extensions.DurableTask.FunctionFailedException",
            "Message": message,
        }
    )
    return f"Activity function '{activity_name}' failed: {message}", details


def orchestration_failure(orchestrator_name: str, error: str) -> tuple[str, str]:
    """The failed instance's output text and the details the extension records with it."""
    return f"Orchestrator function '{orchestrator_name}' failed: {error}", f"Message: {error}, StackTrace: "


def unknown_function_message(name: str, kind: str, known: list[str]) -> str:
    """DurableTaskExtension.GetInvalid{Activity,Orchestrator}FunctionMessage."""
    message = (
        f"The function '{name}' doesn't exist, is disabled, or is not an {kind} function. Additional info: "
    )
    if known:
        joined = "', '".join(known)
        return message + f"The following are the known {kind} functions: '{joined}'."
    return message + f"No {kind} functions are currently registered!"
