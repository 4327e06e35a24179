"""The whole local stack, as ``make demo``, ``make up``, the end-to-end tests and the benchmarks
start it: a throwaway PostgreSQL server, the local cloud (default topology), and optionally the
local Functions host running this app with the cloud's environment.

This process also talks to the local cloud, as an operator would (seeding secrets as the
``seeder-identity``, starting the consumer site): ``start()`` puts the cloud's client
environment (proxy, CA bundle, managed identity endpoint) into ``os.environ``, which the
requests-based sync SDK clients read when they are built or send.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.web import WebSiteManagementClient

from local.cloud.process import LocalCloud
from local.host.process import HostProcess
from local.ports import free_port
from local.databases.postgresql import PostgresCluster
from rotation import clients, metadata
from rotation.model import SecretRef
from rotation.settings import SETTINGS, Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SEEDER = "seeder-identity"
CONSUMER_SITE = "consumer-app"
# What the default topology's consumer app reads and logs in as (see local/cloud/topologies).
CONSUMER_SECRET = "app-db-password"  # noqa: S105 (a secret's name)
CONSUMER_LOGIN = "app_user"
CONSUMER_DATABASE = "appdb"
TARGET_ADMIN_LOGIN = "rotation_admin"


@dataclass(frozen=True)
class Seeded:
    """A secret the stack wrote: where it is and which version (the value stays in the vault)."""

    vault: str
    name: str
    version: str
    login: str


class LocalStack:
    """PostgreSQL + local cloud (+ the local host with the app). Use as a context manager."""

    def __init__(
        self,
        data_dir: Path,
        *,
        with_host: bool = True,
        time_scale: float | None = None,
        app_settings: Mapping[str, str] | None = None,
        cloud_env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.with_host = with_host
        self.time_scale = time_scale
        self.extra_app_settings = dict(app_settings or {})
        self.extra_cloud_env = dict(cloud_env or {})
        self.hub_port = free_port()
        self.pg = PostgresCluster()
        self.cloud: LocalCloud | None = None
        self.host: HostProcess | None = None
        self._credentials: dict[str, ManagedIdentityCredential] = {}

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalStack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.pg.start()
            self.cloud = LocalCloud(
                data_dir=self.data_dir / "cloud",
                env={"HUB_URL": self.hub_url, "PG_PORT": str(self.pg.port), **self.extra_cloud_env},
            ).start()
            os.environ.update(self.cloud.client_env)
            # Clients built before belong to another cloud (other ports, other CA).
            clients.clear_cache()
            if self.with_host:
                self.host = HostProcess(
                    REPO_ROOT,
                    self.data_dir / "host",
                    port=self.hub_port,
                    env={**self.cloud.client_env, **self.app_settings()},
                    time_scale=self.time_scale,
                ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.host is not None:
            self.host.stop()
            self.host = None
        if self.cloud is not None:
            self.cloud.stop()
            self.cloud = None
        self.pg.stop()

    # -- what the app is told --------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        assert self.cloud is not None, "the stack is not started"
        return self.cloud.info

    def vault_arm_id(self, vault: str) -> str:
        return str(self.info["vaults"][vault]["arm_id"])

    def subscription_of(self, vault: str) -> str:
        return self.vault_arm_id(vault).split("/")[2]

    def app_settings(self) -> dict[str, str]:
        """The hub's app settings for this stack: both spoke subscriptions allowed, both vaults
        swept, and retries quick enough for tests (overridable through ``app_settings``)."""
        vaults = sorted(self.info["vaults"])
        # Every setting is present, as in Azure (the host resolves %NAME% in trigger arguments
        # from app settings, so a missing one stops it).
        settings = {spec.name: spec.default for spec in SETTINGS}
        settings |= {
            "AZURE_CLIENT_ID": self.info["client_env"]["AZURE_CLIENT_ID"],
            "ROTATION_ALLOWED_SUBSCRIPTIONS": ",".join(sorted({self.subscription_of(v) for v in vaults})),
            "ROTATION_SWEEP_VAULTS": ",".join(self.vault_arm_id(v) for v in vaults),
            "ROTATION_RETRY_MAX_ATTEMPTS": "4",
            "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "1",
            "ROTATION_CONSUMER_READY_TIMEOUT_SECONDS": "60",
        }
        settings.update(self.extra_app_settings)
        return settings

    def rotation_id(self, seeded: Seeded) -> str:
        """The instance id the hub gives the rotation of ``seeded``'s version."""
        secret = SecretRef(self.subscription_of(seeded.vault), seeded.vault, seeded.name)
        return secret.rotation_id(seeded.version)

    def settings(self) -> Settings:
        return Settings.from_environ({**os.environ, **self.app_settings()})

    # -- acting as an operator -------------------------------------------------------------

    def credential(self, identity: str = SEEDER) -> ManagedIdentityCredential:
        if identity not in self._credentials:
            client_id = self.info["identities"][identity]["client_id"]
            self._credentials[identity] = ManagedIdentityCredential(client_id=client_id)
        return self._credentials[identity]

    def secret_client(self, vault: str, identity: str = SEEDER) -> SecretClient:
        return SecretClient(str(self.info["vaults"][vault]["url"]), self.credential(identity))

    def web_client(self, subscription_id: str, identity: str = SEEDER) -> WebSiteManagementClient:
        return WebSiteManagementClient(self.credential(identity), subscription_id)

    def create_login(self, login: str, *, database: str | None = None, createrole: bool = False) -> str:
        """A PostgreSQL login with a fresh random password; returns the password."""
        password = secrets.token_urlsafe(18)
        self.pg.create_role(login, password, createrole=createrole, database=database)
        return password

    def seed_login_secret(
        self,
        vault: str,
        name: str,
        *,
        login: str,
        database: str = "postgres",
        admin: str = "self",
        expires_in: timedelta = timedelta(days=10),
        tags: Mapping[str, str] | None = None,
        password: str | None = None,
    ) -> Seeded:
        """Create ``login`` in PostgreSQL (unless ``password`` is given: it exists already) and a
        secret in ``vault`` holding its password, tagged for rotation."""
        if password is None:
            password = self.create_login(login, database=None if database == "postgres" else database)
        all_tags = {
            metadata.TARGET: "postgresql-login",
            metadata.PROVIDER: self.pg.provider(database),
            metadata.CREDENTIAL: login,
            metadata.ADMIN: admin,
            **(tags or {}),
        }
        secret = self.secret_client(vault).set_secret(
            name, password, tags=all_tags, expires_on=datetime.now(UTC) + expires_in
        )
        return Seeded(vault=vault, name=name, version=str(secret.properties.version), login=login)

    def seed_admin_secret(self, vault: str, name: str, *, login: str = TARGET_ADMIN_LOGIN) -> Seeded:
        """An admin login (CREATEROLE) and its secret, for ``rotation-admin: secret:<name>``."""
        password = self.create_login(login, createrole=True)
        secret = self.secret_client(vault).set_secret(
            name,
            password,
            tags={metadata.CREDENTIAL: login},
            expires_on=datetime.now(UTC) + timedelta(days=365),
        )
        return Seeded(vault=vault, name=name, version=str(secret.properties.version), login=login)

    def current_value_logs_in(self, vault: str, name: str, *, database: str = "postgres") -> bool:
        """The invariant users care about: the latest version in the vault logs in to its target."""
        secret = self.secret_client(vault).get_secret(name)
        login = (secret.properties.tags or {})[metadata.CREDENTIAL]
        return self.pg.can_login(login, secret.value or "", database)
