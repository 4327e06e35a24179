// One spoke vault, deployed into the vault's own resource group (in any subscription of the
// tenant): the hub's access to the vault, the Event Grid wiring from the vault to the hub, and
// the hub's access to what the vault's secrets belong to (consumer apps, storage account keys).

@description('Name of the spoke Key Vault (it must use the Azure RBAC permission model).')
param vaultName string

@description('Region of the vault; its system topic must live in the same region.')
param location string

// Deploying the topic is a PUT of the whole resource, not a merge. Merging would take a flag
// saying the topic exists (an `existing` reference fails on a topic that does not) and a second
// module reading its identity and tags before this one writes them, an untested second path
// (no Bicep compiler or Azure here). So the effect is stated wherever the name is given: here,
// spokes.bicep, main.bicep and infra/README.md.
@description('''Name of the vault's Event Grid system topic. A vault can have one only: pass the existing topic's name if it already has one.
Deploying onto an existing topic REPLACES its identity block and its tags: afterwards it carries the hub's dead-letter identity only
(a system-assigned identity or other user-assigned identities are removed, and event subscriptions that deliver or dead-letter with them stop working)
and the hub's tags only. Add those identities and tags to the topic again after onboarding, or onboard the vault under a new topic.''')
param systemTopicName string = '${vaultName}-events'

@description('Principal id of the hub identity.')
param hubPrincipalId string

@description('Resource id of the hub\'s Event Grid function: <function app id>/functions/on_secret_event.')
param eventFunctionResourceId string

@description('Create the event subscription. It needs the function deployed first (see infra/README.md), so the first hub deployment passes false.')
param connectEvents bool = true

@description('Resource id of the hub storage account that holds the dead-letter container.')
param deadLetterStorageAccountId string

param deadLetterContainerName string

@description('Resource id of the identity Event Grid dead-letters with; it may write to the dead-letter container and nothing else.')
param deadLetterIdentityId string

@description('Delivery attempts before an event is dead-lettered (Event Grid allows 1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes Event Grid keeps retrying an event (at most 1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('ARM ids of App Service / Function apps that consume this vault\'s secrets and are restarted after a rotation.')
param consumerAppIds array = []

@description('ARM ids of storage accounts whose keys are rotated (rotation-target storage-account-key).')
param storageAccountKeyTargetIds array = []

param tags object = {}

// Key Vault Secrets Officer: read, write and disable secret versions (stage, promote, restore).
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
// Reader on the vault alone: the hub reads the vault's ARM resource to confirm which subscription
// it is really in before it rotates anything in it (the allowlist; rotation/vault_location.py).
// Secrets Officer's Microsoft.KeyVault/vaults/*/read is written for the vault's sub-resources; that
// it also grants Microsoft.KeyVault/vaults/read is nowhere documented, so Reader grants it plainly.
var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

// Only expiry events start rotations; NewVersionCreated would fire for the hub's own writes.
var rotationEventTypes = [
  'Microsoft.KeyVault.SecretNearExpiry'
  'Microsoft.KeyVault.SecretExpired'
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, hubPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: hubPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource vaultReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, hubPrincipalId, reader)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: hubPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The topic carries the hub's dead-letter identity: the hub's storage account accepts no shared
// keys, so Event Grid can only dead-letter with an Entra identity.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${deadLetterIdentityId}': {}
    }
  }
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource toHub 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (connectEvents) {
  parent: systemTopic
  name: 'rotation-hub'
  properties: {
    // AzureFunction (not WebHook): Event Grid resolves the trigger's key itself and skips the
    // validation handshake; the function must already exist.
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: eventFunctionResourceId
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: rotationEventTypes
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: deadLetterIdentityId
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

// Consumers and targets may sit in other resource groups or subscriptions: each assignment is a
// module scoped to the resource group its ARM id names (/subscriptions/{2}/resourceGroups/{4}/...).
// A deployment name is unique per resource group, and one app or account can be listed under two
// spokes, whose modules then deploy into the same resource group at the same time: the names
// carry this vault's resource group and name besides the target, so they never collide.
module consumerRoles 'site-role.bicep' = [for appId in consumerAppIds: {
  name: 'consumer-${uniqueString(resourceGroup().id, vaultName, appId)}'
  scope: resourceGroup(split(appId, '/')[2], split(appId, '/')[4])
  params: {
    siteName: last(split(appId, '/'))
    principalId: hubPrincipalId
  }
}]

module storageKeyRoles 'storage-key-role.bicep' = [for accountId in storageAccountKeyTargetIds: {
  name: 'storage-key-${uniqueString(resourceGroup().id, vaultName, accountId)}'
  scope: resourceGroup(split(accountId, '/')[2], split(accountId, '/')[4])
  params: {
    storageAccountName: last(split(accountId, '/'))
    principalId: hubPrincipalId
  }
}]

output systemTopicId string = systemTopic.id
