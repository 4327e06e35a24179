"""notify: deliver one notification (Event Grid topic, chat webhook); never fails a rotation."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from activities._adapter import run_step
from rotation.notifications import Notification
from rotation.notify_delivery import deliver
from rotation.settings import current_settings

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload")
def notify(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "notify", Notification, payload, lambda notification: deliver(notification, current_settings())
    )
