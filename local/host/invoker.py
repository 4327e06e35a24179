"""Calling a user function the way the Python worker does.

Async functions are awaited on the host's event loop; sync ones run on a thread pool (the worker's
"sync thread pool"), so a blocking function never stalls the HTTP server or the engine. Durable
client parameters receive the client binding JSON as a string, which the SDK's middleware turns
into a ``DurableOrchestrationClient``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from local.host.function_index import FunctionEntry


class Invoker:
    """Runs user functions with their bindings; one instance per host."""

    def __init__(self, *, sync_executor: Executor, client_binding: Callable[[str | None], str]) -> None:
        self._sync_executor = sync_executor
        self._client_binding = client_binding

    def binding_kwargs(self, entry: FunctionEntry) -> dict[str, Any]:
        """Input bindings besides the trigger (durable client bindings are the only ones served)."""
        return {param.name: self._client_binding(param.task_hub) for param in entry.client_params}

    async def call(
        self, entry: FunctionEntry, trigger_value: Any, *, executor: Executor | None = None
    ) -> Any:
        """Call ``entry`` with its trigger value and bindings; exceptions from user code propagate."""
        kwargs = {entry.trigger_param: trigger_value, **self.binding_kwargs(entry)}
        if entry.is_async:
            return await entry.user_function(**kwargs)
        loop = asyncio.get_running_loop()
        # Copy the context so contextvars set by the caller (tracing) reach the thread, as in the worker.
        call = functools.partial(contextvars.copy_context().run, entry.user_function, **kwargs)
        return await loop.run_in_executor(executor or self._sync_executor, call)
