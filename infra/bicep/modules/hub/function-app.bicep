// The hub Function App on Flex Consumption (FC1, Linux, Python 3.11), running as the hub's
// user-assigned identity. AzureWebJobsStorage is identity-based and the storage account has
// shared keys off, so no connection string or account key exists anywhere. Flex Consumption runs
// no custom container image: the app is a code package on Azure's own Python image.

param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the hub identity the app runs as.')
param hubIdentityId string

@description('Client id of the hub identity: AZURE_CLIENT_ID and AzureWebJobsStorage__clientId.')
param hubClientId string

param storageAccountName string
param storageBlobEndpoint string
param deploymentContainerName string
param applicationInsightsName string

// Flex Consumption takes 40 to 1000 and refuses anything lower at deployment ("The lowest maximum
// scale is currently 40. The highest currently supported value is 1000": Microsoft's Flex
// Consumption plan page, Considerations, https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan).
@description('Most instances the app scales out to (Flex Consumption accepts 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

// What the app reads, one parameter per name in rotation/settings.py (SETTINGS). The defaults live
// in main.bicep only, so this module cannot drift from them.
param allowedSubscriptions string
param keyVaultDnsSuffix string
param armEndpoint string
param approvalTimeoutHours int
param approvers string
param allowUnverifiedApprover string
param retryMaxAttempts int
param retryFirstIntervalSeconds int
param keyVaultTimeoutSeconds int
param keyVaultCacheSeconds int
param writeSettleSeconds int
param outageRetryHours int
param sweepVaults string
param sweepSchedule string
param nearExpiryDays int
param preflightAheadDays int
param consumerReadyTimeoutSeconds int
param incidentMaxPerVault int
param incidentMaxPerServer int
param postgresqlSslmode string
param postgresqlEntraRole string
param mysqlSslmode string
param mysqlSslCa string
param postgresqlSslCa string
param sqlserverOdbcDriver string
param graphEndpoint string
param entraAuthority string
param entraPropagationTimeoutSeconds int
param entraVerifySuccesses int
param storageVerifyTimeoutSeconds int
param publicBaseUrl string
param notifyTopicEndpoint string
param notifyWebhookSecret string
param notifyWebhookFormat string

@description('Client id of the Entra app registration App Service authentication signs approvers in with; empty: authentication stays off (and the app refuses every decision).')
param approvalSignInClientId string = ''

@description('Always-ready instances of the durable group (orchestrators and activities), which Microsoft recommends for Durable Functions on Flex Consumption; 0 lets the group scale to zero (a cold start on the next event).')
@minValue(0)
param durableAlwaysReadyInstances int = 1

@description('Where the task hub lives: azureStorage (host.json as written) or durableTaskScheduler (the settings below switch host.json\'s storage provider; README: Capacity and concurrency).')
@allowed(['azureStorage', 'durableTaskScheduler'])
param durableBackend string = 'azureStorage'

@description('Endpoint of the Durable Task Scheduler (durableBackend: durableTaskScheduler); empty otherwise.')
param durableTaskSchedulerEndpoint string = ''

// host.json's durable concurrency limits. The Python worker runs these synchronous functions on
// its thread pool, and Microsoft's Durable Functions guidance for Python is to match the two, so
// an activity dispatched to this instance never waits for a thread it cannot get elsewhere.
var durableTask = loadJsonContent('../../../../host.json').extensions.durableTask
var activitySlots = durableTask.maxConcurrentActivityFunctions
var orchestratorSlots = durableTask.maxConcurrentOrchestratorFunctions
var pythonThreads = activitySlots + orchestratorSlots

// The Durable Task Scheduler option: host.json is one file, so these settings override its
// storage provider (AzureFunctionsJobHost__<path>, the documented host.json override) and hold the
// identity-based connection. Absent with the Azure Storage provider.
var useDurableTaskScheduler = durableBackend == 'durableTaskScheduler'
var durableTaskSchedulerConnectionName = 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
var durableBackendSettings = useDurableTaskScheduler ? [
  {
    name: durableTaskSchedulerConnectionName
    value: 'Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${hubClientId}'
  }
  {
    name: 'AzureFunctionsJobHost__extensions__durableTask__storageProvider__type'
    value: 'azureManaged'
  }
  {
    name: 'AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName'
    value: durableTaskSchedulerConnectionName
  }
] : []

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: FC1 zone redundancy is offered in some regions only; turn it on (properties.zoneRedundant) where the hub's region has it
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid's AzureFunction delivery and the HTTP API reach the app over its public endpoint (no VNet in this template); HTTPS only, keys required
  // checkov:skip=CKV_AZURE_17: Event Grid presents no client certificate, so requiring one would block event delivery
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no fixed instance count; it scales per execution from zero
  // checkov:skip=CKV_AZURE_213: the App Service health check (which takes instances out of a fixed pool) does not apply to Flex Consumption
  name: name
  location: location
  // azd finds the app to deploy the code to by this tag (the service name in azure.yaml).
  tags: union(tags, { 'azd-service-name': 'hub' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${hubIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: concat([
        // Platform: identity-based host storage (no key), telemetry with an Entra token. Flex sets
        // the runtime in functionAppConfig and rejects FUNCTIONS_WORKER_RUNTIME here.
        // The host storage connection by service URI, not __accountName: from an account name the
        // host and its extensions build public-cloud URIs (*.core.windows.net), while these
        // follow the cloud this deployment runs in, like the Key Vault suffix and ARM endpoint.
        // The Durable Task extension's Azure Storage provider uses this same connection
        // (AzureWebJobsStorage) and needs all three services: blobs (leases), queues (work
        // items) and tables (history). The deployment package (functionAppConfig below) is
        // already addressed by the account's own blob endpoint.
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: 'https://${storageAccountName}.queue.${environment().suffixes.storage}'
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: 'https://${storageAccountName}.table.${environment().suffixes.storage}'
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: hubClientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${hubClientId};Authorization=AAD'
        }
        {
          name: 'PYTHON_THREADPOOL_THREAD_COUNT'
          value: string(pythonThreads)
        }
        // The app (rotation/settings.py).
        {
          name: 'AZURE_CLIENT_ID'
          value: hubClientId
        }
        {
          name: 'ROTATION_ALLOWED_SUBSCRIPTIONS'
          value: allowedSubscriptions
        }
        {
          name: 'ROTATION_KEYVAULT_DNS_SUFFIX'
          value: keyVaultDnsSuffix
        }
        {
          name: 'ROTATION_ARM_ENDPOINT'
          value: armEndpoint
        }
        {
          name: 'ROTATION_APPROVAL_TIMEOUT_HOURS'
          value: string(approvalTimeoutHours)
        }
        {
          name: 'ROTATION_APPROVERS'
          value: approvers
        }
        {
          name: 'ROTATION_ALLOW_UNVERIFIED_APPROVER'
          value: allowUnverifiedApprover
        }
        {
          name: 'ROTATION_RETRY_MAX_ATTEMPTS'
          value: string(retryMaxAttempts)
        }
        {
          name: 'ROTATION_RETRY_FIRST_INTERVAL_SECONDS'
          value: string(retryFirstIntervalSeconds)
        }
        {
          name: 'ROTATION_KEYVAULT_TIMEOUT_SECONDS'
          value: string(keyVaultTimeoutSeconds)
        }
        {
          name: 'ROTATION_KEYVAULT_CACHE_SECONDS'
          value: string(keyVaultCacheSeconds)
        }
        {
          name: 'ROTATION_WRITE_SETTLE_SECONDS'
          value: string(writeSettleSeconds)
        }
        {
          name: 'ROTATION_OUTAGE_RETRY_HOURS'
          value: string(outageRetryHours)
        }
        {
          name: 'ROTATION_SWEEP_VAULTS'
          value: sweepVaults
        }
        {
          name: 'ROTATION_SWEEP_SCHEDULE'
          value: sweepSchedule
        }
        {
          name: 'ROTATION_NEAR_EXPIRY_DAYS'
          value: string(nearExpiryDays)
        }
        {
          name: 'ROTATION_PREFLIGHT_AHEAD_DAYS'
          value: string(preflightAheadDays)
        }
        {
          name: 'ROTATION_INCIDENT_MAX_PER_VAULT'
          value: string(incidentMaxPerVault)
        }
        {
          name: 'ROTATION_INCIDENT_MAX_PER_SERVER'
          value: string(incidentMaxPerServer)
        }
        {
          name: 'ROTATION_CONSUMER_READY_TIMEOUT_SECONDS'
          value: string(consumerReadyTimeoutSeconds)
        }
        {
          name: 'ROTATION_POSTGRESQL_SSLMODE'
          value: postgresqlSslmode
        }
        {
          name: 'ROTATION_POSTGRESQL_SSL_CA'
          value: postgresqlSslCa
        }
        {
          name: 'ROTATION_POSTGRESQL_ENTRA_ROLE'
          value: postgresqlEntraRole
        }
        {
          name: 'ROTATION_MYSQL_SSLMODE'
          value: mysqlSslmode
        }
        {
          name: 'ROTATION_MYSQL_SSL_CA'
          value: mysqlSslCa
        }
        {
          name: 'ROTATION_SQLSERVER_ODBC_DRIVER'
          value: sqlserverOdbcDriver
        }
        {
          name: 'ROTATION_GRAPH_ENDPOINT'
          value: graphEndpoint
        }
        {
          name: 'ROTATION_ENTRA_AUTHORITY'
          value: entraAuthority
        }
        {
          name: 'ROTATION_ENTRA_PROPAGATION_TIMEOUT_SECONDS'
          value: string(entraPropagationTimeoutSeconds)
        }
        {
          name: 'ROTATION_ENTRA_VERIFY_SUCCESSES'
          value: string(entraVerifySuccesses)
        }
        {
          name: 'ROTATION_STORAGE_VERIFY_TIMEOUT_SECONDS'
          value: string(storageVerifyTimeoutSeconds)
        }
        {
          name: 'ROTATION_PUBLIC_BASE_URL'
          value: publicBaseUrl
        }
        {
          name: 'ROTATION_NOTIFY_TOPIC_ENDPOINT'
          value: notifyTopicEndpoint
        }
        {
          name: 'ROTATION_NOTIFY_WEBHOOK_SECRET'
          value: notifyWebhookSecret
        }
        {
          name: 'ROTATION_NOTIFY_WEBHOOK_FORMAT'
          value: notifyWebhookFormat
        }
      ], durableBackendSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: hubIdentityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // Orchestrator, activity and entity triggers scale together as the group 'durable'; an
        // instance kept ready picks up a timer, a decision or a new rotation without a cold start.
        alwaysReady: [
          {
            name: 'durable'
            instanceCount: durableAlwaysReadyInstances
          }
        ]
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// App Service authentication (Easy Auth) in front of the app: it signs approvers in with Entra ID
// and writes the X-MS-CLIENT-PRINCIPAL* headers the app trusts (only while the platform says
// WEBSITE_AUTH_ENABLED). Unauthenticated requests still reach the app (AllowAnonymous): function
// keys keep guarding the API, Event Grid and the Durable webhooks use their system keys, and the
// app itself refuses the approval page (anonymous route: a browser has no function key) and every
// decision without a signed-in principal. No client secret: App Service signs users in with the
// ID token alone (enable ID tokens on the app registration).
resource authentication 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(approvalSignInClientId)) {
  // checkov:skip=CKV_AZURE_13: this is the authentication itself (authsettingsV2, platform.enabled); checkov looks for the classic v1 'enabled' property
  // checkov:skip=CKV_AZURE_222: a site-level check applied to a config child; the site above states its network access (and its own skip)
  // checkov:skip=CKV_AZURE_63: a site-level check applied to a config child; logs go to Application Insights
  // checkov:skip=CKV_AZURE_66: a site-level check applied to a config child; logs go to Application Insights
  // checkov:skip=CKV_AZURE_65: a site-level check applied to a config child; detailed errors would show callers internals
  // checkov:skip=CKV_AZURE_80: a site-level check applied to a config child; the app is Python, no .NET Framework
  // checkov:skip=CKV_AZURE_88: a site-level check applied to a config child; Flex Consumption deploys from a blob container
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: approvalSignInClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            approvalSignInClientId
            'api://${approvalSignInClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

// Publishing with a user name and password (FTP, and basic auth on the SCM site) stays off; azd
// deploys through the deployment container with the deployer's Entra identity.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
