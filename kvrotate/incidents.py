"""``kvrotate incident``: start, inspect, pause, resume and cancel incidents (mass rotations)."""

from __future__ import annotations

import json
from typing import Any

import click

from kvrotate.client import Hub
from kvrotate.errors import CliError, ExitCode


def _print(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    custom = answer.get("customStatus")
    summary = custom if isinstance(custom, dict) else {}
    counts = ", ".join(
        f"{key} {summary[key]}"
        for key in ("state", "total", "done", "failed", "running", "waiting")
        if key in summary
    )
    click.echo(f"incident {answer.get('id')} {answer.get('runtimeStatus', '')} {counts}".strip())


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
    @click.option("--reason", required=True, help="Why (required, recorded).")
    @click.option("--waive-approval", is_flag=True, help="Skip the approval step of each rotation.")
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
        reason: str,
        waive_approval: bool,
    ) -> int:
        """Start an incident over a scope."""
        body = {
            "scope": scope_of(vaults, subscription, every),
            "reason": reason,
            "waiveApproval": waive_approval,
            "tags": dict(_pair(tag) for tag in tags),
            "targets": list(targets),
            "servers": list(servers),
        }
        with Hub(hub, scope=scope) as api:
            _print(api.start_incident(body), as_json)
        return ExitCode.OK

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
                _print(api.steer_incident(incident_id, action), as_json)
            return ExitCode.OK

        steer.__doc__ = f"{action.capitalize()} an incident."
        incident.command(action)(api_options(click.argument("incident_id", metavar="ID")(steer)))
