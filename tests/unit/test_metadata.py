"""The tag contract: every malformed tag is refused with an error naming the tag."""

from __future__ import annotations

import pytest

from rotation.errors import InvalidRequest
from rotation.metadata import parse_tags

SITE = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-apps/providers/Microsoft.Web/sites/consumer-app"


def tags(**extra: str) -> dict[str, str]:
    base = {
        "rotation-target": "postgresql-login",
        "rotation-provider": "db.example.com:5432/appdb",
        "rotation-credential": "app_user",
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return base


def test_minimal_tags_take_the_defaults() -> None:
    meta = parse_tags("db-password", tags())
    assert meta.target.kind == "postgresql-login"
    assert meta.target.admin.mode == "self"
    assert meta.validity_days == 60
    assert meta.approval_required is False
    assert meta.consumers == ()


def test_every_tag_is_read() -> None:
    meta = parse_tags(
        "db-password",
        tags(
            rotation_admin="secret:db-admin",
            rotation_validity_days="30",
            rotation_approval="required",
            rotation_consumers=f"{SITE}, {SITE.replace('consumer-app', 'other-app')}",
        ),
    )
    assert meta.target.admin.mode == "secret"
    assert meta.target.admin.secret_name == "db-admin"
    assert meta.validity_days == 30
    assert meta.approval_required is True
    assert len(meta.consumers) == 2


def test_stray_whitespace_in_names_and_values_is_tolerated() -> None:
    meta = parse_tags(
        "db-password",
        {
            " Rotation-Target ": " postgresql-login ",
            "rotation-provider": "h/db",
            "rotation-credential": " u ",
        },
    )
    assert meta.target.credential == "u"


@pytest.mark.parametrize(
    ("name", "extra", "names_tag"),
    [
        ("db-password", {"rotation_target": "mainframe"}, "rotation-target"),
        ("db-password", {"rotation_target": ""}, "rotation-target"),
        ("db-password", {"rotation_admin": "root"}, "rotation-admin"),
        ("db-password", {"rotation_admin": "secret:bad name"}, "rotation-admin"),
        ("db-password", {"rotation_admin": "secret:db-password"}, "rotation-admin"),
        ("db-password", {"rotation_validity_days": "soon"}, "rotation-validity-days"),
        ("db-password", {"rotation_validity_days": "-1"}, "rotation-validity-days"),
        ("db-password", {"rotation_validity_days": "99999"}, "rotation-validity-days"),
        ("db-password", {"rotation_approval": "yes"}, "rotation-approval"),
        ("db-password", {"rotation_consumers": "/subscriptions/x/sites/y"}, "rotation-consumers"),
        ("db-password-pending", {}, "-pending"),
        ("x" * 120, {}, "longer than"),
    ],
)
def test_bad_tags_are_refused_naming_the_tag(name: str, extra: dict[str, str], names_tag: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_tags(name, tags(**extra))
    assert names_tag in str(raised.value)


def test_missing_required_tags_are_named() -> None:
    with pytest.raises(InvalidRequest, match="rotation-provider, rotation-credential"):
        parse_tags("db-password", {"rotation-target": "postgresql-login"})


def test_too_many_tags_for_promotion_are_refused() -> None:
    crowded = tags(**{f"team_{i}": "x" for i in range(11)})
    with pytest.raises(InvalidRequest, match="allows 15"):
        parse_tags("db-password", crowded)


def test_promotion_leaves_room_for_its_three_tags() -> None:
    parse_tags("db-password", tags(**{f"team_{i}": "x" for i in range(9)}))  # 12 of its own
    with pytest.raises(InvalidRequest, match="promotion adds 3"):
        parse_tags("db-password", tags(**{f"team_{i}": "x" for i in range(10)}))


TENANT = "49c0eaa4-2544-4267-9389-b5996af6e626"
APP_ID = "6b3a3a1c-5d2e-4c8e-9f0a-1b2c3d4e5f60"


def app_tags(**extra: str) -> dict[str, str]:
    base = {"rotation-target": "entra-app-secret", "rotation-provider": TENANT, "rotation-credential": APP_ID}
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return base


def test_an_application_secret_overlaps_24_hours_unless_told() -> None:
    assert parse_tags("app-secret", app_tags()).overlap_hours == 24
    assert parse_tags("app-secret", app_tags(rotation_overlap_hours="0.5")).overlap_hours == 0.5
    assert parse_tags("app-secret", app_tags(rotation_overlap_hours="0")).overlap_hours == 0
    assert parse_tags("app-secret", app_tags(rotation_admin="managed-identity")).target.admin.mode == (
        "managed-identity"
    )
    # A database login has no overlap: the tag is meaningless there.
    assert parse_tags("db-password", tags()).overlap_hours is None


@pytest.mark.parametrize(
    ("extra", "names_tag"),
    [
        ({"rotation_overlap_hours": "soon"}, "rotation-overlap-hours"),
        ({"rotation_overlap_hours": "-1"}, "rotation-overlap-hours"),
        ({"rotation_overlap_hours": "nan"}, "rotation-overlap-hours"),
        ({"rotation_overlap_hours": "99999"}, "rotation-overlap-hours"),
        ({"rotation_provider": "contoso.onmicrosoft.com"}, "rotation-provider"),
        ({"rotation_credential": "orders-api"}, "rotation-credential"),
        ({"rotation_admin": "secret:app-admin"}, "rotation-admin"),
    ],
)
def test_bad_application_tags_are_refused_naming_the_tag(extra: dict[str, str], names_tag: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_tags("app-secret", app_tags(**extra))
    assert names_tag in str(raised.value)


def test_an_overlap_on_a_database_login_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="rotation-overlap-hours applies to targets that issue"):
        parse_tags("db-password", tags(rotation_overlap_hours="12"))


def alternating(**extra: str) -> dict[str, str]:
    fields = {
        "rotation_strategy": "alternating",
        "rotation_credential": "app_a,app_b",
        "rotation_format": "json",
        "rotation_admin": "secret:db-admin",
    }
    return tags(**(fields | extra))


def test_strategy_and_format_default_to_one_login_and_its_password() -> None:
    meta = parse_tags("db-password", tags())
    assert (meta.strategy, meta.value_format, meta.logins) == ("single", "password", ("app_user",))


def test_alternating_names_two_logins() -> None:
    meta = parse_tags("db-password", alternating())
    assert (meta.strategy, meta.value_format, meta.logins) == ("alternating", "json", ("app_a", "app_b"))
    spaced = parse_tags("db-password", alternating(rotation_credential=" app_a , app_b "))
    assert spaced.logins == ("app_a", "app_b")
    assert (
        parse_tags("db-password", tags(rotation_format="connection-string")).value_format
        == "connection-string"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rotation_credential": "app_a"}, "must name two logins"),
        ({"rotation_credential": "app_a,app_b,app_c"}, "must name two logins"),
        ({"rotation_credential": "app_a,"}, "must name two logins"),
        ({"rotation_credential": "app_a,app_a"}, "same login twice"),
        ({"rotation_format": "password"}, "cannot say which of the two logins"),
        ({"rotation_admin": "self"}, "'self' cannot change the other login"),
        ({"rotation_strategy": "round-robin"}, "rotation-strategy must be one of"),
        ({"rotation_format": "yaml"}, "rotation-format must be one of"),
        ({"rotation_credential": "app_a,pg_monitor"}, "reserved"),
    ],
)
def test_bad_alternating_tags_are_refused_before_anything_changes(
    extra: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_tags("db-password", alternating(**extra))


def test_alternating_needs_a_target_that_supports_it() -> None:
    sqlserver = alternating(
        rotation_target="sqlserver-login", rotation_provider="db.example.com/appdb", rotation_admin="secret:a"
    )
    with pytest.raises(InvalidRequest, match="'alternating' is not supported for sqlserver-login"):
        parse_tags("db-password", sqlserver)


def test_an_application_secret_has_no_format_or_strategy() -> None:
    with pytest.raises(InvalidRequest, match="rotation-format of entra-app-secret must be one of password"):
        parse_tags("app-secret", app_tags(rotation_format="json"))
    with pytest.raises(InvalidRequest, match="rotation-strategy does not apply"):
        parse_tags("app-secret", app_tags(rotation_strategy="alternating"))
