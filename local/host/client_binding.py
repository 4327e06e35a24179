"""The durable client binding JSON the host hands to a ``durable_client_input`` parameter.

Same fields as the extension's ``BindingHelper`` (OrchestrationClientInputData): the Python SDK
uses ``taskHubName``, ``creationUrls``, ``managementUrls`` (with the ``INSTANCEID`` placeholder
that ``create_check_status_response`` swaps) and ``rpcBaseUrl``, where it sends every client call.
The real host serves the RPC routes on a separate loopback port (17071); this host serves them on
its own port under ``/durabletask/``, which keeps one port per host for parallel tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

INSTANCE_ID_PLACEHOLDER = "INSTANCEID"
WEBHOOK_PATH = "/runtime/webhooks/durabletask"
RPC_PATH = "/durabletask/"
# AzureStorageDurabilityProvider's default connection name.
DEFAULT_CONNECTION_NAME = "Storage"


@dataclass(frozen=True)
class ClientUrls:
    """How clients reach this host: its origin, the task hub and the system key (None: keys not enforced)."""

    origin: str
    hub_name: str
    system_key: str | None

    @property
    def webhook_base(self) -> str:
        return self.origin + WEBHOOK_PATH

    @property
    def rpc_base(self) -> str:
        return self.origin + RPC_PATH

    def universal_query(self) -> str:
        return f"code={self.system_key}" if self.system_key else ""

    def management_urls(
        self, instance_id: str, *, origin: str | None = None, hub_name: str | None = None
    ) -> dict[str, str]:
        """HttpApiHandler.GetClientResponseLinks (the status/raise/terminate/... URLs of one instance)."""
        base = (origin or self.origin) + WEBHOOK_PATH
        prefix = f"{base}/instances/{quote(instance_id, safe='') if instance_id != INSTANCE_ID_PLACEHOLDER else instance_id}"
        suffix = f"taskHub={quote(hub_name or self.hub_name)}&connection={DEFAULT_CONNECTION_NAME}"
        if self.system_key:
            suffix += f"&code={self.system_key}"
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{suffix}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{suffix}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{suffix}",
            "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{suffix}",
            "purgeHistoryDeleteUri": f"{prefix}?{suffix}",
            "restartPostUri": f"{prefix}/restart?{suffix}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{suffix}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{suffix}",
        }

    def check_status_body(self, instance_id: str, *, origin: str | None = None) -> dict[str, str]:
        """The 202 body of CreateCheckStatusResponse (the host's own leaves out rewindPostUri)."""
        urls = self.management_urls(instance_id, origin=origin)
        urls.pop("rewindPostUri")
        return urls

    def binding_json(self, task_hub: str | None = None) -> str:
        hub = task_hub or self.hub_name
        query = self.universal_query()
        instance_prefix = f"{self.webhook_base}/orchestrators/{{functionName}}[/{{instanceId}}]"
        return json.dumps(
            {
                "taskHubName": hub,
                "creationUrls": {
                    "createNewInstancePostUri": f"{instance_prefix}?{query}",
                    "createAndWaitOnNewInstancePostUri": (
                        f"{instance_prefix}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{query}"
                    ),
                },
                "managementUrls": self.management_urls(INSTANCE_ID_PLACEHOLDER, hub_name=hub),
                "baseUrl": self.webhook_base,
                "requiredQueryStringParameters": query,
                "rpcBaseUrl": self.rpc_base,
            }
        )
