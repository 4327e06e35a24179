// The hub, deployed by `azd up` (azure.yaml at the repo root): a resource group with the hub
// (modules/hub/hub.bicep) and, once the code is deployed, the spoke vaults listed in `spokes`
// (spokes.bicep). Order and steps: infra/README.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; it seeds the unique names of every resource.')
param environmentName string

// The regions where Flex Consumption runs, so `azd up` offers only those and a deployment anywhere
// else stops at validation instead of failing late at the plan. Microsoft's docs give no fixed
// list; they say to ask Azure (az functionapp list-flexconsumption-locations, "View currently
// supported regions": https://learn.microsoft.com/azure/azure-functions/flex-consumption-how-to#view-currently-supported-regions).
// This list is the one in Microsoft's Flex Consumption quickstart template, deployed by
// https://learn.microsoft.com/azure/azure-functions/create-first-function-azure-developer-cli
// (Azure-Samples/functions-quickstart-python-http-azd, infra/main.bicep), without the canary region
// eastus2euap, as that template listed them when this was written (December 2026). A region Azure lists and this does not: add it here and to the
// region list in infra/README.md (tests/infra compares the two).
@minLength(1)
@description('Region of the hub; Flex Consumption runs in these regions only (infra/README.md).')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group of the hub; empty means rg-<environmentName>.')
param resourceGroupName string = ''

@description('''Spoke vaults to onboard: [{subscriptionId, resourceGroupName, vaultName, location,
consumerAppIds?, storageAccountKeyTargetIds?, systemTopicName?}]. Their subscriptions join the
allowlist and their vaults the daily sweep. A systemTopicName that names an existing topic gets its
identity block and tags replaced (modules/spoke/vault.bicep, infra/README.md).''')
param spokes array = []

@description('Create the spokes\' event subscriptions. Keep false until `azd deploy` has put the function in place.')
param connectSpokeEvents bool = false

@description('Subscriptions the hub may rotate in besides those of `spokes`.')
param additionalAllowedSubscriptions array = []

@description('Vault ARM ids the sweep lists besides those of `spokes`.')
param additionalSweepVaults array = []

@description('''Grant the hub identity the Microsoft Graph application permission Application.ReadWrite.OwnedBy and
make it an owner of `graphOwnedApplications` (the entra-app-secret target). The deployer must be allowed to grant
Graph app roles (Privileged Role Administrator) and to add application owners; infra/README.md.''')
param grantGraphPermission bool = false

@description('uniqueName of each application registration whose secret the hub rotates; with grantGraphPermission the hub identity becomes an owner (existing owners stay).')
param graphOwnedApplications array = []

@description('Name of the Event Grid trigger function in the app (starters/event_grid.py).')
param eventFunctionName string = 'on_secret_event'

