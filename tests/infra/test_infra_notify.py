"""The notification topic in the hub's Bicep: a CloudEvents custom topic without keys, the hub
identity its only publisher (EventGrid Data Sender), its endpoint the app's topic setting."""

from __future__ import annotations

from typing import Any

from bicep_templates import (
    ALL_ROLE_IDS,
    body,
    decorator,
    dotted,
    only_resource,
    param_default,
    site_app_settings,
    template,
)

from rotation.settings import SETTINGS, WEBHOOK_FORMATS


def _topic_template() -> dict[str, Any]:
    return template("modules/hub/notify-topic.bicep")


def _topic() -> dict[str, Any]:
    return body(only_resource(_topic_template(), "Microsoft.EventGrid/topics"))


def test_the_topic_takes_cloud_events_with_entra_tokens_only() -> None:
    props = _topic()["properties"]
    assert props["inputSchema"] == "CloudEventSchemaV1_0"
    assert props["disableLocalAuth"] is True  # no access keys, no SAS tokens
    assert props["minimumTlsVersionAllowed"] == "1.2"
    # For identity-based delivery to its subscribers' destinations.
    assert _topic()["identity"] == {"type": "SystemAssigned"}


def test_the_topic_is_reached_like_the_rest_of_the_hub() -> None:
    # The hub's storage is public with Entra-only access (no VNet in these templates): same here.
    storage = body(only_resource(template("modules/hub/storage.bicep"), "Microsoft.Storage/storageAccounts"))
    assert _topic()["properties"]["publicNetworkAccess"] == storage["properties"]["publicNetworkAccess"]


def test_the_hub_identity_is_the_topic_s_data_sender() -> None:
    tpl = _topic_template()
    sender = body(tpl["resources"]["sender"])
    assert sender["scope"] == "topic"
    props = sender["properties"]
    role = props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    assert tpl["variables"][role]["value"] == ALL_ROLE_IDS["EventGrid Data Sender"]
    assert props["principalId"] == "hubPrincipalId"
    declaration = template("modules/hub/hub.bicep")["modules"]["notifyTopic"]
    assert declaration["detail"]["path"] == "notify-topic.bicep"
    hub_call = body(declaration)
    assert dotted(hub_call["params"]["hubPrincipalId"]) == "identity.outputs.hubPrincipalId"


def test_the_app_publishes_to_that_topic() -> None:
    always, _ = site_app_settings(template("modules/hub/function-app.bicep"))
    settings = {s["name"]: s["value"] for s in always}
    assert settings["ROTATION_NOTIFY_TOPIC_ENDPOINT"] == "notifyTopicEndpoint"
    passed = body(template("modules/hub/hub.bicep")["modules"]["functionApp"])["params"][
        "notifyTopicEndpoint"
    ]
    assert dotted(passed) == "notifyTopic.outputs.endpoint"
    assert dotted(_topic_template()["outputs"]["endpoint"]["value"]) == "topic.properties.endpoint"
    # azd shows where to subscribe.
    outputs = template("main.bicep")["outputs"]
    assert dotted(outputs["ROTATION_NOTIFY_TOPIC_ENDPOINT"]["value"]) == "hub.outputs.notifyTopicEndpoint"


def test_the_webhook_parameters_follow_the_app_s_settings() -> None:
    main = template("main.bicep")
    assert decorator(main, "notifyWebhookFormat", "allowed") == list(WEBHOOK_FORMATS)
    defaults = {s.name: s.default for s in SETTINGS}
    assert param_default(main, "notifyWebhookFormat") == defaults["ROTATION_NOTIFY_WEBHOOK_FORMAT"]
    assert param_default(main, "notifyWebhookSecret") == defaults["ROTATION_NOTIFY_WEBHOOK_SECRET"] == ""
    assert param_default(main, "publicBaseUrl") == defaults["ROTATION_PUBLIC_BASE_URL"] == ""
