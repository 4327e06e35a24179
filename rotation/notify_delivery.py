"""Deliver a notification: a CloudEvent to the Event Grid custom topic, a message to the webhook.

Both are optional (``ROTATION_NOTIFY_TOPIC_ENDPOINT``, ``ROTATION_NOTIFY_WEBHOOK_SECRET``) and
neither may fail a rotation: every failure is logged as a warning by status or error class and
reported in the result, never raised. The webhook URL is read from Key Vault here, inside the
activity, and goes nowhere but into the request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from azure.core.exceptions import AzureError, HttpResponseError

from rotation.clients import EVENTGRID_SEND_OPTIONS, eventgrid_publisher, vault_named
from rotation.errors import RotationError
from rotation.model import Record
from rotation.notifications import Notification, cloud_event, webhook_payload
from rotation.settings import Settings
from rotation.webhooks import post_json

logger = logging.getLogger(__name__)

OFF = "off"
SENT = "sent"


@dataclass(frozen=True)
class Delivery(Record):
    """What became of one notification: ``off``, ``sent`` or ``failed: <why>`` per channel."""

    topic: str
    webhook: str


def deliver(notification: Notification, settings: Settings) -> Delivery:
    """Publish and post ``notification`` where the settings say; never raises."""
    return Delivery(topic=_publish(notification, settings), webhook=_post(notification, settings))


def _about(notification: Notification) -> str:
    return f"notification {notification.kind} of {notification.vault}/{notification.secret}" + (
        f" (rotation {notification.rotation_id})" if notification.rotation_id else ""
    )


def _publish(notification: Notification, settings: Settings) -> str:
    if not settings.notify_topic_endpoint:
        return OFF
    event = cloud_event(notification, base_url=settings.public_base_url)
    try:
        eventgrid_publisher(settings).send([event], **EVENTGRID_SEND_OPTIONS)
    except AzureError as exc:
        # The class and the status are what an operator acts on (a 401 is a missing role).
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        why = f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")
        logger.warning(
            "%s not published to the Event Grid topic %s: %s",
            _about(notification),
            settings.notify_topic_endpoint,
            why,
        )
        return f"failed: {why}"
    logger.info("%s published to the Event Grid topic as %s", _about(notification), notification.event_type)
    return SENT


def _post(notification: Notification, settings: Settings) -> str:
    if settings.notify_webhook_secret is None:
        return OFF
    vault_name, secret_name = settings.notify_webhook_secret
    try:
        _, url = vault_named(vault_name, settings).get(secret_name)
    except RotationError as exc:
        # Our errors name the vault and the secret, never a value.
        logger.warning(
            "%s not posted: the webhook URL could not be read: %s", _about(notification), exc.detail
        )
        return f"failed: {type(exc).__name__}"
    payload = webhook_payload(
        notification, webhook_format=settings.notify_webhook_format, base_url=settings.public_base_url
    )
    result = post_json(url, payload)
    if not result.delivered:
        logger.warning(
            "%s not posted to the webhook in %s/%s (%s): %s",
            _about(notification),
            vault_name,
            secret_name,
            settings.notify_webhook_format,
            result.outcome,
        )
        return f"failed: {result.outcome}"
    logger.info(
        "%s posted to the webhook (%s, %s)",
        _about(notification),
        settings.notify_webhook_format,
        result.outcome,
    )
    return SENT
