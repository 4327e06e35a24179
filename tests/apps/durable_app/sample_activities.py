"""Activities of the sample app; each leaves a trace in $SAMPLE_STATE_DIR when the tests need to count runs."""

import asyncio
import time

import azure.durable_functions as df
from sample_state import count, flag_exists, record

bp = df.Blueprint()


class TransientError(Exception):
    """Carries the same marker convention as rotation/errors.py."""

    def __init__(self, message: str) -> None:
        super().__init__(f"[transient] TransientError: {message}")


class PermanentError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(f"[permanent] PermanentError: {message}")


@bp.activity_trigger(input_name="name")
def generate(name: str) -> dict:
    return {"name": name, "version": "v2"}


@bp.activity_trigger(input_name="request")
def flaky_stage(request: dict) -> dict:
    """Fails with a transient error for the first ``fail_times`` attempts of this ref."""
    key = f"{request['ref']['name']}:{request['ref']['version']}"
    attempt = record("flaky_stage", key)
    if attempt <= request.get("fail_times", 0):
        raise TransientError(f"staging {key} throttled (attempt {attempt})")
    return {"staged": key, "attempts": attempt}


@bp.activity_trigger(input_name="staged")
async def promote(staged: dict) -> str:
    """An async activity: awaited on the host's loop."""
    await asyncio.sleep(0)
    return f"promoted {staged['staged']}"


@bp.activity_trigger(input_name="mode")
def may_fail(mode: str) -> str:
    if mode == "transient":
        raise TransientError("the target answered 503")
    if mode == "permanent":
        raise PermanentError("the target refused the new credential")
    raise RuntimeError("no marker at all")


@bp.activity_trigger(input_name="value")
def add_one(value: int) -> int:
    return value + 1


@bp.activity_trigger(input_name="value")
def echo(value):
    return value


@bp.activity_trigger(input_name="value")
def noop(value):
    return None


@bp.activity_trigger(input_name="seconds")
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@bp.activity_trigger(input_name="request")
def slow_step(request: dict) -> int:
    """Records each execution before sleeping, so a kill mid-step shows as a started, unfinished run."""
    record("slow_step_started", request["key"])
    time.sleep(request["seconds"])
    return record("slow_step_finished", request["key"])


@bp.activity_trigger(input_name="value")
def always_fails(value: str) -> str:
    attempt = record("always_fails", value)
    raise TransientError(f"attempt {attempt} failed")


@bp.activity_trigger(input_name="flag")
def fail_unless_fixed(flag: str) -> str:
    record("fail_unless_fixed", flag)
    if not flag_exists(flag):
        raise PermanentError(f"flag {flag} is missing")
    return f"fixed after {count('fail_unless_fixed', flag)} runs"


@bp.activity_trigger(input_name="request")
def timed_sleep(request: dict) -> list:
    """Sleeps and reports when it ran, so tests can see how many activities overlapped."""
    started = time.time()
    time.sleep(request["seconds"])
    return [started, time.time()]