// rotation/settings.py: the defaults below are the app's own (tests/infra compares them).
// Key Vault's DNS suffix and the ARM endpoint of the cloud this deployment runs in.
param keyVaultDnsSuffix string = startsWith(environment().suffixes.keyvaultDns, '.') ? substring(environment().suffixes.keyvaultDns, 1) : environment().suffixes.keyvaultDns
param armEndpoint string = environment().resourceManager
param approvalTimeoutHours int = 72
@description('Entra object ids of the principals, or of the groups, who may decide approvals (comma separated); empty: anyone App Service authentication signs in.')
param approvers string = ''
@description('true lets holders of a function key decide approvals under a name they give, recorded as unverified, when no principal is signed in. Keep false in Azure.')
@allowed(['true', 'false'])
param allowUnverifiedApprover string = 'false'
@description('Client id of the Entra app registration that App Service authentication signs approvers in with (approval page, approve/reject); empty: App Service authentication stays off and every decision is refused (README: Approvals).')
param approvalSignInClientId string = ''
param retryMaxAttempts int = 5
param retryFirstIntervalSeconds int = 5
@description('How long the hub waits for Key Vault to answer one request (seconds).')
@minValue(1)
param keyVaultTimeoutSeconds int = 30
@description('How long a worker process remembers a secret version it read or wrote, by version id, so the later steps of a rotation do not read it again (seconds; 0: every step reads Key Vault).')
@minValue(0)
@maxValue(3600)
param keyVaultCacheSeconds int = 600
@description('After a Key Vault request went unanswered, how long before the hub checks again or undoes anything (seconds): a write Key Vault received may still land.')
@minValue(0)
param writeSettleSeconds int = 120
@description('How long promote and every undo keep retrying transient failures, such as a Key Vault outage, before they give up (hours; 0: as long as the other steps).')
@minValue(0)
@maxValue(168)
param outageRetryHours int = 24
param sweepSchedule string = '0 0 3 * * *'
param nearExpiryDays int = 30
@description('The sweep runs the preflight on tagged secrets that enter the near-expiry window within this many days (0: none).')
param preflightAheadDays int = 14
param consumerReadyTimeoutSeconds int = 300
@description('An incident (POST /api/incidents) runs at most this many rotations at once in one vault.')
@minValue(1)
@maxValue(50)
param incidentMaxPerVault int = 4
@description('An incident runs at most this many rotations at once against one target server.')
@minValue(1)
@maxValue(50)
param incidentMaxPerServer int = 2
@description('TLS of postgresql-login targets, always on: verify-full checks the certificate and host name.')
@allowed(['verify-full', 'verify-ca', 'require'])
param postgresqlSslmode string = 'verify-full'
@description('Path of a CA bundle on the worker for PostgreSQL server certificates; azure: only the two roots Azure Database for PostgreSQL chains to, from certifi (about 4 ms less CPU per login than the whole bundle); empty: certifi\'s whole bundle.')
param postgresqlSslCa string = ''
@description('PostgreSQL role of the hub identity on servers whose secrets say rotation-admin: managed-identity (the name given to pgaadauth_create_principal_with_oid; infra/README.md).')
param postgresqlEntraRole string = ''
param mysqlSslmode string = 'verify-full'
@description('Path of a CA bundle on the worker for MySQL server certificates; empty: the system CAs (Azure Database for MySQL chains to them).')
param mysqlSslCa string = ''
param sqlserverOdbcDriver string = 'ODBC Driver 18 for SQL Server'
param graphEndpoint string = environment().graph
param entraAuthority string = environment().authentication.loginEndpoint
param entraPropagationTimeoutSeconds int = 300
param entraVerifySuccesses int = 3
param storageVerifyTimeoutSeconds int = 60
@description('https://<app host> of the hub, for the links in notifications (approval page, rotation status); empty: no links. Set it once the app exists (the ROTATION_HUB_URL output).')
param publicBaseUrl string = ''
@description('<vault name>/<secret name> of a secret holding a Teams workflow or Slack incoming webhook URL the hub also notifies; empty: none. Give the hub identity Key Vault Secrets User on that vault.')
param notifyWebhookSecret string = ''
@description('Payload of that webhook: teams (an Adaptive Card for a "When a Teams webhook request is received" workflow) or slack.')
@allowed(['teams', 'slack'])
param notifyWebhookFormat string = 'teams'

// How the durable task hub runs (README: Capacity and concurrency; infra/README.md).
@description('Always-ready instances of the durable group (orchestrators and activities) on Flex Consumption; 0 lets it scale to zero.')
param durableAlwaysReadyInstances int = 1
@description('Backend of the task hub: azureStorage (the hub storage account) or durableTaskScheduler (a scheduler and task hub, identity-based).')
@allowed(['azureStorage', 'durableTaskScheduler'])
param durableBackend string = 'azureStorage'
@description('SKU of the Durable Task Scheduler when durableBackend is durableTaskScheduler.')
@allowed(['Consumption', 'Dedicated'])
param durableTaskSchedulerSku string = 'Consumption'

