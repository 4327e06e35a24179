"""Password policies per target, and new values drawn from them with the ``secrets`` module.

A policy names the character classes a value may use, the classes it must contain, and the
characters it must never contain (those that break the target or its consumers' connection
strings). Values are drawn uniformly from the allowed alphabet and redrawn until every
required class is present, so no position is predictable (a "one of each class, then shuffle"
scheme would bias the counts per class).
"""

from __future__ import annotations

import enum
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from rotation.targets.base import SecretValue

# Below this even a policy "required to contain" every class is guessable offline; above the
# maximum several targets (SQL Server: 128) refuse the value.
MIN_LENGTH = 12
MAX_LENGTH = 128


class PolicyError(ValueError):
    """A password policy is not usable; the message says which field and why."""


class CharClass(enum.StrEnum):
    LOWER = "lower"
    UPPER = "upper"
    DIGITS = "digits"
    SYMBOLS = "symbols"


ALPHABETS: dict[CharClass, str] = {
    CharClass.LOWER: string.ascii_lowercase,
    CharClass.UPPER: string.ascii_uppercase,
    CharClass.DIGITS: string.digits,
    CharClass.SYMBOLS: string.punctuation,
}

_ALL = frozenset(CharClass)


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new value for one kind of target looks like.

    ``classes`` are the character classes drawn from, ``required`` those each value must
    contain at least once (a subset of ``classes``), ``exclude`` characters never used.
    """

    length: int = 32
    classes: frozenset[CharClass] = field(default=_ALL)
    required: frozenset[CharClass] = field(default=_ALL)
    exclude: str = ""

    def __post_init__(self) -> None:
        # Accept any iterable of class names ("lower", CharClass.UPPER ...) but store frozensets,
        # so policies stay hashable and comparable.
        object.__setattr__(self, "classes", _as_classes("classes", self.classes))
        object.__setattr__(self, "required", _as_classes("required", self.required))
        self.validate()

    def alphabet(self, char_class: CharClass) -> str:
        """The characters of ``char_class`` this policy allows (exclusions removed)."""
        return "".join(c for c in ALPHABETS[char_class] if c not in self.exclude)

    def validate(self) -> None:
        """Raises PolicyError naming the field at fault."""
        if isinstance(self.length, bool) or not isinstance(self.length, int):
            raise PolicyError(f"length must be a whole number, got {self.length!r}")
        if not MIN_LENGTH <= self.length <= MAX_LENGTH:
            raise PolicyError(f"length must be between {MIN_LENGTH} and {MAX_LENGTH}, got {self.length}")
        if not self.classes:
            raise PolicyError("classes is empty: a password needs at least one character class")
        extra = self.required - self.classes
        if extra:
            raise PolicyError(f"required names classes not in classes: {_names(extra)}")
        empty = {c for c in self.classes if not self.alphabet(c)}
        if empty:
            raise PolicyError(f"exclude removes every character of: {_names(empty)}")


def _as_classes(field_name: str, value: object) -> frozenset[CharClass]:
    if isinstance(value, str):
        # A bare string would be read character by character: refuse it loudly instead.
        raise PolicyError(f"{field_name} must be a collection of class names, got the string {value!r}")
    if not isinstance(value, Iterable):
        raise PolicyError(f"{field_name} must be a collection of class names, got {value!r}")
    classes: set[CharClass] = set()
    for item in value:
        try:
            classes.add(CharClass(item))
        except ValueError:
            known = ", ".join(c.value for c in CharClass)
            raise PolicyError(f"{field_name} holds unknown class {item!r} (known: {known})") from None
    return frozenset(classes)


def _names(classes: set[CharClass] | frozenset[CharClass]) -> str:
    return ", ".join(sorted(c.value for c in classes))


def generate(policy: PasswordPolicy) -> SecretValue:
    """A new value following ``policy``, from the operating system's CSPRNG."""
    alphabet = "".join(policy.alphabet(c) for c in CharClass if c in policy.classes)
    required = [set(policy.alphabet(c)) for c in CharClass if c in policy.required]
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(policy.length))
        # Rejection keeps the draw uniform over valid values. validate() guarantees every
        # required class is non-empty and MIN_LENGTH exceeds the number of classes, so each
        # try succeeds with positive probability.
        if all(not chars.isdisjoint(candidate) for chars in required):
            return SecretValue(candidate)


# Database logins. The hub's own paths cope with every character (values travel as bound
# parameters, verifiers or hashes). Consumers do not: they paste the value into URLs
# (``@ : / ? # % & [ ]``), key=value connection strings (``; = { }``, spaces) and quoted literals
# (``' " ` \``). Leaving those out costs under 8 bits of 200. All four classes are required,
# which also meets Azure SQL's rule (three of four) and MySQL's validate_password.
DATABASE_POLICY = PasswordPolicy(length=32, exclude="\"'`\\;={}@:/?#%&[]")
