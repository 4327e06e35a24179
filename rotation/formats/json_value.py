"""``rotation-format: json``: AWS Secrets Manager's JSON for database credentials.

Written as AWS documents it ("JSON structure of AWS Secrets Manager secrets", Amazon RDS
credentials: https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_secret_json_structure.html)::

    {"engine": "postgres", "host": "db.example.com", "port": 5432,
     "username": "app", "password": "...", "dbname": "orders", "database": "orders"}

``engine`` is AWS's name for the engine (``postgres``, ``mysql``, ``sqlserver``), ``port`` a JSON
number, ``dbname`` AWS's key for the database; ``database`` repeats it under the name many
client libraries' option objects use. Read back, only ``username`` and ``password`` are
needed (strings, not empty); other keys are allowed (AWS adds ``masterarn`` and others), ``port``
may be a number or a string. A ``username`` or ``password`` key given twice is refused: JSON
parsers disagree on which one wins, so consumers could read another login than the hub.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from rotation.formats import Endpoint, LoginValue, check_login_value, format_error, is_unicode
from rotation.targets.base import SecretValue

#: AWS's ``engine`` values for ours.
AWS_ENGINES = {"postgresql": "postgres", "mysql": "mysql", "sqlserver": "sqlserver"}
_REQUIRED = ("username", "password")


class _Object(dict[str, Any]):
    """A JSON object that remembers which of its keys appeared more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.repeated: set[str] = set()
        for key, item in pairs:
            if key in self:
                self.repeated.add(key)
            self[key] = item


_INVALID = object()


class JsonFormat:
    name = "json"

    def build(self, value: LoginValue, endpoint: Endpoint) -> SecretValue:
        check_login_value(self.name, value, endpoint, allow_nul=True)
        document = {
            "engine": AWS_ENGINES[endpoint.engine],
            "host": endpoint.host,
            "port": endpoint.port,
            "username": value.login,
            "password": value.password.reveal(),
            "dbname": endpoint.database,
            "database": endpoint.database,
        }
        return SecretValue(json.dumps(document, ensure_ascii=False))

    def parse(self, text: SecretValue, endpoint: Endpoint, *, login: str | None) -> LoginValue:
        document: object = _INVALID
        # json's message may quote the text: the error is raised below, outside the handler.
        with contextlib.suppress(ValueError, RecursionError):
            document = json.loads(text.reveal(), object_pairs_hook=_Object)
        if document is _INVALID:
            raise format_error(self.name, "the value is not JSON")
        if not isinstance(document, _Object):
            raise format_error(
                self.name,
                f"the value is a JSON {_json_type(document)}, not an object with username and password",
            )
        found: dict[str, str] = {}
        for key in _REQUIRED:
            if key in document.repeated:
                raise format_error(self.name, f"the key {key!r} appears more than once")
            if key not in document:
                raise format_error(self.name, f"the key {key!r} is missing")
            item = document[key]
            if not isinstance(item, str):
                raise format_error(self.name, f"{key!r} is a JSON {_json_type(item)}, not a string")
            if not item:
                raise format_error(self.name, f"{key!r} is empty")
            if not is_unicode(item):
                raise format_error(
                    self.name, f"{key!r} holds a lone surrogate escape, which is not Unicode text"
                )
            found[key] = item
        return LoginValue(login=found["username"], password=SecretValue(found["password"]))


def _json_type(item: object) -> str:
    if isinstance(item, dict):
        return "object"
    if isinstance(item, list):
        return "array"
    if isinstance(item, str):
        return "string"
    if isinstance(item, bool):
        return "boolean"
    if item is None:
        return "null"
    return "number"


FORMAT = JsonFormat()
