"""The hub Function App: composition only. Each blueprint lives in its own module."""

import logging

import azure.durable_functions as df

from activities import consumers, credentials, notify, pending, plan, promote, target
from activities import incident as incident_activities
from orchestrators import incident, rotate_secret
from starters import approval_page, event_grid, http_api, incidents_api, preflight_api, sweep

# The SDK's HTTP logging policy writes every request's headers at INFO; names and versions in
# our own log lines are what operators need, so only its warnings pass.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

app = df.DFApp()

for blueprint in (
    event_grid.bp,
    http_api.bp,
    preflight_api.bp,
    approval_page.bp,
    sweep.bp,
    incidents_api.bp,
    rotate_secret.bp,
    incident.bp,
    incident_activities.bp,
    plan.bp,
    pending.bp,
    target.bp,
    promote.bp,
    consumers.bp,
    credentials.bp,
    notify.bp,
):
    app.register_functions(blueprint)
