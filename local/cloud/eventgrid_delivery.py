"""Webhook delivery as Event Grid does it: validation handshake, retries, dead letters, duplicates.

Each event goes to each matching subscription as a one-element JSON array (Event Grid schema) or
one CloudEvent (see below), ``aeg-event-type: Notification``. Only 200-204 count as delivered; 400, 401, 403 and 413 are not retried; any
other outcome is retried on Azure's schedule (10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h,
3 h, 6 h, then every 12 h) multiplied by ``retry_schedule_scale``, until ``max_delivery_attempts``
or the event's time to live runs out; then the event is appended to ``<data>/deadletter.jsonl``
with ``deadLetterReason``, ``deliveryAttempts``, ``lastDeliveryOutcome``, ``publishTime`` and
``lastDeliveryAttemptTime``.

One difference from Azure, on purpose: Azure runs the validation handshake when the subscription
is created and refuses to create it when the handshake fails. The webhooks of a topology are
usually started after the local cloud (they need its environment), so a topology subscription is
validated lazily, before its first delivery, and a failed handshake counts as a failed attempt.
Subscriptions added through the admin endpoint are validated at once, as in Azure.

A subscription with ``event_delivery_schema: CloudEventSchemaV1_0`` gets each event as one
CloudEvents 1.0 object in structured mode (``Content-Type: application/cloudevents+json;
charset=utf-8``; the ``aeg-*`` headers as for the Event Grid schema), and its endpoint is validated
by the CloudEvents abuse-protection handshake instead: ``OPTIONS`` with ``WebHook-Request-Origin:
eventgrid.azure.net``, answered by a 200 whose ``WebHook-Allowed-Origin`` is that origin or ``*``.
Retries and dead letters are the same for both schemas.

Every delivery not yet done is kept in ``<data>/eventgrid.sqlite3`` (``eventgrid_store``) with
its attempts and the time of its next attempt, so a restarted cloud carries on where it stopped;
so are the subscriptions created or deleted through the admin endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp

from local.cloud.eventgrid_events import as_cloud_event, event_time
from local.cloud.eventgrid_store import EventGridStore, Pending
from local.cloud.topology import EventGridSettings, EventSubscription

logger = logging.getLogger(__name__)

RETRY_SCHEDULE_SECONDS = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600)
AFTER_SCHEDULE_SECONDS = 43200
SUCCESS = frozenset({200, 201, 202, 203, 204})
NOT_RETRIED = frozenset({400, 401, 403, 413})
# What Azure's public cloud puts in WebHook-Request-Origin; a webhook may also allow "*".
REQUEST_ORIGIN = "eventgrid.azure.net"
EVENT_GRID_CONTENT_TYPE = "application/json; charset=utf-8"
CLOUD_EVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def retry_delay(attempts_made: int, scale: float) -> float:
    """Wait before attempt number ``attempts_made + 1``."""
    index = attempts_made - 1
    base = RETRY_SCHEDULE_SECONDS[index] if index < len(RETRY_SCHEDULE_SECONDS) else AFTER_SCHEDULE_SECONDS
    return base * scale


def outcome_name(status: int | None, error: str | None) -> str:
    if status is None:
        return error or "GenericError"
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"Status{status}"


@dataclass
class SubscriptionState:
    spec: EventSubscription
    validated: bool = False
    validation_code: str = ""
    manually_validated: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class AttemptRecord:
    subscription: str
    event_id: str
    event_type: str
    subject: str
    attempt: int
    status: int | None
    outcome: str
    at: str
    duplicate: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ValidationFailed(Exception):
    """The webhook did not complete the validation handshake (SubscriptionValidation or OPTIONS)."""


class EventDelivery:
    def __init__(self, data_dir: Path, settings: EventGridSettings, validation_base_url: str) -> None:
        self.settings = settings
        self.dead_letter_path = data_dir / "deadletter.jsonl"
        self.store = EventGridStore(data_dir / "eventgrid.sqlite3")
        self._validation_base_url = validation_base_url
        self._subscriptions: dict[str, SubscriptionState] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.attempts: deque[AttemptRecord] = deque(maxlen=2000)
        # Handshakes in flight, so the validationUrl route can find them by subscription name.
        self._pending_manual: dict[str, SubscriptionState] = {}

    async def start(self) -> None:
        """Open the HTTP session, apply the admin endpoint's subscription changes of earlier runs
        on top of the topology's subscriptions (call it after adding those), and resume the
        deliveries a previous run left pending."""
        # trust_env stays off: webhooks are local and must never go through a proxy.
        self._session = aiohttp.ClientSession()
        for name, spec in self.store.subscription_changes():
            if spec is None:
                self._subscriptions.pop(name, None)
            else:
                # It passed its handshake when it was created; Azure does not validate it again.
                self._subscriptions[name] = SubscriptionState(spec, validated=True)
        resumed = self.store.pending()
        for pending in resumed:
            self._spawn(self._deliver(pending))
        if resumed:
            logger.info("resuming %d pending event delivery(ies)", len(resumed))

    async def stop(self) -> None:
        # Deliveries in flight are cancelled; their rows stay, so the next start delivers them.
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
        self.store.close()

    def update_settings(self, **changes: Any) -> EventGridSettings:
        self.settings = replace(self.settings, **changes)
        return self.settings

    # -- subscriptions ------------------------------------------------------------------------

    def subscriptions(self) -> list[dict[str, Any]]:
        pending = self.store.pending()
        return [
            {
                **s.spec.__dict__,
                "included_event_types": list(s.spec.included_event_types),
                "validated": s.validated,
                "pending": sum(1 for p in pending if p.subscription == s.spec.name),
            }
            for s in self._subscriptions.values()
        ]

    def add_lazy(self, spec: EventSubscription) -> None:
        self._subscriptions[spec.name] = SubscriptionState(spec)

    async def add_validated(self, spec: EventSubscription) -> None:
        """Add or replace a subscription after a successful handshake.

        Raises:
            ValidationFailed: the endpoint did not answer the handshake; nothing was added.
        """
        state = SubscriptionState(spec)
        await self._handshake(state)
        self._subscriptions[spec.name] = state
        self.store.save_subscription(spec)

    def remove(self, name: str) -> bool:
        """Delete a subscription; its pending deliveries stop (the next attempt finds it gone)."""
        removed = self._subscriptions.pop(name, None) is not None
        if removed:
            self.store.delete_subscription(name)
            self.store.drop_pending(name)
        return removed

    def validate_by_url(self, name: str, code: str) -> bool:
        """The validationUrl flow: a GET with the right code validates the subscription."""
        state = self._subscriptions.get(name) or self._pending_manual.get(name)
        if (
            state is None
            or not state.validation_code
            or not secrets.compare_digest(code, state.validation_code)
        ):
            return False
        state.manually_validated.set()
        return True

    async def _handshake(self, state: SubscriptionState) -> None:
        async with state.lock:
            if state.validated:
                return
            if state.spec.cloud_events:
                await self._options_handshake(state.spec)
                state.validated = True
                return
            state.validation_code = str(uuid.uuid4()).upper()
            state.manually_validated.clear()
            self._pending_manual[state.spec.name] = state
            try:
                validation_url = (
                    f"{self._validation_base_url}/admin/eventgrid/validate"
                    f"?subscription={state.spec.name}&code={state.validation_code}"
                )
                event = {
                    "id": str(uuid.uuid4()),
                    "topic": state.spec.vault,
                    "subject": "",
                    "data": {"validationCode": state.validation_code, "validationUrl": validation_url},
                    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                    "eventTime": event_time(),
                    "metadataVersion": "1",
                    "dataVersion": "2",
                }
                status, body = await self._send(
                    state.spec, json.dumps([event]), EVENT_GRID_CONTENT_TYPE, "SubscriptionValidation", 0
                )
                echoed = _validation_response(body)
                if status == 200 and echoed is not None and echoed.upper() == state.validation_code:
                    state.validated = True
                    return
                # A 200 without the code leaves the validationUrl route open for a short while.
                if status == 200:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(state.manually_validated.wait(), timeout=5)
                    if state.manually_validated.is_set():
                        state.validated = True
                        return
                raise ValidationFailed(
                    f"Webhook validation handshake failed for {state.spec.endpoint}. "
                    f"Http POST request failed with response code {status if status is not None else body}."
                )
            finally:
                self._pending_manual.pop(state.spec.name, None)

    async def _options_handshake(self, spec: EventSubscription) -> None:
        """CloudEvents 1.0 abuse protection (HTTP Webhook spec, section 4), as Event Grid runs it.

        Raises:
            ValidationFailed: no 200, or a WebHook-Allowed-Origin that is neither the origin nor ``*``.
        """
        assert self._session is not None
        status: int | str
        allowed = ""
        try:
            async with self._session.options(
                spec.endpoint,
                headers={"WebHook-Request-Origin": REQUEST_ORIGIN},
                timeout=aiohttp.ClientTimeout(total=self.settings.delivery_timeout_seconds),
            ) as response:
                status = response.status
                allowed = response.headers.get("WebHook-Allowed-Origin", "")
        except TimeoutError:
            status = "TimedOut"
        except aiohttp.ClientError as exc:
            logger.info("validation of %s failed: %s", spec.name, type(exc).__name__)
            status = "CannotConnect"
        origins = {o.strip().lower() for o in allowed.split(",")}
        if status == 200 and (REQUEST_ORIGIN in origins or "*" in origins):
            return
        detail = f"response code {status}" if status != 200 else f"WebHook-Allowed-Origin {allowed!r}"
        raise ValidationFailed(
            f"Webhook validation handshake failed for {spec.endpoint}. Http OPTIONS request failed with {detail}."
        )

    # -- delivery -----------------------------------------------------------------------------

    def publish(self, topic: str, vault: str, event: dict[str, Any]) -> int:
        """Queue ``event`` for every matching subscription; returns how many matched.

        Each queued delivery is written to the pending store before this returns, so an event
        the cloud accepted survives a restart.
        """
        matched = 0
        published_at, publish_time = time.time(), event_time()
        for state in list(self._subscriptions.values()):
            if state.spec.vault != vault or not state.spec.accepts(event["eventType"], event["subject"]):
                continue
            matched += 1
            pending = self.store.add(
                state.spec.name, event, published_at=published_at, publish_time=publish_time
            )
            self._spawn(self._deliver(pending))
        logger.info(
            "event %s %s subject=%s matched %d subscription(s)",
            event["id"],
            event["eventType"],
            event["subject"],
            matched,
        )
        return matched

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, pending: Pending) -> None:
        event = pending.event
        while True:
            await asyncio.sleep(max(0.0, pending.next_attempt_at - time.time()))
            # Looked up at each attempt: a deleted subscription stops, a replaced one takes over.
            state = self._subscriptions.get(pending.subscription)
            if state is None:
                logger.warning(
                    "event %s dropped: subscription %s no longer exists", event["id"], pending.subscription
                )
                self.store.done(pending)
                return
            spec = state.spec
            status: int | None
            try:
                if not state.validated:
                    await self._handshake(state)
                status, body = await self._post(spec, event, pending.attempts)
                outcome = outcome_name(status, body if status is None else None)
            except ValidationFailed:
                status, outcome = None, "ValidationFailed"
            pending.attempts += 1
            attempts = pending.attempts
            self.attempts.append(
                AttemptRecord(
                    spec.name,
                    event["id"],
                    event["eventType"],
                    event["subject"],
                    attempts,
                    status,
                    outcome,
                    event_time(),
                    pending.duplicate,
                )
            )
            if status in SUCCESS:
                logger.info("delivered %s to %s (attempt %d)", event["id"], spec.name, attempts)
                self.store.done(pending)
                if self.settings.duplicates and not pending.duplicate:
                    # Event Grid is at least once; this switch makes "at least" visible on purpose.
                    copy = self.store.add(
                        spec.name,
                        event,
                        published_at=pending.published_at,
                        publish_time=pending.publish_time,
                        duplicate=True,
                    )
                    self._spawn(self._deliver(copy))
                return
            ttl_left = spec.event_time_to_live_minutes * 60 * self.settings.retry_schedule_scale - (
                time.time() - pending.published_at
            )
            delay = retry_delay(attempts, self.settings.retry_schedule_scale)
            reason: str | None = None
            if status in NOT_RETRIED:
                reason = "NonRetryableStatusCode"
            elif attempts >= spec.max_delivery_attempts:
                reason = "MaxDeliveryAttemptsExceeded"
            elif delay > ttl_left:
                reason = "TimeToLiveExceeded"
            if reason is not None:
                self._dead_letter(spec, event, reason, attempts, outcome, status, pending.publish_time)
                self.store.done(pending)
                return
            logger.info(
                "delivery of %s to %s failed (%s); retry in %.3fs", event["id"], spec.name, outcome, delay
            )
            pending.next_attempt_at = time.time() + delay
            self.store.retry_later(pending)

    async def _post(
        self, spec: EventSubscription, event: dict[str, Any], delivery_count: int
    ) -> tuple[int | None, str]:
        """One notification in the subscription's schema: a one-event array, or one CloudEvent."""
        if spec.cloud_events:
            return await self._send(
                spec,
                json.dumps(as_cloud_event(event)),
                CLOUD_EVENTS_CONTENT_TYPE,
                "Notification",
                delivery_count,
            )
        return await self._send(
            spec, json.dumps([event]), EVENT_GRID_CONTENT_TYPE, "Notification", delivery_count
        )

    async def _send(
        self, spec: EventSubscription, body: str, content_type: str, kind: str, delivery_count: int
    ) -> tuple[int | None, str]:
        assert self._session is not None
        # The headers are the same for both schemas but for the content type (Azure's docs).
        headers = {
            "aeg-event-type": kind,
            "aeg-subscription-name": spec.name.upper(),
            "aeg-delivery-count": str(delivery_count),
            "aeg-data-version": "1" if kind == "Notification" else "2",
            "aeg-metadata-version": "1",
            "Content-Type": content_type,
        }
        try:
            async with self._session.post(
                spec.endpoint,
                data=body.encode("utf-8"),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.settings.delivery_timeout_seconds),
            ) as response:
                return response.status, await response.text()
        except TimeoutError:
            return None, "TimedOut"
        except aiohttp.ClientError as exc:
            logger.info("delivery to %s failed: %s", spec.name, type(exc).__name__)
            return None, "CannotConnect"

    def _dead_letter(
        self,
        spec: EventSubscription,
        event: dict[str, Any],
        reason: str,
        attempts: int,
        outcome: str,
        status: int | None,
        publish_time: str,
    ) -> None:
        logger.warning(
            "event %s for %s dead-lettered: %s after %d attempt(s)", event["id"], spec.name, reason, attempts
        )
        if not spec.dead_letter:
            return
        # The event as the subscription delivers it (a local choice for CloudEvents subscriptions).
        record = {
            **(as_cloud_event(event) if spec.cloud_events else event),
            "deadLetterReason": reason,
            "deliveryAttempts": attempts,
            "lastDeliveryOutcome": outcome,
            "lastHttpStatusCode": status,
            "publishTime": publish_time,
            "lastDeliveryAttemptTime": event_time(),
            "subscription": spec.name,
        }
        # One line per event, appended and flushed at once so a reader never sees half a record.
        with self.dead_letter_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    async def idle(self, timeout: float) -> bool:
        """Wait until no delivery is in flight (for tests and a clean stop); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._tasks:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True


def _validation_response(body: str) -> str | None:
    try:
        doc = json.loads(body)
    except (ValueError, TypeError):
        return None
    value = doc.get("validationResponse") if isinstance(doc, dict) else None
    return str(value) if value is not None else None
