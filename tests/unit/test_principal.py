"""Who is calling: App Service authentication's headers count only when the platform says it is
on (WEBSITE_AUTH_ENABLED); who may decide follows ROTATION_APPROVERS and
ROTATION_ALLOW_UNVERIFIED_APPROVER."""

from __future__ import annotations

import base64
import json

import pytest

from rotation.settings import Settings, SettingsError
from starters.decisions import Refused, decider_for
from starters.principal import Principal, trusted_principal

OID = "3A7C9E21-5B4D-4F6A-8E2C-1D0B9A8F7E61"
GROUP = "6f1d2c3b-4a59-4e8d-9c7b-0a1b2c3d4e5f"


def claims_header(*claims: tuple[str, str]) -> str:
    document = {"auth_typ": "aad", "claims": [{"typ": t, "val": v} for t, v in claims], "name_typ": "name"}
    return base64.b64encode(json.dumps(document).encode()).decode()


HEADERS = {
    "X-MS-CLIENT-PRINCIPAL-ID": OID,
    "X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.example",
    "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
    "X-MS-CLIENT-PRINCIPAL": claims_header(("groups", GROUP.upper()), ("name", "Alice")),
}


def settings(**values: str) -> Settings:
    return Settings.from_environ(values)


def test_headers_are_ignored_unless_app_service_authentication_is_on() -> None:
    for signal in ({}, {"WEBSITE_AUTH_ENABLED": "False"}, {"WEBSITE_AUTH_ENABLED": ""}):
        assert trusted_principal(HEADERS, settings(**signal)) is None, signal


def test_with_app_service_authentication_the_headers_name_the_principal_and_its_groups() -> None:
    principal = trusted_principal(HEADERS, settings(WEBSITE_AUTH_ENABLED="True"))
    assert principal == Principal(
        id=OID.lower(), name="alice@contoso.example", identity_provider="aad", groups=frozenset({GROUP})
    )
    # Header names in any case; no principal header at all: nobody signed in (AllowAnonymous).
    lowered = {k.lower(): v for k, v in HEADERS.items()}
    assert trusted_principal(lowered, settings(WEBSITE_AUTH_ENABLED="true")) == principal
    assert trusted_principal({}, settings(WEBSITE_AUTH_ENABLED="True")) is None


@pytest.mark.parametrize("claims", ["not base64 json!", base64.b64encode(b"[1, 2]").decode(), ""])
def test_unreadable_claims_leave_the_principal_without_groups(claims: str) -> None:
    principal = trusted_principal(
        {**HEADERS, "X-MS-CLIENT-PRINCIPAL": claims}, settings(WEBSITE_AUTH_ENABLED="True")
    )
    assert principal is not None
    assert principal.groups == frozenset()


def test_who_may_decide() -> None:
    alice = Principal(id=OID.lower(), name="alice", identity_provider="aad", groups=frozenset({GROUP}))
    bob = Principal(id="e1f2a3b4-c5d6-4e7f-9a0b-1c2d3e4f5a64", name="bob", identity_provider="aad")
    anyone = settings(WEBSITE_AUTH_ENABLED="True")
    by_group = settings(WEBSITE_AUTH_ENABLED="True", ROTATION_APPROVERS=GROUP)
    by_id = settings(WEBSITE_AUTH_ENABLED="True", ROTATION_APPROVERS=OID)

    assert decider_for(bob, "", anyone).verified
    assert decider_for(alice, "ignored", by_group).name == "alice"
    assert decider_for(alice, "", by_id).principal == alice
    with pytest.raises(Refused) as refused:
        decider_for(bob, "", by_group)
    assert (refused.value.status, refused.value.code) == (403, "not-an-approver")

    # Nobody signed in: refused unless unverified decisions are allowed, and then only by name.
    with pytest.raises(Refused) as refused:
        decider_for(None, "carol", anyone)
    assert (refused.value.status, refused.value.code) == (403, "no-principal")
    unverified = settings(ROTATION_ALLOW_UNVERIFIED_APPROVER="true")
    carol = decider_for(None, "carol", unverified)
    assert (carol.name, carol.verified) == ("carol", False)
    with pytest.raises(Refused) as refused:
        decider_for(None, "", unverified)
    assert refused.value.status == 400
    # A list cannot be checked against a name anybody can type.
    with pytest.raises(Refused) as refused:
        decider_for(
            None, "carol", settings(ROTATION_ALLOW_UNVERIFIED_APPROVER="true", ROTATION_APPROVERS=GROUP)
        )
    assert (refused.value.status, refused.value.code) == (403, "unverified-refused")


@pytest.mark.parametrize(
    ("name", "value"),
    [("ROTATION_APPROVERS", "alice@contoso.example"), ("ROTATION_ALLOW_UNVERIFIED_APPROVER", "maybe")],
)
def test_malformed_approval_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_environ({name: value})
