"""What kvrotate shows: Rich renderables built from the API's JSON (never from anything else)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from kvrotate.client import ENDED

# Without a terminal (a pipe, a log, a test) Rich would assume 80 columns and fold the ids.
_PIPE_WIDTH = 200
_STATE_STYLES = {
    "Completed": "green",
    "Failed": "red",
    "Terminated": "red",
    "Canceled": "red",
    "Running": "yellow",
    "Pending": "yellow",
    "Suspended": "magenta",
}
_GOOD_RESULTS = ("rotated", "rolled_forward", "skipped")


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    # What the API says is shown as it is: no Rich markup ([red]) or emoji codes (:x:) in it.
    return Console(
        file=stream, highlight=False, markup=False, emoji=False, width=_PIPE_WIDTH if piped else None
    )


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def when(text: object) -> str:
    """A time of the API as ``2026-12-03 08:39:18Z`` (UTC, as the hub reports it)."""
    parsed = parse_time(text)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if parsed else "-"


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def precise(text: object) -> str:
    """A time of the API to the millisecond, ``2026-12-03 08:39:18.851Z``."""
    parsed = parse_time(text)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d ") + _clock(parsed) + "Z" if parsed else "-"


def _seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def custom(view: dict[str, Any]) -> dict[str, Any]:
    status = view.get("status")
    return status if isinstance(status, dict) else {}


def state_text(view: dict[str, Any]) -> Text:
    state = str(view.get("runtimeStatus") or "unknown")
    return Text(state, style=_STATE_STYLES.get(state, ""))


def where(view: dict[str, Any]) -> str:
    """Where a rotation is: its current step, or how it ended."""
    status = custom(view)
    step = status.get("step")
    if step == "done":
        return str(status.get("result") or "done")
    if step == "failed":
        failed = status.get("failed") or {}
        return f"failed in {failed.get('step', '?')}"
    if step:
        return f"{step} ({status.get('stepNumber', '?')}/{status.get('stepsTotal', '?')})"
    return "-"


def succeeded(view: dict[str, Any]) -> bool:
    """The rotation ended as kvrotate's exit code 0 means: rotated, or skipped (nothing to do)."""
    output = view.get("output")
    result = output.get("result") if isinstance(output, dict) else None
    return view.get("runtimeStatus") == "Completed" and result in _GOOD_RESULTS


# -- list -----------------------------------------------------------------------------------------


