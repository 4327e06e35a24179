"""Names and helpers shared by the local cloud tests: the test topology's ids and SDK clients (Graph too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure.core import PipelineClient
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    ContentDecodePolicy,
    CustomHookPolicy,
    HeadersPolicy,
    RetryPolicy,
)
from azure.core.rest import HttpRequest, HttpResponse
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

HERE = Path(__file__).parent
TOPOLOGY = HERE / "topology.json"

TENANT = "496b9d37-fe5e-4fdb-aaa2-ef12302bbe6b"
SUB1 = "a48290ad-7c23-476e-974c-5b4b8d44e241"
SUB2 = "fb470f20-02e7-42e3-88b7-dd5a306859ce"
VAULT1 = "https://test1-kv.vault.azure.net"
VAULT2 = "https://test2-kv.vault.azure.net"
CLIENT_IDS = {
    "officer": "314433a5-a56c-4a6d-bf36-12086d13a203",
    "reader": "35f20c5b-b58b-41ec-b6b4-8fcc60d0ee7c",
    "outsider": "4551fd3d-203d-4acd-a702-ca26d51943f2",
    "group-officer": "4db97995-caa3-4b6d-8669-417fabd83ae2",
    "site-operator": "114c5b5a-3190-4c98-86a4-781844571f7f",
    "site-identity": "f9af5c0b-4aff-4e45-b192-9f1ca710162e",
    "platform-admin": "3ce535d3-5d6c-4742-9fc8-fa9ea6a4ebbb",
}
PRINCIPAL_IDS = {
    "officer": "94d4292d-1254-4b41-86ef-c80b9f5a3abb",
    "reader": "639ccf41-7b21-4297-98ef-3e8613ea7b3c",
}


def credential(identity: str) -> ManagedIdentityCredential:
    return ManagedIdentityCredential(client_id=CLIENT_IDS[identity])


def secret_client(identity: str = "officer", vault_url: str = VAULT1, **kwargs: object) -> SecretClient:
    return SecretClient(vault_url, credential(identity), **kwargs)


# Entra applications of the test topology: (app id, object id, service principal id).
APPS = {
    "owned-app": (
        "eb6293ca-0928-46c2-9d29-389f2de91585",
        "0b33b906-e752-435a-b3b1-13e9a57dc34a",
        "2f6639e5-12c4-46fb-85d6-cf58bf9207b2",
    ),
    "unowned-app": (
        "d0f8ab6f-1c94-4347-acfa-d6e54559ca67",
        "0a2d5e00-4b86-43f5-bb4b-c47c1fd6efed",
        "b9f6b05d-82fe-45fb-8ec0-617da85f77d9",
    ),
    "personal-app": (
        "d42bf128-27fe-4d14-ac9d-2d689958e464",
        "7a64a13f-267b-4990-a76f-2ee1a4ecf498",
        "b21ef3ab-ad33-42f1-ab76-f749c8fb9ffe",
    ),
    "policy-app": (
        "477528b5-efb5-4a5d-8529-62664acdf963",
        "d14efa21-3903-4d54-a3a6-2110609704e1",
        "95f1d297-db21-41d5-820e-6e7f6beb8a84",
    ),
    "consumer-client": (
        "8881f90a-89bd-4ffd-80a7-c83c958b1104",
        "e83a9c07-cd9e-4a3a-b950-ad319662af67",
        "3d3aa7f1-486b-44c8-8fb2-8fbd93e3697d",
    ),
}
# The topology gives unowned-app's one credential as a literal, expired 20 days ago.
UNOWNED_APP_EXPIRED_SECRET = "Exp8Q~expired-literal-secret-from-topology"
POLICY_ID = "ffe7b196-2137-400d-9007-afe175bce61c"  # policy-app's 90-day password lifetime policy
CLIENT_IDS.update(
    {
        "graph-owner": "25e209e8-09ec-4981-aee5-0b09982f2ae3",
        "graph-admin": "fc10ac37-0e87-4207-980b-ed434ad2cdf0",
        "graph-reader": "4043791b-b270-4c41-8d2a-9303db19744a",
        "sp-consumer-identity": "e7a2ae5f-bac0-493c-9975-3f8c2c60a395",
    }
)
PRINCIPAL_IDS.update(
    {
        "graph-owner": "fcd44185-2a88-449d-bafc-78e8239fcd52",
        "graph-admin": "94f547e6-4234-493a-84ce-493f36fd3d7b",
    }
)
CLIENT_IDS.update(
    {
        "storage-operator": "e3a9adf8-2943-46c7-b028-fd1d7ccc241a",  # Key Operator + Reader on both rg-test1 accounts
        "key-operator": "e272d908-8a19-4cdd-827d-da251c95ac9b",  # Key Operator only, on teststore01
        "blob-consumer-identity": "9d1c7b3e-52a4-4f0e-8b6d-2c7e1a9f4b30",
    }
)
PRINCIPAL_IDS.update({"storage-operator": "ed3d10b7-b568-4b45-bd27-a04acddcf84a"})
GRAPH = "https://graph.microsoft.com/v1.0"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def graph_client(identity: str, **retry: Any) -> PipelineClient[HttpRequest, HttpResponse]:
    """What the hub uses for Graph: an azure-core pipeline with a bearer token policy and retries."""
    return PipelineClient(
        GRAPH,
        policies=[
            HeadersPolicy(),
            ContentDecodePolicy(),
            RetryPolicy(**retry),
            BearerTokenCredentialPolicy(credential(identity), GRAPH_SCOPE),
            CustomHookPolicy(),
        ],
    )


def graph_call(
    client: PipelineClient[HttpRequest, HttpResponse],
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    **kwargs: Any,
) -> HttpResponse:
    return client.send_request(HttpRequest(method, f"{GRAPH}{path}", json=body), **kwargs)
