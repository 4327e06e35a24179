"""Password policies and the values drawn from them."""

from __future__ import annotations

import string
from collections import Counter

import pytest

from rotation.passwords import MAX_LENGTH, MIN_LENGTH, CharClass, PasswordPolicy, PolicyError, generate
from rotation.targets.base import SecretValue
from rotation.targets.postgresql import PASSWORD_POLICY as POSTGRES_POLICY


def draw(policy: PasswordPolicy, n: int = 200) -> list[str]:
    return [generate(policy).reveal() for _ in range(n)]


def test_default_policy_is_32_characters_with_every_class() -> None:
    for value in draw(PasswordPolicy()):
        assert len(value) == 32
        assert any(c in string.ascii_lowercase for c in value)
        assert any(c in string.ascii_uppercase for c in value)
        assert any(c in string.digits for c in value)
        assert any(c in string.punctuation for c in value)
        assert all(c in string.ascii_letters + string.digits + string.punctuation for c in value)


def test_the_value_is_hidden_from_repr_and_str() -> None:
    value = generate(PasswordPolicy())
    assert isinstance(value, SecretValue)
    assert value.reveal() not in repr(value)
    assert value.reveal() not in str(value)
    assert value.reveal() not in repr(PasswordPolicy())  # the policy holds no value at all


@pytest.mark.parametrize("length", [MIN_LENGTH, 20, 64, MAX_LENGTH])
def test_length_is_respected(length: int) -> None:
    assert {len(v) for v in draw(PasswordPolicy(length=length), 50)} == {length}


def test_only_the_chosen_classes_are_used() -> None:
    policy = PasswordPolicy(classes={"lower", "digits"}, required={"digits"})
    for value in draw(policy):
        assert set(value) <= set(string.ascii_lowercase + string.digits)
        assert any(c.isdigit() for c in value)


def test_excluded_characters_never_appear() -> None:
    excluded = "\"'`\\;={}@:/?#%&[]0O1lI"
    for value in draw(PasswordPolicy(exclude=excluded), 500):
        assert not set(value) & set(excluded)


def test_a_required_class_is_present_even_when_it_is_one_character() -> None:
    # Only "7" is left of the digits: a plain uniform draw of 12 would miss it most of the time.
    policy = PasswordPolicy(length=12, exclude="012345689")
    assert all("7" in value for value in draw(policy, 300))


def test_a_class_that_is_allowed_but_not_required_may_be_absent() -> None:
    policy = PasswordPolicy(length=12, classes={"lower", "digits"}, required={"lower"}, exclude="012345678")
    # "9" is the only digit and is not required: some values must lack it.
    assert any("9" not in value for value in draw(policy, 300))


def test_values_look_random() -> None:
    values = draw(PasswordPolicy(), 2000)
    assert len(set(values)) == len(values), "no repeats"
    counts = Counter("".join(values))
    alphabet = string.ascii_letters + string.digits + string.punctuation
    assert set(counts) == set(alphabet), "every allowed character turns up"
    expected = 2000 * 32 / len(alphabet)
    # Generous bounds (the expected count is ~680; chance alone stays within a few percent).
    assert all(0.7 * expected < n < 1.3 * expected for n in counts.values()), counts.most_common(3)
    # No position is predictable: the first characters alone cover the whole alphabet too.
    assert len({v[0] for v in values}) > len(alphabet) * 0.9


def test_the_postgresql_policy_leaves_out_what_breaks_connection_strings() -> None:
    for value in draw(POSTGRES_POLICY, 500):
        assert len(value) == 32
        assert not set(value) & set("\"'`\\;={}@:/?#%&[] ")


def test_class_names_are_normalised() -> None:
    policy = PasswordPolicy(classes=["lower", CharClass.UPPER], required=("upper",))
    assert policy.classes == frozenset({CharClass.LOWER, CharClass.UPPER})
    assert policy == PasswordPolicy(classes={CharClass.UPPER, CharClass.LOWER}, required={CharClass.UPPER})
    hash(policy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": MIN_LENGTH - 1}, "length must be between"),
        ({"length": MAX_LENGTH + 1}, "length must be between"),
        ({"length": 32.0}, "whole number"),
        ({"length": True}, "whole number"),
        ({"classes": set(), "required": set()}, "classes is empty"),
        (
            {"classes": {"lower"}, "required": {"lower", "digits"}},
            "required names classes not in classes: digits",
        ),
        ({"classes": {"lower", "emoji"}}, "unknown class 'emoji'"),
        ({"classes": "lower"}, "got the string"),
        ({"required": 3}, "collection of class names"),
        ({"exclude": string.digits}, "exclude removes every character of: digits"),
    ],
)
def test_invalid_policies_are_refused_with_a_clear_message(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        PasswordPolicy(**kwargs)  # type: ignore[arg-type]


def test_policies_are_frozen() -> None:
    policy = PasswordPolicy()
    with pytest.raises(AttributeError):
        policy.length = 8  # type: ignore[misc]