var tags = {
  'azd-env-name': environmentName
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var spokeSubscriptionIds = [for s in spokes: s.subscriptionId]
var spokeVaultIds = [for s in spokes: '/subscriptions/${s.subscriptionId}/resourceGroups/${s.resourceGroupName}/providers/Microsoft.KeyVault/vaults/${s.vaultName}']

resource rg 'Microsoft.Resources/resourceGroups@2022-09-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module hub 'modules/hub/hub.bicep' = {
  name: 'rotation-hub-${resourceToken}'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    eventFunctionName: eventFunctionName
    // union() also removes duplicates: several vaults often share a subscription.
    allowedSubscriptions: join(union(additionalAllowedSubscriptions, spokeSubscriptionIds), ',')
    keyVaultDnsSuffix: keyVaultDnsSuffix
    armEndpoint: armEndpoint
    approvalTimeoutHours: approvalTimeoutHours
    approvers: approvers
    allowUnverifiedApprover: allowUnverifiedApprover
    approvalSignInClientId: approvalSignInClientId
    retryMaxAttempts: retryMaxAttempts
    retryFirstIntervalSeconds: retryFirstIntervalSeconds
    keyVaultTimeoutSeconds: keyVaultTimeoutSeconds
    keyVaultCacheSeconds: keyVaultCacheSeconds
    writeSettleSeconds: writeSettleSeconds
    outageRetryHours: outageRetryHours
    sweepVaults: join(union(additionalSweepVaults, spokeVaultIds), ',')
    sweepSchedule: sweepSchedule
    nearExpiryDays: nearExpiryDays
    preflightAheadDays: preflightAheadDays
    consumerReadyTimeoutSeconds: consumerReadyTimeoutSeconds
    incidentMaxPerVault: incidentMaxPerVault
    incidentMaxPerServer: incidentMaxPerServer
    postgresqlSslmode: postgresqlSslmode
    postgresqlEntraRole: postgresqlEntraRole
    mysqlSslmode: mysqlSslmode
    mysqlSslCa: mysqlSslCa
    postgresqlSslCa: postgresqlSslCa
    sqlserverOdbcDriver: sqlserverOdbcDriver
    graphEndpoint: graphEndpoint
    entraAuthority: entraAuthority
    entraPropagationTimeoutSeconds: entraPropagationTimeoutSeconds
    entraVerifySuccesses: entraVerifySuccesses
    storageVerifyTimeoutSeconds: storageVerifyTimeoutSeconds
    publicBaseUrl: publicBaseUrl
    notifyWebhookSecret: notifyWebhookSecret
    notifyWebhookFormat: notifyWebhookFormat
    durableAlwaysReadyInstances: durableAlwaysReadyInstances
    durableBackend: durableBackend
    durableTaskSchedulerSku: durableTaskSchedulerSku
  }
}

module onboarding 'spokes.bicep' = if (!empty(spokes)) {
  name: 'rotation-spokes-${resourceToken}'
  params: {
    spokes: spokes
    hubPrincipalId: hub.outputs.hubPrincipalId
    eventFunctionResourceId: hub.outputs.eventFunctionResourceId
    connectEvents: connectSpokeEvents
    deadLetterStorageAccountId: hub.outputs.storageAccountId
    deadLetterContainerName: hub.outputs.deadLetterContainerName
    deadLetterIdentityId: hub.outputs.deadLetterIdentityId
    tags: tags
  }
}

// Graph resources (modules/hub/graph-permissions.bicep, the Microsoft Graph Bicep extension):
// off by default, because few deployers may grant Graph application permissions.
module graphPermissions 'modules/hub/graph-permissions.bicep' = if (grantGraphPermission) {
  name: 'rotation-hub-graph-${resourceToken}'
  scope: rg
  params: {
    hubPrincipalId: hub.outputs.hubPrincipalId
    ownedApplicationUniqueNames: graphOwnedApplications
  }
}

// azd stores these in the environment (.azure/<env>/.env). Identifiers only, no keys: the
// policy assignment and spokes.bicep take them as parameters.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = hub.outputs.functionAppName
output ROTATION_HUB_URL string = 'https://${hub.outputs.functionAppHostName}'
output ROTATION_EVENT_FUNCTION_RESOURCE_ID string = hub.outputs.eventFunctionResourceId
output ROTATION_HUB_PRINCIPAL_ID string = hub.outputs.hubPrincipalId
output ROTATION_HUB_CLIENT_ID string = hub.outputs.hubClientId
output ROTATION_DEADLETTER_IDENTITY_ID string = hub.outputs.deadLetterIdentityId
output ROTATION_DEADLETTER_STORAGE_ACCOUNT_ID string = hub.outputs.storageAccountId
output ROTATION_DEADLETTER_CONTAINER string = hub.outputs.deadLetterContainerName
output ROTATION_NOTIFY_TOPIC_ID string = hub.outputs.notifyTopicId
output ROTATION_NOTIFY_TOPIC_ENDPOINT string = hub.outputs.notifyTopicEndpoint
