"""The ``kvrotate`` commands: list, status, approve, reject, rerun, rotate, preflight.

Every command takes ``--hub URL`` (or ``KVROTATE_HUB_URL``), ``--scope`` (or ``KVROTATE_SCOPE``)
for an Entra token, and ``--json`` to print the API's JSON answer instead of tables. Errors are
one line on stderr, ``error: ...``, and an exit code per kind (kvrotate.errors.ExitCode).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from kvrotate import incidents, progress, views
from kvrotate.client import Hub
from kvrotate.errors import CliError, ExitCode, one_line

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "KVROTATE_DEBUG"


def api_options(command: F) -> F:
    """The options every command shares: where the hub is, how to sign in, how to print."""
    command = click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON answer instead of tables."
    )(command)
    command = click.option(
        "--scope",
        envvar="KVROTATE_SCOPE",
        metavar="SCOPE",
        help="Entra scope of the hub when App Service authentication protects it, e.g. "
        "api://<app id>/.default; a token from DefaultAzureCredential is sent as a bearer token.",
    )(command)
    return click.option(
        "--hub",
        envvar="KVROTATE_HUB_URL",
        required=True,
        metavar="URL",
        help="The hub's URL, e.g. https://<app>.azurewebsites.net (env KVROTATE_HUB_URL).",
    )(command)


def _print_json(answer: object) -> None:
    click.echo(json.dumps(answer, indent=2, sort_keys=False))


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="The function key comes from KVROTATE_FUNCTION_KEY (sent as x-functions-key). "
    "Exit codes: 0 ok, 1 the rotation or a check failed, 2 usage, 3 not found, 4 conflict, "
    "5 not allowed, 6 hub unreachable, 7 hub error.",
)
@click.version_option(package_name="keyvault-rotation-hub", prog_name="kvrotate")
def cli() -> None:
    """Operate the Key Vault Rotation Hub: list, inspect, start, approve, reject and rerun rotations."""


@cli.command("list")
@click.option(
    "--status",
    "statuses",
    metavar="S[,S]",
    help="Only these runtime statuses, comma separated: Running, Completed, Failed, Terminated, Pending ...",
)
@click.option("--vault", metavar="NAME", help="Only rotations of secrets in this vault.")
@api_options
def list_rotations(
    hub: str, scope: str | None, as_json: bool, statuses: str | None, vault: str | None
) -> int:
    """List rotations, newest first."""
    wanted = [s.strip() for s in (statuses or "").split(",") if s.strip()]
    with Hub(hub, scope=scope) as api:
        answer = api.list_rotations(statuses=wanted, vault=vault)
    if as_json:
        _print_json(answer)
    else:
        views.console().print(views.rotations_table(list(answer.get("rotations") or [])))
    return ExitCode.OK


@cli.command("status")
@click.argument("rotation_id", metavar="ID")
@api_options
def status(hub: str, scope: str | None, as_json: bool, rotation_id: str) -> int:
    """One rotation: its steps and their times, the current step, a failure and its undos, the
    approval deadline, the decision, the retirement time."""
    with Hub(hub, scope=scope) as api:
        view = api.rotation(rotation_id)
    if as_json:
        _print_json(view)
    else:
        views.console().print(views.rotation_view(view))
    return ExitCode.OK


def _decide(
    hub: str,
    scope: str | None,
    as_json: bool,
    rotation_id: str,
    *,
    approved: bool,
    approver: str | None,
    reason: str | None,
) -> int:
    with Hub(hub, scope=scope) as api:
        answer = api.decide(rotation_id, approved=approved, approver=approver, reason=reason)
    if as_json:
        _print_json(answer)
    else:
        decision = answer.get("decision") or {}
        verdict = "approved" if approved else "rejected"
        views.console().print(
            f"{verdict} {answer.get('id')} as {decision.get('approver', '?')}", soft_wrap=True
        )
    return ExitCode.OK


APPROVER_HELP = (
    "Who decides, recorded in the rotation. The hub takes the signed-in principal instead when "
    "App Service authentication is on."
)


@cli.command("approve")
@click.argument("rotation_id", metavar="ID")
@click.option("--reason", help="Why (recorded with the decision).")
@click.option("--approver", metavar="NAME", help=APPROVER_HELP)
@api_options
def approve(
    hub: str, scope: str | None, as_json: bool, rotation_id: str, reason: str | None, approver: str | None
) -> int:
    """Approve a rotation waiting at its approval step."""
    return _decide(hub, scope, as_json, rotation_id, approved=True, approver=approver, reason=reason)


@cli.command("reject")
@click.argument("rotation_id", metavar="ID")
@click.option("--reason", required=True, help="Why (required, recorded with the decision).")
@click.option("--approver", metavar="NAME", help=APPROVER_HELP)
@api_options
def reject(
    hub: str, scope: str | None, as_json: bool, rotation_id: str, reason: str, approver: str | None
) -> int:
    """Reject a rotation waiting at its approval step: what it staged is undone."""
    return _decide(hub, scope, as_json, rotation_id, approved=False, approver=approver, reason=reason)


@cli.command("rerun")
@click.argument("rotation_id", metavar="ID")
@click.option(
    "--restart", is_flag=True, help="Start again from the first step instead of rewinding the failed one."
)
@api_options
def rerun(hub: str, scope: str | None, as_json: bool, rotation_id: str, restart: bool) -> int:
    """Run a failed rotation again: rewind it (its failed step runs again), or --restart it."""
    with Hub(hub, scope=scope) as api:
        answer = api.rerun(rotation_id, restart=restart)
    if as_json:
        _print_json(answer)
    else:
        note = f" ({answer['note']})" if answer.get("note") else ""
        views.console().print(f"{answer.get('mode')} {answer.get('id')}{note}", soft_wrap=True)
    return ExitCode.OK


@cli.command("rotate")
@click.argument("vault")
@click.argument("secret")
@click.option(
    "--wait", is_flag=True, help="Follow the rotation until it ends; exit 0 only if rotated or skipped."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up waiting after this long (the rotation goes on).",
)
@api_options
def rotate(
    hub: str, scope: str | None, as_json: bool, vault: str, secret: str, wait: bool, timeout: float | None
) -> int:
    """Rotate SECRET of VAULT now (VAULT: a configured vault's name or its ARM id)."""
    out = views.console()
    with Hub(hub, scope=scope) as api:
        started = api.start(vault, secret)
        rotation_id = str(started.get("id"))
        # A rotation of this version that ended unfinished starts again: the hub says so.
        restarted = f" ({started['note']})" if started.get("note") else ""
        if not wait:
            if as_json:
                _print_json(started)
            else:
                out.print(
                    f"started {rotation_id}{restarted}; follow it with: kvrotate status {rotation_id}",
                    soft_wrap=True,
                )
            return ExitCode.OK
        if as_json:
            # No progress on stdout: it carries only the final JSON.
            view = progress.follow(api, rotation_id, out=views.quiet_console(), timeout=timeout)
            _print_json(view)
        else:
            out.print(f"started {rotation_id}{restarted}", soft_wrap=True)
            view = progress.follow(api, rotation_id, out=out, timeout=timeout)
    return ExitCode.OK if views.succeeded(view) else ExitCode.FAILED


@cli.command("preflight")
@click.argument("vault")
@click.argument("secret", required=False)
@api_options
def preflight(hub: str, scope: str | None, as_json: bool, vault: str, secret: str | None) -> int:
    """Check, changing nothing, that the hub could rotate SECRET (or every tagged secret of VAULT)."""
    with Hub(hub, scope=scope) as api:
        answer = api.preflight(vault, secret)
    if as_json:
        _print_json(answer)
    else:
        views.console().print(views.preflight_view(answer))
    return ExitCode.OK if views.preflight_ok(answer) else ExitCode.FAILED


incidents.register(cli, api_options)


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {one_line(message)}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code. Never lets a traceback reach the operator
    (``KVROTATE_DEBUG=1`` prints it for a bug report)."""
    # azure-identity logs each credential it tries as a warning: the error line says what matters.
    if not os.environ.get(DEBUG_ENV):
        logging.getLogger("azure").addHandler(logging.NullHandler())
        logging.getLogger("azure").propagate = False
    try:
        result = cli.main(args=argv, prog_name="kvrotate", standalone_mode=False)
    except CliError as exc:
        return _fail(exc.message, exc.code)
    except click.exceptions.NoArgsIsHelpError as exc:  # plain `kvrotate`: the help, not an error
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        return ExitCode.OK
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "kvrotate"
        return _fail(f"{exc.format_message()} (see {command} --help)", ExitCode.USAGE)
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _fail("interrupted", ExitCode.INTERRUPTED)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        return _fail(
            f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)", ExitCode.FAILED
        )
    return int(result) if isinstance(result, int) else ExitCode.OK


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
