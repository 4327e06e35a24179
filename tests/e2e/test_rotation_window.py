"""Secrets tagged ``rotation-window`` on the whole local stack: a rotation that arrives outside
its window waits in step ``window`` with the vault and the database untouched, and rotates once
the host's clock has passed the opening; a window that does not parse is refused by the
starters with the reason, a rotation started past them fails in its plan with that reason,
and nothing changes.

The window is written in Europe/Berlin's local time, a few hours after the host's clock reads
when the test starts, so the zone database (the tzdata wheel) is used inside the host as in Azure.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from e2e_helpers import (
    DURABLE_API,
    HostLog,
    assert_consistent,
    assert_no_value_leaked,
    assert_untouched,
    current_password,
    event_grid_event,
    hub_request,
    instance_ids,
    post_events,
    quiet_expiry_scan,
    seed,
    versions_of,
)

from local.scenario import wait_for
from local.stack import LocalStack, Seeded
from rotation import metadata
from rotation.model import RotationRequest, SecretRef
from rotation.windows import DAY_NAMES
from starters.launcher import policy_from

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module", autouse=True)
def _only_our_rotations(stack: LocalStack) -> None:
    quiet_expiry_scan(stack)


def host_now(stack: LocalStack) -> datetime:
    status, _, body = hub_request(stack, "GET", "/admin/host/clock")
    assert status == 200, body
    return datetime.fromisoformat(body["now"].replace("Z", "+00:00"))


def advance_host_clock(stack: LocalStack, seconds: float) -> None:
    status, _, body = hub_request(stack, "POST", "/admin/host/clock", {"advanceSeconds": seconds})
    assert status == 200, body


def berlin_window(opens: datetime, length: timedelta) -> str:
    """A weekly window in Berlin's local time opening at the instant ``opens`` (whole minutes)."""
    local = opens.astimezone(BERLIN)
    until = local + length
    return f"{DAY_NAMES[local.weekday()]} {local:%H:%M}-{until:%H:%M} Europe/Berlin"


def assert_no_companion(stack: LocalStack, seeded: Seeded) -> None:
    names = {p.name for p in stack.secret_client(seeded.vault).list_properties_of_secrets()}
    assert seeded.name + "-pending" not in names, "a pending value was staged outside the window"


def test_a_rotation_outside_its_window_waits_then_rotates_once_it_opens(stack: LocalStack) -> None:
    opens = (host_now(stack) + timedelta(hours=3)).replace(second=0, microsecond=0)
    window = berlin_window(opens, timedelta(hours=2))
    seeded = seed(stack, "spoke1-kv", prefix="windowed", tags={metadata.WINDOW: window})
    old = current_password(stack, seeded)
    rotation_id = stack.rotation_id(seeded)

    assert post_events(stack, [event_grid_event(stack, seeded)])[0] == 202
    waiting = wait_for(stack, rotation_id, step="window", until=())

    assert waiting["runtimeStatus"] == "Running"
    assert waiting["status"]["window"] == window
    assert datetime.fromisoformat(waiting["status"]["windowOpensAt"]) == opens
    assert waiting["status"]["stepsDone"] == ["plan"]
    # Nothing changed: the vault serves the seeded version only, no pending value was staged,
    # and the database still takes the old password. A moment later, still nothing.
    assert_untouched(stack, seeded, old)
    assert_no_companion(stack, seeded)
    time.sleep(1.0)
    assert_untouched(stack, seeded, old)
    assert_no_companion(stack, seeded)
    assert wait_for(stack, rotation_id, step="window", until=())["status"] == waiting["status"]

    advance_host_clock(stack, (opens - host_now(stack)).total_seconds() + 60)
    done = wait_for(stack, rotation_id)

    assert done["runtimeStatus"] == "Completed", done
    assert done["output"]["result"] == "rotated"
    assert done["status"]["stepsDone"] == ["plan", "window", "stage", "apply", "verify", "promote", "cleanup"]
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == done["output"]["new_version"]
    assert current.properties.tags[metadata.WINDOW] == window  # carried over to the new version
    assert stack.logs_in(seeded, current.value or "")
    assert not stack.logs_in(seeded, old)
    assert len(versions_of(stack, seeded)) == 2
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_an_invalid_window_is_refused_by_the_starters_and_changes_nothing(stack: LocalStack) -> None:
    bad = "Mon-Fri 09:00-17:00 Europe/Berln"
    seeded = seed(stack, "spoke2-kv", prefix="badwindow", tags={metadata.WINDOW: bad})
    old = current_password(stack, seeded)
    reason = (
        f"rotation-window {bad!r} is not a valid window: "
        "unknown time zone 'Europe/Berln' (an IANA name such as Europe/Berlin, or UTC)"
    )

    # Rotate now, through the HTTP API: refused with the reason.
    status, _, body = hub_request(
        stack, "POST", "/api/rotations", {"vault": seeded.vault, "secret": seeded.name}
    )
    assert status == 400, body
    assert body == {"error": reason}

    # An Event Grid delivery: accepted by the webhook (redelivering would not help), logged.
    log = HostLog(stack)
    event = event_grid_event(stack, seeded)
    assert post_events(stack, [event])[0] == 202
    log.wait_for(f"rotation of {seeded.vault}/{seeded.name} refused: {reason}")

    secret = SecretRef(stack.subscription_of(seeded.vault), seeded.vault, seeded.name)
    assert instance_ids(stack, secret.rotation_id_prefix()) == set()
    assert_untouched(stack, seeded, old)
    assert_no_companion(stack, seeded)

    # Started past the starters (the Durable HTTP API, open to whoever holds the system key):
    # the plan fails for good with the same reason, and nothing changes.
    rotation_id = stack.rotation_id(seeded)
    request = RotationRequest(
        secret=secret, version=seeded.version, trigger="manual", policy=policy_from(stack.settings())
    )
    status, _, body = hub_request(
        stack, "POST", f"{DURABLE_API}/orchestrators/rotate_secret/{rotation_id}", request.to_dict()
    )
    assert status == 202, body
    failed = wait_for(stack, rotation_id)

    assert failed["runtimeStatus"] == "Failed"
    assert failed["status"]["failed"] == {"step": "plan", "class": "InvalidRequest", "message": reason}
    assert failed["status"]["stepsDone"] == []
    assert failed["status"]["compensation"] == []
    assert_untouched(stack, seeded, old)
    assert_no_companion(stack, seeded)
