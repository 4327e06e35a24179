"""The app's settings: the only place that reads environment variables.

Every setting the Function App reads is declared once in ``SETTINGS`` (name, default, meaning).
``local.settings.example.json`` and the Bicep's app settings list the same names; a test keeps
the three in step.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rotation.errors import InvalidRequest
from rotation.model import VaultId, check_secret_name, check_subscription_id, check_vault_name


class SettingsError(ValueError):
    """A setting is present but not valid; the message names the setting."""


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: str
    meaning: str


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "AZURE_CLIENT_ID",
        "",
        "Client id of the hub's user-assigned managed identity; every Azure call authenticates as it.",
    ),
    SettingSpec(
        "ROTATION_ALLOWED_SUBSCRIPTIONS",
        "",
        "Comma-separated subscription ids whose vaults the hub may rotate (the subscription ARM finds the vault in, not only the one an event or caller names); events from others start nothing.",
    ),
    SettingSpec(
        "ROTATION_KEYVAULT_DNS_SUFFIX",
        "vault.azure.net",
        "DNS suffix of Key Vault in this cloud; vault URLs are built from the vault name and this suffix.",
    ),
    SettingSpec(
        "ROTATION_ARM_ENDPOINT",
        "https://management.azure.com",
        "Azure Resource Manager endpoint of this cloud, for restarting consuming apps and storage account keys.",
    ),
    SettingSpec(
        "ROTATION_APPROVAL_TIMEOUT_HOURS",
        "72",
        "How long a rotation tagged rotation-approval=required waits for a decision before it is rejected.",
    ),
    SettingSpec(
        "ROTATION_APPROVERS",
        "",
        "Comma-separated Entra object ids of principals, or ids of Entra groups (matched against the "
        "principal's groups claims), who may decide approvals; empty: any principal App Service "
        "authentication signed in.",
    ),
    SettingSpec(
        "ROTATION_ALLOW_UNVERIFIED_APPROVER",
        "false",
        "true: without App Service authentication, a holder of a function key may decide an approval "
        "under a name it gives (recorded as unverified); false: such decisions are refused.",
    ),
    SettingSpec(
        "ROTATION_RETRY_MAX_ATTEMPTS",
        "5",
        "Attempts per step for transient failures (throttling, 5xx, connection errors, timeouts).",
    ),
    SettingSpec(
        "ROTATION_RETRY_FIRST_INTERVAL_SECONDS",
        "5",
        "Wait before the first retry of a step; later retries back off exponentially.",
    ),
    SettingSpec(
        "ROTATION_OUTAGE_RETRY_HOURS",
        "24",
        "How long promote and every undo keep retrying transient failures (a Key Vault outage after "
        "the target changed) before they give up, 0-168; their waits double up to 30 minutes. 0: no "
        "longer than the other steps (ROTATION_RETRY_MAX_ATTEMPTS).",
    ),
    SettingSpec(
        "ROTATION_KEYVAULT_TIMEOUT_SECONDS",
        "30",
        "How long the hub waits for Key Vault's answer to one request before it gives up (the "
        "step is then retried). A write is never resent by the SDK: the step's retry checks first.",
    ),
    SettingSpec(
        "ROTATION_KEYVAULT_CACHE_SECONDS",
        "600",
        "How long a worker process remembers a secret version it read or wrote, by its version id "
        "(a version's value never changes), so a rotation's later steps do not read it again, "
        "0-3600. The latest version is always read afresh. 0: every step reads Key Vault.",
    ),
    SettingSpec(
        "ROTATION_WRITE_SETTLE_SECONDS",
        "120",
        "After a Key Vault request went unanswered, how long the hub waits before it checks again or "
        "undoes anything: a write Key Vault received may still be applied that late.",
    ),
    SettingSpec(
        "ROTATION_SWEEP_VAULTS",
        "",
        "Comma-separated ARM ids of the vaults the daily sweep lists (the backstop for lost events).",
    ),
    SettingSpec(
        "ROTATION_SWEEP_SCHEDULE",
        "0 0 3 * * *",
        "NCRONTAB schedule of the sweep (six fields, seconds first).",
    ),
    SettingSpec(
        "ROTATION_NEAR_EXPIRY_DAYS",
        "30",
        "The sweep starts a rotation for a tagged secret that expires within this many days.",
    ),
    SettingSpec(
        "ROTATION_PREFLIGHT_AHEAD_DAYS",
        "14",
        "The sweep runs the preflight on tagged secrets that enter the near-expiry window within "
        "this many days and logs a warning for each failing one (0: no preflight).",
    ),
    SettingSpec(
        "ROTATION_INCIDENT_MAX_PER_VAULT",
        "4",
        "An incident runs at most this many rotations at once in one vault (1-50).",
    ),
    SettingSpec(
        "ROTATION_INCIDENT_MAX_PER_SERVER",
        "2",
        "An incident runs at most this many rotations at once against one target server (1-50).",
    ),
    SettingSpec(
        "ROTATION_CONSUMER_READY_TIMEOUT_SECONDS",
        "300",
        "How long to wait for a restarted consuming app to serve again: its health check path answers 2xx (without one, its site answers below 500).",
    ),
    SettingSpec(
        "ROTATION_POSTGRESQL_SSLMODE",
        "verify-full",
        "TLS of postgresql-login targets, always on: verify-full (certificate and host name), "
        "verify-ca or require (encrypted, unverified).",
    ),
    SettingSpec(
        "ROTATION_POSTGRESQL_SSL_CA",
        "",
        "CA bundle (PEM file) that PostgreSQL server certificates are verified against; 'azure': only the "
        "two roots Azure Database for PostgreSQL chains to (DigiCert Global Root G2, Microsoft RSA Root CA "
        "2017, taken from certifi's bundle), about 4 ms less CPU per login than the whole bundle; empty: "
        "certifi's whole bundle.",
    ),
    SettingSpec(
        "ROTATION_POSTGRESQL_ENTRA_ROLE",
        "",
        "PostgreSQL role of the hub's managed identity, for postgresql-login secrets tagged "
        "rotation-admin=managed-identity (Entra authentication on Azure Database for PostgreSQL).",
    ),
    SettingSpec(
        "ROTATION_MYSQL_SSLMODE",
        "verify-full",
        "TLS of mysql-login targets, always on: verify-full (certificate and host name), verify-ca or require.",
    ),
    SettingSpec(
        "ROTATION_MYSQL_SSL_CA",
        "",
        "CA bundle (PEM file) that MySQL server certificates are verified against; empty: the system's CAs.",
    ),
    SettingSpec(
        "ROTATION_GRAPH_ENDPOINT",
        "https://graph.microsoft.com",
        "Microsoft Graph endpoint of this cloud, for entra-app-secret targets.",
    ),
    SettingSpec(
        "ROTATION_ENTRA_AUTHORITY",
        "https://login.microsoftonline.com",
        "Entra ID authority of this cloud, where entra-app-secret targets prove a new secret.",
    ),
    SettingSpec(
        "ROTATION_ENTRA_PROPAGATION_TIMEOUT_SECONDS",
        "300",
        "How long verify waits for a new Entra application secret to be accepted everywhere.",
    ),
    SettingSpec(
        "ROTATION_ENTRA_VERIFY_SUCCESSES",
        "3",
        "Consecutive successful logins with a new Entra application secret that verify requires.",
    ),
    SettingSpec(
        "ROTATION_STORAGE_VERIFY_TIMEOUT_SECONDS",
        "60",
        "How long verify waits for a regenerated storage account key to be accepted by the blob endpoint.",
    ),
    SettingSpec(
        "ROTATION_SQLSERVER_ODBC_DRIVER",
        "ODBC Driver 18 for SQL Server",
        "ODBC driver of sqlserver-login targets; Azure's Functions Python image installs this one.",
    ),
    SettingSpec(
        "ROTATION_PUBLIC_BASE_URL",
        "",
        "Base URL of the hub (https://<app>.azurewebsites.net) for the links in notifications "
        "(approval page, rotation status); empty: notifications carry no links.",
    ),
    SettingSpec(
        "ROTATION_NOTIFY_TOPIC_ENDPOINT",
        "",
        "Endpoint of the Event Grid custom topic (CloudEvents schema) the hub publishes its notifications "
        "to with its identity (EventGrid Data Sender); empty: no events.",
    ),
    SettingSpec(
        "ROTATION_NOTIFY_WEBHOOK_SECRET",
        "",
        "<vault name>/<secret name> of the secret holding a Teams workflow or Slack webhook URL the hub "
        "also posts notifications to; empty: no webhook.",
    ),
    SettingSpec(
        "ROTATION_NOTIFY_WEBHOOK_FORMAT",
        "teams",
        "Payload of the webhook: teams (an Adaptive Card for a Teams workflow) or slack (text and blocks).",
    ),
)

WEBHOOK_FORMATS = ("teams", "slack")


# Set by the platform, not by us: "Read-only. Injected into a Windows or Linux app to indicate
# whether App Service authentication is enabled." (Microsoft Learn, "Environment variables and app
# settings in Azure App Service", https://learn.microsoft.com/azure/app-service/reference-app-settings,
# section Authentication & Authorization). Only then does App Service strip the X-MS-CLIENT-PRINCIPAL*
# headers a client sends and set them itself ("External requests aren't allowed to set these
# headers, so they're present only if set by App Service": "Work with user identities in Azure App
# Service authentication"); without it, those headers are whatever the caller wrote.
APP_SERVICE_AUTH_SIGNAL = "WEBSITE_AUTH_ENABLED"

_GUID = re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _positive_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be greater than zero, got {raw!r}")
    return value


def _https_url(name: str, raw: str) -> str:
    url = raw.rstrip("/")
    if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d+)?(/[^\s?#]*)?", url):
        raise SettingsError(f"{name} must be an https URL, got {raw!r}")
    return url


def _non_negative_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise SettingsError(f"{name} must be zero or more, got {raw!r}")
    return value


# Promote and the undos retry for at most a week: longer, and the undos of a rotation whose
# target changed would outlive most credentials' remaining validity anyway.
OUTAGE_RETRY_HOURS_RANGE = (0.0, 168.0)
# An hour covers a rotation's steps without an approval wait, and keeps values in memory no longer.
KEYVAULT_CACHE_SECONDS_RANGE = (0.0, 3600.0)


def _number_within(name: str, raw: str, bounds: tuple[float, float]) -> float:
    low, high = bounds
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number from {low:g} to {high:g}, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise SettingsError(f"{name} must be from {low:g} to {high:g}, got {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _object_ids(name: str, raw: str) -> frozenset[str]:
    ids = frozenset(part.lower() for part in _split(raw))
    bad = sorted(i for i in ids if not _GUID.match(i))
    if bad:
        raise SettingsError(
            f"{name} takes Entra object ids or group ids (GUIDs), comma separated; not {', '.join(bad)}"
        )
    return ids


def _web_url(name: str, raw: str) -> str:
    """An http(s) base URL; plain http only for a loopback host (a local hub), never elsewhere."""
    url = raw.rstrip("/")
    if re.fullmatch(r"http://(127\.0\.0\.1|localhost)(:\d+)?(/[^\s?#]*)?", url):
        return url
    return _https_url(name, raw)


def _secret_reference(name: str, raw: str) -> tuple[str, str] | None:
    if not raw:
        return None
    vault, _, secret = raw.partition("/")
    try:
        return check_vault_name(vault.strip()), check_secret_name(secret.strip())
    except InvalidRequest:
        raise SettingsError(f"{name} must be <vault name>/<secret name>, got {raw!r}") from None


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be greater than zero, got {raw!r}")
    return value


# An incident's concurrency bounds: beyond a few dozen rotations at once in one vault, Key Vault's
# own throttling (a few thousand operations per 10 seconds per vault) and the host's activity
# concurrency limit the pace anyway, while the history of the incident grows with every one.
INCIDENT_CONCURRENCY_RANGE = (1, 50)


def incident_concurrency(name: str, raw: str) -> int:
    """An incident concurrency bound (a setting, or a request's override given as ``name``).

    Raises:
        SettingsError: not a whole number within INCIDENT_CONCURRENCY_RANGE; the message names it.
    """
    low, high = INCIDENT_CONCURRENCY_RANGE
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be from {low} to {high}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    client_id: str
    allowed_subscriptions: frozenset[str]
    keyvault_dns_suffix: str
    arm_endpoint: str
    approval_timeout_hours: float
    retry_max_attempts: int
    retry_first_interval_seconds: float
    outage_retry_hours: float
    keyvault_timeout_seconds: float
    keyvault_cache_seconds: float
    write_settle_seconds: float
    sweep_vaults: tuple[VaultId, ...]
    sweep_schedule: str
    near_expiry_days: float
    preflight_ahead_days: float
    incident_max_per_vault: int
    incident_max_per_server: int
    consumer_ready_timeout_seconds: float
    postgresql_sslmode: str
    postgresql_ssl_ca: str
    postgresql_entra_role: str
    mysql_sslmode: str
    mysql_ssl_ca: str
    sqlserver_odbc_driver: str
    graph_endpoint: str
    entra_authority: str
    entra_propagation_timeout_seconds: float
    entra_verify_successes: int
    storage_verify_timeout_seconds: float
    public_base_url: str
    notify_topic_endpoint: str
    # (vault, secret) holding the webhook URL: the URL itself is a secret (whoever has it may post).
    notify_webhook_secret: tuple[str, str] | None
    notify_webhook_format: str
    approvers: frozenset[str] = frozenset()
    allow_unverified_approver: bool = False
    # The platform's signal, not an app setting of ours (APP_SERVICE_AUTH_SIGNAL).
    app_service_auth_enabled: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting.

        Raises:
            SettingsError: a setting is malformed; the message names it.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            spec = next(s for s in SETTINGS if s.name == name)
            return env.get(name, spec.default).strip() or spec.default

        try:
            subscriptions = frozenset(
                check_subscription_id(s) for s in _split(get("ROTATION_ALLOWED_SUBSCRIPTIONS"))
            )
        except InvalidRequest as exc:
            raise SettingsError(f"ROTATION_ALLOWED_SUBSCRIPTIONS: {exc.detail}") from None
        try:
            sweep_vaults = tuple(VaultId.parse(v) for v in _split(get("ROTATION_SWEEP_VAULTS")))
        except InvalidRequest as exc:
            raise SettingsError(
                f"ROTATION_SWEEP_VAULTS: {exc.detail} "
                "(/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.KeyVault/vaults/<name>)"
            ) from None
        dns_suffix = get("ROTATION_KEYVAULT_DNS_SUFFIX").lstrip(".").lower()
        if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", dns_suffix):
            raise SettingsError(f"ROTATION_KEYVAULT_DNS_SUFFIX is not a DNS suffix: {dns_suffix!r}")
        arm_endpoint = _https_url("ROTATION_ARM_ENDPOINT", get("ROTATION_ARM_ENDPOINT"))
        webhook_format = get("ROTATION_NOTIFY_WEBHOOK_FORMAT").lower()
        if webhook_format not in WEBHOOK_FORMATS:
            raise SettingsError(
                f"ROTATION_NOTIFY_WEBHOOK_FORMAT must be one of {', '.join(WEBHOOK_FORMATS)}, got {webhook_format!r}"
            )
        topic = get("ROTATION_NOTIFY_TOPIC_ENDPOINT")
        base_url = get("ROTATION_PUBLIC_BASE_URL")
        return cls(
            client_id=get("AZURE_CLIENT_ID"),
            allowed_subscriptions=subscriptions,
            keyvault_dns_suffix=dns_suffix,
            arm_endpoint=arm_endpoint,
            approval_timeout_hours=_positive_number(
                "ROTATION_APPROVAL_TIMEOUT_HOURS", get("ROTATION_APPROVAL_TIMEOUT_HOURS")
            ),
            retry_max_attempts=_positive_int(
                "ROTATION_RETRY_MAX_ATTEMPTS", get("ROTATION_RETRY_MAX_ATTEMPTS")
            ),
            retry_first_interval_seconds=_positive_number(
                "ROTATION_RETRY_FIRST_INTERVAL_SECONDS", get("ROTATION_RETRY_FIRST_INTERVAL_SECONDS")
            ),
            outage_retry_hours=_number_within(
                "ROTATION_OUTAGE_RETRY_HOURS", get("ROTATION_OUTAGE_RETRY_HOURS"), OUTAGE_RETRY_HOURS_RANGE
            ),
            keyvault_timeout_seconds=_positive_number(
                "ROTATION_KEYVAULT_TIMEOUT_SECONDS", get("ROTATION_KEYVAULT_TIMEOUT_SECONDS")
            ),
            keyvault_cache_seconds=_number_within(
                "ROTATION_KEYVAULT_CACHE_SECONDS",
                get("ROTATION_KEYVAULT_CACHE_SECONDS"),
                KEYVAULT_CACHE_SECONDS_RANGE,
            ),
            write_settle_seconds=_non_negative_number(
                "ROTATION_WRITE_SETTLE_SECONDS", get("ROTATION_WRITE_SETTLE_SECONDS")
            ),
            sweep_vaults=sweep_vaults,
            sweep_schedule=get("ROTATION_SWEEP_SCHEDULE"),
            near_expiry_days=_positive_number("ROTATION_NEAR_EXPIRY_DAYS", get("ROTATION_NEAR_EXPIRY_DAYS")),
            preflight_ahead_days=_non_negative_number(
                "ROTATION_PREFLIGHT_AHEAD_DAYS", get("ROTATION_PREFLIGHT_AHEAD_DAYS")
            ),
            incident_max_per_vault=incident_concurrency(
                "ROTATION_INCIDENT_MAX_PER_VAULT", get("ROTATION_INCIDENT_MAX_PER_VAULT")
            ),
            incident_max_per_server=incident_concurrency(
                "ROTATION_INCIDENT_MAX_PER_SERVER", get("ROTATION_INCIDENT_MAX_PER_SERVER")
            ),
            consumer_ready_timeout_seconds=_positive_number(
                "ROTATION_CONSUMER_READY_TIMEOUT_SECONDS", get("ROTATION_CONSUMER_READY_TIMEOUT_SECONDS")
            ),
            postgresql_sslmode=get("ROTATION_POSTGRESQL_SSLMODE"),
            postgresql_ssl_ca=get("ROTATION_POSTGRESQL_SSL_CA"),
            postgresql_entra_role=get("ROTATION_POSTGRESQL_ENTRA_ROLE"),
            mysql_sslmode=get("ROTATION_MYSQL_SSLMODE"),
            mysql_ssl_ca=get("ROTATION_MYSQL_SSL_CA"),
            sqlserver_odbc_driver=get("ROTATION_SQLSERVER_ODBC_DRIVER"),
            graph_endpoint=_https_url("ROTATION_GRAPH_ENDPOINT", get("ROTATION_GRAPH_ENDPOINT")),
            entra_authority=_https_url("ROTATION_ENTRA_AUTHORITY", get("ROTATION_ENTRA_AUTHORITY")),
            entra_propagation_timeout_seconds=_positive_number(
                "ROTATION_ENTRA_PROPAGATION_TIMEOUT_SECONDS",
                get("ROTATION_ENTRA_PROPAGATION_TIMEOUT_SECONDS"),
            ),
            entra_verify_successes=_positive_int(
                "ROTATION_ENTRA_VERIFY_SUCCESSES", get("ROTATION_ENTRA_VERIFY_SUCCESSES")
            ),
            storage_verify_timeout_seconds=_positive_number(
                "ROTATION_STORAGE_VERIFY_TIMEOUT_SECONDS", get("ROTATION_STORAGE_VERIFY_TIMEOUT_SECONDS")
            ),
            public_base_url=_web_url("ROTATION_PUBLIC_BASE_URL", base_url) if base_url else "",
            notify_topic_endpoint=_https_url("ROTATION_NOTIFY_TOPIC_ENDPOINT", topic) if topic else "",
            notify_webhook_secret=_secret_reference(
                "ROTATION_NOTIFY_WEBHOOK_SECRET", get("ROTATION_NOTIFY_WEBHOOK_SECRET")
            ),
            notify_webhook_format=webhook_format,
            approvers=_object_ids("ROTATION_APPROVERS", get("ROTATION_APPROVERS")),
            allow_unverified_approver=_flag(
                "ROTATION_ALLOW_UNVERIFIED_APPROVER", get("ROTATION_ALLOW_UNVERIFIED_APPROVER")
            ),
            # App Service writes "True"; anything else (absent, "False") means the headers are not its.
            app_service_auth_enabled=env.get(APP_SERVICE_AUTH_SIGNAL, "").strip().lower() == "true",
        )


@functools.cache
def current_settings() -> Settings:
    """This process's settings, read once (the Functions host restarts the app when they change)."""
    return Settings.from_environ()
