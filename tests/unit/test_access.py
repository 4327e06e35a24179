"""How the hub reads ARM's permissions answer (rotation/access.py): wildcards, case, not-actions."""

from __future__ import annotations

import pytest

from rotation.access import GET_SECRET, RESTART_SITE, SET_SECRET, Grant, Permissions, permissions_on
from rotation.errors import InvalidRequest
from rotation.settings import Settings

OFFICER = Grant(
    actions=("Microsoft.KeyVault/vaults/*/read",),
    data_actions=("Microsoft.KeyVault/vaults/secrets/*",),
)
USER = Grant(data_actions=(GET_SECRET, "Microsoft.KeyVault/vaults/secrets/readMetadata/action"))


def test_a_wildcard_covers_every_action_below_it_whatever_the_case() -> None:
    officer = Permissions("vault", (OFFICER,))
    assert officer.allows(SET_SECRET, data=True)
    assert officer.allows(SET_SECRET.lower(), data=True)
    assert officer.missing((GET_SECRET, SET_SECRET), data=True) == []
    assert not officer.allows(SET_SECRET), "data actions are not control-plane actions"


def test_an_exact_list_allows_only_what_it_names() -> None:
    user = Permissions("vault", (USER,))
    assert user.allows(GET_SECRET, data=True)
    assert user.missing((GET_SECRET, SET_SECRET), data=True) == [SET_SECRET]
    assert Permissions("vault", ()).missing((GET_SECRET,), data=True) == [GET_SECRET]


def test_not_actions_take_away_from_their_own_role_only() -> None:
    contributor_but_no_restart = Grant(actions=("*",), not_actions=("Microsoft.Web/sites/restart/action",))
    assert not Permissions("site", (contributor_but_no_restart,)).allows(RESTART_SITE)
    website_contributor = Grant(actions=("Microsoft.Web/sites/*",))
    assert Permissions("site", (contributor_but_no_restart, website_contributor)).allows(RESTART_SITE)
    denied_data = Grant(
        data_actions=("*",), not_data_actions=("Microsoft.KeyVault/vaults/secrets/setSecret/*",)
    )
    assert not Permissions("vault", (denied_data,)).allows(SET_SECRET, data=True)
    assert Permissions("vault", (denied_data,)).allows(GET_SECRET, data=True)


def test_a_star_is_not_a_regular_expression() -> None:
    dotted = Grant(actions=("Microsoft.Web/sites.restart/action",))
    assert not Permissions("site", (dotted,)).allows("Microsoft.Web/sitesXrestart/action")


def test_only_a_top_level_resource_id_is_asked_about() -> None:
    with pytest.raises(InvalidRequest, match="not the ARM id of a top-level resource"):
        permissions_on("/subscriptions/x/resourceGroups/rg", Settings.from_environ({}))
