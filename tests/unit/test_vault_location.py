"""confirm_vault's own decisions, with ARM's answers given as the SDK raises and returns them (the
e2e tests run it against the local cloud's ARM: tests/e2e/test_vault_allowlist.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.mgmt.keyvault.models import Vault, VaultProperties

from rotation.errors import AuthenticationFailed, NotAllowed, TransientError
from rotation.model import VaultId
from rotation.settings import Settings
from rotation.vault_location import confirm_vault, forget_confirmed

SUB = "63e78b6b-7e96-4238-947a-2424b17b10be"
OTHER = "16c76905-99fe-47a7-8c29-cacffae5f3e0"
SETTINGS = Settings.from_environ({"ROTATION_ALLOWED_SUBSCRIPTIONS": SUB})
VAULT = VaultId(SUB, "rg-spoke1", "spoke1-kv")


class _Response:
    """Just enough of an HTTP response for azure-core's errors to read a status and an ARM error."""

    def __init__(self, status: int, code: str) -> None:
        self.status_code = status
        self.reason = code
        self.headers: dict[str, str] = {}
        self.request = HttpRequest("GET", "https://management.azure.com/")
        self._body = f'{{"error": {{"code": "{code}", "message": "m"}}}}'

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def body(self) -> bytes:
        return self._body.encode()


class ArmStandIn:
    """Answers ``vaults.get`` as ARM would for one vault (or with an error), and counts the calls."""

    def __init__(self, answer: Vault | Exception) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []
        self.vaults = self

    def get(self, resource_group: str, name: str, **_: Any) -> Vault:
        self.calls.append((resource_group, name))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def vault_answer(arm_id: str = VAULT.arm_id, uri: str = "https://spoke1-kv.vault.azure.net/") -> Vault:
    answer = Vault(properties=VaultProperties(tenant_id=SUB, sku={"family": "A", "name": "standard"}))
    answer.id = arm_id  # read-only in the model: ARM sets it
    answer.properties.vault_uri = uri
    return answer


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    forget_confirmed()
    yield
    forget_confirmed()


def test_a_vault_found_is_asked_for_once_per_process() -> None:
    arm = ArmStandIn(vault_answer())
    for _ in range(50):  # fifty secrets of one vault
        confirm_vault(VAULT, SETTINGS, client_for=lambda _sub: arm)
    assert arm.calls == [("rg-spoke1", "spoke1-kv")]


def test_an_id_off_the_allowlist_is_refused_without_asking_arm() -> None:
    arm = ArmStandIn(vault_answer())
    with pytest.raises(NotAllowed, match="is not on the allowlist"):
        confirm_vault(VaultId(OTHER, "rg", "spoke2-kv"), SETTINGS, client_for=lambda _sub: arm)
    assert arm.calls == []


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (ResourceNotFoundError(response=_Response(404, "ResourceNotFound")), "does not exist as named"),
        (
            HttpResponseError(response=_Response(403, "AuthorizationFailed")),
            "ARM does not show it to the hub",
        ),
    ],
)
def test_a_vault_arm_does_not_find_there_is_refused_and_not_remembered(error: Exception, says: str) -> None:
    arm = ArmStandIn(error)
    for _ in range(2):
        with pytest.raises(NotAllowed, match=says):
            confirm_vault(VAULT, SETTINGS, client_for=lambda _sub: arm)
    assert len(arm.calls) == 2  # a refusal is asked again: the vault may be onboarded meanwhile


def test_arm_reporting_another_id_or_url_is_refused() -> None:
    for answer in (
        vault_answer(arm_id=VAULT.arm_id.replace("rg-spoke1", "rg-elsewhere")),
        vault_answer(uri="https://spoke1-kv.vault.example.net/"),
    ):
        with pytest.raises(NotAllowed, match="ARM reports it as"):
            confirm_vault(VAULT, SETTINGS, client_for=lambda _sub, a=answer: ArmStandIn(a))


def test_the_hub_s_own_token_refused_or_arm_unavailable_is_not_a_refusal_of_the_vault() -> None:
    refused = ArmStandIn(ClientAuthenticationError(response=_Response(401, "InvalidAuthenticationToken")))
    with pytest.raises(AuthenticationFailed):
        confirm_vault(VAULT, SETTINGS, client_for=lambda _sub: refused)
    busy = ArmStandIn(HttpResponseError(response=_Response(503, "ServiceUnavailable")))
    with pytest.raises(TransientError):
        confirm_vault(VAULT, SETTINGS, client_for=lambda _sub: busy)
