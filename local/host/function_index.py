"""Loading the Function App: import ``function_app.py`` and index its functions by trigger.

This is what the Python worker does on a function-indexing request: import the script, find the
``FunctionRegister`` (``func.FunctionApp`` or ``df.DFApp``) and read ``get_functions()`` once (a
second call raises "does not have a unique function name", so the result is kept).
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

logger = logging.getLogger(__name__)

SCRIPT_FILE = "function_app.py"


class AppLoadError(Exception):
    """The app cannot be imported or indexed; the message names the file and the reason."""


@dataclass(frozen=True)
class ClientParam:
    """A ``durable_client_input`` parameter: it receives the client binding JSON as a string."""

    name: str
    task_hub: str | None


@dataclass(frozen=True)
class FunctionEntry:
    """One indexed function: its trigger and how to call it."""

    name: str
    trigger_type: str
    trigger: dict[str, Any]
    trigger_param: str
    user_function: Callable[..., Any]
    is_async: bool
    client_params: tuple[ClientParam, ...] = ()
    returns_http: bool = False

    @property
    def durable_name(self) -> str:
        """The name orchestrations use for it (the trigger's orchestration/activity or the function's)."""
        for key in ("orchestration", "activity", "entityName"):
            value = self.trigger.get(key)
            if value:
                return str(value)
        return self.name


@dataclass
class FunctionIndex:
    """The app's functions, by the role the host gives each one."""

    functions: dict[str, FunctionEntry] = field(default_factory=dict)
    http: list[FunctionEntry] = field(default_factory=list)
    event_grid: dict[str, FunctionEntry] = field(default_factory=dict)
    timers: dict[str, FunctionEntry] = field(default_factory=dict)
    orchestrators: dict[str, FunctionEntry] = field(default_factory=dict)
    activities: dict[str, FunctionEntry] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{len(self.functions)} functions: {len(self.http)} http, {len(self.event_grid)} event grid, "
            f"{len(self.timers)} timer, {len(self.orchestrators)} orchestrator, {len(self.activities)} activity"
        )


def _plain(value: Any) -> Any:
    """Binding dicts carry enums (AuthLevel, HttpMethod, BindingDirection); keep their values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def import_app_module(script_root: Path) -> ModuleType:
    """Import ``function_app.py`` with the script root first on sys.path (the app imports its packages).

    Raises AppLoadError when the file is missing or raises on import.
    """
    script = script_root / SCRIPT_FILE
    if not script.is_file():
        raise AppLoadError(f"{script} does not exist: the script root must contain {SCRIPT_FILE}")
    root = str(script_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location("function_app", script)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise AppLoadError(f"importing {script} failed: {type(exc).__name__}: {exc}") from exc
    return module


def find_function_register(module: ModuleType) -> func.FunctionRegister:
    """The worker looks for exactly one FunctionRegister instance at module level."""
    registers = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    if not registers:
        raise AppLoadError("function_app.py defines no FunctionApp/DFApp instance")
    if len(registers) > 1:
        raise AppLoadError("function_app.py defines more than one FunctionApp/DFApp instance")
    return registers[0]


def build_index(register: func.FunctionRegister) -> FunctionIndex:
    """Index every function once; raises AppLoadError for duplicate names or durable names."""
    try:
        functions = register.get_functions()
    except Exception as exc:
        raise AppLoadError(f"indexing the app failed: {type(exc).__name__}: {exc}") from exc
    index = FunctionIndex()
    for function in functions:
        entry = _entry_for(function)
        if entry.name in index.functions:
            raise AppLoadError(f"two functions are named '{entry.name}'")
        index.functions[entry.name] = entry
        kind = entry.trigger_type
        if kind == "httpTrigger":
            index.http.append(entry)
        elif kind == "eventGridTrigger":
            index.event_grid[entry.name] = entry
        elif kind == "timerTrigger":
            index.timers[entry.name] = entry
        elif kind == "orchestrationTrigger":
            _add_durable(index.orchestrators, entry, "orchestrator")
        elif kind == "activityTrigger":
            _add_durable(index.activities, entry, "activity")
        else:
            index.unsupported[entry.name] = kind
            logger.warning("function %s has trigger %s, which the local host does not run", entry.name, kind)
    return index


def _add_durable(table: dict[str, FunctionEntry], entry: FunctionEntry, what: str) -> None:
    if entry.durable_name in table:
        raise AppLoadError(f"two {what} functions are named '{entry.durable_name}'")
    table[entry.durable_name] = entry


def _entry_for(function: Any) -> FunctionEntry:
    trigger = function.get_trigger()
    if trigger is None:
        raise AppLoadError(f"function '{function.get_function_name()}' has no trigger")
    trigger_dict = _plain(trigger.get_dict_repr())
    clients = []
    returns_http = False
    for binding in function.get_bindings():
        data = _plain(binding.get_dict_repr())
        if data.get("type") == "durableClient":
            clients.append(ClientParam(name=data["name"], task_hub=data.get("taskHub")))
        if data.get("type") == "http" and data.get("name") == "$return":
            returns_http = True
    user_function = function.get_user_function()
    return FunctionEntry(
        name=function.get_function_name(),
        trigger_type=trigger_dict["type"],
        trigger=trigger_dict,
        trigger_param=trigger_dict["name"],
        user_function=user_function,
        is_async=inspect.iscoroutinefunction(user_function),
        client_params=tuple(clients),
        returns_http=returns_http,
    )


def load_app(script_root: Path) -> FunctionIndex:
    """Import and index the app at ``script_root``; raises AppLoadError with the reason."""
    module = import_app_module(script_root)
    return build_index(find_function_register(module))
