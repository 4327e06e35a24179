"""``kvrotate incident``: start, inspect, pause, resume and cancel incidents (mass rotations)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table

from kvrotate import progress, views
from kvrotate.client import Hub
from kvrotate.errors import CliError, ExitCode

COUNTS = ("total", "done", "failed", "running", "waiting")


def _counts(answer: dict[str, Any]) -> str:
    summary = views.custom(answer)
    return ", ".join(f"{key} {summary[key]}" for key in COUNTS if key in summary)


def _line(answer: dict[str, Any]) -> str:
    summary = views.custom(answer)
    state = summary.get("state") or answer.get("runtimeStatus") or "?"
    return f"incident {answer.get('id')} {state}: {_counts(answer)}".rstrip(": ")


def _print(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        views.console().print(summary_view(answer))


def _say(answer: dict[str, Any], as_json: bool, line: str) -> None:
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        views.console().print(line, soft_wrap=True)


def summary_view(answer: dict[str, Any]) -> RenderableType:
    """The incident's state and counts, per vault, and its failures."""
    summary = views.custom(answer)
    parts: list[RenderableType] = [_line(answer)]
    per_vault = summary.get("perVault")
    if isinstance(per_vault, dict) and per_vault:
        table = Table("vault", *COUNTS[1:])
        for vault, counts in per_vault.items():
            counts = counts if isinstance(counts, dict) else {}
            table.add_row(vault, *(str(counts.get(key, "")) for key in COUNTS[1:]))
        parts.append(table)
    failures = summary.get("failures")
    if isinstance(failures, list) and failures:
        parts.append("failures:")
        parts.extend(f"  {json.dumps(failure)}" for failure in failures)
    return Group(*parts)


def bar_view(answer: dict[str, Any]) -> RenderableType:
    """A progress bar of done+failed over total, with the counts."""
    summary = views.custom(answer)
    ended = int(summary.get("done") or 0) + int(summary.get("failed") or 0)
    total = int(summary.get("total") or 0) or None
    return Group(ProgressBar(total=total, completed=ended, width=40), _line(answer))


class PlainCounts:
    """Without a terminal: one line each time the counts change."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.last = ""

    def __call__(self, answer: dict[str, Any]) -> None:
        line = _line(answer)
        if line != self.last:
            self.last = line
            self.out.print(line, soft_wrap=True)


def follow(api: Hub, incident_id: str, *, as_json: bool, timeout: float | None) -> int:
    """Follow the incident until it ends; exit 0 only if it completed with no failure."""
    out = views.quiet_console() if as_json else views.console()
    answer = progress.watch(
        lambda: api.incident(incident_id),
        what=f"incident {incident_id}",
        status_command=f"kvrotate incident status {incident_id}",
        out=out,
        live_view=bar_view,
        plain=PlainCounts(out),
        timeout=timeout,
    )
    _print(answer, as_json)
    summary = views.custom(answer)
    ok = answer.get("runtimeStatus") == "Completed" and summary.get("state") == "completed"
    return ExitCode.OK if ok and not summary.get("failed") else ExitCode.FAILED


def scope_of(vaults: tuple[str, ...], subscription: str | None, every: bool) -> dict[str, Any]:
    """The API's ``scope``: exactly one of --vault (repeatable), --subscription, --all."""
    given = sum((bool(vaults), subscription is not None, every))
    if given != 1:
        raise CliError(
            "give exactly one of --vault NAME (repeatable), --subscription ID, --all", ExitCode.USAGE
        )
    if vaults:
        return {"vault": vaults[0]} if len(vaults) == 1 else {"vaults": list(vaults)}
    if subscription is not None:
        return {"subscription": subscription}
    return {"all": True}


def _pair(tag: str) -> tuple[str, str]:
    name, equals, value = tag.partition("=")
    if not equals or not name:
        raise CliError(f"--tag takes NAME=VALUE, not {tag!r}", ExitCode.USAGE)
    return name, value


TIMEOUT = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Give up waiting after this long (the incident goes on).",
)