def rotations_table(rotations: list[dict[str, Any]]) -> RenderableType:
    if not rotations:
        return Text("no rotations match")
    # The id names the vault and the secret (rotate_<vault>_<secret>_<version>) and is what
    # the other commands take, so it stays whole; everything else is short.
    table = Table(title=f"{len(rotations)} rotation(s)", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("step / result", no_wrap=True)
    table.add_column("updated (UTC)", no_wrap=True)
    for view in rotations:
        table.add_row(str(view.get("id")), state_text(view), where(view), when(view.get("lastUpdatedTime")))
    return table


# -- status ---------------------------------------------------------------------------------------


def _step_times(status: dict[str, Any]) -> dict[str, datetime]:
    times = status.get("stepTimes")
    if isinstance(times, dict):
        parsed = {str(step): parse_time(at) for step, at in times.items()}
        return {step: at for step, at in parsed.items() if at is not None}
    # A rotation started before the hub recorded stepTimes: only the current step's start.
    started = parse_time(status.get("stepStartedAt"))
    step = status.get("step")
    return {str(step): started} if started and step not in (None, "done", "failed") else {}


def steps_table(view: dict[str, Any], *, now: datetime | None = None, live: bool = False) -> Table:
    """Every step entered, when it started and how long it took; done, running or failed."""
    status = custom(view)
    running = view.get("runtimeStatus") not in ENDED
    done = set(status.get("stepsDone") or [])
    failed_step = (status.get("failed") or {}).get("step")
    current = status.get("step")
    ended_at = parse_time(view.get("lastUpdatedTime"))
    now = now or datetime.now(UTC)
    times = sorted(_step_times(status).items(), key=lambda item: item[1])

    table = Table(title="steps", title_justify="left", show_edge=False)
    table.add_column("")
    table.add_column("step")
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("took", justify="right")
    for index, (step, started) in enumerate(times):
        last = index == len(times) - 1
        until = times[index + 1][1] if not last else (now if running else ended_at)
        # lastUpdatedTime has whole seconds: a last step shorter than that shows no time.
        took = _seconds((until - started).total_seconds()) if until and until >= started else "-"
        mark: RenderableType
        if step == failed_step:
            mark = Text("✗", style="red")
        elif step in done:
            mark = Text("✓", style="green")
        elif running and step == current:
            mark = Spinner("dots", style="yellow") if live else Text("…", style="yellow")
            took += " so far"
        else:
            mark = Text("-", style="dim")  # entered, never finished: rejected, timed out
        table.add_row(mark, step, _clock(started), took)
    return table


def facts(view: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(label, text) for what the custom status and the output say beyond the steps."""
    status = custom(view)
    running = view.get("runtimeStatus") not in ENDED
    step = status.get("step")
    if running and step not in (None, "done", "failed"):
        yield "current step", where(view) + f", since {when(status.get('stepStartedAt'))}"
    retrying = status.get("retrying")
    if running and isinstance(retrying, dict):
        after = retrying.get("after") or {}
        # Promote and the undos outlast outages for hours: when they try next, and until when.
        schedule = "".join(
            f", {label} {when(retrying[key])}"
            for key, label in (("nextAttemptAt", "next at"), ("retryUntil", "gives up after"))
            if retrying.get(key)
        )
        yield (
            "retrying",
            f"attempt {retrying.get('attempt')} after {after.get('class')}: {after.get('message')}{schedule}",
        )
    if running and status.get("compensating"):
        yield "undoing", str(status["compensating"])
    if running and step == "approval" and status.get("awaitingDecisionUntil"):
        yield "awaiting a decision until", when(status["awaitingDecisionUntil"])
    decision = status.get("decision")
    if isinstance(decision, dict):
        verdict = "approved" if decision.get("approved") else "rejected"
        reason = f": {decision['reason']}" if decision.get("reason") else ""
        yield "decision", f"{verdict} by {decision.get('approver', '?')}{reason}"
    if running and status.get("retireAt"):
        yield "retires the previous credential at", when(status["retireAt"])
    if status.get("newVersion"):
        yield "new version", str(status["newVersion"])
    if status.get("retired"):
        yield "retired", str(status["retired"])
    if status.get("notRemoved"):
        yield "not removed (an operator's to remove)", ", ".join(map(str, status["notRemoved"]))
    failed = status.get("failed")
    if isinstance(failed, dict):
        yield "failed", f"step {failed.get('step')}: {failed.get('class')}: {failed.get('message')}"
        if status.get("promoted"):
            yield "note", "the new version was promoted before the failure: it is the current one"
    output = view.get("output")
    if isinstance(output, dict):
        if output.get("result"):
            yield "result", str(output["result"])
        if output.get("detail"):
            yield "detail", str(output["detail"])
    elif isinstance(output, str) and output and not isinstance(failed, dict):
        yield "output", output


def undos_table(view: dict[str, Any]) -> Table | None:
    undos = custom(view).get("compensation")
    if not undos:
        return None
    table = Table(title="undos (last in, first out)", title_justify="left", show_edge=False)
    table.add_column("undo")
    table.add_column("result")
    table.add_column("detail")
    for undo in undos:
        result = str(undo.get("result"))
        style = "green" if result == "done" else "red"
        table.add_row(str(undo.get("undo")), Text(result, style=style), str(undo.get("detail", "")))
    return table


def facts_table(view: dict[str, Any], *, with_header: bool) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    status = custom(view)
    if with_header:
        table.add_row("rotation", str(view.get("id")))
        table.add_row("secret", f"{status.get('vault', '-')} / {status.get('secret', '-')}")
        table.add_row("state", state_text(view))
        table.add_row("created", when(view.get("createdTime")))
        table.add_row("updated", when(view.get("lastUpdatedTime")))
    for label, text in facts(view):
        table.add_row(label, text)
    return table


def progress_view(view: dict[str, Any]) -> RenderableType:
    """``rotate --wait`` on a terminal: the steps (a spinner on the current one), then what the
    status says now (the approval deadline, a retry, an undo, at the end the outcome)."""
    parts: list[RenderableType] = [steps_table(view, live=True), facts_table(view, with_header=False)]
    undos = undos_table(view)
    if undos is not None:
        parts.append(undos)
    return Group(*parts)


def rotation_view(view: dict[str, Any], *, live: bool = False) -> RenderableType:
    """``kvrotate status``: the header, the steps, the facts, the undos."""
    parts: list[RenderableType] = [
        facts_table(view, with_header=True),
        Text(""),
        steps_table(view, live=live),
    ]
    undos = undos_table(view)
    if undos is not None:
        parts += [Text(""), undos]
    return Group(*parts)


# -- preflight ------------------------------------------------------------------------------------


def preflight_view(answer: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = []
    verdict = Text("ok", style="green") if answer.get("ok") else Text("checks failed", style="red")
    parts.append(Text.assemble(f"preflight of {answer.get('vault', '?')}: ", verdict))
    for secret in answer.get("secrets") or []:
        mark = "✓" if secret.get("ok") else "✗"
        title = f"{mark} {secret.get('secret', '?')}"
        if secret.get("target"):
            title += f" ({secret['target']})"
        table = Table(title=title, title_justify="left", show_edge=False)
        table.add_column("")
        table.add_column("check")
        table.add_column("detail")
        for check in secret.get("checks") or []:
            ok = bool(check.get("ok"))
            table.add_row(
                Text("✓" if ok else "✗", style="green" if ok else "red"),
                str(check.get("name", "?")),
                str(check.get("detail", "")),
            )
        parts += [Text(""), table]
    if not answer.get("secrets"):
        parts.append(Text("no tagged secrets to check"))
    return Group(*parts)


def preflight_ok(answer: dict[str, Any]) -> bool:
    """All good only when the hub says so and no check of any secret failed."""
    checks = [check for secret in answer.get("secrets") or [] for check in secret.get("checks") or []]
    secrets_ok = all(bool(secret.get("ok")) for secret in answer.get("secrets") or [])
    return bool(answer.get("ok")) and secrets_ok and all(bool(check.get("ok")) for check in checks)


def quiet_console() -> Console:
    """Prints nothing: progress while stdout must carry only the final JSON."""
    return Console(quiet=True)
