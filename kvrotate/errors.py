"""What the command line says when something goes wrong: one line and an exit code per kind."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of kvrotate (the README's table)."""

    OK = 0
    # The command worked but the answer is "no": the rotation ended failed, rejected, timed out
    # or terminated; a preflight check failed; or something unexpected happened.
    FAILED = 1
    # A bad command line, or the hub refused the request as malformed (HTTP 400, 413).
    USAGE = 2
    # No such rotation, secret or route (HTTP 404).
    NOT_FOUND = 3
    # The rotation's state forbids the action (HTTP 409): already running, not waiting for a
    # decision, not failed.
    CONFLICT = 4
    # Not allowed: no or a wrong function key, no Entra token, a vault outside the allowlist
    # (HTTP 401, 403).
    DENIED = 5
    # The hub does not answer: refused connection, unknown host, time-out.
    UNREACHABLE = 6
    # The hub answered with a server error (HTTP 5xx, including 503 when Key Vault or the task
    # hub does not answer now) or with something that is not its API's JSON.
    HUB_ERROR = 7
    INTERRUPTED = 130


_BY_HTTP_STATUS = {
    400: ExitCode.USAGE,
    413: ExitCode.USAGE,
    401: ExitCode.DENIED,
    403: ExitCode.DENIED,
    404: ExitCode.NOT_FOUND,
    409: ExitCode.CONFLICT,
}


def exit_code_for(http_status: int) -> ExitCode:
    return _BY_HTTP_STATUS.get(http_status, ExitCode.HUB_ERROR)


class CliError(Exception):
    """Ends the command with ``error: <message>`` on stderr and ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def one_line(text: str, limit: int = 500) -> str:
    """``text`` on one line (an error line must stay one line), shortened to ``limit``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