def register(cli: click.Group, api_options: Any) -> None:
    """Adds the ``incident`` group to ``cli``."""

    @cli.group("incident")
    def incident() -> None:
        """Incidents: rotate every matching secret of a scope, paced, with pause/resume/cancel."""

    @incident.command("start")
    @click.option("--vault", "vaults", multiple=True, metavar="NAME", help="A vault (repeatable).")
    @click.option("--subscription", metavar="ID", help="The configured vaults of this subscription.")
    @click.option("--all", "every", is_flag=True, help="Every configured vault.")
    @click.option("--tag", "tags", multiple=True, metavar="NAME=VALUE", help="Only secrets with this tag.")
    @click.option("--target", "targets", multiple=True, metavar="KIND", help="Only this target kind.")
    @click.option("--server", "servers", multiple=True, metavar="HOST:PORT", help="Only this server.")
    @click.option("--max-per-vault", type=click.IntRange(min=1), help="Rotations at once per vault.")
    @click.option("--max-per-server", type=click.IntRange(min=1), help="Rotations at once per server.")
    @click.option("--reason", required=True, help="Why (required, recorded).")
    @click.option("--waive-approval", is_flag=True, help="Skip the approval step of each rotation.")
    @click.option("--wait", is_flag=True, help="Follow the incident until it ends (a progress bar).")
    @TIMEOUT
    @api_options
    def start(
        hub: str,
        scope: str | None,
        as_json: bool,
        vaults: tuple[str, ...],
        subscription: str | None,
        every: bool,
        tags: tuple[str, ...],
        targets: tuple[str, ...],
        servers: tuple[str, ...],
        max_per_vault: int | None,
        max_per_server: int | None,
        reason: str,
        waive_approval: bool,
        wait: bool,
        timeout: float | None,
    ) -> int:
        """Start an incident over a scope."""
        body: dict[str, Any] = {
            "scope": scope_of(vaults, subscription, every),
            "reason": reason,
            "waiveApproval": waive_approval,
            "tags": dict(_pair(tag) for tag in tags),
            "targets": list(targets),
            "servers": list(servers),
        }
        for name, bound in (("maxPerVault", max_per_vault), ("maxPerServer", max_per_server)):
            if bound is not None:
                body[name] = bound
        with Hub(hub, scope=scope) as api:
            started = api.start_incident(body)
            if wait:
                if not as_json:
                    views.console().print(f"started incident {started.get('id')}", soft_wrap=True)
                return follow(api, str(started.get("id")), as_json=as_json, timeout=timeout)
        _say(started, as_json, f"started incident {started.get('id')} on {started.get('scope')}")
        return ExitCode.OK

    @incident.command("watch")
    @click.argument("incident_id", metavar="ID")
    @TIMEOUT
    @api_options
    def watch(hub: str, scope: str | None, as_json: bool, incident_id: str, timeout: float | None) -> int:
        """Follow an incident until it ends: a progress bar of done+failed over total."""
        with Hub(hub, scope=scope) as api:
            return follow(api, incident_id, as_json=as_json, timeout=timeout)

    @incident.command("status")
    @click.argument("incident_id", metavar="ID")
    @api_options
    def status(hub: str, scope: str | None, as_json: bool, incident_id: str) -> int:
        """One incident: its state and counts."""
        with Hub(hub, scope=scope) as api:
            _print(api.incident(incident_id), as_json)
        return ExitCode.OK

    for action in ("pause", "resume", "cancel"):

        def steer(hub: str, scope: str | None, as_json: bool, incident_id: str, action: str = action) -> int:
            with Hub(hub, scope=scope) as api:
                answer = api.steer_incident(incident_id, action)
            _say(answer, as_json, f"{action} requested for incident {answer.get('id')} by {answer.get('by')}")
            return ExitCode.OK

        steer.__doc__ = f"{action.capitalize()} an incident."
        incident.command(action)(api_options(click.argument("incident_id", metavar="ID")(steer)))
