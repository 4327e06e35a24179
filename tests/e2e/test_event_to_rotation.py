"""From a SecretNearExpiry event, emitted by the vault and delivered by Event Grid to the hub's
webhook, to a promoted version that logs in while the old password no longer does: for a
PostgreSQL login and for a MariaDB account."""

from __future__ import annotations

from e2e_helpers import assert_consistent, assert_no_value_leaked, seed, versions_of

from local.scenario import wait_for
from local.stack import LocalStack


def test_a_near_expiry_event_rotates_the_secret(stack: LocalStack, kind: str) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, "spoke2-kv", kind=kind)
    old = stack.secret_client(seeded.vault).get_secret(seeded.name).value or ""

    stack.cloud.admin.emit_event(vault=seeded.vault, secret=seeded.name, event_type="SecretNearExpiry")
    done = wait_for(stack, stack.rotation_id(seeded))

    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    assert done["status"]["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == done["output"]["new_version"]
    assert current.value != old
    assert not stack.logs_in(seeded, old)
    assert len(versions_of(stack, seeded)) == 2
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)
