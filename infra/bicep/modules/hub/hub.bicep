// The hub in one resource group: identities, monitoring, storage, the notification topic and the
// Function App.
// main.bicep calls this; it can also be deployed alone into an existing resource group.

@description('Region of the hub: one where Flex Consumption runs (main.bicep checks its own against the list; deployed alone, this module does not).')
param location string = resourceGroup().location
param tags object = {}

@description('Short lowercase token that makes the names unique (main.bicep derives it).')
param resourceToken string

@description('Name of the Event Grid trigger function in the app.')
param eventFunctionName string

// rotation/settings.py values, passed through to the Function App unchanged.
param allowedSubscriptions string
param keyVaultDnsSuffix string
param armEndpoint string
param approvalTimeoutHours int
param approvers string
param allowUnverifiedApprover string

@description('Client id of the Entra app registration App Service authentication signs approvers in with; empty: off.')
param approvalSignInClientId string = ''
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
param notifyWebhookSecret string
param notifyWebhookFormat string

@description('Always-ready instances of the durable group on Flex Consumption.')
param durableAlwaysReadyInstances int = 1

@description('azureStorage (the hub storage account, host.json as written) or durableTaskScheduler.')
@allowed(['azureStorage', 'durableTaskScheduler'])
param durableBackend string = 'azureStorage'

@description('SKU of the Durable Task Scheduler (durableBackend: durableTaskScheduler).')
@allowed(['Consumption', 'Dedicated'])
param durableTaskSchedulerSku string = 'Consumption'

var deploymentContainerName = 'app-package'
var useDurableTaskScheduler = durableBackend == 'durableTaskScheduler'
var deadLetterContainerName = 'eventgrid-deadletter'

module identity 'identity.bicep' = {
  name: 'hub-identity'
  params: {
    hubIdentityName: 'id-rotation-hub-${resourceToken}'
    deadLetterIdentityName: 'id-rotation-deadletter-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'monitoring.bicep' = {
  name: 'hub-monitoring'
  params: {
    workspaceName: 'log-rotation-hub-${resourceToken}'
    applicationInsightsName: 'appi-rotation-hub-${resourceToken}'
    location: location
    tags: tags
    publisherPrincipalId: identity.outputs.hubPrincipalId
  }
}

module storage 'storage.bicep' = {
  name: 'hub-storage'
  params: {
    name: take('strotation${resourceToken}', 24)
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    hubPrincipalId: identity.outputs.hubPrincipalId
    deadLetterPrincipalId: identity.outputs.deadLetterPrincipalId
  }
}

module notifyTopic 'notify-topic.bicep' = {
  name: 'hub-notify-topic'
  params: {
    name: 'evgt-rotation-hub-${resourceToken}'
    location: location
    tags: tags
    hubPrincipalId: identity.outputs.hubPrincipalId
  }
}

module durableTaskScheduler 'durable-task-scheduler.bicep' = if (useDurableTaskScheduler) {
  name: 'hub-durable-task-scheduler'
  params: {
    name: 'dts-rotation-hub-${resourceToken}'
    location: location
    tags: tags
    skuName: durableTaskSchedulerSku
    hubPrincipalId: identity.outputs.hubPrincipalId
  }
}

module functionApp 'function-app.bicep' = {
  name: 'hub-function-app'
  params: {
    name: 'func-rotation-hub-${resourceToken}'
    planName: 'plan-rotation-hub-${resourceToken}'
    location: location
    tags: tags
    hubIdentityId: identity.outputs.hubIdentityId
    hubClientId: identity.outputs.hubClientId
    storageAccountName: storage.outputs.accountName
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    allowedSubscriptions: allowedSubscriptions
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
    sweepVaults: sweepVaults
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
    notifyTopicEndpoint: notifyTopic.outputs.endpoint
    notifyWebhookSecret: notifyWebhookSecret
    notifyWebhookFormat: notifyWebhookFormat
    durableAlwaysReadyInstances: durableAlwaysReadyInstances
    durableBackend: durableBackend
    durableTaskSchedulerEndpoint: useDurableTaskScheduler ? durableTaskScheduler.outputs.endpoint : ''
  }
}

// Identifiers only: nothing here grants access to anything.
output functionAppName string = functionApp.outputs.name
output functionAppId string = functionApp.outputs.id
output functionAppHostName string = functionApp.outputs.defaultHostName
output eventFunctionResourceId string = '${functionApp.outputs.id}/functions/${eventFunctionName}'
output hubPrincipalId string = identity.outputs.hubPrincipalId
output hubClientId string = identity.outputs.hubClientId
output deadLetterIdentityId string = identity.outputs.deadLetterIdentityId
output storageAccountId string = storage.outputs.accountId
output deadLetterContainerName string = storage.outputs.deadLetterContainerName
output notifyTopicId string = notifyTopic.outputs.id
output notifyTopicEndpoint string = notifyTopic.outputs.endpoint
