"""``kvrotate rotate --wait``: follow a rotation until it ends.

On a terminal, a live Rich display of the steps (a spinner on the current one); without one (a
pipe, CI, the tests), one plain line per thing that happened, so logs stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live

from kvrotate import views
from kvrotate.client import ENDED, Hub
from kvrotate.errors import CliError, ExitCode

POLL_SECONDS = 1.0
# While following, the hub may not answer for a while (a restart, a deployment, a scale-out):
# the rotation is durable and goes on, so keep asking this long before giving up.
OUTAGE_SECONDS = 60.0
_PASSING = (ExitCode.UNREACHABLE, ExitCode.HUB_ERROR)


def follow(
    hub: Hub,
    rotation_id: str,
    *,
    out: Console,
    timeout: float | None,
    poll_seconds: float = POLL_SECONDS,
    outage_seconds: float = OUTAGE_SECONDS,
) -> dict[str, Any]:
    """Poll the rotation until it ends, showing its steps; returns its last view.

    Raises:
        CliError: see :func:`watch`.
    """
    view = watch(
        lambda: hub.rotation(rotation_id),
        what=f"rotation {rotation_id}",
        status_command=f"kvrotate status {rotation_id}",
        out=out,
        live_view=views.progress_view,
        plain=PlainLines(out),
        timeout=timeout,
        poll_seconds=poll_seconds,
        outage_seconds=outage_seconds,
    )
    out.print(views.facts_table(view, with_header=False))
    undos = views.undos_table(view)
    if undos is not None:
        out.print(undos)
    return view


def watch(
    read: Callable[[], dict[str, Any]],
    *,
    what: str,
    status_command: str,
    out: Console,
    live_view: Callable[[dict[str, Any]], RenderableType],
    plain: Callable[[dict[str, Any]], None],
    timeout: float | None,
    poll_seconds: float = POLL_SECONDS,
    outage_seconds: float = OUTAGE_SECONDS,
) -> dict[str, Any]:
    """Poll ``read`` (a rotation's or an incident's view) until its runtime status has ended;
    a live ``live_view`` on a terminal, ``plain`` lines otherwise. Returns the last view.

    Raises:
        CliError: still running after ``timeout`` seconds, the hub silent for longer than
            ``outage_seconds``, or the operator stopped waiting (``what`` goes on in the hub in
            every case).
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def poll(show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        silent_since: float | None = None
        while True:
            try:
                view = read()
            except CliError as exc:
                if exc.code not in _PASSING:
                    raise
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since > outage_seconds:
                    raise CliError(
                        f"{exc.message}; the {what.split()[0]} goes on in the hub: {status_command}",
                        exc.code,
                    ) from None
                time.sleep(poll_seconds)
                continue
            silent_since = None
            show(view)
            if view.get("runtimeStatus") in ENDED:
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(
                    f"{what} is still {view.get('runtimeStatus')} after {timeout:g} s; "
                    f"it goes on in the hub: {status_command}",
                    ExitCode.FAILED,
                )
            time.sleep(poll_seconds)

    try:
        if out.is_terminal:
            # The last frame stays on the screen.
            with Live(console=out, refresh_per_second=8) as live:
                return poll(lambda v: live.update(live_view(v), refresh=True))
        return poll(plain)
    except KeyboardInterrupt:
        raise CliError(
            f"stopped waiting; the {what.split()[0]} goes on in the hub: {status_command}",
            ExitCode.INTERRUPTED,
        ) from None


class PlainLines:
    """Prints each step entered, each retry, wait and undo once, as it is first seen."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.seen: set[str] = set()

    def _once(self, key: str, line: str) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.out.print(line, soft_wrap=True)

    def __call__(self, view: dict[str, Any]) -> None:
        status = views.custom(view)
        times = status.get("stepTimes") or {}
        for step, started in sorted(times.items(), key=lambda item: str(item[1])):
            self._once(f"step {step}", f"{views.precise(started)}  step {step}")
        if view.get("runtimeStatus") in ENDED:
            return
        if status.get("step") == "approval" and status.get("awaitingDecisionUntil"):
            self._once(
                "approval", f"waiting for a decision until {views.when(status['awaitingDecisionUntil'])}"
            )
        retrying = status.get("retrying")
        if isinstance(retrying, dict):
            after = retrying.get("after") or {}
            self._once(
                f"retry {after.get('step')} {retrying.get('attempt')}",
                f"retrying {after.get('step')}: attempt {retrying.get('attempt')} after {after.get('class')}",
            )
        if status.get("compensating"):
            self._once(f"undo {status['compensating']}", f"undoing: {status['compensating']}")
        if status.get("step") == "retire" and status.get("retireAt"):
            self._once(
                "retire", f"waiting to retire the previous credential at {views.when(status['retireAt'])}"
            )
