"""What the end-to-end scenarios of the entra-app-secret target share: the stack's settings,
seeding an application's secret, and what the application holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import hub_request, module_stack, unique, value_of, wait_until

from local.stack import APPLICATION, LocalStack, Seeded
from rotation import metadata

VAULT = "spoke1-kv"
# Two attempts per step, half a second apart; a new secret must be accepted within 6 s (the
# local Entra has no delay unless a test sets one).
SETTINGS = {
    "ROTATION_RETRY_MAX_ATTEMPTS": "2",
    "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5",
    "ROTATION_CONSUMER_READY_TIMEOUT_SECONDS": "30",
    "ROTATION_ENTRA_PROPAGATION_TIMEOUT_SECONDS": "6",
}
# "Until lifted": more calls than any rotation makes.
LASTING = 1000


def entra_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A module's stack (the module's ``stack`` fixture yields from it)."""
    yield from module_stack(tmp_path_factory, SETTINGS)


def clean_cloud(stack: LocalStack) -> Iterator[None]:
    """No fault and no propagation delay is left for the next test, pass or fail; the host runs
    (the module's autouse fixture yields from it)."""
    assert stack.cloud is not None
    assert stack.host is not None
    stack.cloud.admin.clear_faults()
    stack.cloud.admin.set_entra(propagation_delay_seconds=0)
    try:
        yield
    finally:
        stack.cloud.admin.clear_faults()
        stack.cloud.admin.set_entra(propagation_delay_seconds=0)
        if not stack.host.running:
            stack.host.start()


def seed(stack: LocalStack, *, name: str | None = None, **kwargs: Any) -> Seeded:
    """The application back to its one initial secret, stored in the vault and tagged for rotation
    (``overlap_hours`` 0 unless given: retired as soon as the rotation is done)."""
    kwargs.setdefault("overlap_hours", 0)
    return stack.seed_app_secret(VAULT, name or unique("app-secret"), **kwargs)


def keys(stack: LocalStack, application: str = APPLICATION) -> set[str]:
    """The key ids of the application's client secrets, as the local cloud holds them."""
    return {c["key_id"] for c in stack.application(application)["password_credentials"]}


def labels(stack: LocalStack, application: str = APPLICATION) -> dict[str, str]:
    return {c["key_id"]: c["display_name"] for c in stack.application(application)["password_credentials"]}


def credential_of_current(stack: LocalStack, seeded: Seeded) -> str:
    """The credential id the secret's current version records (``rotation-credential-id``)."""
    tags = stack.secret_client(seeded.vault).get_secret(seeded.name).properties.tags or {}
    return tags[metadata.CREDENTIAL_ID]


def current_value(stack: LocalStack, seeded: Seeded) -> str:
    return value_of(stack, seeded.vault, seeded.name)


def advance_host_clock(stack: LocalStack, seconds: float) -> None:
    status, _, body = hub_request(stack, "POST", "/admin/host/clock", {"advanceSeconds": seconds})
    assert status == 200, body


def wait_for_credentials(stack: LocalStack, expected: set[str], what: str) -> None:
    wait_until(lambda: keys(stack) == expected, what, timeout=30)
