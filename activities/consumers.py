"""restart_consumer: restart one consuming app (or make it fetch its Key Vault references again) and wait until it runs again."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from activities._adapter import run_step
from rotation.clients import web_client
from rotation.consumers import restart_and_wait
from rotation.model import ConsumerInput
from rotation.settings import current_settings

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload")
def restart_consumer(payload: dict[str, Any]) -> dict[str, Any]:
    return run_step(
        "restart_consumer",
        ConsumerInput,
        payload,
        lambda inp: restart_and_wait(
            inp.consumer_id,
            client_for=lambda subscription: web_client(subscription, current_settings()),
            ready_timeout_seconds=inp.ready_timeout_seconds,
            secret=inp.secret,
            rotation_id=inp.rotation_id,
        ),
    )
