"""A consumer that reads its password through an App Service Key Vault reference in its app
settings: App Service caches the value (up to 24 hours) and a restart does not fetch it again, so
the hub's restart step changes the app's configuration instead (every setting kept as it was, one
added), which makes App Service fetch every reference afresh. The local cloud's sites resolve and
cache references as App Service does (local/cloud/kv_references.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.mgmt.web.models import StringDictionary
from e2e_helpers import hold_back, module_stack, start_rotation, value_of, wait_until

from local.cloud.process import AdminClient
from local.scenario import consumer_health, seed_consumer_secret, start_consumer, wait_for
from local.stack import CONSUMER_SECRET, CONSUMER_SITE, POSTGRESQL, LocalStack
from rotation.consumers import REFRESH_SETTING

REFERENCE = f"@Microsoft.KeyVault(SecretUri=https://spoke1-kv.vault.azure.net/secrets/{CONSUMER_SECRET}/)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from module_stack(tmp_path_factory, {}, databases=(POSTGRESQL,))


def test_a_consumer_reading_the_secret_through_a_reference_gets_it_from_a_configuration_change(
    stack: LocalStack, cloud: AdminClient
) -> None:
    seeded = seed_consumer_secret(stack)
    old = value_of(stack, seeded.vault, seeded.name)
    site_id = str(stack.info["sites"][CONSUMER_SITE]["arm_id"])
    subscription, resource_group = site_id.split("/")[2], site_id.split("/")[4]
    web = stack.web_client(subscription)
    # The app's password is an app setting App Service fills in from Key Vault.
    before = dict(web.web_apps.list_application_settings(resource_group, CONSUMER_SITE).properties or {})
    configured = {**before, "CONSUMER_DB_PASSWORD": REFERENCE}
    web.web_apps.update_application_settings(
        resource_group, CONSUMER_SITE, StringDictionary(properties=configured)
    )
    assert start_consumer(stack) == {"ok": True, "version": "app setting"}

    hold_back(cloud, CONSUMER_SITE, "update_app_settings", seconds=4)
    rotation_id = start_rotation(stack, seeded)
    wait_for(stack, rotation_id, step="restart", timeout=60)

    # Promoted, the database takes only the new password: the app, holding the old one, fails,
    # and a plain restart does not help (App Service serves the reference from its cache).
    assert stack.current_value_logs_in(seeded.vault, seeded.name)
    assert not stack.logs_in(seeded, old)
    assert consumer_health(stack)["ok"] is False
    web.web_apps.restart(resource_group, CONSUMER_SITE)
    wait_until(lambda: "version" in consumer_health(stack), "the restarted app answering", timeout=30)
    health = consumer_health(stack)
    assert (health["ok"], health["version"]) == (False, "app setting")

    ended = wait_for(stack, rotation_id, timeout=90)

    assert ended["runtimeStatus"] == "Completed", ended
    assert ended["status"]["stepsDone"][-1] == "restart"
    assert consumer_health(stack) == {"ok": True, "version": "app setting"}
    # Every setting as it was, plus the one that made the configuration change.
    after = dict(web.web_apps.list_application_settings(resource_group, CONSUMER_SITE).properties or {})
    assert after == {**configured, REFRESH_SETTING: rotation_id}
