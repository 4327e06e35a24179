"""The whole local stack, as ``make demo``, ``make up``, the end-to-end tests and the benchmarks
start it: throwaway database servers (PostgreSQL and MariaDB, the real targets of rotations), the
local cloud (default topology), and optionally the local Functions host running this app with
the cloud's environment.

This process also talks to the local cloud, as an operator would (seeding secrets as the
``seeder-identity``, starting the consumer site): ``start()`` puts the cloud's client
environment (proxy, CA bundle, managed identity endpoint) into ``os.environ``, which the
requests-based sync SDK clients read when they are built or send.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.models import StorageAccountRegenerateKeyParameters
from azure.mgmt.web import WebSiteManagementClient
from azure.storage.blob import BlobServiceClient

from local.cloud.process import DEFAULT_TOPOLOGY, LocalCloud
from local.cloud.tokens import TOKEN_KEY_FILE
from local.cloud.topology import with_vaults_like
from local.databases.base import LocalDatabase
from local.databases.mariadb import MariaDBServer
from local.databases.postgresql import PostgresCluster
from local.host.process import HostProcess
from local.ports import free_port
from local.principals import APPROVER, write_principals
from rotation import clients, metadata
from rotation.login_values import LoginShape
from rotation.model import SecretRef
from rotation.settings import SETTINGS, Settings
from rotation.targets import entra, mysql, postgresql, storage
from rotation.targets.base import SecretValue

REPO_ROOT = Path(__file__).resolve().parents[1]
SEEDER = "seeder-identity"
CONSUMER_SITE = "consumer-app"
# What the default topology's consumer app reads and logs in as (see local/cloud/topologies).
CONSUMER_SECRET = "app-db-password"  # noqa: S105 (a secret's name)
CONSUMER_LOGIN = "app_user"
CONSUMER_DATABASE = "appdb"
TARGET_ADMIN_LOGIN = "rotation_admin"
POSTGRESQL = postgresql.KIND
MYSQL = mysql.KIND
ENTRA = entra.KIND
# The default topology's application the hub owns (and sp-consumer-app signs in as).
APPLICATION = "orders-api-client"
APPLICATION_SECRET = "orders-api-client-secret"  # noqa: S105 (a secret's name)
SP_CONSUMER_SITE = "sp-consumer-app"
STORAGE = storage.KIND
STORAGE_ACCOUNT = "ordersstore01"
BLOB_CONSUMER_SITE = "blob-consumer-app"
BLOB_CONSUMER_SECRET = "ordersstore01-connection"  # noqa: S105 (a secret's name)
# The hub's own vault (not a spoke: not swept, holds the hub's own secrets such as a webhook URL)
# and the Event Grid custom topic the hub's notifications go to (the hub is EventGrid Data Sender).
HUB_VAULT = "hub-kv"
# The default topology's spoke vaults are spoke1-kv and spoke2-kv; a stack asked for more adds
# spoke3-kv, spoke4-kv, ... wired as spoke2-kv is (the hub's and the seeder's roles, an event
# subscription to the hub), e.g. for the incident benchmark's ten vaults.
DEFAULT_SPOKE_VAULTS = 2
SPOKE_VAULT_TEMPLATE = "spoke2-kv"


def spoke_vault_names(count: int) -> tuple[str, ...]:
    return tuple(f"spoke{i}-kv" for i in range(1, count + 1))


NOTIFY_TOPIC = "rotation-hub-events"
# The database servers of a stack, by the rotation-target kind of the logins they hold. MariaDB
# refuses logins with an expired password, as MySQL 8 (Azure's) does by default.
DATABASE_SERVERS: dict[str, Callable[[], LocalDatabase]] = {
    POSTGRESQL: PostgresCluster,
    MYSQL: functools.partial(MariaDBServer, disconnect_on_expired_password=True),
}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# Talks to 127.0.0.1 only (never through the cloud's proxy) and keeps redirects as answers.
_no_redirects = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


@dataclass(frozen=True)
class Seeded:
    """A secret the stack wrote: where it is and which version (the value stays in the vault)."""

    vault: str
    name: str
    version: str
    login: str
    kind: str = POSTGRESQL


class LocalStack:
    """Database servers + local cloud (+ the local host with the app). Use as a context manager.

    ``databases`` names the servers to start, by the kind of login they hold (default: all).
    The PostgreSQL server always runs: the default topology's consumer app uses it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        with_host: bool = True,
        time_scale: float | None = None,
        app_settings: Mapping[str, str] | None = None,
        cloud_env: Mapping[str, str] | None = None,
        databases: Sequence[str] = tuple(DATABASE_SERVERS),
        host_auth_keys: bool = False,
        easy_auth: bool = True,
        spoke_vaults: int = DEFAULT_SPOKE_VAULTS,
    ) -> None:
        if spoke_vaults < DEFAULT_SPOKE_VAULTS:
            raise ValueError(f"a stack has at least {DEFAULT_SPOKE_VAULTS} spoke vaults, not {spoke_vaults}")
        self.data_dir = Path(data_dir).resolve()
        self.with_host = with_host
        # The host checks function keys, as in Azure (``func start`` checks none).
        self.host_auth_keys = host_auth_keys
        self.time_scale = time_scale
        self.extra_app_settings = dict(app_settings or {})
        self.extra_cloud_env = dict(cloud_env or {})
        # App Service authentication in front of the hub, as deployed: local/principals.py signs in.
        self.easy_auth = easy_auth
        self.spoke_vaults = spoke_vault_names(spoke_vaults)
        self._sessions: dict[str, str] = {}
        self.hub_port = free_port()
        self.pg = PostgresCluster()
        self.databases: dict[str, LocalDatabase] = {POSTGRESQL: self.pg}
        for kind in databases:
            self.databases.setdefault(kind, DATABASE_SERVERS[kind]())
        self.cloud: LocalCloud | None = None
        self.host: HostProcess | None = None
        self._credentials: dict[str, ManagedIdentityCredential] = {}
        self._replaced_env: dict[str, str | None] = {}

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
            for database in self.databases.values():
                database.start()
            self.cloud = LocalCloud(
                data_dir=self.data_dir / "cloud",
                topology=self._topology(),
                # The sites inherit it: the consumer app verifies the server as the hub does.
                env={
                    "HUB_URL": self.hub_url,
                    "PG_PORT": str(self.pg.port),
                    **self.pg.app_settings(),
                    **self.extra_cloud_env,
                },
            ).start()
            self._replaced_env = {name: os.environ.get(name) for name in self.cloud.client_env}
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
                    auth_keys=self.host_auth_keys,
                    easy_auth=write_principals(self.data_dir / "principals.json") if self.easy_auth else None,
                    # The local cloud's tokens for the hub's audience sign service principals in too.
                    easy_auth_token_key=self.cloud.data_dir / TOKEN_KEY_FILE if self.easy_auth else None,
                ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _topology(self) -> Path:
        """The default topology, or (for more spoke vaults) a copy of it with them added."""
        if len(self.spoke_vaults) == DEFAULT_SPOKE_VAULTS:
            return DEFAULT_TOPOLOGY
        doc = json.loads(DEFAULT_TOPOLOGY.read_text(encoding="utf-8"))
        extra = self.spoke_vaults[DEFAULT_SPOKE_VAULTS:]
        path = self.data_dir / "topology.json"
        path.write_text(json.dumps(with_vaults_like(doc, extra, like=SPOKE_VAULT_TEMPLATE), indent=1))
        return path

    def stop(self) -> None:
        if self.host is not None:
            self.host.stop()
            self.host = None
        if self.cloud is not None:
            self.cloud.stop()
            self.cloud = None
        # The cloud's proxy and CA are gone: this process talks to the world as before again.
        for name, value in self._replaced_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._replaced_env = {}
        clients.clear_cache()
        for database in self.databases.values():
            database.stop()

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
        """The hub's app settings for this stack: the spoke subscriptions allowed, every spoke
        vault swept, notifications to the local topic, and retries quick enough for tests
        (overridable through ``app_settings``)."""
        vaults = sorted(v for v in self.info["vaults"] if v != HUB_VAULT)
        # Every setting is present, as in Azure (the host resolves %NAME% in trigger arguments
        # from app settings, so a missing one stops it).
        settings = {spec.name: spec.default for spec in SETTINGS}
        settings |= {
            "AZURE_CLIENT_ID": self.info["client_env"]["AZURE_CLIENT_ID"],
            "ROTATION_ALLOWED_SUBSCRIPTIONS": ",".join(sorted({self.subscription_of(v) for v in vaults})),
            "ROTATION_SWEEP_VAULTS": ",".join(self.vault_arm_id(v) for v in vaults),
            "ROTATION_RETRY_MAX_ATTEMPTS": "4",
            "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "1",
            # Promote and the undos give up as quickly as the other steps: a scenario that keeps
            # Key Vault failing ends in seconds, not after a day of retries. The scenarios about
            # outlasting an outage set their own budget (tests/e2e/test_outage_and_restart.py).
            "ROTATION_OUTAGE_RETRY_HOURS": "0",
            "ROTATION_CONSUMER_READY_TIMEOUT_SECONDS": "60",
            "ROTATION_PUBLIC_BASE_URL": self.hub_url,
            "ROTATION_NOTIFY_TOPIC_ENDPOINT": self.topic_endpoint(NOTIFY_TOPIC),
        }
        for database in self.databases.values():
            settings |= database.app_settings()
        settings.update(self.extra_app_settings)
        return settings

    def topic_endpoint(self, topic: str) -> str:
        return str(self.info["eventgrid_topics"][topic]["endpoint"])

    def topic_events(self, topic: str = NOTIFY_TOPIC) -> list[dict[str, Any]]:
        """The CloudEvents the local cloud's custom topic received, oldest first."""
        assert self.cloud is not None, "the stack is not started"
        return [received["event"] for received in self.cloud.admin.topic_events(topic)]

    def rotation_id(self, seeded: Seeded) -> str:
        """The instance id the hub gives the rotation of ``seeded``'s version."""
        secret = SecretRef(self.subscription_of(seeded.vault), seeded.vault, seeded.name)
        return secret.rotation_id(seeded.version)

    def settings(self) -> Settings:
        return Settings.from_environ({**os.environ, **self.app_settings()})

    # -- acting as an operator -------------------------------------------------------------

    def signed_in(self, principal: str = APPROVER) -> dict[str, str]:
        """Request headers of a browser session signed in as ``principal`` (a key of
        local/principals.py) through the host's App Service authentication login route."""
        if not self.easy_auth:
            raise RuntimeError("this stack runs the hub without App Service authentication (easy_auth=False)")
        if principal not in self._sessions:
            query = urllib.parse.urlencode({"principal": principal, "post_login_redirect_uri": "/"})
            request = urllib.request.Request(f"{self.hub_url}/.auth/login/local?{query}")  # noqa: S310 (127.0.0.1)
            try:
                _no_redirects.open(request, timeout=30)
                raise RuntimeError("the login route did not redirect")
            except urllib.error.HTTPError as answer:
                if answer.code != 302:
                    raise RuntimeError(f"signing in as {principal} answered {answer.code}") from None
                cookie = answer.headers.get("Set-Cookie", "").split(";", 1)[0]
            self._sessions[principal] = cookie
        return {"Cookie": self._sessions[principal]}

    def credential(self, identity: str = SEEDER) -> ManagedIdentityCredential:
        if identity not in self._credentials:
            client_id = self.info["identities"][identity]["client_id"]
            self._credentials[identity] = ManagedIdentityCredential(client_id=client_id)
        return self._credentials[identity]

    def secret_client(self, vault: str, identity: str = SEEDER) -> SecretClient:
        return SecretClient(str(self.info["vaults"][vault]["url"]), self.credential(identity))

    def web_client(self, subscription_id: str, identity: str = SEEDER) -> WebSiteManagementClient:
        return WebSiteManagementClient(self.credential(identity), subscription_id)

    def database(self, kind: str) -> LocalDatabase:
        """The server holding logins of ``kind`` (a rotation-target value)."""
        try:
            return self.databases[kind]
        except KeyError:
            raise ValueError(
                f"this stack runs no server for {kind!r} (it has {sorted(self.databases)})"
            ) from None

    def create_login(
        self, login: str, *, kind: str = POSTGRESQL, database: str | None = None, admin: bool = False
    ) -> str:
        """A database login with a fresh random password; returns the password."""
        password = secrets.token_urlsafe(18)
        self.database(kind).create_login(login, password, admin=admin, database=database)
        return password

    def seed_login_secret(
        self,
        vault: str,
        name: str,
        *,
        login: str,
        kind: str = POSTGRESQL,
        database: str | None = None,
        admin: str = "self",
        expires_in: timedelta = timedelta(days=10),
        tags: Mapping[str, str] | None = None,
        password: str | None = None,
    ) -> Seeded:
        """Create ``login`` on the server of ``kind`` (unless ``password`` is given: it exists
        already; with ``database``, also that database, owned by the login) and a secret in
        ``vault`` holding its password, tagged for rotation."""
        if password is None:
            password = self.create_login(login, kind=kind, database=database)
        all_tags = {
            metadata.TARGET: kind,
            metadata.PROVIDER: self.database(kind).provider(database),
            metadata.CREDENTIAL: login,
            metadata.ADMIN: admin,
            **(tags or {}),
        }
        secret = self.secret_client(vault).set_secret(
            name, password, tags=all_tags, expires_on=datetime.now(UTC) + expires_in
        )
        return Seeded(vault=vault, name=name, version=str(secret.properties.version), login=login, kind=kind)

    def seed_admin_secret(
        self, vault: str, name: str, *, login: str = TARGET_ADMIN_LOGIN, kind: str = POSTGRESQL
    ) -> Seeded:
        """An admin login (it may change other logins' passwords) and its secret, for
        ``rotation-admin: secret:<name>``."""
        password = self.create_login(login, kind=kind, admin=True)
        secret = self.secret_client(vault).set_secret(
            name,
            password,
            # The server it belongs to: the hub sends an admin password to no other.
            tags={metadata.CREDENTIAL: login, metadata.PROVIDER: self.database(kind).provider()},
            expires_on=datetime.now(UTC) + timedelta(days=365),
        )
        return Seeded(vault=vault, name=name, version=str(secret.properties.version), login=login, kind=kind)

    def seed_alternating_secret(
        self,
        vault: str,
        name: str,
        *,
        kind: str,
        logins: tuple[str, str],
        admin_secret: str,
        value_format: str = "json",
        expires_in: timedelta = timedelta(days=10),
        tags: Mapping[str, str] | None = None,
    ) -> tuple[Seeded, dict[str, str]]:
        """Two logins of ``kind``, members of one group role that holds what they may do (and
        nothing of their own), and a secret holding the first one's login and password in
        ``value_format``, tagged ``rotation-strategy: alternating`` with ``admin_secret`` as the
        admin. Returns the secret and each login's password."""
        server = self.database(kind)
        group = f"{logins[0]}_group"
        server.create_group(group)
        passwords: dict[str, str] = {}
        for login in logins:
            passwords[login] = self.create_login(login, kind=kind)
            server.join_group(login, group)
        all_tags = {
            metadata.TARGET: kind,
            metadata.PROVIDER: server.provider(),
            metadata.CREDENTIAL: ",".join(logins),
            metadata.ADMIN: f"secret:{admin_secret}",
            metadata.STRATEGY: "alternating",
            metadata.FORMAT: value_format,
            **(tags or {}),
        }
        shape = LoginShape.of(metadata.parse_tags(name, all_tags))
        value = shape.write(logins[0], SecretValue(passwords[logins[0]]))
        written = self.secret_client(vault).set_secret(
            name, value.reveal(), tags=all_tags, expires_on=datetime.now(UTC) + expires_in
        )
        seeded = Seeded(
            vault=vault, name=name, version=str(written.properties.version), login=logins[0], kind=kind
        )
        return seeded, passwords

    def logs_in(self, seeded: Seeded, password: str, *, database: str | None = None) -> bool:
        """Whether ``seeded``'s login takes ``password`` (checked with the server's own client,
        or for an application with a fresh client-credentials login)."""
        if seeded.kind == ENTRA:
            return self.app_accepts(seeded.login, password)
        return self.database(seeded.kind).can_login(seeded.login, password, database)

    # -- Entra applications ----------------------------------------------------------------

    @property
    def tenant_id(self) -> str:
        return str(self.info["tenant_id"])

    def application(self, name: str = APPLICATION) -> dict[str, Any]:
        """The application as the local cloud holds it: ids, owners, credentials (no secret)."""
        assert self.cloud is not None, "the stack is not started"
        return self.cloud.admin.application(name)

    def credential_id(self, seeded: Seeded) -> str | None:
        """Which issued credential the secret's current version holds (``rotation-credential-id``)."""
        tags = self.secret_client(seeded.vault).get_secret(seeded.name).properties.tags or {}
        return tags.get(metadata.CREDENTIAL_ID)

    def app_accepts(self, app_id: str, secret: str) -> bool:
        """Whether Entra (the local cloud) issues a token to ``app_id`` for ``secret``, asked
        afresh through azure-identity, as a consumer would."""
        credential = ClientSecretCredential(self.tenant_id, app_id, secret)
        try:
            credential.get_token("https://graph.microsoft.com/.default")
        except ClientAuthenticationError:
            return False
        finally:
            credential.close()
        return True

    def seed_app_secret(
        self,
        vault: str,
        name: str,
        *,
        application: str = APPLICATION,
        overlap_hours: float | None = None,
        expires_in: timedelta = timedelta(days=10),
        tags: Mapping[str, str] | None = None,
        record_credential: bool = False,
    ) -> Seeded:
        """Put ``application`` back to the topology's state (its one initial secret) and store that
        secret in ``vault`` as ``name``, tagged for rotation as an ``entra-app-secret``.

        ``record_credential``: also tag which credential it is (``rotation-credential-id``), as an
        operator does so that the first rotation retires it too."""
        assert self.cloud is not None, "the stack is not started"
        self.cloud.admin.reset_application(application)
        app = self.cloud.admin.application(application)
        initial = self.cloud.admin.initial_secret(application)
        secret = str(initial["secret_text"])
        all_tags = {
            metadata.TARGET: ENTRA,
            metadata.PROVIDER: self.tenant_id,
            metadata.CREDENTIAL: str(app["app_id"]),
            **({metadata.OVERLAP_HOURS: f"{overlap_hours:g}"} if overlap_hours is not None else {}),
            **({metadata.CREDENTIAL_ID: str(initial["key_id"])} if record_credential else {}),
            **(tags or {}),
        }
        written = self.secret_client(vault).set_secret(
            name, secret, tags=all_tags, expires_on=datetime.now(UTC) + expires_in
        )
        return Seeded(
            vault=vault,
            name=name,
            version=str(written.properties.version),
            login=str(app["app_id"]),
            kind=ENTRA,
        )

    # -- storage accounts ------------------------------------------------------------------

    def storage_account_id(self, account: str = STORAGE_ACCOUNT) -> str:
        return str(self.info["storage_accounts"][account]["arm_id"])

    def storage_keys(self, account: str = STORAGE_ACCOUNT) -> dict[str, str]:
        """The account's keys now ({"key1": ..., "key2": ...}), from the local cloud's admin API."""
        assert self.cloud is not None, "the stack is not started"
        return self.cloud.admin.storage_keys(account)

    def storage_value(
        self, key_name: str, account: str = STORAGE_ACCOUNT, value_format: str = "connection-string"
    ) -> str:
        """A secret value holding the account's key ``key_name`` now, in ``value_format``."""
        key = SecretValue(self.storage_keys(account)[key_name])
        if value_format == "key":
            return key.reveal()
        endpoint = str(self.info["storage_accounts"][account]["blob_endpoint"])
        return storage.connection_string(account, key, {"blob": endpoint}).reveal()

    def regenerate_key(self, key_name: str, account: str = STORAGE_ACCOUNT) -> None:
        """Regenerate one of the account's keys through ARM as the seeder, as an operator does by
        hand (the hub knows nothing of it)."""
        arm_id = self.storage_account_id(account)
        subscription, resource_group = arm_id.split("/")[2], arm_id.split("/")[4]
        client = StorageManagementClient(self.credential(), subscription)
        client.storage_accounts.regenerate_key(
            resource_group, account, StorageAccountRegenerateKeyParameters(key_name=key_name)
        )

    def key_works(self, account: str, key: str) -> bool:
        """Whether the account's blob endpoint (Azurite) accepts ``key``: the real BlobServiceClient
        lists containers with it, as a consumer holding it would."""
        endpoint = str(self.info["storage_accounts"][account]["blob_endpoint"])
        client = BlobServiceClient(
            endpoint, credential={"account_name": account, "account_key": key}, retry_total=0
        )
        try:
            with client:
                next(iter(client.list_containers(results_per_page=1).by_page()), None)
        except ClientAuthenticationError:
            return False
        return True

    def seed_storage_secret(
        self,
        vault: str,
        name: str,
        *,
        account: str = STORAGE_ACCOUNT,
        key_name: str = "key1",
        value_format: str = "connection-string",
        expires_in: timedelta = timedelta(days=10),
        tags: Mapping[str, str] | None = None,
    ) -> Seeded:
        """Store the account's key ``key_name`` as it is now in ``vault`` as ``name``, tagged for
        rotation as a ``storage-account-key`` (as an operator writes an existing key by hand)."""
        all_tags = {
            metadata.TARGET: STORAGE,
            metadata.CREDENTIAL: self.storage_account_id(account),
            **({metadata.FORMAT: value_format} if value_format != "connection-string" else {}),
            **(tags or {}),
        }
        written = self.secret_client(vault).set_secret(
            name,
            self.storage_value(key_name, account, value_format),
            tags=all_tags,
            expires_on=datetime.now(UTC) + expires_in,
        )
        return Seeded(
            vault=vault, name=name, version=str(written.properties.version), login=account, kind=STORAGE
        )

    def current_value_logs_in(self, vault: str, name: str) -> bool:
        """The invariant users care about: the latest version in the vault logs in to its target
        (the login the value holds, on the server and database its tags name)."""
        return self.value_logs_in(vault, name)

    def value_logs_in(self, vault: str, name: str, version: str | None = None) -> bool:
        """Whether a version's value (the latest by default) logs in to the target the secret's
        current tags name, as a consumer holding it would."""
        client = self.secret_client(vault)
        meta = metadata.parse_tags(name, client.get_secret(name).properties.tags or {})
        value = client.get_secret(name, version).value or ""
        if meta.target.kind == ENTRA:
            return self.app_accepts(meta.target.credential, value)
        if meta.target.kind == STORAGE:
            account = meta.target.credential.rsplit("/", 1)[-1]
            return self.key_works(account, storage.key_in(SecretValue(value), meta.value_format, account))
        shape = LoginShape.of(meta)
        held = shape.read(SecretValue(value))
        return self.database(meta.target.kind).can_login(
            shape.kind.client_login(held.credential), held.password.reveal(), shape.endpoint.database
        )
