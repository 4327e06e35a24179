"""on_secret_event: the Event Grid trigger spoke vaults send SecretNearExpiry/SecretExpired to.

An event the hub does not act on, or does not trust, is logged and acknowledged (sending it
again would not change the answer); only a transient failure (Key Vault or the task hub not
answering now) raises, so Event Grid delivers the event again later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from rotation.errors import InvalidRequest, RotationError, TransientError
from rotation.events import Ignored, parse_event
from rotation.settings import current_settings
from rotation.vault_location import confirm_vault
from starters.launcher import launch

logger = logging.getLogger(__name__)

bp = df.Blueprint()


def as_dict(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The event as the plain dict rotation.events parses (both schemas)."""
    if isinstance(event, func.CloudEvent):
        return {
            "id": event.id,
            "source": event.source,
            "subject": event.subject,
            "type": event.type,
            "data": event.get_json(),
        }
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "data": event.get_json(),
    }


@bp.function_name("on_secret_event")
@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_secret_event(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    settings = current_settings()
    payload = as_dict(event)
    event_id = str(payload.get("id") or "?")
    try:
        parsed = parse_event(payload, settings)
    except Ignored as exc:
        logger.info("event %s ignored: %s", event_id, exc)
        return
    except InvalidRequest as exc:
        logger.warning("event %s refused: %s", event_id, exc.detail)
        return
    try:
        # The topic's subscription is on the allowlist; is the vault really there (ARM)?
        await asyncio.to_thread(confirm_vault, parsed.vault, settings)
    except TransientError:
        raise
    except RotationError as exc:
        logger.warning("event %s refused: %s", event_id, exc.detail)
        return
    try:
        await launch(
            client,
            parsed.secret,
            version=parsed.version,
            trigger=parsed.event_type,
            requested_by=f"event {event_id}",
            settings=settings,
        )
    except TransientError:
        raise
    except RotationError as exc:
        # A missing secret or a refused identity: delivering the event again would not help.
        logger.warning("event %s not started: %s", event_id, exc)
