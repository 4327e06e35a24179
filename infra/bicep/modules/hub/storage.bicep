// The hub's storage account: the durable task hub (queues, tables, blobs), the Flex Consumption
// deployment package and the container Event Grid dead-letters undeliverable events into.
// Shared keys are off: every client, the Functions host included, authenticates with Entra.

param name string
param location string
param tags object = {}

@description('Container the Flex Consumption plan deploys the app package from.')
param deploymentContainerName string

@description('Container that receives events Event Grid could not deliver to the hub.')
param deadLetterContainerName string

@description('Principal id of the hub identity (the Functions host and the app).')
param hubPrincipalId string

@description('Principal id of the identity Event Grid dead-letters with.')
param deadLetterPrincipalId string

@description('Zone-redundant by default: the task hub holds every running rotation.')
@allowed(['Standard_ZRS', 'Standard_LRS', 'Standard_GRS', 'Standard_GZRS'])
param skuName string = 'Standard_ZRS'

// The Functions host with an identity-based AzureWebJobsStorage and the Azure Storage durable
// backend need blob (leases, the package), queue (work items) and table (history) data access.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Event Grid only writes blobs into the dead-letter container.
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches its storage over the public endpoint, so a deny-by-default firewall would lock the app out; every request needs an Entra token (shared keys off)
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; blob public access itself is off (allowBlobPublicAccess: false)
  // checkov:skip=CKV_AZURE_206: zone-redundant by default; a geo replica of a one-region app's task hub gives no failover, the app would not follow it
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource hubBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, hubPrincipalId, storageBlobDataOwner)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: hubPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource hubQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, hubPrincipalId, storageQueueDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: hubPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource hubTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, hubPrincipalId, storageTableDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: hubPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Scoped to the one container, so the identity every spoke topic carries cannot read the task hub.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, deadLetterPrincipalId, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: deadLetterPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output accountId string = account.id
output accountName string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output deadLetterContainerName string = deadLetterContainer.name
output deploymentContainerName string = deploymentContainer.name
