"""Names and helpers shared by the local cloud tests: the test topology's ids and SDK clients."""

from __future__ import annotations

from pathlib import Path

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
