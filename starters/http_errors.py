"""The one error type HTTP handlers raise to answer with a status and a message, and the longest
free text (a reason, an approver's name) any handler accepts."""

from __future__ import annotations

MAX_TEXT = 500


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
